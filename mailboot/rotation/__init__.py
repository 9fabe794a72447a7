"""Key changes that wait for the DNS.

- `dkim`: DKIM key rotation, switched once the new key's record is served;
- `tls_key`: the certificate key rollover that keeps DANE senders matching.

May import: the floors below (`base` .. `records`).
"""
