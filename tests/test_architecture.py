"""The shape of the package, kept by tests: packages on floors that import only downwards, no
import cycles, `__init__` files that only document, import budgets for every process entry
point, daemons that know only the ground floor, and every template owned by exactly one daemon
(adding a daemon = its module, its templates, one entry in `registry.DAEMONS`)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mailboot.daemons import registry

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mailboot"

# The floors, from the ground up: a package imports only from floors below its own (README, "How
# it is built"). `render` is a module of its own floor; `__main__` and the `health` shim are
# process entry points above everything they start.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("base",), ("settings",), ("dns",),
    ("standards", "dkim", "mailboxes", "backup", "network"),
    ("tls", "daemons", "inbound", "outbound", "logins"), ("web", "policy"), ("acme",),
    ("render",), ("records",), ("rotation",), ("diagnose",), ("worker", "boot"), ("cli",),
    ("__main__", "health"),
)
FLOOR = {package: level for level, packages in enumerate(FLOORS) for package in packages}
# What a daemon's module may build on: the ground floor, never the rooms above it.
DAEMON_GROUND = ("mailboot.base.", "mailboot.settings.table", "mailboot.daemons.daemon")


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


def package_of(module: str) -> str:
    """`mailboot.records.build` -> `records`; `mailboot.render` -> `render`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every (importer, imported) pair that goes up or sideways between packages."""
    found = []
    for importer, targets in edges.items():
        home = package_of(importer)
        for target in targets:
            there = package_of(target)
            if not home or not there or there == home:
                continue  # the root package (its docstring), or within one package
            if FLOOR[there] >= FLOOR[home]:
                found.append((importer, target))
    return sorted(found)


def test_every_package_has_a_floor() -> None:
    packages = {package_of(name) for name in modules()} - {""}
    assert packages == set(FLOOR), "give each package a floor (and README its line)"


def test_packages_import_only_from_floors_below() -> None:
    assert upward_imports(without_packages(graph())) == []


def test_the_floor_check_catches_an_import_upwards_or_sideways() -> None:
    edges = {"mailboot.base.paths": {"mailboot.settings.table"},  # up
             "mailboot.tls.dane": {"mailboot.inbound.decide"},  # sideways, same floor
             "mailboot.records.build": {"mailboot.dns.names", "mailboot.records.doctor"}}
    assert upward_imports(edges) == [("mailboot.base.paths", "mailboot.settings.table"),
                                     ("mailboot.tls.dane", "mailboot.inbound.decide")]


def docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return (len(body) == 1 and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str))


def test_every_sub_package_init_is_only_a_docstring_that_names_its_modules() -> None:
    """A package import runs its __init__: an import there would break the entry points' budgets.
    The docstring is the room's map: it names every module in the room."""
    for init in PACKAGE.glob("*/__init__.py"):
        assert docstring_only(init), f"{init.relative_to(ROOT)}: only a docstring"
        docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
        for module in init.parent.glob("*.py"):
            if module.stem not in ("__init__", "__main__"):
                assert f"`{module.stem}`" in docstring, f"{init.relative_to(ROOT)}: `{module.stem}`"


def test_the_root_init_holds_only_its_map_and_the_version() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assert docstring_only(PACKAGE / "__init__.py") is False  # the map, then __version__
    assert [type(node).__name__ for node in tree.body] == ["Expr", "Assign"]
    docstring = ast.get_docstring(tree) or ""
    for package in FLOOR:
        if package not in ("__main__",):
            assert f"`{package}`" in docstring, package


INFRASTRUCTURE = {"__init__", "daemon", "on_demand", "registry", "supervisor"}


def daemon_modules() -> set[str]:
    """Every module of daemons/ but the infrastructure: one per daemon program family."""
    return {f"mailboot.daemons.{path.stem}" for path in (PACKAGE / "daemons").glob("*.py")
            if path.stem not in INFRASTRUCTURE}


def test_daemon_modules_build_on_the_ground_floor_only() -> None:
    edges = graph()
    assert len(daemon_modules()) >= 5
    for name in daemon_modules():
        beyond = {target for target in edges[name]
                  if not target.startswith(DAEMON_GROUND) and target != "mailboot.daemons"}
        assert not beyond, (name, beyond)


def test_daemon_modules_never_import_each_other() -> None:
    edges = graph()
    for name in daemon_modules():
        assert not edges[name] & (daemon_modules() - {name}), name


def test_every_daemon_module_is_in_the_list_once() -> None:
    names = [daemon.name for daemon in registry.DAEMONS]
    assert len(names) == len(set(names))
    # Each daemon module gives the list at least one daemon (its functions say where from).
    givers = {function.__module__ for daemon in registry.DAEMONS
              for function in (daemon.context, daemon.check, daemon.prepare, daemon.reload)
              if function.__module__ != "mailboot.daemons.daemon"}
    assert givers == daemon_modules()


def test_every_template_belongs_to_exactly_one_daemon() -> None:
    on_disk = {str(path.relative_to(ROOT / "templates")) for path in
               (ROOT / "templates").rglob("*") if path.is_file()}
    claimed = [name for daemon in registry.DAEMONS for name in daemon.templates]
    assert sorted(claimed) == sorted(on_disk)
    assert registry.secret_templates() <= set(claimed)


HEAVY = {"cryptography", "jinja2", "dns", "acme", "josepy", "requests", "spf", "dkim", "idna"}
# Each process entry point, and what it must never load. The resident ones (the supervisor) and
# the ones started per connection or per restart pay for every import in memory or latency.
BUDGETS: dict[str, set[str]] = {
    # Lives as long as the container: the settings, TLS, templates and DNS are the boot's.
    "mailboot.daemons.supervisor": HEAVY | {"mailboot.settings.table", "ssl", "_ssl", "asyncio",
                                            "mailboot.worker.tasks", "mailboot.web.server",
                                            "_hashlib",  # OpenSSL's hashes: 5 MiB resident
                                            # its options are read by hand; the log counting
                                            # (and shutil, bz2, lzma) only with METRICS_PORT
                                            "argparse", "gettext", "shutil", "typing",
                                            "mailboot.base.maillog"},
    # Every 20 s (HEALTHCHECK, probes).
    "mailboot.health": HEAVY | {"mailboot.settings.table", "asyncio", "mailboot.cli.main"},
    # Started by Postfix's smtpd on demand: dnspython and pyspf yes (its job), the rest no.
    "mailboot.policy.service": HEAVY - {"dns", "idna", "spf"} | {"mailboot.settings.table"},
    # Started by Postfix's pipe per report message: dnspython only once a report has rows.
    "mailboot.inbound.reports": HEAVY | {"mailboot.settings.table", "ssl", "asyncio"},
    # Started per connection burst on 80/443: TLS yes, the ACME client and the DNS no.
    "mailboot.web.child": {"jinja2", "dns", "acme", "josepy", "requests", "spf", "dkim",
                           "mailboot.records.build", "mailboot.cli.main"},
    # Started when a scraper connects to METRICS_PORT: reads state files, never the ACME
    # client, the templates or the DNS (cryptography only once a scrape reads a certificate).
    "mailboot.diagnose.metrics_child": {"jinja2", "dns", "acme", "josepy", "requests", "spf",
                                        "dkim", "cryptography", "mailboot.records.build",
                                        "mailboot.cli.main", "mailboot.worker.tasks"},
    # A restart with nothing changed: none of the full boot's libraries before the daemons.
    "mailboot.boot.run": HEAVY | {"mailboot.cli.main", "mailboot.boot.stages",
                                  "mailboot.settings.table"},
}


def loaded_by(module: str) -> set[str]:
    probe = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    return set(subprocess.run([sys.executable, "-P", "-c", probe], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.split())


@pytest.mark.parametrize("entry_point", sorted(BUDGETS))
def test_each_process_entry_point_stays_within_its_import_budget(entry_point: str) -> None:
    loaded = loaded_by(entry_point)
    assert entry_point in loaded
    assert not BUDGETS[entry_point] & loaded, sorted(BUDGETS[entry_point] & loaded)


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


def readme_floors() -> dict[str, int]:
    """The package map in README.md's "How it is built": package -> floor number."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## How it is built", 1)[1].split("\n## ", 1)[0]
    floors: dict[str, int] = {}
    for number, packages in re.findall(r"^\| (\d+) \| ([^|]+) \|", section, re.MULTILINE):
        for package in re.findall(r"`(\w+)`", packages):
            floors[package] = int(number)
    return floors


def test_the_readme_map_is_the_layout() -> None:
    """Each package on the floor the README gives it (README counts floors from 1)."""
    expected = {package: level + 1 for package, level in FLOOR.items()
                if package not in ("__main__", "health")}
    assert readme_floors() == expected
