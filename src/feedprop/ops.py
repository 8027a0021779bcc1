"""Built-in traced operators: arithmetic, comparison, text, containers, attributes, calls, LLM calls.

Every op here is an :class:`~feedprop.node.Op` object (or, for :func:`llm_call` and
:func:`llm_chat`, a function whose nodes carry the op :data:`LLM_CALL`): ``node.op is ops.add``
identifies an addition without reading any string. Python's operators on nodes route to the
same objects (``a + b`` is ``ops.add(a, b)``). Arguments may be nodes or plain values; plain
values are recorded as constants.

Example:
    >>> from feedprop.node import Node, Parameter
    >>> name = Parameter("Ada", name="name")
    >>> greeting = format("Hello, {}!", name)
    >>> greeting.data, greeting.op is format
    ('Hello, Ada!', True)
    >>> upper(greeting).data
    'HELLO, ADA!'
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from feedprop import llm as llm_module
from feedprop.errors import InvalidInputError
from feedprop.llm.base import LLM, Completion, Message, check_messages
from feedprop.node import (
    ABS,
    ADD,
    CALL,
    EQ,
    FLOORDIV,
    GE,
    GETITEM,
    GT,
    KEYS,
    LE,
    LT,
    MOD,
    MUL,
    NE,
    NEG,
    POS,
    POW,
    SUB,
    TRUEDIV,
    MessageNode,
    Node,
    Op,
    demos_problem,
)
from feedprop.propagate import toposort
from feedprop.tool import Tool
from feedprop.tracing import note_input

__all__ = [
    "LLM_CALL",
    "abs_",
    "add",
    "allm_call",
    "allm_chat",
    "answered_by",
    "call",
    "concat",
    "contains",
    "eq",
    "floordiv",
    "format",
    "ge",
    "getattr_",
    "getitem",
    "gt",
    "items",
    "iterate",
    "join",
    "json_dumps",
    "json_loads",
    "keys",
    "le",
    "len_",
    "llm_call",
    "llm_calls",
    "llm_chat",
    "lower",
    "lt",
    "make_dict",
    "make_list",
    "make_tuple",
    "mod",
    "mul",
    "ne",
    "neg",
    "not_",
    "pos",
    "pow",
    "replace",
    "split",
    "strip",
    "sub",
    "to_float",
    "to_int",
    "to_str",
    "truediv",
    "upper",
    "values",
]

# The ops behind Python's operators live with Node (which needs them); these are the same objects.
add, sub, mul, truediv, floordiv, mod, pow = ADD, SUB, MUL, TRUEDIV, FLOORDIV, MOD, POW
neg, pos, abs_ = NEG, POS, ABS
lt, le, gt, ge, eq, ne = LT, LE, GT, GE, EQ, NE
getitem, keys, call = GETITEM, KEYS, CALL


def _op(name: str, fn: Callable[..., Any], args: tuple[str, ...], description: str) -> Op:
    return Op(name, fn, args, f"[{name}] {description}")


# -- logic and conversions --
not_ = _op("not", lambda x: not x, ("x",), "not x")
to_str = _op("to_str", builtins.str, ("x",), "str(x)")
to_int = _op("to_int", builtins.int, ("x",), "int(x)")
to_float = _op("to_float", builtins.float, ("x",), "float(x)")

# -- text --
format = _op(
    "format", lambda template, *a, **k: template.format(*a, **k), ("template",), "template.format(*args, **kwargs)"
)
concat = _op("concat", lambda *parts: "".join(builtins.map(builtins.str, parts)), (), "the parts joined as text")
join = _op(
    "join",
    lambda separator, *parts: separator.join(builtins.map(builtins.str, parts)),
    ("separator",),
    "separator.join(parts)",
)
split = _op(
    "split",
    lambda text, sep=None, maxsplit=-1: text.split(sep, maxsplit),
    ("text", "sep", "maxsplit"),
    "text.split(sep, maxsplit)",
)
strip = _op("strip", lambda text, chars=None: text.strip(chars), ("text", "chars"), "text.strip(chars)")
lower = _op("lower", lambda text: text.lower(), ("text",), "text.lower()")
upper = _op("upper", lambda text: text.upper(), ("text",), "text.upper()")
replace = _op(
    "replace", lambda text, old, new: text.replace(old, new), ("text", "old", "new"), "text.replace(old, new)"
)
json_loads = _op("json_loads", json.loads, ("text",), "json.loads(text): parse JSON text")
json_dumps = _op(
    "json_dumps",
    lambda value: json.dumps(value, ensure_ascii=False),
    ("value",),
    "json.dumps(value): the value as JSON text",
)

# -- containers --
len_ = _op("len", builtins.len, ("obj",), "len(obj)")
contains = _op("contains", lambda container, item: item in container, ("container", "item"), "item in container")
values = _op("values", lambda d: builtins.list(d.values()), ("obj",), "list(obj.values())")
items = _op("items", lambda d: builtins.list(d.items()), ("obj",), "list(obj.items())")
make_list = _op("list", lambda *xs: builtins.list(xs), (), "[item0, item1, ...]")
make_tuple = _op("tuple", lambda *xs: xs, (), "(item0, item1, ...)")
make_dict = _op("dict", lambda **kw: kw, (), "{key: value, ...}")

# -- attributes --
getattr_ = _op("getattr", builtins.getattr, ("obj", "name"), "getattr(obj, name)")


def iterate(node: Node[Any]) -> list[MessageNode[Any]]:
    """The items of a list/tuple node (or the keys of a dict node), each a traced ``getitem``.

    Example:
        >>> [x.data for x in iterate(Node([1, 2], name="xs"))]
        [1, 2]
    """
    if not isinstance(node, Node):
        raise InvalidInputError(f"iterate takes a Node, got {type(node).__name__}; iterate plain values directly")
    return builtins.list(iter(node))  # list(node) would call len(node), a control read inside a forward


#: The op of every node made by :func:`llm_call`.
LLM_CALL = Op(
    "llm_call", None, ("system", "user"), "[llm_call] asks a language model: system prompt, then user message"
)


def _text(role: str, value: Any) -> str:
    if isinstance(value, Node):
        note_input(value)
        value = value._data
    if not isinstance(value, str):
        raise InvalidInputError(
            f"llm_call's {role} prompt must be text, got {type(value).__name__}; "
            "build it with ops.format(...) or ops.to_str(...) first"
        )
    return value


def _demo_turns(demos: Any) -> list[Message]:
    value = demos
    if isinstance(demos, Node):
        note_input(demos)
        value = demos._data
    problem = demos_problem(value)
    if problem:
        raise InvalidInputError(
            f"llm_call's demos: {problem}; pass a feedprop.Demos parameter (or a list of such dicts)"
        )
    turns: list[Message] = []
    for demo in value:
        turns.append(Message(role="user", content=demo["input"]))
        turns.append(Message(role="assistant", content=demo["output"]))
    return turns


def _prepare(system: Any, user: tuple[Any, ...], demos: Any) -> tuple[list[Message], tuple[tuple[str, Any], ...]]:
    if not user:
        raise InvalidInputError("llm_call needs at least one user message: llm_call(system, user, ...)")
    messages: list[Message] = []
    inputs: list[tuple[str, Any]] = []
    if system is not None:
        messages.append(Message(role="system", content=_text("system", system)))
        inputs.append(("system", system))
    if demos is not None:
        messages.extend(_demo_turns(demos))
        inputs.append(("demos", demos))
    parts = [_text("user", u) for u in user]
    messages.append(Message(role="user", content="\n\n".join(parts)))
    if len(user) == 1:
        inputs.append(("user", user[0]))
    else:
        inputs.extend((f"user[{i}]", u) for i, u in enumerate(user))
    return messages, tuple(inputs)


def _record(
    messages: list[Message],
    inputs: tuple[tuple[str, Any], ...],
    reply: Completion,
    params: dict[str, Any],
    teacher: str | None = None,
) -> MessageNode[str]:
    info: dict[str, Any] = {
        "messages": messages,
        "response": reply.text,
        "model": reply.model,
        "usage": reply.usage.to_dict(),
        "params": params,
    }
    if reply.tool_calls:
        info["tool_calls"] = [call.to_dict() for call in reply.tool_calls]
    if teacher is not None:
        info["answered_by"] = teacher
    return MessageNode(reply.text, op=LLM_CALL, inputs=inputs, info=info)


def _offer(
    tools: Sequence[Tool] | None, inputs: tuple[tuple[str, Any], ...], params: dict[str, Any]
) -> tuple[tuple[tuple[str, Any], ...], dict[str, Any]]:
    """The call's inputs and parameters with ``tools`` offered: their schemas sent, their descriptions inputs."""
    if tools is None:
        return inputs, params
    if isinstance(tools, Tool | str) or not isinstance(tools, Sequence) or not tools:
        raise InvalidInputError(f"tools must be a non-empty list of feedprop.Tool objects, got {tools!r:.80}")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, Tool):
            raise InvalidInputError(
                f"tools[{i}] must be a feedprop.Tool (Tool(fn, 'what it does')), got {type(tool).__name__}"
            )
        if tool.name in names:
            raise InvalidInputError(f"two tools are named {tool.name!r}; give each its own name (Tool(..., name=))")
        names.add(tool.name)
        note_input(tool.description)
    # A description already among the inputs (a later turn of a conversation) is recorded once.
    offered = tuple(
        (f"tools[{i}]", tool.description)
        for i, tool in enumerate(tools)
        if not any(value is tool.description for _, value in inputs)
    )
    return inputs + offered, {**params, "tools": [tool.schema() for tool in tools]}


def _check_inputs(inputs: Any) -> tuple[tuple[str, Any], ...]:
    if isinstance(inputs, str) or not isinstance(inputs, Sequence):
        raise InvalidInputError(f"inputs must be a list of (name, node) pairs, got {type(inputs).__name__}")
    out = []
    for i, pair in enumerate(inputs):
        if not isinstance(pair, tuple) or len(pair) != 2 or not isinstance(pair[0], str):
            raise InvalidInputError(f"inputs[{i}] must be a (name, node) pair, got {pair!r:.80}")
        if isinstance(pair[1], Node):
            note_input(pair[1])
        out.append(pair)
    return tuple(out)


_TEACHER: contextvars.ContextVar[LLM | None] = contextvars.ContextVar("feedprop_teacher", default=None)


@contextlib.contextmanager
def answered_by(teacher: LLM) -> Iterator[LLM]:
    """Within this block (and the threads and tasks started from it), ``teacher`` answers every
    :func:`llm_call` and :func:`allm_call` in the student's place, whatever model the call names.

    The recorded call is the same as the student's (its messages, demonstrations and inputs),
    with ``info["answered_by"]`` naming the teacher: a run the teacher got right is a
    demonstration of the workflow's own calls (``fp.train(teacher=...)`` uses this).

    Example:
        >>> from feedprop.llm import MockLLM
        >>> student, teacher = MockLLM("five"), MockLLM("5")
        >>> with answered_by(teacher):
        ...     out = llm_call("Answer with a number.", "2+3?", llm=student)
        >>> out.data, out.info["answered_by"] == teacher.model, llm_call("Answer.", "2+3?", llm=student).data
        ('5', True, 'five')
    """
    if not isinstance(teacher, LLM):
        raise InvalidInputError(f"answered_by takes a feedprop.llm.LLM, got {type(teacher).__name__}")
    token = _TEACHER.set(teacher)
    try:
        yield teacher
    finally:
        _TEACHER.reset(token)


def _model(llm: LLM | None) -> tuple[LLM, str | None]:
    """The model that answers a call naming ``llm``, and the teacher's name when a teacher answers."""
    teacher = _TEACHER.get()
    if teacher is not None:
        return teacher, teacher.model
    model = llm if llm is not None else llm_module.default()
    if not isinstance(model, LLM):
        raise InvalidInputError(f"llm must be a feedprop.llm.LLM, got {type(model).__name__}")
    return model, None


def llm_call(
    system: Any,
    *user: Any,
    demos: Any = None,
    tools: Sequence[Tool] | None = None,
    llm: LLM | None = None,
    **params: Any,
) -> MessageNode[str]:
    """Ask a language model; the output node records the prompts, the response and the usage.

    ``system`` is the system prompt (a str, a text node, or ``None``); each ``user`` part (str or
    node) is joined by blank lines into one user message. ``demos`` (a
    :class:`~feedprop.node.Demos` parameter, or a plain list of ``{"input": str, "output": str}``)
    are shown between the system prompt and the question, each as a user turn and the
    assistant's reply; the Demos node becomes an input of the call (named ``"demos"``), so
    feedback reaches it. ``tools`` (:class:`~feedprop.tool.Tool` objects) are offered to the
    model in the OpenAI tools format; their descriptions become inputs of the call (``"tools[i]"``),
    and the calls the model asks for are in ``node.info["tool_calls"]`` (``{"id", "name",
    "arguments"}`` dicts; :func:`feedprop.agent.call_tools` runs them,
    :func:`feedprop.agent.run_agent` runs the whole conversation). ``llm=None`` uses
    ``feedprop.llm.default()``; ``params`` (``temperature``, ``max_tokens``, ...) pass through.
    ``node.info["messages"]`` holds what was sent.

    Example:
        >>> from feedprop.llm import MockLLM
        >>> from feedprop.node import Demos, Parameter
        >>> instruction = Parameter("Answer with a number.", name="instruction")
        >>> out = llm_call(instruction, "2+2?", llm=MockLLM("4"), temperature=0)
        >>> out.data, out.parents[0] is instruction, out.info["messages"][1]["content"]
        ('4', True, '2+2?')
        >>> shots = Demos([{"input": "1+1?", "output": "2"}], name="shots")
        >>> out = llm_call(instruction, "3+3?", demos=shots, llm=MockLLM("6"))
        >>> [(m["role"], m["content"]) for m in out.info["messages"][1:]]
        [('user', '1+1?'), ('assistant', '2'), ('user', '3+3?')]
        >>> dict(out.inputs)["demos"] is shots
        True
    """
    messages, inputs = _prepare(system, user, demos)
    inputs, params = _offer(tools, inputs, params)
    model, teacher = _model(llm)
    return _record(messages, inputs, model.complete(messages, **params), params, teacher)


async def allm_call(
    system: Any,
    *user: Any,
    demos: Any = None,
    tools: Sequence[Tool] | None = None,
    llm: LLM | None = None,
    **params: Any,
) -> MessageNode[str]:
    """Async form of :func:`llm_call` (uses ``LLM.acomplete``): the way to ask a model in ``async def forward``.

    It awaits the reply, so while one item waits for its model the other items of a batch run
    (``fp.train`` and ``fp.evaluate`` run an async workflow's items as tasks on one event loop);
    a plain :func:`llm_call` there would block every item until its reply came. The node it
    returns is the same as :func:`llm_call`'s.

    Example:
        >>> import asyncio
        >>> from feedprop.llm import MockLLM
        >>> from feedprop.node import Parameter
        >>> instruction = Parameter("Answer with a number.", name="instruction")
        >>> async def ask_both():
        ...     return await asyncio.gather(
        ...         allm_call(instruction, "2+2?", llm=MockLLM("4")), allm_call(instruction, "3+3?", llm=MockLLM("6"))
        ...     )
        >>> [(out.data, out.parents[0] is instruction) for out in asyncio.run(ask_both())]
        [('4', True), ('6', True)]
    """
    messages, inputs = _prepare(system, user, demos)
    inputs, params = _offer(tools, inputs, params)
    model, teacher = _model(llm)
    return _record(messages, inputs, await model.acomplete(messages, **params), params, teacher)


def llm_chat(
    messages: Sequence[Message],
    inputs: Sequence[tuple[str, Any]] = (),
    *,
    tools: Sequence[Tool] | None = None,
    llm: LLM | None = None,
    **params: Any,
) -> MessageNode[str]:
    """Ask a language model with a transcript you built; the node is an :func:`llm_call` node.

    The step under :func:`llm_call` and each turn of :func:`feedprop.agent.run_agent`: use it
    for a conversation of your own. ``messages`` go to the model as they are (checked by
    :func:`feedprop.llm.check_messages`); ``inputs`` are ``(name, node)`` pairs, the values the
    messages were made from, which become the call's parents: say every node whose value is in
    a message, or feedback will not reach it. ``tools``, ``llm`` and ``params`` as in
    :func:`llm_call`.

    Example:
        >>> from feedprop.llm import MockLLM
        >>> from feedprop.node import Parameter
        >>> persona = Parameter("You are terse.", name="persona")
        >>> first = llm_call(persona, "Name a colour.", llm=MockLLM("Red."))
        >>> turns = [*first.info["messages"], {"role": "assistant", "content": first.data},
        ...          {"role": "user", "content": "Another."}]
        >>> second = llm_chat(turns, [("system", persona), ("turn[0]", first)], llm=MockLLM("Blue."))
        >>> second.data, second.parents == (persona, first), len(second.info["messages"])
        ('Blue.', True, 4)
    """
    checked = check_messages(messages)
    recorded, params = _offer(tools, _check_inputs(inputs), params)
    model, teacher = _model(llm)
    return _record(checked, recorded, model.complete(checked, **params), params, teacher)


async def allm_chat(
    messages: Sequence[Message],
    inputs: Sequence[tuple[str, Any]] = (),
    *,
    tools: Sequence[Tool] | None = None,
    llm: LLM | None = None,
    **params: Any,
) -> MessageNode[str]:
    """Async form of :func:`llm_chat` (uses ``LLM.acomplete``).

    Example:
        >>> import asyncio
        >>> from feedprop.llm import MockLLM
        >>> out = asyncio.run(allm_chat([{"role": "user", "content": "Hi"}], llm=MockLLM("Hello")))
        >>> out.data, out.op is LLM_CALL
        ('Hello', True)
    """
    checked = check_messages(messages)
    recorded, params = _offer(tools, _check_inputs(inputs), params)
    model, teacher = _model(llm)
    return _record(checked, recorded, await model.acomplete(checked, **params), params, teacher)


def llm_calls(output: Node[Any]) -> list[MessageNode[Any]]:
    """Every LLM-call node in ``output``'s graph, inputs before the calls that read them.

    Example:
        >>> from feedprop.llm import MockLLM
        >>> out = strip(llm_call("Be brief.", "2+2?", llm=MockLLM(" 4 ")))
        >>> [(n.info["response"], n.info["messages"][0]["content"]) for n in llm_calls(out)]
        [(' 4 ', 'Be brief.')]
    """
    return [n for n in toposort(output) if isinstance(n, MessageNode) and n.op is LLM_CALL]
