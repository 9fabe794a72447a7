"""The DNS as data and the names we answer for.

- `answer`: what a lookup answers (the one shape lookups, SPF and the doctor share);
- `lookup`: lookups at the zone's own name servers (or DNS_RESOLVERS), with dnspython;
- `names`: which host names exist (the zone holding MAIL_HOSTNAME, mta-sts., autoconfig.,
  autodiscover., the TLSA name, the certificate's names).

May import: `base`, `settings`.
"""
