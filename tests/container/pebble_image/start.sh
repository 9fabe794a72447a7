#!/bin/sh
# challtestsrv: DNS on 8053 (answers only what the tests add), management API on 8055.
# pebble: ACME on 14000, management on 15000, resolving names through challtestsrv.
pebble-challtestsrv -defaultIPv4 "" -defaultIPv6 "" -http01 "" -https01 "" -tlsalpn01 "" \
    -doh "" -dns01 ":8053" -management ":8055" &
export PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0
exec pebble -config /pebble/config.json -dnsserver 127.0.0.1:8053
