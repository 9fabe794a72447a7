"""The shape of the package, kept by tests: no import cycles, daemons that don't know each other,
and every template owned by exactly one daemon (adding a daemon = its module, its templates,
one entry in `registry.DAEMONS`)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from mailboot.daemons import registry

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mailboot"
DAEMON_MODULES = {"mailboot.daemons.postfix", "mailboot.daemons.dovecot",
                  "mailboot.daemons.opendkim"}
# What a daemon's module may build on: the ground floor, never the rooms above it.
GROUND_FLOOR = {"mailboot.base.programs", "mailboot.base.errors", "mailboot.base.files", "mailboot.base.paths",
                "mailboot.base.users", "mailboot.daemons", "mailboot.daemons.daemon", "mailboot.dkim.keys",
                "mailboot.settings.table"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every mailboot module `path` imports, at any depth of the file (local imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(path, known) - {name} for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a path of module names, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:  # on the current path: back to where it started
                return [*stack[stack.index(target):], target]
            if state.get(target, 0) == 0 and target in edges:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if state.get(node, 0) == 0:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def without_packages(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ is documentation here; importing a submodule runs it, which is no
    dependency of the importer on the package's other modules."""
    packages = {name for name, path in modules().items() if path.name == "__init__.py"}
    return {name: targets - packages for name, targets in edges.items()}


def test_the_package_has_no_import_cycles() -> None:
    assert find_cycle(without_packages(graph())) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"mailboot.a": {"mailboot.b"}, "mailboot.b": {"mailboot.c"},
             "mailboot.c": {"mailboot.a"}}
    assert find_cycle(edges) == ["mailboot.a", "mailboot.b", "mailboot.c", "mailboot.a"]


def test_daemon_modules_build_on_the_ground_floor_only() -> None:
    edges = graph()
    for name in DAEMON_MODULES:
        assert edges[name] <= GROUND_FLOOR, (name, edges[name] - GROUND_FLOOR)


def test_every_daemon_module_is_in_the_list_once() -> None:
    names = [daemon.name for daemon in registry.DAEMONS]
    assert len(names) == len(set(names))
    listed = {f"mailboot.daemons.{name}" for name in names}
    assert listed >= DAEMON_MODULES


def test_every_template_belongs_to_exactly_one_daemon() -> None:
    on_disk = {str(path.relative_to(ROOT / "templates")) for path in
               (ROOT / "templates").rglob("*") if path.is_file()}
    claimed = [name for daemon in registry.DAEMONS for name in daemon.templates]
    assert sorted(claimed) == sorted(on_disk)
    assert registry.secret_templates() <= set(claimed)


def test_the_supervisor_imports_nothing_heavy() -> None:
    """It lives as long as the container: the daemons' modules it imports must stay light (the
    settings, cryptography, jinja2, dnspython and the ACME client are the boot's business)."""
    probe = ("import sys, mailboot.daemons.supervisor; print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.split())
    heavy = {"mailboot.settings.table", "idna", "cryptography", "jinja2", "dns", "acme", "requests",
             "spf", "ssl", "_ssl", "asyncio", "mailboot.worker.tasks", "mailboot.web.server",
             "_hashlib"}  # OpenSSL's hash library: 5 MiB resident
    assert not heavy & loaded


def test_the_warm_start_imports_neither_the_command_line_nor_the_boots_libraries() -> None:
    """A restart with nothing changed reaches the daemons without what the full boot imports
    (its stages run beside them, in a child that imports them there)."""
    probe = ("import sys, mailboot.boot.warmstart, mailboot.boot.datadir, mailboot.boot.process, "
             "mailboot.daemons.registry; print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.split())
    assert not {"mailboot.cli.main", "mailboot.boot.stages", "cryptography", "jinja2", "dns",
                "acme"} & loaded


def test_the_port_25_policy_process_imports_no_tls_stack_or_templates() -> None:
    """Postfix starts one per smtpd that asks: it needs dnspython, not the rest."""
    probe = "import sys, mailboot.inbound.service; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.split())
    assert not {"cryptography", "jinja2", "acme", "requests", "mailboot.settings.table"} & loaded


def declared_dependencies() -> set[str]:
    """Distribution names in pyproject.toml's [project] dependencies, normalised (PEP 503)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0].lower().replace("_", "-")
            for spec in project["dependencies"]}


def third_party_imports() -> set[str]:
    """Top-level names of every module the package imports that is neither ours nor stdlib."""
    names: set[str] = set()
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return {name for name in names
            if name != "mailboot" and name not in sys.stdlib_module_names}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """A module we import must be installed by `pip install .`, not by luck (requests was)."""
    providers = importlib.metadata.packages_distributions()
    declared = declared_dependencies()
    undeclared = {name: providers.get(name) for name in third_party_imports()
                  if not {d.lower() for d in providers.get(name, [])} & declared}
    assert not undeclared
