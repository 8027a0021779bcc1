"""Agents: a conversation in which the model calls tools, recorded turn by turn.

:func:`run_agent` asks the model (offering :class:`~feedprop.tool.Tool` objects in the OpenAI
tools format), runs the calls it asks for, sends their results back, and repeats until the
model answers without calling a tool (or ``max_turns`` model calls were made). Every piece is a
node of the traced graph:

- each **turn** is an :func:`~feedprop.ops.llm_call` node; its inputs are the system prompt,
  the user message(s), every offered tool's description parameter (the model read them all,
  including the tools it did not call), and the earlier turns and tool results (the transcript
  it was sent);
- each **tool call** is a ``tool_call`` node (its value: the tool's name and arguments) made
  from the turn that asked for it;
- each **result** is a ``tool_result`` node (its value: the text sent back, the tool's error
  included) made from its call.

So feedback on the final answer reaches the system prompt and the tool descriptions through
every turn and result that led to it. A tool that raises, an unknown tool or malformed
arguments give a result whose text starts with ``"error:"`` (``info["error"]`` is true): the
model reads it and may try again; nothing escapes as an exception.

Example:
    >>> from feedprop.llm import Completion, MockLLM, ToolCall
    >>> from feedprop.node import Parameter
    >>> def lookup(item: str) -> float:
    ...     return {"map": 15.0, "lantern": 12.0}[item]
    >>> def model(messages, **params):
    ...     if messages[-1]["role"] == "tool":
    ...         return "A map costs " + messages[-1]["content"] + " skell."
    ...     return Completion("", tool_calls=(ToolCall("c1", "lookup", '{"item": "map"}'),))
    >>> system = Parameter("Answer with the tools.", name="system")
    >>> tool = Tool(lookup, "The price of one item, in skell.")
    >>> answer = run_agent(system, "What does a map cost?", tools=[tool], llm=MockLLM(model))
    >>> answer.data
    'A map costs 15.0 skell.'
    >>> [(n.op.name, n.data) for n in answer.parents if n.op is not None]
    [('llm_call', ''), ('tool_result', '15.0')]
    >>> answer.backward("Right.")
    >>> len(system.feedback), len(tool.description.feedback)
    (1, 1)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from feedprop.errors import InvalidInputError
from feedprop.llm import LLM, Message, ToolCall
from feedprop.node import MessageNode, Node, Op
from feedprop.ops import LLM_CALL, allm_call, allm_chat, llm_call, llm_chat
from feedprop.tool import Tool
from feedprop.tracing import note_input

__all__ = ["TOOL_CALL", "TOOL_RESULT", "arun_agent", "call_tools", "run_agent"]

#: The op of a node holding one call a model's turn asked for.
TOOL_CALL = Op(
    "tool_call", None, ("turn",), "[tool_call] a call the model's turn asked for: the tool's name and arguments"
)
#: The op of a node holding what a called tool returned (or its error), as the text sent back to the model.
TOOL_RESULT = Op(
    "tool_result", None, ("call",), "[tool_result] runs the called tool; its result (or error) is sent to the model"
)


def _check_tools(tools: Any) -> dict[str, Tool]:
    if isinstance(tools, Tool | str) or not isinstance(tools, Sequence) or not tools:
        raise InvalidInputError(f"tools must be a non-empty list of feedprop.Tool objects, got {tools!r:.80}")
    for i, tool in enumerate(tools):
        if not isinstance(tool, Tool):
            raise InvalidInputError(
                f"tools[{i}] must be a feedprop.Tool (Tool(fn, 'what it does')), got {type(tool).__name__}"
            )
    return {tool.name: tool for tool in tools}


def _arguments(text: str) -> Any:
    """A call's arguments as data when they parse as JSON, else the text the model wrote."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _result(call: ToolCall, call_node: MessageNode[Any], tools: dict[str, Tool]) -> MessageNode[str]:
    inputs: tuple[tuple[str, Any], ...] = (("call", call_node),)
    info: dict[str, Any] = {"tool": call.name, "id": call.id, "error": True}
    tool = tools.get(call.name)
    if tool is None:
        text = f"error: there is no tool {call.name!r}; the tools are {', '.join(tools)}"
    else:
        try:
            value = tool.invoke(call.arguments)
        except InvalidInputError as e:  # the arguments do not fit the tool
            text = f"error: {e}"
        except Exception as e:
            text = f"error: {type(e).__name__}: {e}"
        else:
            if isinstance(value, Node):  # a tool that traced its own work: its graph joins this one
                note_input(value)
                inputs += (("value", value),)
                value = value._data
            text, info["error"] = _as_text(value), False
    return MessageNode(text, op=TOOL_RESULT, inputs=inputs, info=info)


def call_tools(turn: MessageNode[Any], tools: Sequence[Tool]) -> list[MessageNode[str]]:
    """Run the tool calls ``turn`` (an :func:`~feedprop.ops.llm_call` node) asked for: one result node per call.

    Each result's parent is a ``tool_call`` node whose parent is ``turn``; its ``info`` holds
    the tool's name, the call's ``id`` and whether it failed (``"error"``). A turn without tool
    calls gives ``[]``.

    Example:
        >>> from feedprop.llm import Completion, MockLLM, ToolCall
        >>> def double(x: float) -> float:
        ...     return 2 * x
        >>> tool = Tool(double, "Twice a number.")
        >>> calls = (ToolCall("a", "double", '{"x": 4}'), ToolCall("b", "double", '{"y": 4}'), ToolCall("c", "half"))
        >>> turn = llm_call(None, "Double 4.", tools=[tool], llm=MockLLM(Completion("", tool_calls=calls)))
        >>> [r.data for r in call_tools(turn, [tool])]  # doctest: +NORMALIZE_WHITESPACE
        ['8', "error: unknown argument 'y'; missing argument 'x'; double takes (x)",
         "error: there is no tool 'half'; the tools are double"]
        >>> call_tools(turn, [tool])[0].parents[0].data
        {'name': 'double', 'arguments': {'x': 4}}
    """
    if not isinstance(turn, MessageNode) or turn.op is not LLM_CALL:
        raise InvalidInputError(
            f"call_tools takes the node of an llm_call that offered tools, got {type(turn).__name__}"
        )
    by_name = _check_tools(tools)
    results = []
    for i, data in enumerate((turn.info or {}).get("tool_calls") or ()):
        call = ToolCall.from_dict(data)
        value = {"name": call.name, "arguments": _arguments(call.arguments)}
        call_node = MessageNode(value, op=TOOL_CALL, inputs=(("turn", turn),), info={"id": call.id, "index": i})
        results.append(_result(call, call_node, by_name))
    return results


def _check_max_turns(max_turns: Any) -> None:
    if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
        raise InvalidInputError(f"max_turns must be an int >= 1 (model calls at most), got {max_turns!r}")


def _next_request(
    turn: MessageNode[Any], results: list[MessageNode[str]], n_turns: int, n_results: int
) -> tuple[list[Message], tuple[tuple[str, Any], ...]]:
    """The transcript after ``turn`` and its ``results``, and the inputs of the turn that reads it."""
    info = turn.info or {}
    calls = [ToolCall.from_dict(d).to_message() for d in info.get("tool_calls") or ()]
    assistant = Message(role="assistant", content=info.get("response", ""), tool_calls=calls)
    answers = [Message(role="tool", tool_call_id=r.info["id"] if r.info else "", content=r._data) for r in results]
    messages = [*info.get("messages", ()), assistant, *answers]
    inputs = (
        *turn.inputs,
        (f"turn[{n_turns}]", turn),
        *((f"result[{n_results + i}]", r) for i, r in enumerate(results)),
    )
    return messages, inputs


def run_agent(
    system: Any,
    *user: Any,
    tools: Sequence[Tool],
    demos: Any = None,
    llm: LLM | None = None,
    max_turns: int = 8,
    **params: Any,
) -> MessageNode[str]:
    """Let the model answer ``user`` with ``tools``: ask, run its tool calls, send the results, repeat.

    ``system``, ``user``, ``demos``, ``llm`` and ``params`` are those of
    :func:`~feedprop.ops.llm_call` (every turn uses the same ``params``). Returns the last turn's
    node: the model's answer, made without a tool call; or, when the ``max_turns``-th call still
    asked for tools, that turn (its calls not run, its ``info["tool_calls"]`` saying so).
    See the module docs for the graph it records.
    """
    _check_max_turns(max_turns)
    tool_map = _check_tools(tools)
    turn = llm_call(system, *user, demos=demos, tools=tools, llm=llm, **params)
    n_turns = n_results = 0
    for _ in range(max_turns - 1):
        if not (turn.info or {}).get("tool_calls"):
            break
        results = call_tools(turn, list(tool_map.values()))
        messages, inputs = _next_request(turn, results, n_turns, n_results)
        n_turns, n_results = n_turns + 1, n_results + len(results)
        turn = llm_chat(messages, inputs, tools=tools, llm=llm, **params)
    return turn


async def arun_agent(
    system: Any,
    *user: Any,
    tools: Sequence[Tool],
    demos: Any = None,
    llm: LLM | None = None,
    max_turns: int = 8,
    **params: Any,
) -> MessageNode[str]:
    """Async form of :func:`run_agent`: the model is awaited (``LLM.acomplete``); the tools run as plain calls.

    Example:
        >>> import asyncio
        >>> from feedprop.llm import MockLLM
        >>> def now() -> str:
        ...     return "noon"
        >>> out = asyncio.run(arun_agent(None, "Time?", tools=[Tool(now, "The time.")], llm=MockLLM("Noon.")))
        >>> out.data
        'Noon.'
    """
    _check_max_turns(max_turns)
    tool_map = _check_tools(tools)
    turn = await allm_call(system, *user, demos=demos, tools=tools, llm=llm, **params)
    n_turns = n_results = 0
    for _ in range(max_turns - 1):
        if not (turn.info or {}).get("tool_calls"):
            break
        results = call_tools(turn, list(tool_map.values()))
        messages, inputs = _next_request(turn, results, n_turns, n_results)
        n_turns, n_results = n_turns + 1, n_results + len(results)
        turn = await allm_chat(messages, inputs, tools=tools, llm=llm, **params)
    return turn
