"""What port 25 decides beyond postscreen and the milters: the port-25 policy service.

- `decide`: `InboundChecks`, the decisions (SPF fail without DMARC, a blocklist refusing our
  resolver, Docker's proxy);
- `protocol`: Postfix's policy delegation protocol on one stream;
- `service`: the process the supervisor starts on smtpd's first question (socket activation).

May import: `base`, `settings`, `dns`, `standards` (never the TLS stack or the templates: the
process has an import budget).
"""
