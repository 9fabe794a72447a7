#!/bin/sh
# challtestsrv: DNS on 8053 (answers only what the tests add), management API on 8055.
# pebble: ACME on 14000, management on 15000, resolving names through challtestsrv, or through
# PEBBLE_DNS (host:port, a test BIND serving the zones the user publishes) when it is set.
pebble-challtestsrv -defaultIPv4 "" -defaultIPv6 "" -http01 "" -https01 "" -tlsalpn01 "" \
    -doh "" -dns01 ":8053" -management ":8055" &
# PEBBLE_AUTHZREUSE=100: a second order for a name by the same account always reuses the valid
# authorization, as Let's Encrypt does for 30 days; the renewal tests then take that path every time.
export PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=100
exec pebble -config /pebble/config.json -dnsserver "${PEBBLE_DNS:-127.0.0.1:8053}"
