"""Key changes that wait for the DNS.

- `dkim`: DKIM key rotation, switched once the new key's record is served;
- `tls_key`: the certificate key rollover that keeps DANE senders matching;
- `gate`: the one rule both wait for: the new record served, unchanged, for its TTL.

May import: the floors below (`base` .. `records`).
"""
