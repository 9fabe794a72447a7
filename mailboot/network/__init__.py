"""This server on the internet.

- `address`: the public address, found by asking an echo name server, remembered;
- `found`: the addresses as configured or as the last boot found them (no DNS: for readers);
- `outbound`: can this host open port 25 to the outside (or reach its relay)?
- `reputation`: are our addresses and domains on Spamhaus's blocklists? may mail leave by IPv6?

May import: `base`, `settings`, `dns`.
"""
