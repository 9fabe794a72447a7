"""The Kubernetes manifests in deploy/kubernetes, rendered by `kubectl kustomize` as a user's
`kubectl apply -k` would, for the offline test and the container test of their security context.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("acme", "cert-manager")

Manifest = dict[str, Any]


def render(directory: Path) -> list[Manifest]:
    """Every object `kubectl kustomize` makes of `directory` (Debian's kubectl in CI)."""
    kubectl = require_tool("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


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
