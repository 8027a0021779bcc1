"""``Module``: a container of parameters with PyTorch's names, saved as JSON and exportable as plain Python.

A module's parameters are found where the user put them: in attributes, in lists, tuples and
dicts, in nested modules, in trainable bundled methods (one code parameter per instance), and
in the description of a :class:`~feedprop.tool.Tool` (``"lookup.description"``).
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

import copy
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from feedprop._files import atomic_write
from feedprop.bundle import CODE_ATTRIBUTE, Bundle
from feedprop.errors import CheckpointError, InvalidInputError, StateDictError
from feedprop.export import Learned, plain_python
from feedprop.node import Parameter, run_forward
from feedprop.tool import Tool

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
        if "\0" in str(target):
            raise InvalidInputError(
                f"cannot save to {str(target)!r}: a file path cannot hold a NUL character; remove it"
            )
        if target.is_dir():
            raise CheckpointError(f"{target} is a directory; give a file path such as {target / 'model.json'}")
        state = self.state_dict()
        data = {"format": SAVE_FORMAT, "class": _qualified(type(self)), "state": state}
        try:
            text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                f"cannot save {type(self).__name__}: parameter {_unencodable(state)!r} holds a lone surrogate (such as "
                "'\\ud800'), which is not a character and cannot be written; it was changed in place, past the "
                "checks of param.data = ...; set a cleaned value, e.g. text.encode('utf-8', 'replace').decode('utf-8')"
            ) from None
        except (TypeError, ValueError, RecursionError) as e:
            raise InvalidInputError(
                f"cannot save {type(self).__name__}: a parameter value is not JSON data ({e}); a value changed in "
                "place (e.g. param.data.append(...)) must stay plain JSON: str, numbers, bools, None, lists, dicts"
            ) from None
        try:
            atomic_write(target, text)
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
        return atomic_write(path, export_source(self))

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
    elif isinstance(value, Tool):
        yield from _walk_value(value.description, [*path, ("attr", "description")], seen)
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


def _unencodable(state: Mapping[str, Any]) -> str:
    """The name of the first parameter whose value UTF-8 cannot write."""
    for name, value in state.items():
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return name
    return "?"


# -- export -----------------------------------------------------------------------------------


def export_source(module: Module) -> str:
    """The source :meth:`Module.export` writes (see there).

    The model's class must be defined at the top level of a ``.py`` file; the export takes that
    class, the top-level functions, classes, constants and imports it uses (transitively), and the
    learned state of ``module`` (:func:`feedprop.export.plain_python` does the rewriting). For
    instance ``print(export_source(model))`` shows what ``model.export("model.py")`` would write.

    Example:
        >>> from feedprop.demo import CountingSolver
        >>> source = export_source(CountingSolver())
        >>> "CountingSolver, exported with its learned parameters as plain Python." in source.splitlines()[0]
        True
    """
    return plain_python(type(module), _learned(module))


def _learned(module: Module) -> Learned:
    """What ``module`` learned: the code of its trainable methods and the value of every other parameter."""
    values = []
    for path, obj in module._walk():
        if isinstance(obj, Parameter) and not _is_method_code(module, path):
            target = "self" + "".join(f".{step}" if kind == "attr" else f"[{step!r}]" for kind, step in path)
            values.append((str(path[0][1]), target, obj._data))
    return Learned(
        code=_learned_code(module), attributes=dict(vars(module)), values=tuple(values), is_model=_is_module_class
    )


def _is_module_class(cls: type) -> bool:
    return issubclass(cls, Module)


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


def _is_method_code(module: Module, path: list[Step]) -> bool:
    """True when ``path`` ends at a nested module's trainable method (its code is inlined instead)."""
    owner: Any = module
    for kind, step in path[:-1]:
        owner = getattr(owner, step) if kind == "attr" else owner[step]
    kind, last = path[-1]
    return isinstance(owner, Module) and kind == "attr" and last in _trainable_methods(type(owner))
