"""The house's rules, read from the code: each folder one floor of the import graph, no import going
back up, one installed namespace, no product file over about 500 lines, no cycle inside a floor.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
# Floors, lowest first: a module may import its own floor or any floor below, never one above.
FLOORS = ["hostside", "facts", "operations", "report", "image", "cli", "deploy"]
FOLDERS = {"hostside": ROOT / "hostside", "facts": ROOT / "facts", "operations": ROOT / "operations",
           "report": ROOT / "kvm_drivers" / "report", "image": ROOT / "kvm_drivers" / "image",
           "cli": ROOT / "kvm_drivers" / "cli"}  # fmt: skip
MAX_LINES = 530


def product_modules() -> dict[str, Path]:
    """kvm_drivers.* module name -> file, for every product module."""
    out = {}
    for floor, folder in FOLDERS.items():
        for f in folder.glob("*.py"):
            out[f"kvm_drivers.{floor}" + ("" if f.stem == "__init__" else f".{f.stem}")] = f
    out["kvm_drivers.deploy"] = ROOT / "kvm_drivers" / "deploy.py"
    return out


def floor_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "kvm_drivers" and len(parts) > 1 and parts[1] in FLOORS else None


def imports(path: Path) -> set[str]:
    """Every kvm_drivers module a file imports (at any depth of the code: lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("kvm_drivers")}


def test_no_import_goes_back_up_a_floor():
    modules = product_modules()
    assert len(modules) > 20
    up = []
    for name, path in modules.items():
        mine = FLOORS.index(floor_of(name))
        for target in imports(path):
            theirs = floor_of(target)
            if theirs is not None and FLOORS.index(theirs) > mine:
                up.append(f"{name} imports {target}")
    assert up == []


def test_no_import_cycle_inside_a_floor():
    modules = product_modules()
    graph = {n: {t for t in imports(p) if t in modules and t != n} for n, p in modules.items()}
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for t in graph[n]:
            assert state.get(t) != 1, " -> ".join([*path, n, t])
            if t not in state:
                visit(t, [*path, n])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [])


def test_only_the_namespace_is_imported_never_the_top_level_folders():
    for path in [*product_modules().values(), *ROOT.glob("tests/**/*.py"), *ROOT.glob("deploys/*.py"),
                 *ROOT.glob("bench/*.py")]:  # fmt: skip
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                assert name.split(".")[0] not in ("facts", "operations", "hostside", "deploys"), (path, name)


def test_no_product_file_is_over_about_500_lines():
    files = [*product_modules().values(), *FOLDERS["hostside"].glob("*.sh")]
    long = {str(f.relative_to(ROOT)): n for f in files if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}
