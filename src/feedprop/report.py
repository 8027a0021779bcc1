"""Render the propagated feedback of some parameters as one pseudo-code problem for an optimizer.

:func:`render_problem` takes parameters holding feedback from one or more backward calls (a
minibatch), joins their minimal subgraphs into one graph, and writes it in sections::

    #Code          the ops that ran, one line each: out = op(arg=name, ...), with the values
                   the program read before an op ran (its control parents) as a comment
    #Definitions   what each op does
    #Variables     the parameters the optimizer may change, with their values
    #Constraints   rules on those values
    #Inputs        values it must not change (leaves and values computed elsewhere)
    #Others        intermediate values
    #Outputs       the outputs feedback was given on
    #Feedback      the feedback itself, every call of it

The result is a :class:`Problem`: the sections as fields, :meth:`Problem.render` for the text,
and ``parameters``, the map from the names shown to the :class:`~feedprop.node.Parameter`
objects, so an optimizer applies a suggestion keyed ``"instruction"`` to the right object.

Rendering is deterministic: op outputs are numbered within the problem (``llm_call:0``), not by
the process-wide counters, and names chosen by users are kept, suffixed (``question_2``) only when
two differ in identity. A token budget (estimated as characters / 4) shortens long values in the
middle, saying so (``...[truncated 1,234 chars]...``), then long sections, before it ever
shortens a variable's value.

Example:
    >>> from feedprop.node import Node, Parameter
    >>> x = Parameter(3, name="x", description="a number to tune", bounds=(0, 10))
    >>> y = x * Node(2, name="two")
    >>> y.backward("y should be 8")
    >>> problem = render_problem([x])
    >>> print(problem.render())
    #Code
    mul:0 = mul(lhs=x, rhs=two)
    <BLANKLINE>
    #Definitions
    [mul] lhs * rhs
    <BLANKLINE>
    #Variables
    # a number to tune
    (number) x = 3
    <BLANKLINE>
    #Constraints
    (x) must lie within [0, 10]
    <BLANKLINE>
    #Inputs
    two = 2
    <BLANKLINE>
    #Others
    (none)
    <BLANKLINE>
    #Outputs
    mul:0 = 6
    <BLANKLINE>
    #Feedback
    y should be 8
    >>> problem.parameters["x"] is x
    True
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from feedprop._text import truncate_middle
from feedprop.errors import InvalidInputError
from feedprop.llm import estimate_tokens
from feedprop.node import ExceptionNode, Node, Parameter
from feedprop.propagate import ParameterFeedback

__all__ = ["SECTIONS", "Problem", "estimate_tokens", "render_problem"]

#: The section headers, in order.
SECTIONS = ("#Code", "#Definitions", "#Variables", "#Constraints", "#Inputs", "#Others", "#Outputs", "#Feedback")

_AUTO_NAME = re.compile(r"^(?P<base>.+):\d+$")
_UNLIMITED = 1 << 62


@dataclass
class Problem:
    """A rendered problem: each section as a field, the text from :meth:`render`.

    ``variables``, ``constraints``, ``inputs``, ``others`` and ``outputs`` map the names shown to
    their rendered entries; ``parameters`` maps the variable names to the Parameter objects.
    ``truncated`` says whether the token budget shortened anything.
    """

    code: list[str] = field(default_factory=list)
    definitions: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    constraints: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    others: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    feedback: list[str] = field(default_factory=list)
    parameters: dict[str, Parameter[Any]] = field(default_factory=dict)
    truncated: bool = False

    def render(self) -> str:
        """The problem as text, sections in :data:`SECTIONS` order (an empty one reads ``(none)``)."""
        bodies: list[Iterable[str]] = [
            self.code,
            self.definitions,
            self.variables.values(),
            self.constraints.values(),
            self.inputs.values(),
            self.others.values(),
            self.outputs.values(),
            self.feedback,
        ]
        blocks = []
        for header, lines in zip(SECTIONS, bodies, strict=True):
            text = "\n".join(lines)
            blocks.append(f"{header}\n{text if text else '(none)'}")
        return "\n\n".join(blocks)

    @property
    def tokens(self) -> int:
        """Estimated tokens of :meth:`render`."""
        return estimate_tokens(self.render())

    @property
    def readonly(self) -> list[str]:
        """Names shown that are not variables (inputs, others, outputs): values the optimizer may not set."""
        return [*self.inputs, *self.others, *self.outputs]


@dataclass
class _Limits:
    value: int = _UNLIMITED  # characters of an input / other / output value
    feedback: int = _UNLIMITED  # characters of one feedback text
    variable: int = _UNLIMITED  # characters of a variable's value
    lines: int = _UNLIMITED  # entries kept per long section (#Code, #Others, #Inputs)


# Tightened in this order until the problem fits: other values, feedback, section length, variables.
_SCHEDULE = [
    _Limits(),
    _Limits(value=2000, feedback=4000),
    _Limits(value=800, feedback=4000),
    _Limits(value=300, feedback=4000),
    _Limits(value=120, feedback=1500),
    _Limits(value=60, feedback=600),
    _Limits(value=60, feedback=600, lines=60),
    _Limits(value=40, feedback=300, lines=20),
    _Limits(value=40, feedback=300, lines=20, variable=2000),
    _Limits(value=30, feedback=200, lines=8, variable=600),
    _Limits(value=20, feedback=120, lines=4, variable=200),
]


def render_problem(parameters: Iterable[Parameter[Any]], *, max_tokens: int | None = None) -> Problem:
    """One problem from the feedback the ``parameters`` hold (see the module docs).

    ``max_tokens`` bounds the estimated size of :meth:`Problem.render`; values are shortened
    in stages until it fits (the structure itself is kept, so a tiny budget may still be exceeded).
    """
    params = list(parameters)
    for p in params:
        if not isinstance(p, Parameter):
            raise InvalidInputError(f"render_problem takes Parameters, got {type(p).__name__}")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise InvalidInputError(f"max_tokens must be a positive int or None, got {max_tokens!r}")
    graph = _Graph(params)
    full = graph.render(_SCHEDULE[0])
    problem = full
    if max_tokens is not None:
        for limits in _SCHEDULE[1:]:
            if problem.tokens <= max_tokens:
                break
            problem = graph.render(limits)
    problem.truncated = problem is not full and problem.render() != full.render()
    return problem


class _Graph:
    """The union of the subgraphs, its roles and display names (computed once, rendered per budget)."""

    def __init__(self, params: list[Parameter[Any]]) -> None:
        self.entries: list[tuple[Parameter[Any], ParameterFeedback]] = [
            (p, e) for p in params for e in p.feedback if isinstance(e, ParameterFeedback)
        ]
        seen: dict[int, Node[Any]] = {}
        for _, entry in self.entries:
            for n in entry.subgraph:
                seen.setdefault(id(n), n)
        self.nodes = _merge_order(list(seen.values()))
        members = {id(n) for n in self.nodes}
        self.variables = [p for p in params if id(p) in members]
        variable_ids = {id(p) for p in self.variables}
        self.outputs: list[Node[Any]] = []
        for _, entry in self.entries:
            if all(o is not entry.output for o in self.outputs):
                self.outputs.append(entry.output)
        output_ids = {id(o) for o in self.outputs}
        # Computed: on a path from a variable (so its #Code line shows how the variable flows).
        self.computed: set[int] = set()
        for n in self.nodes:
            if id(n) not in variable_ids and any(
                id(q) in variable_ids or id(q) in self.computed for q in n.parents if id(q) in members
            ):
                self.computed.add(id(n))
        self.inputs = [n for n in self.nodes if id(n) not in variable_ids and id(n) not in self.computed]
        self.others = [n for n in self.nodes if id(n) in self.computed and id(n) not in output_ids]
        self.names = _display_names(self.variables, self.nodes)

    def name(self, value: Any) -> str:
        if isinstance(value, Node):
            return self.names.get(id(value)) or value.name
        return truncate_middle(_literal(value), 40)

    def render(self, limits: _Limits) -> Problem:
        problem = Problem()
        ops: dict[int, str] = {}
        read: set[int] = set()  # control values already shown with their value
        for n in self.nodes:
            if id(n) not in self.computed or n.op is None:
                continue
            problem.code.append(self._code_line(n, read))
            ops.setdefault(id(n.op), n.op.description or f"[{n.op.name}]")
        problem.definitions = list(ops.values())
        for p in self.variables:
            name = self.names[id(p)]
            problem.parameters[name] = p
            value = _value_text(p._data, limits.variable, p.kind)
            entry = f"({p.kind}) {name} ={value}" if value.startswith("\n") else f"({p.kind}) {name} = {value}"
            problem.variables[name] = f"# {p.description}\n{entry}" if p.description else entry
            rules = [p.constraint] if p.constraint else []
            if p.bounds is not None:
                rules.append(f"must lie within [{p.bounds[0]}, {p.bounds[1]}]")
            if p.kind == "code":
                rules.append("must stay one Python function definition with the same name and parameters")
            if p.kind == "demos":
                limit = getattr(p, "max_demos", None)
                most = f"at most {limit} " if limit is not None else ""
                rules.append(f'must stay a list of {most}demonstrations {{"input": str, "output": str}}')
            if rules:
                problem.constraints[name] = f"({name}) " + "; ".join(rules)
        for item in _middle(self.inputs, limits.lines):
            self._entry(problem.inputs, item, limits)
        for item in _middle(self.others, limits.lines):
            self._entry(problem.others, item, limits)
        for out in self.outputs:
            self._entry(problem.outputs, out, limits)
        problem.code = _middle_lines(problem.code, limits.lines)
        problem.feedback = self._feedback(limits)
        return problem

    def _entry(self, section: dict[str, str], node: Node[Any] | None, limits: _Limits) -> None:
        if node is None:  # the marker _middle leaves where it dropped entries
            section["..."] = "...[more entries omitted to fit the budget]..."
            return
        name = self.name(node)
        if isinstance(node, ExceptionNode):
            text = node.message + (f"\n{node.traceback}" if node.traceback else "")
            section[name] = f"{name} = {truncate_middle(text, limits.feedback)}"
        else:
            section[name] = f"{name} = {_value_text(node._data, limits.value, None)}"

    def _code_line(self, n: Node[Any], read: set[int]) -> str:
        assert n.op is not None
        inputs = getattr(n, "inputs", ())
        info = getattr(n, "info", None) or {}
        code = info.get("code")
        callee = self.name(code) if isinstance(code, Node) else n.op.name
        args = ", ".join(f"{k}={self.name(v)}" for k, v in inputs)
        line = f"{self.name(n)} = {callee}({args})"
        control = [p for p in n.control_parents if all(p is not v for _, v in inputs) and p is not code]
        hidden = [
            self.name(p)
            for p in n.parents
            if all(p is not v for _, v in inputs) and p is not code and all(p is not c for c in control)
        ]
        if hidden:
            line += f"  # also read: {', '.join(hidden)}"
        if control:  # values the program read (to branch on) before this op ran; each value shown once
            shown = [
                self.name(p) if id(p) in read else f"{self.name(p)} = {truncate_middle(_literal(p._data), 40)}"
                for p in control
            ]
            read.update(id(p) for p in control)
            line += f"  # control: the program read {', '.join(shown)} before this call"
        if isinstance(n, ExceptionNode):
            line += "  # raised"
        return line

    def _feedback(self, limits: _Limits) -> list[str]:
        runs: list[tuple[Node[Any], Any]] = []
        for _, entry in self.entries:
            fb = entry.output_feedback
            if not any(o is entry.output and f is fb for o, f in runs):
                runs.append((entry.output, fb))
        lines = []
        single = len(runs) == 1
        for output, fb in runs:
            score = f" (score: {fb.score:g})" if fb.score is not None else ""
            text = truncate_middle(fb.text, limits.feedback)
            lines.append(f"{text}{score}" if single else f"For {self.name(output)}{score}: {text}")
        for param, entry in self.entries:  # what a propagator wrote for one variable in particular
            if entry.feedback is not entry.output_feedback and entry.feedback.text != entry.output_feedback.text:
                who = self.names.get(id(param), param.name)
                lines.append(f"For variable {who}: {truncate_middle(entry.feedback.text, limits.feedback)}")
        return lines


def _merge_order(nodes: list[Node[Any]]) -> list[Node[Any]]:
    """A topological order of ``nodes`` (parents first), ties broken by first appearance."""
    index = {id(n): i for i, n in enumerate(nodes)}
    waiting = {id(n): sum(1 for p in _unique(n.parents) if id(p) in index) for n in nodes}
    children: dict[int, list[Node[Any]]] = {}
    for n in nodes:
        for p in _unique(n.parents):
            if id(p) in index:
                children.setdefault(id(p), []).append(n)
    ready = [(index[id(n)], n) for n in nodes if waiting[id(n)] == 0]
    heapq.heapify(ready)
    order: list[Node[Any]] = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for c in children.get(id(n), ()):
            waiting[id(c)] -= 1
            if waiting[id(c)] == 0:
                heapq.heappush(ready, (index[id(c)], c))
    return order


def _unique(nodes: Iterable[Node[Any]]) -> list[Node[Any]]:
    seen: set[int] = set()
    out = []
    for n in nodes:
        if id(n) not in seen:
            seen.add(id(n))
            out.append(n)
    return out


def _display_names(variables: list[Parameter[Any]], nodes: list[Node[Any]]) -> dict[int, str]:
    """Unique names: variables first, then nodes in order; automatic names renumbered from 0."""
    names: dict[int, str] = {}
    taken: set[str] = set()
    counters: dict[str, int] = {}
    for n in [*variables, *nodes]:
        if id(n) in names:
            continue
        auto = _AUTO_NAME.match(n.name)
        if auto is not None:
            base = auto.group("base")
            k = counters.get(base, 0)
            while f"{base}:{k}" in taken:
                k += 1
            counters[base] = k + 1
            name = f"{base}:{k}"
        else:
            name, i = n.name, 2
            while name in taken:
                name, i = f"{n.name}_{i}", i + 1
        taken.add(name)
        names[id(n)] = name
    return names


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _value_text(value: Any, limit: int, kind: str | None) -> str:
    """A value for a section: code as a block, multi-line text as a block, the rest as JSON."""
    if kind == "code" and isinstance(value, str):
        return "\n" + truncate_middle(value.rstrip("\n"), limit)
    if kind == "demos" and isinstance(value, list) and value:  # one demonstration a line
        lines = [_literal(demo) for demo in value]
        return "[\n" + truncate_middle(",\n".join(lines), limit) + "\n]"
    if isinstance(value, str) and "\n" in value:
        return '"""\n' + truncate_middle(value, limit) + '\n"""'
    if isinstance(value, str) and kind == "text":
        return truncate_middle(_literal(value), limit)
    if isinstance(value, str):
        return truncate_middle(value, limit)
    return truncate_middle(_literal(value), limit)


def _middle(items: list[Node[Any]], limit: int) -> list[Node[Any] | None]:
    """At most ``limit`` items, keeping the head and tail; ``None`` marks where the middle was."""
    if len(items) <= limit:
        return list(items)
    head = limit // 2
    return [*items[:head], None, *items[len(items) - (limit - head) :]]


def _middle_lines(lines: list[str], limit: int) -> list[str]:
    if len(lines) <= limit:
        return lines
    head = limit // 2
    omitted = len(lines) - limit
    return [
        *lines[:head],
        f"...[{omitted:,} lines omitted to fit the budget]...",
        *lines[len(lines) - (limit - head) :],
    ]
