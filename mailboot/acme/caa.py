"""CAA (RFC 8659): which CA may issue certificates for the mail host, and with which account.

A CAA record at MAIL_HOSTNAME lets only the configured CA issue for it, and RFC 8657's
`accounturi` binds that to our own ACME account (and `validationmethods` to HTTP-01, the only
one we answer): another customer of the same CA can't get a certificate for our name either.
The `mta-sts.`, `autoconfig.` and `autodiscover.` names are CNAMEs to MAIL_HOSTNAME, and a CA's
CAA lookup follows the CNAME (RFC 8659 §3), so the one record covers them too; a CAA record
can't sit beside a CNAME anyway.

The CA's CAA domain is not in its ACME directory: settings.py knows the usual CAs by the host of
their directory URL (CAA_ISSUER's default); CAA_ISSUER names any other.
"""

from __future__ import annotations

import json
import re

from mailboot.base.paths import Paths
from mailboot.settings.table import CAA_UNKNOWN, Settings

# An account URI as it may stand in a CAA value: visible ASCII without quote or semicolon.
_PLAIN_URI = re.compile(r"https?://[\x21\x23-\x3a\x3c-\x7e]+")

def stored_account_uri(paths: Paths, directory_url: str) -> str | None:
    """Our account's URI at this CA, once the worker has created the account."""
    try:
        stored = json.loads((paths.acme_account_dir(directory_url) / "account.json").read_text())
    except (OSError, ValueError):
        return None
    uri = stored.get("uri") if isinstance(stored, dict) else None
    return uri if isinstance(uri, str) and uri else None


def record_value(issuer: str, account_uri: str | None) -> str:
    """`0 issue "<ca>; accounturi=<uri>; validationmethods=http-01"` (RFC 8659 §4.2, RFC 8657 §3
    and §4); without an account yet, the CA alone."""
    parameters = [issuer]
    if account_uri is not None:
        parameters.append(f"accounturi={account_uri}")
    parameters.append("validationmethods=http-01")
    return f'0 issue "{"; ".join(parameters)}"'


def value_for(settings: Settings, paths: Paths) -> str | None:
    """The CAA record's value for these settings; None when none is printed (not TLS_MODE=acme,
    CAA_ISSUER=off, or a CA we don't know: `why_none` says which)."""
    if settings.tls_mode != "acme" or settings.caa_issuer in ("off", CAA_UNKNOWN):
        return None
    uri = stored_account_uri(paths, settings.acme_directory)
    # RFC 8657 §3: the value is a URI; one that could break the record's syntax is left out.
    usable = uri if uri is not None and _PLAIN_URI.fullmatch(uri) else None
    return record_value(settings.caa_issuer, usable)


def why_none(settings: Settings) -> str | None:
    """Why no CAA record is printed, when the reason deserves a log line (an unknown CA)."""
    if settings.tls_mode == "acme" and settings.caa_issuer == CAA_UNKNOWN:
        return (f"no CAA record: the CAA domain of the CA at {settings.acme_directory} is not "
                "known to mailboot; set CAA_ISSUER to the domain that CA documents for CAA")
    return None
