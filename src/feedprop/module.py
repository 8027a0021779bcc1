"""``Module``: a container of parameters with PyTorch's names, saved as JSON and exportable as plain Python.

A module's parameters are found where the user put them: in attributes, in lists, tuples and
dicts, in nested modules, and in trainable bundled methods (one code parameter per instance).
``named_parameters()`` names them by their dotted path (``"encoder.instruction"``,
``"demos.0"``, ``"extract_answer"``). Subclasses need not call ``super().__init__()``.

Example:
    >>> from feedprop.node import Parameter
    >>> class Greeter(Module):
    ...     def __init__(self):
    ...         self.greeting = Parameter("Hello", description="how to greet")
    ...         self.names = [Parameter("Ada"), Parameter("Alan")]
    ...     def forward(self, i):
    ...         return self.greeting + ", " + self.names[i]
    >>> g = Greeter()
    >>> [name for name, _ in g.named_parameters()]
    ['greeting', 'names.0', 'names.1']
    >>> g(1).data
    'Hello, Alan'
    >>> g.state_dict()
    {'greeting': 'Hello', 'names.0': 'Ada', 'names.1': 'Alan'}
"""

from __future__ import annotations

import ast
import copy
import inspect
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from feedprop.bundle import CODE_ATTRIBUTE, Bundle
from feedprop.errors import CheckpointError, InvalidInputError, StateDictError
from feedprop.node import Parameter, run_forward

__all__ = ["IncompatibleKeys", "Module", "export_source"]

#: The ``format`` field of a saved module.
SAVE_FORMAT = "feedprop.module/1"

# One step of the path from a module to a parameter: ("attr", name), ("index", i) or ("key", k).
Step = tuple[str, Any]


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` could not match: unpacks as ``(missing, unexpected)``."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of trainable workflows. Override :meth:`forward`; call the module to run it.

    Example:
        >>> from feedprop.node import Parameter
        >>> class Scale(Module):
        ...     def __init__(self):
        ...         self.w = Parameter(2.0)
        ...     def forward(self, x):
        ...         return self.w * x
        >>> m = Scale()
        >>> m(3).data, [n for n, _ in m.named_parameters()], m.training
        (6.0, ['w'], True)
    """

    training: bool

    def __new__(cls, *args: Any, **kwargs: Any) -> Module:
        # State the base class needs is set here, so subclasses need not call super().__init__().
        obj = super().__new__(cls)
        object.__setattr__(obj, "training", True)
        return obj

    def __setattr__(self, name: str, value: Any) -> None:
        _adopt_names(name, value)
        object.__setattr__(self, name, value)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation. Subclasses override this."""
        raise NotImplementedError(f"{type(self).__name__} must define forward(self, ...) to be called")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run :meth:`forward` as one traced forward call: branching on a value read in it is traced
        (:func:`feedprop.node.run_forward`)."""
        return run_forward(self.forward, *args, **kwargs)

    # -- parameters and submodules ------------------------------------------------------------

    def _walk(self) -> Iterator[tuple[list[Step], Any]]:
        """(path, Parameter or Module) for everything reachable, depth first, each object once."""
        seen: set[int] = {id(self)}
        yield from _walk_module(self, [], seen)

    def named_parameters(self) -> Iterator[tuple[str, Parameter[Any]]]:
        """``(dotted name, parameter)`` pairs, each parameter once, in a stable order."""
        for path, obj in self._walk():
            if isinstance(obj, Parameter):
                yield _dotted(path), obj

    def parameters(self) -> Iterator[Parameter[Any]]:
        """Every parameter (trainable or not), each once."""
        for _, p in self.named_parameters():
            yield p

    def named_modules(self) -> Iterator[tuple[str, Module]]:
        """``(dotted name, module)`` for this module (name ``""``) and every nested one."""
        yield "", self
        for path, obj in self._walk():
            if isinstance(obj, Module):
                yield _dotted(path), obj

    def modules(self) -> Iterator[Module]:
        """This module and every nested one."""
        for _, m in self.named_modules():
            yield m

    def zero_feedback(self) -> None:
        """Clear the feedback of every parameter."""
        for p in self.parameters():
            p.zero_feedback()

    def train(self, mode: bool = True) -> Module:
        """Set ``training`` on this module and every nested one (forward may read it)."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """``train(False)``."""
        return self.train(False)

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``{dotted name: value}`` for every parameter: plain JSON values, copied."""
        return {name: copy.deepcopy(p._data) for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Set parameters from ``state_dict``; returns ``(missing_keys, unexpected_keys)``.

        With ``strict=True`` any missing or unexpected key raises :class:`StateDictError` and
        nothing changes. A value that does not fit its parameter raises and nothing changes.
        """
        if not isinstance(state_dict, Mapping):
            raise InvalidInputError(f"load_state_dict takes a mapping name -> value, got {type(state_dict).__name__}")
        named = dict(self.named_parameters())
        missing = [k for k in named if k not in state_dict]
        unexpected = [k for k in state_dict if k not in named]
        if strict and (missing or unexpected):
            raise StateDictError(
                f"state dict does not match {type(self).__name__}: missing {missing}, unexpected {unexpected}; "
                "pass strict=False to load the keys that match",
                missing,
                unexpected,
            )
        old = {k: p._data for k, p in named.items()}
        done: list[str] = []
        try:
            for k, p in named.items():
                if k in state_dict:
                    p.set(copy.deepcopy(state_dict[k]))
                    done.append(k)
        except Exception:
            for k in done:  # all or nothing
                named[k]._data = old[k]
            raise
        return IncompatibleKeys(missing, unexpected)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the state dict to ``path`` as JSON (atomically: a crash never leaves half a file)."""
        if not isinstance(path, str | os.PathLike):
            raise InvalidInputError(f"save takes a file path (str or Path), got {type(path).__name__}")
        target = Path(path)
        if target.is_dir():
            raise CheckpointError(f"{target} is a directory; give a file path such as {target / 'model.json'}")
        data = {"format": SAVE_FORMAT, "class": _qualified(type(self)), "state": self.state_dict()}
        try:
            text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        except (TypeError, ValueError, RecursionError) as e:
            raise InvalidInputError(
                f"cannot save {type(self).__name__}: a parameter value is not JSON data ({e}); a value changed in "
                "place (e.g. param.data.append(...)) must stay plain JSON: str, numbers, bools, None, lists, dicts"
            ) from None
        try:
            _atomic_write(target, text)
        except OSError as e:
            raise CheckpointError(f"cannot write {target}: {e}; check that its directory is writable") from e
        return target

    def load(self, path: str | os.PathLike[str], strict: bool = True) -> IncompatibleKeys:
        """Load what :meth:`save` wrote; same rules as :meth:`load_state_dict`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise CheckpointError(f"no saved module at {path}; write one with module.save(path)") from e
        except (OSError, ValueError) as e:
            raise CheckpointError(
                f"cannot read a saved module from {path}: {e}. The file is damaged or not JSON; "
                "save it again with module.save(path)"
            ) from e
        if not isinstance(data, dict) or data.get("format") != SAVE_FORMAT or not isinstance(data.get("state"), dict):
            raise CheckpointError(f"{path} is not a saved feedprop module (expected format {SAVE_FORMAT!r})")
        return self.load_state_dict(data["state"], strict=strict)

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Write this model as plain Python source: learned code inlined, learned values as literals.

        The file defines the same class without the feedprop base class or decorators; when the
        model uses only plain Python (no ``ops.llm_call`` and the like) it runs without feedprop.
        Values are plain in the exported class, so ``x.data`` becomes ``x``.

        **Learned code runs unsandboxed there.** Code an optimizer rewrote ran in the sandbox
        during training; in the exported file it is ordinary Python that runs with your
        permissions, with no time or memory limits, as soon as it is called. The file says so in
        its docstring and marks each rewritten function with a ``LEARNED CODE`` comment; review
        those functions before importing the file.
        """
        target = Path(path)
        _atomic_write(target, export_source(self))
        return target

    def __repr__(self) -> str:
        names = ", ".join(name for name, _ in self.named_parameters())
        return f"{type(self).__name__}({names})"


# -- walking ----------------------------------------------------------------------------------


def _walk_module(module: Module, prefix: list[Step], seen: set[int]) -> Iterator[tuple[list[Step], Any]]:
    for name, value in vars(module).items():
        if name in (CODE_ATTRIBUTE, "training"):
            continue
        yield from _walk_value(value, [*prefix, ("attr", name)], seen)
    own = vars(module)
    for name, bundle in _trainable_methods(type(module)).items():
        if name in own:  # an instance attribute of that name hides the method
            continue
        param = bundle.parameter_for(module)
        if param is not None and id(param) not in seen:
            seen.add(id(param))
            yield [*prefix, ("attr", name)], param


def _walk_value(value: Any, path: list[Step], seen: set[int]) -> Iterator[tuple[list[Step], Any]]:
    if isinstance(value, Parameter | Module):
        if id(value) in seen:
            return
        seen.add(id(value))
        yield path, value
        if isinstance(value, Module):
            yield from _walk_module(value, path, seen)
    elif isinstance(value, Bundle) and value.parameter is not None:  # a trainable function stored on the module
        yield from _walk_value(value.parameter, path, seen)
    elif isinstance(value, list | tuple | dict):
        if id(value) in seen:  # a container met before (or one that contains itself) is walked once
            return
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str):
                    yield from _walk_value(item, [*path, ("key", key)], seen)
        else:
            for i, item in enumerate(value):
                yield from _walk_value(item, [*path, ("index", i)], seen)


def _trainable_methods(cls: type) -> dict[str, Bundle]:
    found: dict[str, Bundle] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, Bundle) and value.trainable:
                found[name] = value
            elif name in found:  # overridden by something that is not a trainable bundle
                del found[name]
    return found


def _dotted(path: list[Step]) -> str:
    return ".".join(str(step) for _, step in path)


def _adopt_names(name: str, value: Any, seen: set[int] | None = None) -> None:
    """Give unnamed parameters assigned to a module the attribute's name (``demos.0`` in lists)."""
    if isinstance(value, Parameter):
        if not value._user_named and value.name.startswith("param:"):
            value.name = name
    elif isinstance(value, list | tuple | dict):
        seen = set() if seen is None else seen
        if id(value) in seen:  # a container that contains itself
            return
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str):
                    _adopt_names(f"{name}.{key}", item, seen)
        else:
            for i, item in enumerate(value):
                _adopt_names(f"{name}.{i}", item, seen)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _atomic_write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- export -----------------------------------------------------------------------------------

_WRAPPERS = {"Parameter", "Node", "Demos"}  # calls replaced by their first argument in exported code


def export_source(module: Module) -> str:
    """The source :meth:`Module.export` writes (see there).

    The model's class must be defined at the top level of a ``.py`` file; the export takes that
    class, the top-level functions, classes, constants and imports it uses (transitively), and the
    learned state of ``module``. For instance ``print(export_source(model))`` shows what
    ``model.export("model.py")`` would write.
    """
    root = type(module)
    pymod = sys.modules.get(root.__module__)
    try:
        text = inspect.getsource(pymod) if pymod is not None else ""
    except (OSError, TypeError):
        text = ""
    if not text:
        raise InvalidInputError(f"cannot export {root.__qualname__}: its module's source file is not available")
    if "." in root.__qualname__:
        raise InvalidInputError(f"cannot export {root.__qualname__}: define the class at the top level of a module")
    tree = ast.parse(text)
    top: dict[str, ast.stmt] = {}
    for stmt in tree.body:
        for bound in _bound_names(stmt):
            top[bound] = stmt
    rewriter = _Exporter(pymod, _learned_code(module))
    # The statements the root class needs, transitively; imports keep only the names used.
    needed: dict[int, ast.stmt] = {}
    referenced: set[str] = set()
    todo = [root.__name__]
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
    root_def = next(s for s in body if isinstance(s, ast.ClassDef) and s.name == root.__name__)
    _set_learned_values(root_def, module)
    future = [s for s in tree.body if isinstance(s, ast.ImportFrom) and s.module == "__future__"]
    text = f"{root.__name__}, exported with its learned parameters as plain Python."
    if rewriter.rewritten:
        learned = ", ".join(sorted(set(rewriter.rewritten)))
        text += (
            f"\n\nWARNING: LEARNED CODE, source that an optimizer (a language model) wrote, is in: {learned}.\n"
            "During training it ran in a sandbox; here it runs unsandboxed, with your permissions and no\n"
            "time or memory limits, as soon as it is called. Review each function marked LEARNED CODE\n"
            "before you import or run this file.\n"
        )
    out = ast.Module(body=[ast.Expr(ast.Constant(text)), *future, *body], type_ignores=[])
    source = _mark_learned(ast.unparse(ast.fix_missing_locations(out)) + "\n")
    compile(source, f"<export of {root.__name__}>", "exec")  # fail here, not in the user's hands
    return source


_LEARNED_MARK = "__exported_learned_code_mark__"
_LEARNED_COMMENT = (
    "# LEARNED CODE: written by an optimizer (a language model), not by a person. It ran in a sandbox\n"
    "# during training; here it runs unsandboxed, with your permissions. Review it before use.\n"
)


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


def _learned_code(module: Module) -> dict[tuple[type, str], str]:
    """Learned source of each trainable method, per class; instances of one class must agree."""
    code: dict[tuple[type, str], str] = {}
    for m in module.modules():
        for name, bundle in _trainable_methods(type(m)).items():
            param = bundle.parameter_for(m)
            if param is None:
                continue
            for klass in type(m).__mro__:
                if vars(klass).get(name) is bundle:
                    key = (klass, name)
                    break
            if key in code and code[key] != param._data:
                raise InvalidInputError(
                    f"cannot export: two {type(m).__name__} instances learned different code for {name!r}; "
                    "plain Python classes share one method per class"
                )
            code[key] = param._data
    return code


class _Exporter:
    """Rewrites one top-level statement into plain Python."""

    def __init__(self, pymod: Any, learned_code: dict[tuple[type, str], str]) -> None:
        self.pymod = pymod
        self.learned_code = learned_code
        self.rewritten: list[str] = []  # functions whose code an optimizer changed, as Class.method or name

    def transform(self, stmt: ast.stmt) -> ast.stmt:
        stmt = copy.deepcopy(stmt)
        runtime = getattr(self.pymod, _bound_names(stmt)[0], None) if _bound_names(stmt) else None
        if isinstance(stmt, ast.ClassDef) and isinstance(runtime, type) and issubclass(runtime, Module):
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
                learned = self.learned_code.get((cls, item.name))
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
        defines = {s.name for s in new_body if isinstance(s, ast.FunctionDef)}
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


def _set_learned_values(cls_def: ast.ClassDef, module: Module) -> None:
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
    inlined: set[str] = set()
    for attr, stmt in direct.items():
        literal = _flat_literal(vars(module).get(attr))
        if literal is not None:
            stmt.value = ast.parse(literal, mode="eval").body
            inlined.add(attr)
    lines = []
    for path, obj in module._walk():
        if not isinstance(obj, Parameter) or _is_method_code(module, path) or path[0][1] in inlined:
            continue
        target_text = "self" + "".join(f".{step}" if kind == "attr" else f"[{step!r}]" for kind, step in path)
        lines.append(f"{target_text} = {obj._data!r}")
    if lines:
        init.body.extend(ast.parse("\n".join(lines)).body)
    if not init.body:
        init.body.append(ast.Pass())


def _flat_literal(value: Any) -> str | None:
    """The learned literal of a parameter, or of a list/tuple/dict made only of parameters."""
    if isinstance(value, Parameter):
        return repr(value._data)
    if isinstance(value, list | tuple) and value and all(isinstance(v, Parameter) for v in value):
        return repr(type(value)(v._data for v in value))
    if isinstance(value, dict) and value and all(isinstance(v, Parameter) for v in value.values()):
        return repr({k: v._data for k, v in value.items()})
    return None


def _is_method_code(module: Module, path: list[Step]) -> bool:
    """True when ``path`` ends at a nested module's trainable method (its code is inlined instead)."""
    owner: Any = module
    for kind, step in path[:-1]:
        owner = getattr(owner, step) if kind == "attr" else owner[step]
    kind, last = path[-1]
    return isinstance(owner, Module) and kind == "attr" and last in _trainable_methods(type(owner))
