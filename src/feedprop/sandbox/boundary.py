"""What crosses the sandbox boundary, and in which form.

Only data crosses (JSON, see :func:`feedprop.sandbox.worker.encode`). For one call this module
turns the caller's side into the request's parts:

* arguments and keyword arguments must be plain data, or :class:`InvalidInputError` says where
  they are not;
* ``self`` (the first parameter of a bundled method, named ``self`` or ``cls``) crosses as a
  read-only snapshot of the plain-data attributes the source reads as ``self.<name>``;
* the globals the source mentions cross by kind: modules by name (re-imported in the worker),
  plain data by value, objects importable from an installed module (``from math import sqrt``,
  ``from collections import Counter``) by reference, closure-free functions of the caller's own
  code by source. Anything else stays behind and is reported, with the reason, if the code
  actually uses it (a ``NameError`` naming the global).

Code an optimizer wrote sees less than the user's own code (:func:`withhold`): only the globals
and the ``self`` attributes that the *original* source mentions. A global the new code mentions
that the original did not is sent as a :class:`Withheld` marker, never its value, and using it
raises a ``NameError`` that states the rule; ``self`` becomes a :class:`WithheldSelf` view that
answers only the attributes the original read. Globals that the user's helper functions need
cross so the helpers can run, but only the helpers see them (they run in a namespace of their own).
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
import sysconfig
import textwrap
import types
from dataclasses import dataclass
from typing import Any

from feedprop.errors import InvalidInputError
from feedprop.sandbox.worker import CODE_FILENAME, PLAIN_TYPES, NotPlainData, encode

SELF_NAMES = ("self", "cls")
MAX_HELPERS = 64  # functions sent by source for one call, including the ones they call


@dataclass(frozen=True)
class SourceInfo:
    """What the source itself says: the names it mentions, what it imports, how it uses ``self``."""

    names: frozenset[str]
    imports: tuple[str, ...]
    self_param: str | None
    self_attrs: tuple[str, ...]


@functools.lru_cache(maxsize=512)
def source_info(source: str, name: str) -> SourceInfo:
    """Parse ``source`` (raises ``SyntaxError``) and collect what :func:`prepare_call` needs."""
    tree = ast.parse(source, CODE_FILENAME)
    return SourceInfo(
        frozenset(_mentioned_names(tree)), tuple(sorted(_imported_modules(tree))), *_self_usage(tree, name)
    )


def _mentioned_names(tree: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def _imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _self_usage(tree: ast.Module, name: str) -> tuple[str | None, tuple[str, ...]]:
    """The function's ``self``/``cls`` parameter, if any, and the attributes read from it."""
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name]
    if not defs:
        return None, ()
    fn = defs[-1]
    params = [*fn.args.posonlyargs, *fn.args.args]
    if not params or params[0].arg not in SELF_NAMES:
        return None, ()
    param = params[0].arg
    attrs = {
        node.attr
        for node in ast.walk(fn)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == param
    }
    return param, tuple(sorted(attrs))


class Withheld:
    """Stands in, among the globals handed to an executor, for a caller global the code may not see.

    ``reason`` is the message its ``NameError`` carries. It never holds the global's value.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return "<withheld global>"


def withheld_message(name: str, function: str, allowed: frozenset[str] | tuple[str, ...], what: str) -> str:
    listed = ", ".join(sorted(allowed)) or "none"
    return (
        f"{what} {name!r} is withheld from rewritten code: code that an optimizer wrote may use only the "
        f"{'attributes of self' if what.startswith('self') else 'globals'} that the original code of {function!r} "
        f"used ({listed}), builtins, and modules it imports itself. Pass the value in as an argument, or use "
        f"it in the original code"
    )


class WithheldSelf:
    """``self`` as rewritten code sees it: only the attributes the original code read (get and set).

    Reading any other attribute raises ``AttributeError`` stating the rule, never the value.
    """

    __slots__ = ("_feedprop_allowed", "_feedprop_function", "_feedprop_target")

    def __init__(self, target: Any, allowed: tuple[str, ...], function: str) -> None:
        object.__setattr__(self, "_feedprop_target", target)
        object.__setattr__(self, "_feedprop_allowed", frozenset(allowed))
        object.__setattr__(self, "_feedprop_function", function)

    def _feedprop_check(self, attr: str) -> Any:
        """The wrapped object, if ``attr`` is one the original code read; else ``AttributeError``."""
        allowed: frozenset[str] = object.__getattribute__(self, "_feedprop_allowed")
        if attr not in allowed:
            function = object.__getattribute__(self, "_feedprop_function")
            raise AttributeError(withheld_message(attr, function, allowed, "self attribute"))
        return object.__getattribute__(self, "_feedprop_target")

    def __getattribute__(self, attr: str) -> Any:  # every read, the view's own slots included
        return getattr(WithheldSelf._feedprop_check(self, attr), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(WithheldSelf._feedprop_check(self, attr), attr, value)

    def __repr__(self) -> str:
        return "<self, limited to the attributes the original code read>"


def withhold(
    original: str, current: str, name: str, globals_: dict[str, Any], args: tuple[Any, ...]
) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """What code rewritten from ``original`` may see of the caller: ``(globals, args)`` for the executor.

    Unchanged when ``current`` is ``original`` (the user's own code runs as written). Otherwise the
    globals keep only the names ``original`` mentions; names only ``current`` mentions that the
    caller has become :class:`Withheld`; a ``self`` first argument becomes :class:`WithheldSelf`.
    Raises ``SyntaxError`` if ``original`` does not parse; a ``current`` that does not parse keeps
    only the original's globals (the executor reports the syntax error).

    Example:
        >>> original = "def f(x):\\n    return x * SCALE\\n"
        >>> rewritten = "def f(x):\\n    return API_KEY\\n"
        >>> seen, _ = withhold(original, rewritten, "f", {"SCALE": 2, "API_KEY": "sk-1"}, (1,))
        >>> sorted(seen), "sk-1" in repr(seen)
        (['API_KEY', 'SCALE'], False)
    """
    if current == original:
        return globals_, args
    before = source_info(original, name)
    visible = {k: v for k, v in globals_.items() if k in before.names}
    try:
        after = source_info(current, name)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return visible, args
    for extra in sorted(after.names - before.names):
        if extra in globals_ and extra != "__builtins__":
            visible[extra] = Withheld(withheld_message(extra, name, before.names & globals_.keys(), "global"))
    if args and after.self_param is not None and before.self_param is not None:
        args = (WithheldSelf(args[0], before.self_attrs, name), *args[1:])
    return visible, args


@dataclass
class PreparedCall:
    """The request's parts for one call."""

    args: list[Any]
    kwargs: dict[str, Any]
    globals: list[tuple[str, dict[str, Any]]]
    self_spec: dict[str, Any] | None
    modules: list[str]


def prepare_call(
    source: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], globals_: dict[str, Any]
) -> PreparedCall:
    """Encode one call for the worker. Raises ``SyntaxError`` for bad source, InvalidInputError for bad data."""
    info = source_info(source, name)
    values = list(args)
    self_spec = None
    if values and info.self_param is not None:
        try:
            encode(values[0])
        except NotPlainData:
            self_spec = _snapshot(values[0], info.self_attrs)
            values[0] = None
    try:
        enc_args = [encode(v, f"args[{i}]") for i, v in enumerate(values)]
        enc_kwargs = {str(k): encode(v, f"kwargs[{k!r}]") for k, v in kwargs.items()}
    except NotPlainData as e:
        raise InvalidInputError(
            f"{e} (calling {name!r}). Pass plain data ({PLAIN_TYPES}) to sandboxed code, or run trusted code "
            "in this process: feedprop.sandbox.set_default_executor(InProcessExecutor())"
        ) from None
    modules = {m for m in info.imports if m in sys.modules}
    crossing = _globals(info.names, globals_, modules)
    return PreparedCall(enc_args, enc_kwargs, crossing, self_spec, sorted(modules))


def _snapshot(obj: Any, attrs: tuple[str, ...]) -> dict[str, Any]:
    """A read-only copy of ``obj``'s plain-data attributes among ``attrs``, and why the others stay behind."""
    values: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for attr in attrs:
        target = obj
        if type(obj) is WithheldSelf:
            try:
                target = WithheldSelf._feedprop_check(obj, attr)
            except AttributeError as e:
                missing[attr] = str(e)
                continue
        try:
            value = getattr(target, attr)
        except AttributeError:
            missing[attr] = f"{type(target).__qualname__} has no attribute {attr!r} here"
            continue
        except Exception as e:
            missing[attr] = f"reading it raised {type(e).__name__}: {e}"
            continue
        if inspect.ismethod(value) or inspect.isfunction(value) or inspect.isbuiltin(value):
            missing[attr] = (
                "it is a method, and methods of self cannot run inside the sandbox; make it a module-level "
                "function or pass its result as an argument"
            )
            continue
        try:
            values[attr] = encode(value, f"self.{attr}")
        except NotPlainData as e:
            missing[attr] = f"it is a {e.type_name}, not plain data"
    return {"index": 0, "attrs": values, "missing": missing}


def _globals(names: frozenset[str], globals_: dict[str, Any], modules: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """Specs for the globals the code mentions; helper functions pull in the globals they mention.

    Each spec says where the worker puts it (``"scope"``): in the code's namespace (``"code"``),
    in the namespace the helper functions run in (``"helpers"``), or in both. The code never sees
    what only the helpers need.
    """
    specs: dict[tuple[str, str], dict[str, Any]] = {}
    origin: dict[tuple[str, str], int] = {}
    pending = [(n, globals_, "code") for n in sorted(names, reverse=True)]
    helpers = 0
    while pending:
        name, scope, where = pending.pop()
        if name == "__builtins__" or name not in scope:
            continue
        obj, key = scope[name], (name, where)
        if key in specs:
            if origin[key] != id(obj):
                specs[key] = {"unavailable": "two functions sent to the sandbox need different globals of this name"}
            continue
        other = (name, "helpers" if where == "code" else "code")
        if other in specs and origin[other] == id(obj):
            spec, more = specs[other], None  # the same object: sent once, placed in both namespaces
        else:
            spec, more = _classify(obj, modules)
        if more is not None:
            helpers += 1
            if helpers > MAX_HELPERS:
                spec, more = {"unavailable": f"more than {MAX_HELPERS} helper functions would have to cross"}, None
        specs[key], origin[key] = spec, id(obj)
        if more is not None:
            pending.extend((n, more[1], "helpers") for n in sorted(more[0], reverse=True))
    crossing: list[tuple[str, dict[str, Any]]] = []
    for (name, where), spec in specs.items():
        if where == "helpers" and specs.get((name, "code")) is spec:
            continue  # already placed in both by the code's entry
        both = where == "code" and specs.get((name, "helpers")) is spec
        crossing.append((name, {**spec, "scope": "both" if both else where}))
    return crossing


def _classify(obj: Any, modules: set[str]) -> tuple[dict[str, Any], tuple[set[str], dict[str, Any]] | None]:
    """How ``obj`` crosses, and for a function sent as source: the names it mentions and its globals."""
    if isinstance(obj, Withheld):
        return {"withheld": obj.reason}, None
    if isinstance(obj, types.ModuleType):
        if obj.__name__ == "__main__" or sys.modules.get(obj.__name__) is not obj:
            return {"unavailable": f"it is the module {obj.__name__!r}, which the sandbox cannot import"}, None
        modules.add(obj.__name__)
        return {"module": obj.__name__, "what": f"it is the module {obj.__name__!r}"}, None
    try:
        return {"value": encode(obj, "the global")}, None
    except NotPlainData:
        pass
    ref = _reference(obj)
    if isinstance(obj, types.FunctionType) and (ref is None or not _installed(obj.__module__)):
        sent = _function_source(obj)
        if isinstance(sent, str):
            return {"unavailable": sent}, None
        return {"function": sent[0], "def": obj.__name__}, (sent[1], obj.__globals__)
    if ref is not None:
        modules.add(ref.partition(":")[0])
        return {"ref": ref, "what": _describe(obj)}, None
    return {"unavailable": _left_behind(obj)}, None


def _reference(obj: Any) -> str | None:
    """``"module:qualname"`` when importing that yields ``obj`` itself; None otherwise."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module == "__main__" or "<" in qualname:
        return None
    target: Any = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return f"{module}:{qualname}" if target is obj else None


@functools.lru_cache(maxsize=64)
def _install_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)


def _installed(module_name: str) -> bool:
    """Whether the module comes from the standard library or site-packages (importable in the worker)."""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if file is None:
        return module is not None  # built into the interpreter
    return any(str(file).startswith(root) for root in _install_roots())


@functools.lru_cache(maxsize=256)
def _function_source(fn: types.FunctionType) -> tuple[str, set[str]] | str:
    """The function's own definition (decorators dropped) and the names it mentions; or why it cannot cross."""
    if fn.__name__ == "<lambda>":
        return "it is a lambda, whose source cannot be recovered on its own; define it with def"
    if fn.__closure__:
        return f"the function {fn.__name__!r} closes over local variables, which cannot cross"
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return f"the source of the function {fn.__name__!r} is not available"
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if len(defs) != 1 or defs[0].name != fn.__name__:
        return f"the source of the function {fn.__name__!r} is not a single plain definition"
    text = "\n".join(source.splitlines()[defs[0].lineno - 1 :]) + "\n"  # decorators sit above the def line
    return text, _mentioned_names(defs[0])


def _describe(obj: Any) -> str:
    """What ``obj`` is, for the messages that say why it stayed behind."""
    module = getattr(obj, "__module__", None)
    if isinstance(obj, type):
        return f"it is the class {obj.__qualname__} from module {module!r}"
    if isinstance(obj, types.FunctionType | types.BuiltinFunctionType):
        return f"it is the function {obj.__qualname__} from module {module!r}"
    return f"it is an object of type {type(obj).__qualname__}"


def _left_behind(obj: Any) -> str:
    if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
        return _describe(obj) + ", which the sandbox cannot import by name (define it in an importable module)"
    return _describe(obj) + f", not plain data ({PLAIN_TYPES})"
