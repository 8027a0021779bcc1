"""``Tool``: a Python function a model may call, whose description is a trainable text parameter.

A tool is offered to the model in the OpenAI tools format: its ``name``, its ``description``
(a :class:`~feedprop.node.Parameter`, so an optimizer can rewrite what the model is told the tool
does) and a JSON schema of its arguments (derived from the function's signature, or given).
:func:`feedprop.ops.llm_call` offers tools; :func:`feedprop.agent.run_agent` runs the calls the
model makes and answers it with their results. A :class:`~feedprop.module.Module` finds the
description parameter of a tool stored on it (``"lookup.description"`` in ``named_parameters()``).

Example:
    >>> def lookup(item: str) -> float:
    ...     return {"map": 15.0}[item]
    >>> tool = Tool(lookup, "The price of one item, in skell.")
    >>> tool.schema()["function"]["parameters"]
    {'type': 'object', 'properties': {'item': {'type': 'string'}}, 'required': ['item']}
    >>> tool.description.name, tool.description.trainable, tool.invoke('{"item": "map"}')
    ('lookup_description', True, 15.0)
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from feedprop.errors import InvalidInputError
from feedprop.node import Parameter

__all__ = ["Tool", "parameters_schema"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _schema_of(hint: Any, where: str) -> dict[str, Any]:
    """The JSON schema of one annotated argument (``{}``, any value, when unannotated or ``Any``)."""
    if hint is inspect.Parameter.empty or hint is Any:
        return {}
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kept = [a for a in args if a is not type(None)]
        if len(kept) == 1:
            return _schema_of(kept[0], where)
    if origin is Literal and args and all(type(a) is type(args[0]) and type(a) in _SCALARS for a in args):
        return {"type": _SCALARS[type(args[0])], "enum": list(args)}
    if hint in (list, tuple) or origin in (list, tuple):
        items = args[0] if args and (origin is list or (len(args) == 2 and args[1] is Ellipsis)) else None
        return {"type": "array", **({"items": _schema_of(items, where)} if items is not None else {})}
    if hint is dict or origin is dict:
        return {"type": "object"}
    raise InvalidInputError(
        f"{where} is annotated {hint!r}, which has no JSON schema here (str, int, float, bool, list, dict, "
        "Literal and Optional do); pass Tool(..., parameters={...}) with the JSON schema of the arguments"
    )


def parameters_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """The JSON schema of ``fn``'s keyword arguments, as the OpenAI tools format wants it.

    Arguments without a default are required; an unannotated one takes any JSON value.
    ``*args``, ``**kwargs`` and positional-only arguments cannot be called by name, so they raise.

    Example:
        >>> def convert(amount: float, unit: str = "skell", exact: bool | None = None): ...
        >>> parameters_schema(convert)["required"], parameters_schema(convert)["properties"]["exact"]
        (['amount'], {'type': 'boolean'})
    """
    name = getattr(fn, "__name__", repr(fn))
    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
    except (TypeError, ValueError, NameError) as e:
        raise InvalidInputError(
            f"cannot read the signature of {name} ({e}); pass Tool(..., parameters={{...}}) with the JSON schema "
            "of its arguments"
        ) from None
    properties: dict[str, Any] = {}
    required: list[str] = []
    for arg in signature.parameters.values():
        if arg.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            raise InvalidInputError(
                f"{name}'s argument {arg}: a model calls a tool with named JSON arguments only; "
                "give the tool plain named arguments"
            )
        properties[arg.name] = _schema_of(hints.get(arg.name, arg.annotation), f"{name}'s argument {arg.name!r}")
        if arg.default is inspect.Parameter.empty:
            required.append(arg.name)
    return {"type": "object", "properties": properties, "required": required}


class Tool:
    """A function a model may call; ``description`` (what the model is told it does) is trainable.

    ``fn`` takes named JSON values (str, numbers, bools, lists, dicts) and returns a value the
    model reads back as text (a str as it is, anything else as JSON). ``description`` is a str
    (made into a text :class:`~feedprop.node.Parameter` named ``"<name>_description"``), a text
    parameter of your own, or ``None`` for the first paragraph of ``fn``'s docstring. ``name``
    defaults to the function's name (letters, digits, ``_`` and ``-``, at most 64).
    ``parameters`` is the JSON schema of the arguments; by default it is read from the signature
    (:func:`parameters_schema`).

    Example:
        >>> def double(x: float) -> float:
        ...     '''Twice a number.'''
        ...     return 2 * x
        >>> tool = Tool(double)
        >>> tool.description.data
        'Twice a number.'
        >>> tool.description = "Multiply a number by two."   # sets the parameter's value
        >>> tool.schema()["function"]["description"], tool.invoke({"x": 4})
        ('Multiply a number by two.', 8)
        >>> tool.invoke('{"y": 4}')
        Traceback (most recent call last):
        ...
        feedprop.errors.InvalidInputError: unknown argument 'y'; missing argument 'x'; double takes (x)
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        description: str | Parameter[str] | None = None,
        *,
        name: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        if not callable(fn) or isinstance(fn, Tool):
            raise InvalidInputError(f"Tool takes a function, got {type(fn).__name__}")
        name = getattr(fn, "__name__", "") if name is None else name
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidInputError(
                f"a tool's name must be 1 to 64 letters, digits, '_' or '-', got {name!r}; pass Tool(..., name=...)"
            )
        self.fn = fn
        self.name = name
        if description is None:
            doc = inspect.getdoc(fn) or ""
            description = doc.split("\n\n")[0].strip()
            if not description:
                raise InvalidInputError(
                    f"the tool {name!r} needs a description the model reads: pass Tool(fn, 'what it does') "
                    "or give the function a docstring"
                )
        self._description = self._as_parameter(description)
        if parameters is None:
            parameters = parameters_schema(fn)
        elif not isinstance(parameters, Mapping) or parameters.get("type") != "object":
            raise InvalidInputError(
                f"parameters must be the JSON schema of the arguments, {{'type': 'object', 'properties': ...}}, "
                f"got {parameters!r:.80}"
            )
        self.parameters: dict[str, Any] = dict(parameters)

    def _as_parameter(self, description: Any) -> Parameter[str]:
        if isinstance(description, Parameter):
            if not isinstance(description._data, str):
                raise InvalidInputError(
                    f"a tool's description parameter must hold text, got {type(description._data).__name__}"
                )
            return description
        if not isinstance(description, str) or not description.strip():
            raise InvalidInputError(
                f"a tool's description must be a non-empty str or a text Parameter, got {description!r:.80}"
            )
        return Parameter(
            description,
            name=f"{self.name}_description",
            description=f"what the model is told the tool {self.name!r} does: the description of its tool schema",
        )

    @property
    def description(self) -> Parameter[str]:
        """The trainable text the model reads about this tool. Assign a str to set its value."""
        return self._description

    @description.setter
    def description(self, value: str | Parameter[str]) -> None:
        if isinstance(value, Parameter):
            self._description = self._as_parameter(value)
        else:
            self._description.set(value)

    def schema(self) -> dict[str, Any]:
        """The tool in the OpenAI tools format, with the description's current value."""
        function = {"name": self.name, "description": self._description._data, "parameters": self.parameters}
        return {"type": "function", "function": function}

    def invoke(self, arguments: str | Mapping[str, Any]) -> Any:
        """Call the function with ``arguments`` (the JSON text a model wrote, or a dict); returns what it returns.

        Raises :class:`~feedprop.errors.InvalidInputError` when the arguments are not a JSON
        object or do not fit the function's signature; whatever the function raises propagates.
        """
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as e:
                raise InvalidInputError(f"the arguments are not valid JSON ({e.msg}): {arguments!r:.200}") from None
        if not isinstance(arguments, Mapping) or not all(isinstance(k, str) for k in arguments):
            raise InvalidInputError(f"the arguments must be a JSON object of named values, got {arguments!r:.200}")
        try:
            signature = inspect.signature(self.fn)
        except (TypeError, ValueError):  # a builtin without a signature: the call itself says what is wrong
            return self.fn(**arguments)
        try:
            signature.bind(**arguments)
        except TypeError as e:
            problem = _mismatch(signature, arguments) or str(e)
            raise InvalidInputError(f"{problem}; {self.name} takes {_argument_list(self.parameters)}") from None
        return self.fn(**arguments)

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, description={self._description._data!r:.60})"


def _mismatch(signature: inspect.Signature, arguments: Mapping[str, Any]) -> str:
    """The arguments a call names that the function does not take, and those it needs but lacks."""
    accepted = signature.parameters
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    any_name = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in arguments if not any_name and (k not in accepted or accepted[k].kind not in named)]
    missing = [n for n, p in accepted.items() if p.kind in named and p.default is p.empty and n not in arguments]
    parts = []
    for label, names in (("unknown", unknown), ("missing", missing)):
        if names:
            parts.append(f"{label} argument{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}")
    return "; ".join(parts)


def _argument_list(schema: Mapping[str, Any]) -> str:
    properties = schema.get("properties")
    names = list(properties) if isinstance(properties, Mapping) else []
    return f"({', '.join(names)})" if names else "no arguments"
