"""Every filesystem location mailboot uses.

State lives below DATA_DIR (the one volume); rendered configuration lives below a config root
(`/` in the container) and runtime files below a run directory. Tests re-root all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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

    @property
    def accounts_dir(self) -> Path:
        return self.data_dir / "accounts"

    @property
    def passwd_file(self) -> Path:
        """The accounts in Dovecot's passwd-file format: Dovecot authenticates against it."""
        return self.accounts_dir / "passwd"

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

    # --- rendered configuration ---
    def config(self, relative: str) -> Path:
        """Where a rendered file lands: `postfix/main.cf` -> /etc/postfix/main.cf."""
        return self.config_root / "etc" / relative

    @property
    def validated_mark(self) -> Path:
        """Fingerprint of the last rendered set the daemons accepted (container, not volume)."""
        return self.config_root / "var" / "lib" / "mailboot" / "validated"

    # --- runtime ---
    @property
    def syslog_socket(self) -> Path:
        return self.run_dir / "log.sock"
