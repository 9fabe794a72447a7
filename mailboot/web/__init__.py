"""Ports 80 and 443.

- `server`: the small bounded HTTP/1.1 server under both;
- `port80`: ACME HTTP-01 answers and redirects; `port443`: the MTA-STS policy and clients'
  settings, a certificate per name by SNI;
- `clientconfig`: autoconfig, autodiscover and the Apple profile;
- `recordspage`: the owner's records page at a secret link, from the worker's snapshot;
- `challenges`: the HTTP-01 answers in flight, as files shared between processes;
- `child`: the process the supervisor starts when a client connects.

May import: the floors below (`base` .. `tls`, `daemons`, `inbound`).
"""
