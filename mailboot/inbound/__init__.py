"""What port 25 decides beyond postscreen and the milters.

- `decide`: `InboundChecks`, the decisions (SPF fail without DMARC, a blocklist refusing our
  resolver, Docker's proxy).
- `reports`: DMARC and TLS reports mailed to our report addresses, piped in by Postfix, read
  under limits and summarised per domain and day (`python3 -P -m mailboot.inbound.reports`).

The process that asks them is `policy.service`.

May import: `base`, `settings`, `dns`, `standards` (never the TLS stack or the templates: the
policy process has an import budget).
"""
