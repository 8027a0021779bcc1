"""Tool calls in the OpenAI tools format: what a model asks for, and the checks of what is sent.

A request offers functions with the sampling parameter ``tools`` (``[{"type": "function",
"function": {"name", "description", "parameters"}}, ...]``); a reply may then hold
:class:`ToolCall` objects instead of (or besides) text. The transcript of the next request
carries them back: the assistant message with ``tool_calls`` (in the wire form
:meth:`ToolCall.to_message` writes), then one ``{"role": "tool", "tool_call_id", "content"}``
message per call with the tool's result. :func:`find_tool_calls` reads calls a model wrote
as text instead.

Example:
    >>> call = ToolCall("call_0", "lookup", '{"item": "map"}')
    >>> call.to_message()["function"]
    {'name': 'lookup', 'arguments': '{"item": "map"}'}
    >>> ToolCall.from_message(call.to_message()) == call
    True
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from feedprop.errors import InvalidInputError

__all__ = ["ToolCall", "check_message_tool_calls", "check_tools", "find_tool_calls"]

_DECODER = json.JSONDecoder()
#: What may open a call written as text: a tag (``<tool_call>``, ``<response>``), a code fence, a brace, a key.
_OPENER = re.compile(r'(?:<[\w-]+>|```[\w-]*|\{|"[\w-]+"\s*:)\s*\Z')


@dataclass(frozen=True)
class ToolCall:
    """One call a model asked for: its ``id`` (pairs the result with the call), the tool's ``name``,
    and the ``arguments`` as the JSON text the model wrote (parse it; it may be malformed).

    Example:
        >>> ToolCall.from_dict({"id": "c1", "name": "calc", "arguments": "{}"}).to_dict()
        {'id': 'c1', 'name': 'calc', 'arguments': '{}'}
    """

    id: str
    name: str
    arguments: str = "{}"

    def __post_init__(self) -> None:
        for label in ("id", "name", "arguments"):
            value = getattr(self, label)
            if not isinstance(value, str):
                raise InvalidInputError(f"ToolCall.{label} must be a str, got {type(value).__name__}")
        if not self.name:
            raise InvalidInputError("ToolCall.name must name the tool called, got an empty string")

    def to_dict(self) -> dict[str, str]:
        """``{"id", "name", "arguments"}``: the form kept in records (see :meth:`from_dict`)."""
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolCall:
        """The call :meth:`to_dict` wrote."""
        if not isinstance(data, Mapping) or "name" not in data:
            raise InvalidInputError(f"a tool call is a dict with 'id', 'name' and 'arguments', got {data!r:.80}")
        return cls(data.get("id", ""), data["name"], data.get("arguments", "{}"))

    def to_message(self) -> dict[str, Any]:
        """The call as an assistant message's ``tool_calls`` entry in the OpenAI wire format."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_message(cls, data: Mapping[str, Any]) -> ToolCall:
        """The call in an assistant message's ``tool_calls`` entry (see :meth:`to_message`)."""
        function = data.get("function") if isinstance(data, Mapping) else None
        if not isinstance(function, Mapping):
            raise InvalidInputError(
                "a message's tool call must be {'id': ..., 'type': 'function', 'function': {'name': ..., "
                f"'arguments': ...}}, got {data!r:.80}"
            )
        return cls(data.get("id", ""), function.get("name", ""), function.get("arguments", "{}"))


def check_message_tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls`` in the wire form, raising :class:`InvalidInputError` if malformed.

    Example:
        >>> check_message_tool_calls([ToolCall("c1", "calc", "{}").to_message()], "messages[1]")[0]["id"]
        'c1'
    """
    if not isinstance(value, list | tuple) or not value:
        raise InvalidInputError(f"{where}['tool_calls'] must be a non-empty list of tool calls, got {value!r:.80}")
    out = []
    for i, entry in enumerate(value):
        try:
            call = ToolCall.from_message(entry)
        except InvalidInputError as e:
            raise InvalidInputError(f"{where}['tool_calls'][{i}]: {e}") from None
        out.append(call.to_message())
    return out


def check_tools(tools: Any) -> None:
    """Check the sampling parameter ``tools`` (OpenAI format), raising :class:`InvalidInputError` with the fix.

    Example:
        >>> check_tools([{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}])
        >>> try:
        ...     check_tools([{"name": "calc"}])
        ... except InvalidInputError as e:
        ...     print(str(e)[:40])
        tools[0] must be {'type': 'function', 'f
    """
    if not isinstance(tools, list | tuple) or not tools:
        raise InvalidInputError(
            f"tools must be a non-empty list of OpenAI tool entries, got {tools!r:.80}; leave tools out to offer none"
        )
    names: set[str] = set()
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(function, Mapping):
            raise InvalidInputError(
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., 'description': ..., "
                f"'parameters': {{...}}}}}}, got {tool!r:.80}"
            )
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"tools[{i}]['function']['name'] must be a non-empty str, got {name!r:.80}")
        if name in names:
            raise InvalidInputError(f"tools[{i}]: two tools are named {name!r}; give each tool its own name")
        names.add(name)
        parameters = function.get("parameters", {"type": "object"})
        if not isinstance(parameters, Mapping):
            raise InvalidInputError(
                f"tools[{i}]['function']['parameters'] must be a JSON schema (a dict), got {parameters!r:.80}"
            )


def _arguments_text(value: Any) -> str | None:
    """A call's arguments as JSON text of an object, or ``None`` when they are no object."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            return None
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else None


def find_tool_calls(text: str, names: Collection[str]) -> tuple[str, list[tuple[str, str]]]:
    """The calls of the tools ``names`` that ``text`` holds, and the prose before the first one.

    A call is a JSON object ``{"name": <one of names>, "arguments": {...}}`` (the arguments may
    also be JSON text of an object) in any wrapper a model writes it in: its template's
    ``<tool_call>`` tags, ``<response>`` tags, a ```` ```json ```` fence, doubled braces, or
    none. Returns ``(prose, [(name, arguments as JSON text), ...])``; the prose is the text
    before the first call without the call's opening wrapper (``text`` itself when there is no
    call). Objects naming other tools, or without arguments (an echoed tool schema), are not calls.

    Example:
        >>> find_tool_calls('Let me see.\\n<response>{"name": "calc", "arguments": {"x": 2}}</response>', ["calc"])
        ('Let me see.', [('calc', '{"x": 2}')])
        >>> find_tool_calls('```json\\n{{"name": "calc", "arguments": "{}"}}\\n```', ["calc"])
        ('', [('calc', '{}')])
        >>> find_tool_calls('{"name": "calc", "description": "math", "parameters": {}}', ["calc"])[1]
        []
    """
    calls: list[tuple[str, str]] = []
    first = -1
    i = text.find("{")
    while i != -1:
        try:
            value, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError:
            value, end = None, i + 1
        name = value.get("name") if isinstance(value, dict) else None
        arguments = _arguments_text(value["arguments"]) if isinstance(name, str) and "arguments" in value else None
        if isinstance(name, str) and name in names and arguments is not None:
            calls.append((name, arguments))
            first = i if first == -1 else first
            i = text.find("{", end)
        else:
            i = text.find("{", i + 1)  # look inside: a call may be wrapped in another object
    if first == -1:
        return text, []
    prose = text[:first]
    while (opener := _OPENER.search(prose)) is not None:
        prose = prose[: opener.start()]
    return prose.strip(), calls
