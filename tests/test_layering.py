"""The import order of docs/ARCHITECTURE.md: each module imports only from layers before it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "feedprop"

LAYERS: list[set[str]] = [
    {"errors", "_text", "_files"},
    {"tracing"},
    {"propagate"},
    {"node"},
    {"llm"},
    {"textual_gradient"},
    {"sandbox"},
    {"bundle"},
    {"tool"},
    {"ops"},
    {"agent"},
    {"export"},
    {"module"},
    {"report", "graph_data"},
    {"optim"},
    {"tracking"},
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


def test_values_tracing_and_backward_load_no_llm() -> None:
    """``import feedprop.node`` loads only the layers below it: no LLM module.

    The package's ``__init__`` imports the whole public surface, so the child process registers
    the package without running it and imports ``feedprop.node`` by itself.
    """
    code = (
        "import sys, types\n"
        "package = types.ModuleType('feedprop')\n"
        f"package.__path__ = [{str(PACKAGE)!r}]\n"
        "sys.modules['feedprop'] = package\n"
        "import feedprop.node\n"
        "print(' '.join(sorted(name for name in sys.modules if name.startswith('feedprop'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(result.stdout.split())
    assert "feedprop.node" in loaded
    assert not [name for name in loaded if name == "feedprop.llm" or name.startswith("feedprop.llm.")], loaded
    assert loaded <= {
        "feedprop",
        "feedprop.errors",
        "feedprop._text",
        "feedprop._files",
        "feedprop.tracing",
        "feedprop.propagate",
        "feedprop.node",
    }, loaded


#: Inside each package, the import order of its modules: a module imports only modules before it
#: in its package's list (``__init__`` re-exports and may import any).
PACKAGE_LAYERS: dict[str, list[str]] = {
    "llm": [
        "retry", "limit", "usage", "home", "tool_calls", "cache", "model_file", "replay", "base", "tool_reply",
        "tokens", "openai_compatible", "local", "pool", "mock", "default_llm", "spec",
    ],
    "sandbox": [
        "worker", "harness", "failure", "namespaces", "boundary", "process", "executor", "pool",
        "sandbox_executor", "unit_tests", "default",
    ],
    "optim": [
        "keys", "templates", "replies", "fitting", "validate", "memory", "optimizer", "bootstrap",
        "conversation", "compose", "reflect", "opro", "tgd", "optoprime", "hindsight", "recommended",
    ],
    "tracking": ["tracker", "mlflow", "hook"],
    "training": [
        "summary", "budget", "data", "checkpoint", "events", "answers", "event_loop", "progress",
        "config", "result", "schedule", "guide", "evaluation", "unit_test", "judge", "bookkeeping",
        "screening", "wire", "search", "distributed", "run_files", "run", "trainer",
    ],
    "tasks": ["data", "task", "gsm8k", "code", "bbh", "mmlu", "game24", "registry"],
    "joint": [
        "_deps", "gguf_adapter", "torch_model", "sft", "finetune", "soft_prompt", "student", "traces",
        "strategy", "summary",
    ],
}  # fmt: skip


def package_imports(tree: ast.Module, package: str) -> list[tuple[int, str]]:
    """(line, module of ``package``) for each runtime import of a sibling module."""
    found = []
    for lineno, module, names in _runtime_import_froms(tree):
        parts = module.split(".")
        if parts[:2] == ["feedprop", package] and len(parts) > 2:
            found.append((lineno, parts[2]))
        elif parts == ["feedprop", package]:
            found.extend((lineno, name) for name in names if name in PACKAGE_LAYERS[package])
    return found


def _runtime_import_froms(tree: ast.Module) -> list[tuple[int, str, list[str]]]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skip.update(id(sub) for sub in ast.walk(inner))
    return [
        (node.lineno, node.module, [alias.name for alias in node.names])
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and id(node) not in skip
    ]


def test_every_package_module_has_a_place_in_its_package_order() -> None:
    for package, order in PACKAGE_LAYERS.items():
        present = {p.stem for p in (PACKAGE / package).glob("*.py") if p.stem != "__init__"}
        assert present == set(order), (
            f"feedprop.{package}: modules missing from PACKAGE_LAYERS {sorted(present - set(order))}, "
            f"listed but absent {sorted(set(order) - present)}"
        )
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(PACKAGE_LAYERS), f"packages without an order: {sorted(packages - set(PACKAGE_LAYERS))}"


def test_imports_inside_packages_respect_their_order() -> None:
    violations = []
    for package, order in PACKAGE_LAYERS.items():
        for module in order:
            path = PACKAGE / package / f"{module}.py"
            for lineno, imported in package_imports(ast.parse(path.read_text()), package):
                if imported not in order or order.index(imported) >= order.index(module):
                    violations.append(f"{package}/{module}.py:{lineno} imports feedprop.{package}.{imported}")
    assert not violations, "imports against the package order:\n" + "\n".join(violations)


def test_the_package_order_check_can_fail() -> None:
    tree = ast.parse("from feedprop.training.trainer import train\nfrom feedprop.training import guide\n")
    assert package_imports(tree, "training") == [(1, "trainer"), (2, "guide")]
