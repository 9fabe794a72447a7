"""Certificates from an ACME CA, one protocol concept per module (certbot's model).

- `issuer`: one issuance told top to bottom (RFC 8555, HTTP-01);
- `ari`: the CA's renewal suggestion (RFC 9773); `caa`: who may issue (RFC 8659);
- `precheck`: do the names point here and does our challenge URL answer, before asking;
- `keeper`: one keeper per TLS_MODE, keeping the served certificate current.

May import: the floors below (`base` .. `web`).
"""
