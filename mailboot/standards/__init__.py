"""One module per standard, each owning its parsing and its lookup (mox's model).

- `spf`: SPF evaluated as receivers do (RFC 7208);
- `publicsuffix`: the organizational domain (RFC 7489 §3.2);
- `mtasts`: our MTA-STS policy and its id (RFC 8461).

May import: `base`, `settings`, `dns`.
"""
