"""Tag lists (RFC 6376 §3.2): `v=DKIM1; k=rsa; p=MIIB...`, read in one place.

DKIM key records use them, and so do the records that borrowed the syntax: DMARC (RFC 7489 §6.4),
MTA-STS (RFC 8461 §3.1) and TLS-RPT (RFC 8460 §3). A list is `name=value` parts separated by
`;`, with optional whitespace around names, `=` and values, and an optional `;` at the end.

Read leniently, as OpenDMARC (the DMARC verifier of this container) reads DMARC records: a part
without `=` or without a name is skipped, names are compared without regard to case, and of a
name given twice the first counts (RFC 6376 §3.2 calls such a list invalid; no receiver we
follow refuses it). What a tag's value must be is each record's own business.
"""

from __future__ import annotations


def parse_tags(text: str) -> dict[str, str]:
    """`v=DMARC1; p=reject` -> {"v": "DMARC1", "p": "reject"}: names in lower case, in the
    order given; values without the whitespace around them, otherwise as published."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, equals, value = part.partition("=")
        name = name.strip().lower()
        if equals and name:
            tags.setdefault(name, value.strip())
    return tags


def first_tag(text: str) -> tuple[str, str] | None:
    """The list's first part as (name in lower case, value), when it is a tag: a record's
    version tag must come first (RFC 7489 §6.3, RFC 8461 §3.1, RFC 8460 §3)."""
    name, equals, value = text.split(";", 1)[0].partition("=")
    name = name.strip().lower()
    return (name, value.strip()) if equals and name else None


def squeezed(value: str) -> str:
    """A value without any whitespace: how base64 values (DKIM's p=) and URI lists are
    compared, whatever the splitting into strings and the spaces between (RFC 6376 §3.6.1)."""
    return "".join(value.split())
