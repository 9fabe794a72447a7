"""Every filesystem location mailboot uses.

State lives below DATA_DIR (the one volume); rendered configuration lives below a config root
(`/` in the container) and runtime files below a run directory. Tests re-root all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# A DKIM private key below `Paths.dkim_domain_dir`: <selector>.key
DKIM_KEY_SUFFIX = ".key"
# Below the configuration root; `warmstart` looks for it before anything else is known.
WARM_START_PLAN = Path("var/lib/mailboot/warm-start.json")


@dataclass(frozen=True)
class Paths:
    """Locations of state below DATA_DIR, of rendered configuration, and of runtime files."""

    data_dir: Path
    config_root: Path = Path("/")
    run_dir: Path = Path("/run/mailboot")

    # --- state (the volume) ---
    @property
    def dkim_dir(self) -> Path:
        return self.data_dir / "dkim"

    def dkim_domain_dir(self, domain: str) -> Path:
        """Directory holding every DKIM key of one (ASCII) domain, one file per selector."""
        return self.dkim_dir / domain

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def tls_live(self) -> Path:
        """A symlink to the directory whose key.pem and fullchain.pem the daemons serve.

        Key and chain always live in one directory and the link is switched with one rename,
        so a daemon can never load a key with another issuance's chain.
        """
        return self.tls_dir / "live"

    def tls_slot(self, slot: int) -> Path:
        """`live` for the certificate naming MAIL_HOSTNAME; `live-2`, ... for more names than
        one certificate takes."""
        return self.tls_live if slot == 0 else self.tls_dir / f"live-{slot + 1}"

    def renewal_info(self, slot: int) -> Path:
        """What the CA last suggested for renewing a slot's certificate (ARI, RFC 9773)."""
        return self.tls_dir / f"renewal-info-{slot}.json"

    @property
    def tls_keys_dir(self) -> Path:
        """The certificate's private keys, kept across renewals (current, next; DANE)."""
        return self.tls_dir / "keys"

    def acme_account_dir(self, directory_url: str) -> Path:
        """One ACME account per CA directory: switching CAs never reuses another CA's account."""
        # Imported here: hashlib loads OpenSSL's library (5 MiB) into the resident supervisor,
        # which imports this module but never asks this.
        import hashlib
        from urllib.parse import urlsplit  # here too: the warm start never needs it

        parts = urlsplit(directory_url)
        digest = hashlib.sha256(directory_url.encode()).hexdigest()[:8]
        return self.data_dir / "acme" / f"{parts.hostname}-{digest}"

    @property
    def accounts_dir(self) -> Path:
        return self.data_dir / "accounts"

    @property
    def passwd_file(self) -> Path:
        """The accounts in Dovecot's passwd-file format: Dovecot authenticates against it."""
        return self.accounts_dir / "passwd"

    def app_password_file(self, slot: int) -> Path:
        """App passwords in Dovecot's passwd-file format, at most one per address in each slot
        file: Dovecot tries the main password, then each slot's (one passdb per slot)."""
        return self.accounts_dir / "app-passwords" / str(slot)

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def postfix_queue(self) -> Path:
        return self.data_dir / "spool" / "postfix"

    @property
    def postfix_state(self) -> Path:
        """Postfix's caches worth keeping across restarts (postscreen's verdicts)."""
        return self.data_dir / "postfix"

    @property
    def found_addresses(self) -> Path:
        """The public addresses the boot found (PUBLIC_ADDRESS_DISCOVERY), kept for the next boot
        should discovery fail then."""
        return self.data_dir / "found-addresses.json"

    @property
    def page_token(self) -> Path:
        """The records page's secret: its link is https://MAIL_HOSTNAME/<token> (0600)."""
        return self.data_dir / "page-token"

    @property
    def alerts_state(self) -> Path:
        """Which conditions the alert mails are about are bad since when, and when each was last
        mailed (the volume: a restart must not repeat an alert, nor forget a recovery)."""
        return self.data_dir / "alerts.json"

    # --- rendered configuration ---
    def config(self, relative: str) -> Path:
        """Where a rendered file lands: `postfix/main.cf` -> /etc/postfix/main.cf."""
        return self.config_root / "etc" / relative

    @property
    def validated_mark(self) -> Path:
        """Fingerprint of the last rendered set the daemons accepted (container, not volume)."""
        return self.config_root / "var" / "lib" / "mailboot" / "validated"

    @property
    def warm_start_plan(self) -> Path:
        """What the last full boot read and made, for a restart with nothing changed (container,
        not volume: `warmstart`)."""
        return self.config_root / WARM_START_PLAN

    # --- runtime ---
    @property
    def syslog_socket(self) -> Path:
        return self.run_dir / "log.sock"

    @property
    def outbound_check_state(self) -> Path:
        """The last outbound port-25 check, as JSON (for `mailboot status`)."""
        return self.run_dir / "outbound-port25.json"

    @property
    def reputation_state(self) -> Path:
        """The last blocklist check of our own addresses and domains, as JSON (for `mailboot
        status`)."""
        return self.run_dir / "reputation.json"

    @property
    def ipv6_confirmed(self) -> Path:
        """The IPv6 address whose PTR the worker confirmed (forward-confirmed reverse DNS):
        Postfix's SMTP client uses IPv6 only while it names PUBLIC_IPV6."""
        return self.run_dir / "ipv6-confirmed"

    @property
    def postfix_log_counts(self) -> Path:
        """Recipients Postfix logged as delivered, deferred, bounced, and its refusals, since
        the start, as JSON: the supervisor counts them with metrics on (`maillog`)."""
        return self.run_dir / "postfix-log-counts.json"

    @property
    def worker_problems(self) -> Path:
        """The worker's last warnings and errors, as JSON (for `mailboot status`)."""
        return self.run_dir / "worker-problems.json"

    @property
    def worker_state(self) -> Path:
        """What the worker's runs remember between them (retry state, what was said, the next
        due time), as JSON; the supervisor reads when to run it next."""
        return self.run_dir / "worker-state.json"

    @property
    def page_state(self) -> Path:
        """What the records page shows from the worker's last run (the DNS findings, the
        queue), as JSON: the worker writes it, the HTTP child reads it."""
        return self.run_dir / "records-page.json"

    @property
    def acme_challenges(self) -> Path:
        """HTTP-01 answers in flight, one file per token: the worker's run writes them, the
        port-80 child reads them."""
        return self.run_dir / "acme-challenges"

    @property
    def policy_state(self) -> Path:
        """What the policy process keeps across restarts (on the volume, in backups): its
        secrets, counters and caches. Owned by the user it runs as (`daemons.postfix`)."""
        return self.data_dir / "policy"

    @property
    def inbound_state(self) -> Path:
        """What the port-25 policy processes remember between them (warnings said, sessions
        seen); writable by the user they run as."""
        return self.run_dir / "inbound"
