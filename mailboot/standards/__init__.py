"""One module per standard, each owning its parsing and its lookup (mox's model).

- `spf`: SPF evaluated as receivers do (RFC 7208);
- `publicsuffix`: the organizational domain (RFC 7489 §3.2);
- `dmarc`: DMARC record parsing and the one discovery (RFC 7489 §6.6.3: several records, or
  none with a valid `p=`, mean no policy; the organizational domain's record applies);
- `dmarcreport`: DMARC aggregate reports' XML (RFC 7489 appendix C), read without any DOCTYPE;
- `tlsrpt`: SMTP TLS reports' JSON (RFC 8460 §4);
- `taglist`: the tag=value lists DKIM, DMARC, MTA-STS and TLS-RPT records share (RFC 6376
  §3.2);
- `mtasts`: our MTA-STS policy and its id (RFC 8461);
- `srs`: the Sender Rewriting Scheme's SRS0/SRS1 addresses, made and reversed (libsrs2's format).

May import: `base`, `settings`, `dns`.
"""
