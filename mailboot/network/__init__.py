"""This server on the internet.

- `address`: the public address, found by asking an echo name server, remembered;
- `outbound`: can this host open port 25 to the outside (or reach its relay)?

May import: `base`, `settings`, `dns`.
"""
