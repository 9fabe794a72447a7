"""How our mail leaves, and what it may spend of the server's good name.

- `srs`: the Sender Rewriting Scheme for mail forwarded off the server (the secret, the
  socketmap's forward and reverse answers);
- `mtasts`: receivers' MTA-STS policies (RFC 8461): fetched, cached, and turned into Postfix's TLS
  policy for each destination, DANE first; `mtasts_fetch`: their HTTPS fetch and the check of
  a testing policy's MX hosts;
- `limits`: how much each login may send a day, counted across restarts.

May import: the floors below (`base`, `settings`, `dns`, `standards`, `network`); never the
TLS stack at import time (the policy process has an import budget).
"""
