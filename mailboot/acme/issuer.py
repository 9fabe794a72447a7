"""Certificates from an ACME CA (RFC 8555) with HTTP-01, using certbot's `acme` library.

The story of one issuance, top to bottom (`AcmeIssuer.issue`):
account (reused from DATA_DIR/acme, created once) -> order for the names -> for each name, the
HTTP-01 token is put where our port-80 listener serves it -> the CA is told to validate ->
finalize with a CSR of the kept key (DATA_DIR/tls/keys/current.pem, so that a DANE TLSA record
stays true across renewals) -> the full chain. Errors become `IssueError`, whose message
says what failed and whether the CA asked us to wait.

Works with Debian trixie's acme 4.0 and PyPI's 5.x: ARI (`renewal_time`) exists only in 5.x and
is used when present; with 4.0, `ari.ask_ca` asks the CA through the library's network client.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import errors as jose_errors
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from mailboot.acme import ari
from mailboot.base.errors import IssueError
from mailboot.base.files import write_atomically
from mailboot.base.paths import Paths
from mailboot.tls import keys as tlskeys
from mailboot.web.challenges import ChallengeStore

log = logging.getLogger(__name__)

USER_AGENT = "mailboot"
ORDER_TIMEOUT = timedelta(seconds=120)
_RETRY_AFTER_TEXT = re.compile(r"retry after (\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)", re.IGNORECASE)


@dataclass(frozen=True)
class AcmeConfig:
    directory_url: str
    email: str | None
    ca_bundle: Path | None
    eab_kid: str | None
    eab_hmac_key: str | None


@dataclass(frozen=True)
class Issued:
    key_pem: bytes
    chain_pem: bytes


class AcmeIssuer:
    """Talks to one ACME CA; real state (a connection and an account), hence a class."""

    def __init__(self, config: AcmeConfig, paths: Paths, store: ChallengeStore) -> None:
        self.config = config
        self.paths = paths
        self.store = store
        self.account_dir = paths.acme_account_dir(config.directory_url)
        self.account_key = _load_or_create_account_key(self.account_dir / "account.key")
        self._client: client.ClientV2 | None = None

    def connect(self) -> None:
        """Reach the CA and make sure the account exists; raises IssueError saying why not."""
        self._connect()

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        verify: bool | str = str(self.config.ca_bundle) if self.config.ca_bundle else True
        net = client.ClientNetwork(self.account_key, alg=ES256, verify_ssl=verify,  # type: ignore[arg-type]
                                   user_agent=USER_AGENT)
        with _explained("reading the CA's directory"):
            directory = client.ClientV2.get_directory(self.config.directory_url, net)
        acme_client = client.ClientV2(directory, net)
        net.account = self._account(acme_client, directory)
        self._client = acme_client
        return acme_client

    def _account(self, acme_client: client.ClientV2,
                 directory: messages.Directory) -> messages.RegistrationResource:
        """The stored account, or a new one (RFC 8555 §7.3), stored before it is used."""
        stored = self.account_dir / "account.json"
        if stored.exists():
            uri = json.loads(stored.read_text())["uri"]
            return messages.RegistrationResource(uri=uri, body=messages.Registration())
        eab = None
        if self.config.eab_kid and self.config.eab_hmac_key:
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=self.account_key.public_key(), kid=self.config.eab_kid,
                hmac_key=self.config.eab_hmac_key, directory=directory)
        registration = messages.NewRegistration.from_data(
            email=self.config.email, terms_of_service_agreed=True,
            external_account_binding=eab)
        try:
            with _explained("creating the ACME account"):
                account = acme_client.new_account(registration)
        except errors.ConflictError as conflict:  # the CA knows this key already
            account = messages.RegistrationResource(uri=conflict.location,
                                                    body=messages.Registration())
        write_atomically(stored, json.dumps({"uri": account.uri,
                                             "directory": self.config.directory_url}).encode(),
                         mode=0o600)
        log.info("tls: ACME account %s at %s", account.uri, self.config.directory_url)
        return account

    def issue(self, names: Sequence[str]) -> Issued:
        """Order, validate and download a certificate for `names` (MAIL_HOSTNAME first), with
        the kept key: renewals keep it, only a rollover (`tls.rollover`) changes it."""
        acme_client = self._connect()
        key_pem = tlskeys.current_key(self.paths)
        csr = crypto_util.make_csr(key_pem, list(names))
        with _explained("placing the order"):
            order = acme_client.new_order(csr)
        tokens = self._answer_challenges(acme_client, order)
        try:
            with _explained("waiting for validation and the certificate"):
                deadline = datetime.now() + ORDER_TIMEOUT  # the library compares naive times
                finished = acme_client.poll_and_finalize(order, deadline=deadline)
        finally:
            for token in tokens:
                self.store.remove(token)
        return Issued(key_pem, finished.fullchain_pem.encode())

    def _answer_challenges(self, acme_client: client.ClientV2,
                           order: messages.OrderResource) -> list[str]:
        tokens = []
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                # RFC 8555 §7.1.4: the CA may reuse an authorization it validated recently (Let's
                # Encrypt does for 30 days); its challenges are valid already and can't be answered.
                continue
            challenge = next((c for c in authorization.body.challenges
                              if isinstance(c.chall, challenges.HTTP01)), None)
            if challenge is None:
                raise IssueError(f"the CA offers no HTTP-01 challenge for "
                                 f"{authorization.body.identifier.value}")
            response, validation = challenge.response_and_validation(self.account_key)
            token = challenge.chall.encode("token")
            self.store.put(token, validation)
            tokens.append(token)
            with _explained("answering the challenge"):
                acme_client.answer_challenge(challenge, response)
        return tokens

    def renewal_time(self, chain_pem: bytes) -> datetime | None:
        """The CA's suggested renewal time (ARI, RFC 9773), or None where the CA offers none.

        acme 5.x asks by itself; with acme 4.0 (Debian trixie's, in the image) we ask the
        directory's renewalInfo resource through the library's own network client.
        """
        acme_client = self._connect()
        try:
            if hasattr(acme_client, "renewal_time"):
                suggested, _ = acme_client.renewal_time(chain_pem)
            else:
                suggested = self._ask_renewal_info(acme_client, chain_pem)
        except (errors.Error, requests.RequestException, ValueError) as error:
            log.info("tls: the CA's renewal information is unavailable (%s)", error)
            return None
        if suggested is not None and suggested.tzinfo is None:
            suggested = suggested.replace(tzinfo=UTC)  # the library works in naive UTC
        return suggested

    @staticmethod
    def _ask_renewal_info(acme_client: client.ClientV2, chain_pem: bytes) -> datetime | None:
        try:
            url = acme_client.directory["renewalInfo"]
        except KeyError:
            return None  # this CA offers no renewal information
        return ari.ask_ca(acme_client.net, url, chain_pem)


def _load_or_create_account_key(path: Path) -> JWKEC:
    """The account key is made once and kept: the account is bound to it."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IssueError(f"{path} is not an EC private key; move it away to start a new "
                             "ACME account")
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(path, key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()), mode=0o600)
    return JWKEC(key=key)


class _explained:
    """Turn the library's and the network's exceptions into an IssueError saying what we did."""

    def __init__(self, doing: str) -> None:
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 _traceback: object) -> None:
        if error is None or isinstance(error, IssueError):
            return
        if isinstance(error, messages.Error):
            raise IssueError(f"{self.doing}: the CA said {error.typ or error.code}: "
                             f"{error.detail}", _retry_at(error)) from error
        if isinstance(error, requests.exceptions.SSLError):
            raise IssueError(f"{self.doing}: the CA's TLS certificate is not trusted ({error}); "
                             "check ACME_CA_BUNDLE") from error
        if isinstance(error, requests.RequestException):
            raise IssueError(f"{self.doing}: the CA can't be reached ({error})") from error
        if isinstance(error, ValueError) and str(error).startswith("Requesting "):
            # acme's ClientNetwork turns network failures into "Requesting <url>: <reason>".
            raise IssueError(f"{self.doing}: the CA can't be reached ({error})") from error
        if isinstance(error, errors.ValidationError):
            problems = "; ".join(_failed_challenges(error))
            raise IssueError(f"{self.doing}: validation failed: {problems}") from error
        if isinstance(error, errors.TimeoutError):
            raise IssueError(f"{self.doing}: the CA did not finish in time") from error
        if isinstance(error, errors.Error | jose_errors.Error):
            raise IssueError(f"{self.doing}: {error}") from error


def _failed_challenges(error: errors.ValidationError) -> list[str]:
    found = []
    for authorization in error.failed_authzrs:
        for challenge in authorization.body.challenges:
            if challenge.error is not None:
                found.append(f"{authorization.body.identifier.value}: {challenge.error.detail}")
    return found or [str(error)]


def _retry_at(error: messages.Error) -> datetime | None:
    """Rate-limit errors say when to retry in their text (Let's Encrypt: "retry after ...")."""
    match = _RETRY_AFTER_TEXT.search(error.detail or "")
    if not match:
        return None
    try:
        return datetime.fromisoformat(match.group(1).replace(" ", "T")).replace(tzinfo=UTC)
    except ValueError:
        return None
