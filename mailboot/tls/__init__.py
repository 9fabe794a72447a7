"""TLS: the certificate the daemons serve, where it comes from, and the two web servers.

- `certificates`: certificate directories below DATA_DIR/tls and the `live` links, switched
  atomically; the temporary self-signed certificate;
- `keeper`: one keeper per TLS_MODE (acme, manual, self-signed), chosen once at start;
- `acme_issuer`: one issuance told top to bottom (RFC 8555, HTTP-01), with certbot's `acme`;
- `ari`: the CA's renewal suggestion (RFC 9773), remembered on disk; `renewal`: the arithmetic;
- `precheck`: do the names point here and does our challenge URL answer, before asking the CA;
- `http_server` (port 80: challenges, redirects) and `policy_server` (port 443: MTA-STS),
  served by `http_child`, the process the supervisor starts when a client connects;
  `challenges`: the HTTP-01 answers in flight, as files the worker's run writes;
- `mtasts`: the MTA-STS policy and its id, made in one place.
"""
