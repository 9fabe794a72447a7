"""The TLS material the daemons serve.

- `certificates`: certificate directories below DATA_DIR/tls, the `live` link switched
  atomically, the temporary self-signed certificate;
- `keys`: the certificate's keys, kept across renewals (DANE), current and next;
- `renewal`: when to renew and when to retry (arithmetic on times);
- `dane`: our TLSA records (RFC 7672), printed only where the zone is signed.

May import: `base`, `settings`, `dns`, `standards`, `dkim`, `mailboxes`, `backup`, `network`.
"""
