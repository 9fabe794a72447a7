"""Every filesystem location mailboot uses, derived from DATA_DIR so tests can re-root them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    """Locations of all state below DATA_DIR."""

    data_dir: Path

    @property
    def dkim_dir(self) -> Path:
        return self.data_dir / "dkim"

    def dkim_domain_dir(self, domain: str) -> Path:
        """Directory holding every DKIM key of one (ASCII) domain, one file per selector."""
        return self.dkim_dir / domain
