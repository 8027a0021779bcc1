"""The import order of docs/ARCHITECTURE.md: each module imports only from layers before it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "feedprop"

LAYERS: list[set[str]] = [
    {"errors", "_text", "_files"},
    {"llm"},
    {"tracing"},
    {"propagate"},
    {"node"},
    {"sandbox", "_sandbox_worker", "_sandbox_boundary", "_sandbox_process"},
    {"bundle"},
    {"ops"},
    {"module"},
    {"report", "graph_data"},
    {"optim"},
    {"training"},
    {"tasks"},
    {"joint"},
]
OUTSIDE = {"viz", "graph_svg", "chart_svg", "run_record", "run_page", "cli", "demo", "__init__", "__main__"}


def layer_of(top: str) -> int | None:
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    return None


def runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, imported top-level feedprop module) for imports that run, i.e. not under TYPE_CHECKING."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    skip.add(id(sub))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "feedprop":
                if len(parts) > 1:
                    found.append((node.lineno, parts[1]))
                else:
                    found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "feedprop" and len(parts) > 1:
                    found.append((node.lineno, parts[1]))
    return found


def test_every_module_is_assigned_a_layer() -> None:
    unknown = []
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if top not in OUTSIDE and layer_of(top) is None:
            unknown.append(str(path.relative_to(PACKAGE)))
    assert not unknown, f"modules missing from LAYERS (add them to docs/ARCHITECTURE.md too): {unknown}"


def test_imports_respect_layers() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        top = rel.parts[0].removesuffix(".py")
        if top in OUTSIDE:
            continue
        own = layer_of(top)
        assert own is not None
        for lineno, imported in runtime_imports(ast.parse(path.read_text())):
            other = layer_of(imported)
            if other is None or other > own:
                violations.append(f"{rel}:{lineno} imports feedprop.{imported}")
    assert not violations, "imports against the layer order:\n" + "\n".join(violations)


def test_no_function_local_feedprop_imports() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("feedprop"):
                        offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, f"function-local feedprop imports: {offenders}"
