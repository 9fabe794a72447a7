"""The network half of outbound MTA-STS: a receiver's policy fetched over HTTPS (RFC 8461 §3.3),
and a testing policy's MX host checked as `enforce` would (RFC 8461 §4).

Both verify certificates against the system's CAs plus TLS_TRUST_CA_FILE's (the CAs Postfix's
outbound verification trusts too). `http.client` and `smtplib` are imported when a policy is
first fetched, not when the policy process starts: most of its runs never need them (`ssl` is
loaded anyway, by dnspython).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from mailboot.outbound.mtasts import FetchError
from mailboot.standards.mtasts import MAX_POLICY_BYTES, POLICY_PATH

if TYPE_CHECKING:
    import ssl

# Seconds for each step of a fetch or an MX check (connect, TLS, each read). Postfix waits for
# the socketmap's answer up to 100 s; a policy server this slow is treated as failing.
TIMEOUT = 10.0
SMTP_PORT = 25


@functools.lru_cache(maxsize=4)
def trust(extra_ca_file: Path | None) -> ssl.SSLContext:
    """A client context verifying against the system's CAs and those in `extra_ca_file`.

    Raises FetchError when the extra file can't be loaded (it was checked at the start; a
    file replaced meanwhile by something else is said in the log, and nothing is fetched).
    """
    import ssl

    context = ssl.create_default_context()  # the system's CAs, host names checked
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if extra_ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(extra_ca_file))
        except (OSError, ssl.SSLError) as error:
            raise FetchError(f"TLS_TRUST_CA_FILE {extra_ca_file} can't be loaded ({error}); "
                             "mount a readable PEM file of CA certificates there") from error
    return context


def fetch_policy(domain: str, extra_ca_file: Path | None = None,
                 timeout: float = TIMEOUT) -> str:
    """The text of https://mta-sts.<domain>/.well-known/mta-sts.txt.

    RFC 8461 §3.3: a CA-verified certificate for the host, status 200 only (a redirect is not
    followed), media type text/plain. Raises FetchError saying what failed.
    """
    import http.client
    import ssl

    host = f"mta-sts.{domain}"
    url = f"https://{host}{POLICY_PATH}"
    connection = http.client.HTTPSConnection(host, 443, timeout=timeout,
                                             context=trust(extra_ca_file))
    try:
        connection.request("GET", POLICY_PATH, headers={"User-Agent": "mailboot"})
        response = connection.getresponse()
        if response.status != 200:
            raise FetchError(f"{url} answered {response.status} {response.reason}; only 200 "
                             "counts (RFC 8461 §3.3: redirects are not followed)")
        media_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if media_type != "text/plain":
            raise FetchError(f"{url} is of type {media_type or 'unknown'!r}, not text/plain "
                             "(RFC 8461 §3.3)")
        body = response.read(MAX_POLICY_BYTES + 1)
    except ssl.SSLCertVerificationError as error:
        raise FetchError(f"{url}: the certificate is not trusted ({error.verify_message})"
                         ) from error
    except (OSError, http.client.HTTPException) as error:
        raise FetchError(f"{url}: {_reason(error, timeout)}") from error
    finally:
        connection.close()
    if len(body) > MAX_POLICY_BYTES:
        raise FetchError(f"{url} is larger than {MAX_POLICY_BYTES} bytes: not a policy")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FetchError(f"{url} is not UTF-8 text") from error


def probe_mx(host: str, helo: str, extra_ca_file: Path | None = None,
             timeout: float = TIMEOUT) -> str | None:
    """Why `enforce` would refuse the MX `host` (no STARTTLS, a certificate not CA-verified for
    the host's name, RFC 8461 §4.2), or None when it passes. Says EHLO as `helo` and QUIT after
    STARTTLS: no mail is sent. Raises FetchError when the host can't be reached to tell."""
    import smtplib
    import ssl

    try:
        with smtplib.SMTP(host, SMTP_PORT, local_hostname=helo, timeout=timeout) as smtp:
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                return "it offers no STARTTLS"
            smtp.starttls(context=trust(extra_ca_file))  # checks the name `host`
            smtp.ehlo()
    except ssl.SSLCertVerificationError as error:
        return f"its certificate is not verified ({error.verify_message})"
    except ssl.SSLError as error:
        return f"TLS failed ({error.reason or error})"
    except (OSError, smtplib.SMTPException) as error:
        raise FetchError(_reason(error, timeout)) from error
    return None


def _reason(error: Exception, timeout: float) -> str:
    """`connection refused` rather than `[Errno 111] Connection refused`."""
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s"
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return (text[:1].lower() + text[1:]) or type(error).__name__
