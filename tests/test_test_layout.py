"""The tests' own layout: a test module imports helpers, never another test module.

A test module imported by another has its tests and fixtures collected twice over, runs its
module-level setup in the importer's process and order (pytest-xdist's groups don't see it), and
hides a helper where nobody looks for one: what tests share lives in modules whose names do not
start with `test_` (tests/polling.py, tests/container/clients.py, tests/container/worlds.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def imported_modules(source: str, module: str) -> set[str]:
    """Every module the code `source` of the dotted `module` imports, relative imports made
    absolute; for `from a import b` both `a` and `a.b` (b may be a module)."""
    package = module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*parts, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def is_test_module(name: str) -> bool:
    return name.split(".")[0] == "tests" and name.rsplit(".", 1)[-1].startswith("test_")


def test_no_test_module_imports_another_test_module() -> None:
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 50  # the walk found the suite
    offenders = {}
    for path in modules:
        module = ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)
        imported = sorted(filter(is_test_module, imported_modules(path.read_text(), module)))
        if imported:
            offenders[module] = imported
    assert offenders == {}, f"move what they share into a helper module: {offenders}"


@pytest.mark.parametrize(("source", "found"), [
    ("import tests.container.test_acme", {"tests.container.test_acme"}),
    ("from tests.container import test_acme", {"tests.container.test_acme"}),
    ("from tests.test_worker import World", {"tests.test_worker"}),
    ("from .test_selftest import txt", {"tests.container.test_selftest"}),
    ("from . import test_selftest", {"tests.container.test_selftest"}),
    ("from ..test_worker import HOST", {"tests.test_worker"}),
    ("from tests.container.clients import our_verdicts", set()),
    ("import pytest_xdist_test_helper", set()),
])
def test_the_check_sees_every_form_of_import(source: str, found: set[str]) -> None:
    imported = imported_modules(source, "tests.container.test_sample")
    assert set(filter(is_test_module, imported)) == found
