"""What port 25 decides beyond postscreen and the milters.

- `decide`: `InboundChecks`, the decisions (SPF fail without DMARC, a blocklist refusing our
  resolver, Docker's proxy).

The process that asks them is `policy.service`.

May import: `base`, `settings`, `dns`, `standards` (never the TLS stack or the templates: the
policy process has an import budget).
"""
