"""The port-80 listener: answers ACME HTTP-01 challenges, redirects our own names to HTTPS.

The CA fetches `http://<name>/.well-known/acme-challenge/<token>` (RFC 8555 §8.3) and sends the
name it validates as Host: challenges are answered whatever the Host. Any other request is
redirected to https only when its Host is one of our names (MAIL_HOSTNAME, mta-sts.<domain>,
autoconfig.<domain>, autodiscover.<domain>: `certificates.tls_names`):
redirecting whatever Host a client sends would make us an open redirector for any name that
points here. Other hosts get 404, a Host that can't be a host name 400.

The port faces the internet, so it runs on the bounded server of `server`: one thread, a
cap on open connections that makes room by closing the oldest idle ones, and a deadline for the
whole request head, so idle or slow clients can't keep the CA's request out.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from http import HTTPStatus

from mailboot.web import server as http_core
from mailboot.web.challenges import ChallengeStore
from mailboot.web.server import DEFAULT_LIMITS, Limits, Request, Response

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


def answer(request: Request, store: ChallengeStore, names: frozenset[str]) -> Response:
    """The challenge's answer, a redirect to https for our own names, or 404."""
    if request.target.startswith(CHALLENGE_PREFIX):
        key = store.get(request.target[len(CHALLENGE_PREFIX):])
        if key is None:
            return Response(HTTPStatus.NOT_FOUND, b"no such challenge\n")
        return Response(HTTPStatus.OK, key.encode("ascii"))
    if request.host not in names:
        return Response(HTTPStatus.NOT_FOUND, b"not found\n")
    # Only an origin-form target is a path to keep (RFC 9112 §3.2.1); others go to the root.
    path = request.target if request.target.startswith("/") else "/"
    return Response(HTTPStatus.MOVED_PERMANENTLY,
                    headers=(("Location", f"https://{request.host}{path}"),))


def own_names(names: Iterable[str]) -> frozenset[str]:
    """Our names as parse_host gives a Host: lower case, without a trailing dot."""
    return frozenset(name.lower().removesuffix(".") for name in names)


def start(port: int, store: ChallengeStore, names: Iterable[str], host: str = "",
          limits: Limits = DEFAULT_LIMITS, sock: socket.socket | None = None) -> http_core.Server:
    """Listen on `port` (0: any, see `.port`), or serve the listening `sock` handed over, in a
    background thread; `.shutdown()` stops it.

    `names`: the names to redirect to https. Raises OSError when the port can't be had.
    """
    ours = own_names(names)
    return http_core.serve(lambda request: answer(request, store, ours), host, port, "http",
                           limits, sock=sock)
