"""The house's floor plan, checked on every import of every module of the package.

docs/development.md draws the same plan. The rules:

1. The pure core imports no I/O library and nothing above its floor. Floors, lowest first:
   ``tierwise`` (package constants) and ``tierwise.decimals``; ``pricing``; ``routerconfig``;
   ``api``; ``render``. A package's ``command`` module is its CLI edge: it may use any floor
   of the core (``tierwise estimate`` reads manifests), still without I/O libraries.
2. ``router`` and ``controller`` never import each other.
3. ``evals`` uses the router's engine, never its HTTP server or process.
4. No import circle between modules of one package (imports under ``if TYPE_CHECKING:``
   never run and do not count).
5. Product code never imports the test harness (``tests/harness``, imported as ``harness``).

Each rule is a function from a module map to violations, so the tests below also show each
rule catching a deliberate bad import in a synthetic package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "tierwise"

CORE_FLOORS: dict[str, int] = {
    "tierwise": 0,
    "tierwise.decimals": 0,
    "tierwise.pricing": 1,
    "tierwise.routerconfig": 2,
    "tierwise.api": 3,
    "tierwise.render": 4,
}
IO_LIBRARIES = (
    "kubernetes",
    "kopf",
    "aiohttp",
    "redis",
    "anthropic",
    "prometheus_client",
    "httpx",
    "requests",
    "urllib3",
    "socket",
    "http",
    "urllib.request",
    "subprocess",
)
HARNESS = ("harness", "tierwise.localcluster")
ROUTER_SERVER = (
    "tierwise.router.server",
    "tierwise.router.command",
    "tierwise.router.runner",
    "tierwise.router.reload",
)


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. tierwise.router.engine
    imports: frozenset[str]  # every imported dotted name (and name.attr for from-imports)
    runtime_imports: frozenset[str]  # the same, minus those under `if TYPE_CHECKING:`


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def parse_module(name: str, source: str, is_package: bool = False) -> Module:
    tree = ast.parse(source)
    skipped = _type_checking_nodes(tree)
    every: set[str] = set()
    runtime: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        every.update(names)
        if id(node) not in skipped:
            runtime.update(names)
    return Module(name, frozenset(every), frozenset(runtime))


def load_package(root: Path) -> dict[str, Module]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        modules[name] = parse_module(name, path.read_text(), is_package)
    return modules


def _within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _package_of(name: str) -> str:
    return ".".join(name.split(".")[:2])


def _floor(name: str) -> int | None:
    """The core floor a dotted name lives on, or None outside the core."""
    second = name.split(".")[1] if "." in name else None
    if second is None or not _is_submodule(second):
        return 0  # the package itself, or a constant it defines (``from tierwise import GROUP``)
    return CORE_FLOORS.get(_package_of(name))


def _is_submodule(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def _is_command(name: str) -> bool:
    return name.endswith(".command")


def core_violations(modules: Mapping[str, Module]) -> list[str]:
    found = []
    for module in modules.values():
        floor = _floor(module.name)
        if floor is None:
            continue
        for imported in sorted(module.imports):
            if _within(imported, IO_LIBRARIES):
                found.append(f"{module.name} (core) imports the I/O library {imported}")
            elif imported.startswith("tierwise"):
                target = _floor(imported)
                if target is None:
                    found.append(f"{module.name} (core) imports {imported}, above the core")
                elif target > floor and not _is_command(module.name):
                    found.append(
                        f"{module.name} (floor {floor}) imports {imported} (floor {target})"
                    )
    return found


def router_controller_violations(modules: Mapping[str, Module]) -> list[str]:
    pairs = (("tierwise.router", "tierwise.controller"), ("tierwise.controller", "tierwise.router"))
    return [
        f"{module.name} imports {imported}"
        for source, target in pairs
        for module in modules.values()
        if _within(module.name, [source])
        for imported in sorted(module.imports)
        if _within(imported, [target])
    ]


def evals_violations(modules: Mapping[str, Module]) -> list[str]:
    return [
        f"{module.name} imports the router's server module {imported}"
        for module in modules.values()
        if _within(module.name, ["tierwise.evals"])
        for imported in sorted(module.imports)
        if _within(imported, ROUTER_SERVER)
    ]


def harness_violations(modules: Mapping[str, Module]) -> list[str]:
    return [
        f"{module.name} imports the test harness ({imported})"
        for module in modules.values()
        for imported in sorted(module.imports)
        if _within(imported, HARNESS)
    ]


def import_circles(modules: Mapping[str, Module]) -> list[list[str]]:
    """Strongly connected groups of modules of one package (runtime imports only)."""
    graph = {
        name: sorted(
            {
                target
                for target in modules
                if target != name
                and target != _package_of(name)  # a package's __init__ re-exports its modules
                and _package_of(target) == _package_of(name)
                and target in module.runtime_imports
            }
        )
        for name, module in modules.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return circles


# --- the tree ---------------------------------------------------------------------------

TREE = load_package(PACKAGE)


def test_the_tree_has_the_modules_the_rules_name():
    # A rule over names that no longer exist would pass vacuously.
    for name in [*CORE_FLOORS, *ROUTER_SERVER, "tierwise.router.engine", "tierwise.controller"]:
        assert name in TREE, name


def test_the_pure_core_imports_no_io_and_nothing_above_its_floor():
    assert core_violations(TREE) == []


def test_router_and_controller_never_import_each_other():
    assert router_controller_violations(TREE) == []


def test_evals_use_the_router_engine_not_its_server():
    assert evals_violations(TREE) == []
    assert any("tierwise.router.engine" in m.imports for n, m in TREE.items() if "evals" in n)


def test_no_import_circles_within_a_package():
    assert import_circles(TREE) == []


def test_no_product_module_imports_the_harness():
    assert harness_violations(TREE) == []


def test_the_harness_is_not_in_the_package():
    assert not (PACKAGE / "localcluster").exists()
    assert (PACKAGE.parents[1] / "tests" / "harness" / "podrunner.py").is_file()


# --- each rule catches a deliberate bad import --------------------------------------------


def synthetic(**sources: str) -> dict[str, Module]:
    return {
        name.replace("__", "."): parse_module(name.replace("__", "."), source)
        for name, source in sources.items()
    }


def test_a_core_module_importing_kopf_or_a_higher_floor_is_caught():
    bad = synthetic(
        tierwise__pricing__model="import kopf\nfrom tierwise.api import Resource\n",
        tierwise__pricing__command="from tierwise.api import load_manifests\n",
    )
    assert core_violations(bad) == [
        "tierwise.pricing.model (core) imports the I/O library kopf",
        "tierwise.pricing.model (floor 1) imports tierwise.api (floor 3)",
        "tierwise.pricing.model (floor 1) imports tierwise.api.Resource (floor 3)",
    ]


def test_a_core_module_importing_the_router_is_caught():
    bad = synthetic(tierwise__render__document="from tierwise.router.engine import RunResult\n")
    assert core_violations(bad)[0].endswith("above the core")


def test_the_router_importing_the_controller_is_caught():
    bad = synthetic(tierwise__router__server="from tierwise.controller import kube\n")
    assert router_controller_violations(bad) == [
        "tierwise.router.server imports tierwise.controller",
        "tierwise.router.server imports tierwise.controller.kube",
    ]


def test_evals_importing_the_router_server_is_caught():
    bad = synthetic(tierwise__evals__runner="from tierwise.router.server import build_app\n")
    assert evals_violations(bad)


def test_an_import_circle_is_caught_but_a_type_only_import_is_not():
    bad = synthetic(
        tierwise__controller__rollout="from tierwise.controller.runtime import reconciler_of\n",
        tierwise__controller__runtime="from tierwise.controller import sync\n",
        tierwise__controller__sync="from tierwise.controller.rollout import FIELDS\n",
        tierwise__emulator__admin=(
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from tierwise.emulator.server import Emulator\n"
        ),
        tierwise__emulator__server="from tierwise.emulator.admin import add_admin_routes\n",
    )
    assert import_circles(bad) == [
        ["tierwise.controller.rollout", "tierwise.controller.runtime", "tierwise.controller.sync"]
    ]


def test_product_code_importing_the_harness_is_caught():
    bad = synthetic(tierwise__evals__local="from harness.podrunner import PodRunner\n")
    assert harness_violations(bad) == [
        "tierwise.evals.local imports the test harness (harness.podrunner)",
        "tierwise.evals.local imports the test harness (harness.podrunner.PodRunner)",
    ]
