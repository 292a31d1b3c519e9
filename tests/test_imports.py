"""The package's import graph: no cycles, and lower layers never import higher ones.

Every import counts, also one inside a function (a deferred import hides a cycle from Python,
not from the design)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dynscale"

# Layer of each top-level part of the package: a module may import its own layer and those below.
LAYERS = {
    "errors": 0, "files": 0, "profiles": 0, "progress": 0, "schema": 0, "registry": 0,
    "device": 0, "parallel": 0,
    "runtime": 0,  # the deploy runtime: onnxruntime and numpy only, nothing of dynscale below it
    "layers": 1, "graph": 1,
    "models": 2, "data": 2, "cost": 2,
    "runs": 3, "train": 3, "eval": 3, "methods": 3, "command": 3, "deployable": 3,
    "export": 4,
    "idp": 5, "slimmable": 5, "adaptive": 5, "effort": 5, "dfs": 5, "convert": 5,
    "compare": 6, "reproduce": 6, "demo": 6, "experiments": 6, "deploy": 6, "report": 6,
    "cli": 7, "__main__": 7, "__init__": 7,
}


def module_name(path: Path) -> str:
    parts = ["dynscale", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    base = current.split(".") if is_package else current.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))
    return node.module or ""


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, path.name == "__init__.py", node)
            # `from .pkg import sub` imports the submodule `pkg.sub` when there is one.
            targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS["__init__"] if len(parts) == 1 else LAYERS[parts[1]]


def test_every_part_of_the_package_has_a_layer():
    assert {name.split(".")[1] for name in modules() if "." in name} <= set(LAYERS)


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_lower_layers_never_import_higher_ones():
    wrong = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
             for a, targets in graph().items() for b in targets if layer(b) > layer(a)]
    assert not wrong, "\n".join(wrong)


METHODS = ("idp", "slimmable", "adaptive", "effort", "dfs")


def test_the_core_and_the_shell_import_no_method():
    """The core (runs, train, eval, the method registry, the command toolkit), the command-line
    shell and the side-by-side report know the methods only through the registry."""
    core = ("runs", "train", "eval", "methods", "command", "cli", "report")
    wrong = [f"{a} imports {b}" for a, targets in graph().items() if a.split(".")[1:2] and a.split(".")[1] in core
             for b in targets if b.split(".")[1:2] and b.split(".")[1] in METHODS]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_cycle_and_deferred_imports(tmp_path, monkeypatch):
    package = tmp_path / "dynscale"
    (package / "layers").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "layers" / "__init__.py").write_text("def f():\n    from ..cost import x\n")
    (package / "cost.py").write_text("from .layers import y\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", package)
    assert graph()["dynscale.layers"] == {"dynscale.cost"} and graph()["dynscale.cost"] == {"dynscale.layers"}
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_the_import_graph_has_no_cycle()
