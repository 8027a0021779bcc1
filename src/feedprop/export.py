"""Export: a model's source rewritten as plain Python, its learned code inlined and its learned values as literals.

:func:`plain_python` reads the file that defines the model's class and keeps that class and the
top-level functions, classes, constants and imports it uses (transitively). The feedprop base
class and ``@bundle`` decorators go, each trainable function becomes its learned source (marked
``LEARNED CODE``, and listed in the file's docstring), learned values become literals in
``__init__``, ``Parameter(v, ...)`` becomes ``v`` and ``x.data`` becomes ``x``.

What the model learned reaches this module as a :class:`Learned`, which
:func:`feedprop.module.export_source` gathers; so this module sits below :mod:`feedprop.module`,
whose ``Module.export`` calls it, as :mod:`feedprop.propagate` sits below :mod:`feedprop.node`.

Example:
    >>> from feedprop.demo import CountingSolver
    >>> from feedprop.module import export_source
    >>> source = export_source(CountingSolver())
    >>> "class CountingSolver:" in source and "Module" not in source
    True
"""

from __future__ import annotations

import ast
import copy
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from feedprop.bundle import Bundle
from feedprop.errors import InvalidInputError
from feedprop.node import Parameter

__all__ = ["Learned", "plain_python"]

_WRAPPERS = {"Parameter", "Node", "Demos"}  # calls replaced by their first argument in exported code

_LEARNED_MARK = "__exported_learned_code_mark__"
_LEARNED_COMMENT = (
    "# LEARNED CODE: written by an optimizer (a language model), not by a person. It ran in a sandbox\n"
    "# during training; here it runs unsandboxed, with your permissions. Review it before use.\n"
)


def _no_models(cls: type) -> bool:
    return False


@dataclass(frozen=True)
class Learned:
    """What a model learned, in the terms its exported source needs.

    ``code`` maps ``(class, method name)`` to the learned source of a trainable method;
    ``attributes`` are the root model's attributes (a parameter there, or a list, tuple or dict
    of parameters, becomes a literal where ``__init__`` assigns it); ``values`` are
    ``(root attribute, assignment target, value)`` for every other parameter, such as
    ``("inner", "self.inner.bias", 0.25)``; ``is_model`` says which classes are models, whose
    base class goes and whose methods take their learned code.

    Example:
        >>> Learned(values=(("bias", "self.bias", 0.25),)).values[0][1]
        'self.bias'
    """

    code: Mapping[tuple[type, str], str] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    values: Sequence[tuple[str, str, Any]] = ()
    is_model: Callable[[type], bool] = _no_models


def plain_python(root: type, learned: Learned) -> str:
    """The source of ``root``'s file rewritten as plain Python with ``learned`` in it (see the module docs).

    ``root`` must be defined at the top level of a ``.py`` file. The result is checked to compile.

    Example:
        >>> from feedprop.demo import CountingSolver
        >>> source = plain_python(CountingSolver, Learned())
        >>> "CountingSolver, exported with its learned parameters as plain Python." in source.splitlines()[0]
        True
    """
    pymod, tree = _source_tree(root)
    rewriter = _Exporter(pymod, learned)
    body = _plain_body(tree, root.__name__, rewriter)
    root_def = next(s for s in body if isinstance(s, ast.ClassDef) and s.name == root.__name__)
    _set_learned_values(root_def, learned)
    future = [s for s in tree.body if isinstance(s, ast.ImportFrom) and s.module == "__future__"]
    docstring = ast.Expr(ast.Constant(_docstring(root.__name__, rewriter.rewritten)))
    out = ast.Module(body=[docstring, *future, *body], type_ignores=[])
    source = _mark_learned(ast.unparse(ast.fix_missing_locations(out)) + "\n")
    compile(source, f"<export of {root.__name__}>", "exec")  # fail here, not in the user's hands
    return source


def _source_tree(root: type) -> tuple[ModuleType | None, ast.Module]:
    """The Python module defining ``root`` and its parsed source, or a typed error saying why not."""
    pymod = sys.modules.get(root.__module__)
    try:
        text = inspect.getsource(pymod) if pymod is not None else ""
    except (OSError, TypeError):
        text = ""
    if not text:
        raise InvalidInputError(f"cannot export {root.__qualname__}: its module's source file is not available")
    if "." in root.__qualname__:
        raise InvalidInputError(f"cannot export {root.__qualname__}: define the class at the top level of a module")
    return pymod, ast.parse(text)


def _plain_body(tree: ast.Module, root: str, rewriter: _Exporter) -> list[ast.stmt]:
    """The top-level statements ``root`` needs, transitively, rewritten; imports keep only the names used."""
    top: dict[str, ast.stmt] = {}
    for stmt in tree.body:
        for bound in _bound_names(stmt):
            top[bound] = stmt
    needed: dict[int, ast.stmt] = {}
    referenced: set[str] = set()
    todo = [root]
    while todo:
        found = top.get(todo.pop())
        if found is None or id(found) in needed:
            continue
        needed[id(found)] = found
        if not isinstance(found, ast.Import | ast.ImportFrom):
            names = _referenced_names(rewriter.transform(found))
            referenced |= names
            todo.extend(names)
    body: list[ast.stmt] = []
    for stmt in tree.body:
        if id(stmt) not in needed:
            continue
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            stmt = copy.deepcopy(stmt)
            stmt.names = [a for a in stmt.names if (a.asname or a.name).split(".")[0] in referenced]
            if not stmt.names:
                continue
        else:
            stmt = rewriter.transform(stmt)
            if isinstance(stmt, ast.FunctionDef) and stmt.name in rewriter.rewritten:
                body.append(_learned_mark())
        body.append(stmt)
    return body


def _docstring(name: str, rewritten: list[str]) -> str:
    text = f"{name}, exported with its learned parameters as plain Python."
    if rewritten:
        learned = ", ".join(sorted(set(rewritten)))
        text += (
            f"\n\nWARNING: LEARNED CODE, source that an optimizer (a language model) wrote, is in: {learned}.\n"
            "During training it ran in a sandbox; here it runs unsandboxed, with your permissions and no\n"
            "time or memory limits, as soon as it is called. Review each function marked LEARNED CODE\n"
            "before you import or run this file.\n"
        )
    return text


def _learned_mark() -> ast.stmt:
    """A placeholder statement put before a rewritten function; :func:`_mark_learned` turns it into a comment."""
    return ast.Expr(ast.Name(_LEARNED_MARK, ast.Load()))


def _mark_learned(source: str) -> str:
    lines: list[str] = []
    pending = False
    for line in source.splitlines(keepends=True):
        if line.strip() == _LEARNED_MARK:
            pending = True  # the comment goes right above the def line, after any blank lines
            continue
        if pending and line.strip():
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + comment for comment in _LEARNED_COMMENT.splitlines(keepends=True))
            pending = False
        lines.append(line)
    return "".join(lines)


def _bound_names(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [stmt.name]
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            return []
        return [(a.asname or a.name).split(".")[0] for a in stmt.names]
    if isinstance(stmt, ast.Assign):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    return []


def _referenced_names(node: ast.AST) -> set[str]:
    # Decorators and annotations count; names inside string annotations are not followed.
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class _Exporter:
    """Rewrites one top-level statement into plain Python."""

    def __init__(self, pymod: Any, learned: Learned) -> None:
        self.pymod = pymod
        self.learned = learned
        self.rewritten: list[str] = []  # functions whose code an optimizer changed, as Class.method or name

    def transform(self, stmt: ast.stmt) -> ast.stmt:
        stmt = copy.deepcopy(stmt)
        runtime = getattr(self.pymod, _bound_names(stmt)[0], None) if _bound_names(stmt) else None
        if isinstance(stmt, ast.ClassDef) and isinstance(runtime, type) and self.learned.is_model(runtime):
            self._class(stmt, runtime)
        elif isinstance(stmt, ast.FunctionDef) and isinstance(runtime, Bundle):
            stmt = self._function(stmt, runtime)
            if runtime.parameter is not None and runtime.parameter._data != runtime.source:
                self.rewritten.append(getattr(stmt, "name", runtime.name))
        return _Plain(self._from_feedprop).visit(stmt)  # type: ignore[no-any-return]

    def _from_feedprop(self, name: str) -> bool:
        """Whether the module-level ``name`` is feedprop (the package, a submodule, or one of its objects)."""
        obj = getattr(self.pymod, name, None)
        origin = getattr(obj, "__name__", "") if inspect.ismodule(obj) else getattr(obj, "__module__", "") or ""
        return isinstance(origin, str) and (origin == "feedprop" or origin.startswith("feedprop."))

    def _function(self, fn: ast.FunctionDef, bundle: Bundle) -> ast.stmt:
        if bundle.parameter is not None:
            learned = ast.parse(bundle.parameter._data).body
            defs = [s for s in learned if isinstance(s, ast.FunctionDef)]
            if defs:
                return defs[0]
        fn.decorator_list = [d for d in fn.decorator_list if not _is_bundle(d)]
        return fn

    def _class(self, cls_def: ast.ClassDef, cls: type) -> None:
        cls_def.bases = [b for b in cls_def.bases if not _names_module_base(b)]
        cls_def.keywords = []
        new_body: list[ast.stmt] = []
        for item in cls_def.body:
            if isinstance(item, ast.FunctionDef):
                learned = self.learned.code.get((cls, item.name))
                if learned is not None:
                    defs = [s for s in ast.parse(learned).body if isinstance(s, ast.FunctionDef)]
                    if defs:
                        item = defs[0]
                    original = vars(cls).get(item.name)
                    if isinstance(original, Bundle) and learned != original.source:
                        self.rewritten.append(f"{cls.__name__}.{item.name}")
                        new_body.append(_learned_mark())
                item.decorator_list = [d for d in item.decorator_list if not _is_bundle(d)]
            new_body.append(item)
        defines = {s.name for s in new_body if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)}
        if "__call__" not in defines and "forward" in defines:
            call = ast.parse("def __call__(self, *args, **kwargs):\n    return self.forward(*args, **kwargs)\n")
            new_body.append(call.body[0])
        if any(isinstance(n, ast.Attribute) and n.attr == "training" for n in ast.walk(cls_def)):
            new_body.insert(0, ast.parse("training = False").body[0])
        cls_def.body = new_body


def _is_bundle(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "bundle") or (
        isinstance(target, ast.Attribute) and target.attr == "bundle"
    )


def _names_module_base(base: ast.expr) -> bool:
    return (isinstance(base, ast.Name) and base.id == "Module") or (
        isinstance(base, ast.Attribute) and base.attr == "Module"
    )


class _Plain(ast.NodeTransformer):
    """Make one statement plain Python.

    ``Parameter(v, ...)`` / ``Node(v, ...)`` become ``v``; ``x.data`` becomes ``x`` (values are
    plain now); a call to anything from feedprop that stays (``llm_call(...)``) is followed by
    ``.data`` so that plain values flow on.
    """

    def __init__(self, from_feedprop: Callable[[str], bool]) -> None:
        self.from_feedprop = from_feedprop

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in _WRAPPERS:
            if node.args:
                return node.args[0]
            for kw in node.keywords:
                if kw.arg == "value":
                    return kw.value
            if name == "Demos":  # Demos() starts with no demonstrations
                return ast.List(elts=[], ctx=ast.Load())
        root = func
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name) and self.from_feedprop(root.id):
            return ast.Attribute(value=node, attr="data", ctx=ast.Load())
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if node.attr == "data" and isinstance(node.ctx, ast.Load):
            return node.value
        return node

    def visit_Await(self, node: ast.Await) -> ast.AST:
        # ``await allm_call(...)`` reads the value of what the await returns: ``(await allm_call(...)).data``.
        self.generic_visit(node)
        inner = node.value
        if isinstance(inner, ast.Attribute) and inner.attr == "data" and isinstance(inner.value, ast.Call):
            return ast.Attribute(value=ast.Await(value=inner.value), attr="data", ctx=ast.Load())
        return node


def _set_learned_values(cls_def: ast.ClassDef, learned: Learned) -> None:
    """Put the learned value of every parameter into the root class's ``__init__``.

    ``self.x = <Parameter>`` lines get the learned literal in place; other parameters (in
    containers, nested modules) are assigned at the end of ``__init__``.
    """
    init = next((s for s in cls_def.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"), None)
    if init is None:
        init = ast.FunctionDef(
            name="__init__",
            args=ast.arguments(posonlyargs=[], args=[ast.arg("self")], kwonlyargs=[], kw_defaults=[], defaults=[]),
            body=[],
            decorator_list=[],
            returns=None,
            type_comment=None,
        )
        cls_def.body.insert(0, init)
    inlined: set[str] = set()
    for attr, stmt in _self_assignments(init).items():
        literal = _flat_literal(learned.attributes.get(attr))
        if literal is not None:
            stmt.value = ast.parse(literal, mode="eval").body
            inlined.add(attr)
    lines = [f"{target} = {value!r}" for attr, target, value in learned.values if attr not in inlined]
    if lines:
        init.body.extend(ast.parse("\n".join(lines)).body)
    if not init.body:
        init.body.append(ast.Pass())


def _self_assignments(init: ast.FunctionDef) -> dict[str, ast.Assign]:
    """The ``self.<attr> = ...`` statements directly in ``__init__``, by attribute."""
    direct: dict[str, ast.Assign] = {}
    for stmt in init.body:
        if (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(target := stmt.targets[0], ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id == "self"
        ):
            direct[target.attr] = stmt
    return direct


def _flat_literal(value: Any) -> str | None:
    """The learned literal of a parameter, or of a list/tuple/dict made only of parameters."""
    if isinstance(value, Parameter):
        return repr(value._data)
    if isinstance(value, list | tuple) and value and all(isinstance(v, Parameter) for v in value):
        return repr(type(value)(v._data for v in value))
    if isinstance(value, dict) and value and all(isinstance(v, Parameter) for v in value.values()):
        return repr({k: v._data for k, v in value.items()})
    return None
