"""Tool calls from a model that does not write its chat template's call format: the reply constrained by a schema.

A chat template that offers tools tells the model how to write a call (Qwen's: a JSON object
``{"name", "arguments"}`` inside ``<tool_call></tool_call>`` tags), and the server reads calls
in that form only. A small model often writes the same object in another wrapper (a
```` ```json ```` fence, ``<response>`` tags, doubled braces), which the server leaves as text:
the call is lost and an agent stops after one turn. :class:`ToolReplyFormat` makes the call
certain instead. The request still offers the tools (so the template renders them and the
earlier calls of the transcript as it always does), plus one more, the *answer tool*
(``final_answer(answer)``), and a ``response_format`` JSON schema that the server enforces
(llama.cpp compiles it into a grammar): the reply is exactly one call, to one of the offered
tools with arguments matching its parameters schema, or to the answer tool. :meth:`read` turns
that reply back into the OpenAI form: a :class:`~feedprop.llm.ToolCall`, or, for the answer
tool, plain text. The model never sees its own answer-tool calls in a later transcript.

``tool_choice`` is honoured by the schema: ``"required"`` leaves the answer tool out, a named
function allows that tool only, ``"none"`` offers the tools without any constraint. A request
that brings its own ``response_format`` cannot be constrained; its reply is still searched for
calls written as text (:func:`~feedprop.llm.tool_calls.find_tool_calls`).

Example:
    >>> from feedprop.llm.base import Completion
    >>> calc = {"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}
    >>> reply = ToolReplyFormat.for_request({"tools": [calc]})
    >>> [t["function"]["name"] for t in reply.request({"tools": [calc]})["tools"]]
    ['calc', 'final_answer']
    >>> reply.read(Completion('{"name": "calc", "arguments": {"expression": "2+2"}}'), []).tool_calls
    (ToolCall(id='call_0', name='calc', arguments='{"expression": "2+2"}'),)
    >>> reply.read(Completion('{"name": "final_answer", "arguments": {"answer": "4"}}'), []).text
    '4'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from feedprop.errors import InvalidInputError
from feedprop.llm.base import Completion, Message
from feedprop.llm.tool_calls import ToolCall, find_tool_calls

__all__ = ["ANSWER_TOOL", "ToolReplyFormat"]

#: The name of the answer tool, unless an offered tool has it (then ``final_answer_2``, ...).
ANSWER_TOOL = "final_answer"
_ANSWER_DESCRIPTION = (
    "Reply to the user with your final answer, once the results of the calls so far are enough "
    "(or when no tool is needed)."
)
_PARTIAL_ANSWER = re.compile(r'"answer"\s*:\s*"((?:[^"\\]|\\.)*)')


def _answer_tool(name: str) -> dict[str, Any]:
    parameters = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    return {
        "type": "function",
        "function": {"name": name, "description": _ANSWER_DESCRIPTION, "parameters": parameters},
    }


def _call_schema(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON schema of one call of ``tool``: its name, and arguments matching its parameters."""
    function = tool["function"]
    return {
        "type": "object",
        "properties": {
            "name": {"const": function["name"]},
            "arguments": function.get("parameters", {"type": "object"}),
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _chosen(tools: Sequence[Mapping[str, Any]], choice: Any) -> tuple[list[Mapping[str, Any]], bool]:
    """The tools a reply may call under ``tool_choice``, and whether it may answer instead."""
    if choice is None or choice == "auto":
        return list(tools), True
    if choice == "required":
        return list(tools), False
    function = choice.get("function") if isinstance(choice, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    named = [t for t in tools if t["function"]["name"] == name]
    if not named:
        offered = ", ".join(t["function"]["name"] for t in tools)
        raise InvalidInputError(
            f"tool_choice must be 'auto', 'required', 'none' or {{'type': 'function', 'function': {{'name': ...}}}} "
            f"naming an offered tool ({offered}), got {choice!r:.80}"
        )
    return named, False


@dataclass(frozen=True)
class ToolReplyFormat:
    """How one request offering tools is sent and its reply read (see the module docs).

    ``tools`` are the offered tools (OpenAI format), ``callable`` the names a reply may call,
    ``answer`` the answer tool's name (``None`` when a call is required), and ``constrained``
    whether the reply is constrained by a schema (else only searched for calls written as text).

    Example:
        >>> calc = {"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}
        >>> ToolReplyFormat.for_request({"tools": [calc], "tool_choice": "required"}).schema()["anyOf"][0]["required"]
        ['name', 'arguments']
        >>> ToolReplyFormat.for_request({"tools": [calc], "tool_choice": "none"}) is None
        True
    """

    tools: tuple[Mapping[str, Any], ...]
    callable: tuple[str, ...]
    answer: str | None
    constrained: bool = True

    @classmethod
    def for_request(cls, params: Mapping[str, Any]) -> ToolReplyFormat | None:
        """The format of a request with sampling parameters ``params`` (``None``: it offers no callable tool)."""
        tools = params.get("tools")
        choice = params.get("tool_choice")
        if not tools or choice == "none":
            return None
        allowed, may_answer = _chosen(tools, choice)
        names = {t["function"]["name"] for t in tools}
        answer = ANSWER_TOOL
        n = 1
        while answer in names:
            n += 1
            answer = f"{ANSWER_TOOL}_{n}"
        callable_ = tuple(t["function"]["name"] for t in allowed)
        if "response_format" in params:  # the caller's own format wins; calls written as text are still read
            return cls(tuple(tools), callable_, None, constrained=False)
        return cls(tuple(tools), callable_, answer if may_answer else None)

    def schema(self) -> dict[str, Any]:
        """The JSON schema of a reply: one call of a callable tool, or of the answer tool."""
        calls = [_call_schema(t) for t in self.tools if t["function"]["name"] in self.callable]
        if self.answer is not None:
            calls.append(_call_schema(_answer_tool(self.answer)))
        return {"anyOf": calls}

    def request(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The sampling parameters to send: the tools with the answer tool, and the schema as ``response_format``."""
        if not self.constrained:
            return dict(params)
        sent = {k: v for k, v in params.items() if k not in ("tool_choice", "parallel_tool_calls")}
        sent["tools"] = [*self.tools, *([_answer_tool(self.answer)] if self.answer is not None else [])]
        sent["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "tool_reply", "schema": self.schema()},
        }
        return sent

    def read(self, completion: Completion, messages: Sequence[Message]) -> Completion:
        """``completion`` in the OpenAI form: a call as :attr:`Completion.tool_calls`, an answer as text.

        Calls read from the text get the ids ``call_<k>``, ``k`` counting the calls of the
        transcript ``messages``, so ids are unique within a conversation and the same for the same
        request; calls the server read keep its ids. A reply cut short
        (``finish_reason="length"``) before its call was complete keeps what it said.
        """
        if completion.tool_calls:  # the server read the calls itself
            calls = completion.tool_calls
        else:
            names = (*self.callable, *([self.answer] if self.answer is not None else []))
            prose, found = find_tool_calls(completion.text, names)
            if not found:
                return self._unread(completion)
            start = sum(len(m.get("tool_calls", ())) for m in messages)
            calls = tuple(ToolCall(f"call_{start + i}", name, arguments) for i, (name, arguments) in enumerate(found))
            completion = replace(completion, text=prose)
        if calls[0].name == self.answer:
            return replace(completion, text=_answer_text(calls[0].arguments), tool_calls=(), finish_reason="stop")
        kept = tuple(c for c in calls if c.name != self.answer)
        return replace(completion, tool_calls=kept, finish_reason="tool_calls")

    def _unread(self, completion: Completion) -> Completion:
        """A reply holding no complete call: a cut-short answer keeps its text, anything else stays as it is."""
        if not self.constrained or self.answer is None or f'"{self.answer}"' not in completion.text:
            return completion
        partial = _PARTIAL_ANSWER.search(completion.text)
        if partial is None:
            return completion
        try:
            text = json.loads(f'"{partial.group(1)}"')
        except json.JSONDecodeError:  # cut inside an escape
            text = partial.group(1)
        return replace(completion, text=text)


def _answer_text(arguments: str) -> str:
    try:
        data = json.loads(arguments)
    except json.JSONDecodeError:
        return arguments
    value = data.get("answer", "") if isinstance(data, dict) else data
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
