"""The backward pass: a topological sort and a reverse walk, with pluggable propagators.

:func:`backward` visits every ancestor of the output once, children before parents. At each node
a :class:`Propagator` decides what feedback goes to each parent; a trainable parameter that is
reached receives one :class:`ParameterFeedback` per backward call. Feedback for intermediate nodes
lives only for the walk (unless ``retain_feedback=True``).

:class:`MinimalSubgraph` (the default) gives every parameter the output's feedback together with
the minimal subgraph connecting it to the output, as defined in the Trace work::

    X ∪ {Y} ∪ {Z, P | Z ∈ ancestors(Y), Z ∈ descendants(X), P ∈ parents(Z) or P ∈ parents(Y)}

The walk is O(nodes + edges); each parameter's subgraph is computed on first access and cached,
so a graph with many parameters does not pay O(nodes × parameters) unless it is asked to.

:class:`TextualGradient` is the TextGrad-style alternative: walking backwards, a language model
writes the feedback each input of an op should get from the feedback its output got, so each
parameter receives feedback written for it. Its prompts are the module constants
:data:`TEXTUAL_GRADIENT_SYSTEM` and :data:`TEXTUAL_GRADIENT_USER`.

This module sees nodes only through their attributes (``parents``, ``feedback``, ``trainable``),
so it sits below :mod:`feedprop.node`.

Example:
    >>> from feedprop.node import Parameter
    >>> x = Parameter(2.0, name="x")
    >>> y = x * 3
    >>> y.backward("too small")
    >>> [n.name for n in x.feedback[0].subgraph] == ["x", y.name]
    True
"""

from __future__ import annotations

import dataclasses
import json
import weakref
from collections.abc import Iterable, Sequence
from string import Template
from typing import TYPE_CHECKING, Any

from feedprop import llm as llm_module
from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm.base import LLM, Message

if TYPE_CHECKING:  # types only: node sits below this module and imports it
    from feedprop.node import Feedback, Node

__all__ = [
    "TEXTUAL_GRADIENT_SYSTEM",
    "TEXTUAL_GRADIENT_USER",
    "BackwardRun",
    "MinimalSubgraph",
    "ParameterFeedback",
    "Propagator",
    "TextualGradient",
    "backward",
    "minimal_subgraph",
    "toposort",
]


def toposort(root: Node[Any]) -> list[Node[Any]]:
    """``root`` and all its ancestors, parents before children; iterative, so depth is unlimited.

    The order is deterministic: a depth-first post-order that visits parents in their order.

    Example:
        >>> from feedprop.node import Node
        >>> a = Node(1, name="a")
        >>> [n.name for n in toposort(a)]
        ['a']
    """
    # Depth-first with an explicit stack. A node is expanded when first on top (state 1) and
    # emitted when on top again after all its parents (state 2); duplicates are popped unseen.
    order: list[Node[Any]] = []
    state: dict[int, int] = {}
    stack = [root]
    while stack:
        node = stack[-1]
        seen = state.get(id(node))
        if seen is None:
            state[id(node)] = 1
            for parent in reversed(node.parents):  # reversed: the first parent is emitted first
                if id(parent) not in state:
                    stack.append(parent)
        else:
            stack.pop()
            if seen == 1:
                state[id(node)] = 2
                order.append(node)
    return order


def minimal_subgraph(
    parameter: Node[Any], output: Node[Any], order: Sequence[Node[Any]] | None = None
) -> tuple[Node[Any], ...]:
    """The minimal subgraph connecting ``parameter`` to ``output``, in topological order.

    ``order`` is ``toposort(output)`` when the caller already has it. Returns ``()`` when the
    parameter is not an ancestor of the output.

    Example:
        >>> from feedprop.node import Node, Parameter
        >>> x, c = Parameter(1, name="x"), Node(2, name="c")
        >>> y = x + c
        >>> [n.name for n in minimal_subgraph(x, y)] == ["x", "c", y.name]
        True
    """
    if order is None:
        order = toposort(output)
    # Forward pass from the parameter: a node is a descendant if any of its parents is one.
    below: set[int] = {id(parameter)}
    for node in order:
        for p in node.parents:
            if id(p) in below:
                below.add(id(node))
                break
    if id(output) not in below:
        return ()
    keep: set[int] = {id(parameter), id(output)}
    keep.update(id(p) for p in output.parents)
    for node in order:
        if id(node) in below and node is not parameter and node is not output:
            keep.add(id(node))
            keep.update(id(p) for p in node.parents)
    return tuple(n for n in order if id(n) in keep)


class BackwardRun:
    """One backward call: its output and feedback, shared by the entries it created (and one sort)."""

    __slots__ = ("_order", "feedback", "output")

    def __init__(self, output: Node[Any], feedback: Feedback, order: list[Node[Any]]) -> None:
        self.output = output
        self.feedback = feedback
        self._order: list[Node[Any]] | None = order

    def order(self) -> list[Node[Any]]:
        if self._order is None:
            self._order = toposort(self.output)
        return self._order

    def release(self) -> None:
        # The order is cheap to recompute; dropping it after the walk keeps idle memory low.
        self._order = None


class ParameterFeedback:
    """What one backward call delivered to one parameter.

    ``feedback`` is what the propagator gave this parameter (for :class:`MinimalSubgraph`, the
    output's feedback itself), ``output`` the node ``backward`` was called on, ``output_feedback``
    the feedback given there, and ``subgraph`` the minimal subgraph connecting the parameter to
    the output (topological order; computed on first access).
    """

    __slots__ = ("_parameter", "_run", "_subgraph", "feedback")

    def __init__(self, parameter: Node[Any], feedback: Feedback, run: BackwardRun) -> None:
        self.feedback = feedback
        self._run = run
        # A weak link: the parameter holds this entry, so a strong one would make a cycle.
        self._parameter = weakref.ref(parameter)
        self._subgraph: tuple[Node[Any], ...] | None = None

    @property
    def output(self) -> Node[Any]:
        return self._run.output

    @property
    def output_feedback(self) -> Feedback:
        return self._run.feedback

    @property
    def parameter(self) -> Node[Any] | None:
        return self._parameter()

    @property
    def subgraph(self) -> tuple[Node[Any], ...]:
        if self._subgraph is None:
            parameter = self._parameter()
            if parameter is None:  # pragma: no cover - the parameter owns this entry
                return ()
            self._subgraph = minimal_subgraph(parameter, self._run.output, self._run.order())
        return self._subgraph

    def __repr__(self) -> str:
        return f"ParameterFeedback(output={self.output.name!r}, feedback={self.feedback!r})"


class Propagator:
    """Decides, node by node, what feedback each parent receives. Override :meth:`propagate`.

    ``received`` is every feedback the node got from its children in this walk (at least one).
    """

    def propagate(
        self, node: Node[Any], received: Sequence[Feedback], run: BackwardRun
    ) -> Iterable[tuple[Node[Any], Feedback]]:
        raise NotImplementedError

    def deliver(self, parameter: Node[Any], received: Sequence[Feedback], run: BackwardRun) -> ParameterFeedback:
        """The entry a trainable parameter keeps; by default the first feedback it received."""
        return ParameterFeedback(parameter, received[0], run)

    def begin(self, run: BackwardRun) -> None:
        """Called once before the walk (e.g. to precompute which nodes lead to parameters)."""

    def walk(self, order: list[Node[Any]], run: BackwardRun, retain_feedback: bool) -> None:
        """The reverse walk: children before parents, each node handled once.

        A trainable node keeps what :meth:`deliver` makes of the feedback it received; the
        output (and, with ``retain_feedback``, every node) keeps the feedback itself.
        """
        output = run.output
        pending: dict[int, list[Feedback]] = {id(output): [run.feedback]}
        for node in reversed(order):
            received = pending.pop(id(node), None)
            if received is None:  # nothing was sent down to this node
                continue
            if node.trainable:
                node.feedback.append(self.deliver(node, received, run))
            elif node is output or retain_feedback:
                node.feedback.extend(received)
            for parent, fb in self.propagate(node, received, run):
                slot = pending.get(id(parent))
                if slot is None:
                    pending[id(parent)] = [fb]
                else:
                    slot.append(fb)


class MinimalSubgraph(Propagator):
    """Every node passes the output's feedback unchanged to all its parents.

    Each parameter thus receives the output feedback; its ``subgraph`` gives the context.
    """

    def propagate(
        self, node: Node[Any], received: Sequence[Feedback], run: BackwardRun
    ) -> Iterable[tuple[Node[Any], Feedback]]:
        fb = run.feedback
        return [(p, fb) for p in node.parents]

    def walk(self, order: list[Node[Any]], run: BackwardRun, retain_feedback: bool) -> None:
        # Every ancestor receives the same feedback, so no per-edge bookkeeping is needed:
        # one pass over the sorted ancestors does what the generic reverse walk would.
        fb, output = run.feedback, run.output
        for node in order:
            if node.trainable:
                node.feedback.append(ParameterFeedback(node, fb, run))
            elif retain_feedback or node is output:
                node.feedback.append(fb)


_DEFAULT = MinimalSubgraph()


def backward(
    output: Node[Any],
    feedback: Feedback,
    propagator: Propagator | None = None,
    *,
    retain_feedback: bool = False,
) -> None:
    """Propagate ``feedback`` from ``output`` to every trainable parameter among its ancestors.

    ``output`` itself keeps the feedback in ``output.feedback``; intermediate nodes keep theirs only
    with ``retain_feedback=True`` (useful for drawing the graph).
    """
    rule = _DEFAULT if propagator is None else propagator
    if not isinstance(rule, Propagator):
        raise InvalidInputError(
            f"propagator must be a feedprop.propagate.Propagator (e.g. MinimalSubgraph()), got {type(rule).__name__}"
        )
    if not hasattr(output, "parents"):
        raise ConfigurationError(f"backward needs a feedprop Node, got {type(output).__name__}")
    order = toposort(output)
    run = BackwardRun(output, feedback, order)
    rule.begin(run)
    rule.walk(order, run, retain_feedback)
    run.release()


#: The system prompt of :class:`TextualGradient`.
TEXTUAL_GRADIENT_SYSTEM = """\
You are part of a system that improves a program by giving feedback to its parts. You see one \
step of the program: an operation, its inputs and its output, and the feedback the output \
received. Write feedback for ONE input: say concretely how that input should change so that \
the output would get better feedback. Do not suggest changes to the other inputs. Be brief \
(at most three sentences). Reply with the feedback only."""

#: The user prompt of :class:`TextualGradient` (``string.Template`` fields: ``$operation``,
#: ``$inputs``, ``$output_name``, ``$output``, ``$feedback``, ``$target``, ``$target_role``).
TEXTUAL_GRADIENT_USER = """\
Operation: $operation

Inputs:
$inputs

Output $output_name:
$output

Feedback on the output:
$feedback

Write feedback for the input $target$target_role."""


def _clip(text: str, limit: int) -> str:
    """``text`` without its middle when longer than ``limit`` characters (saying so)."""
    if len(text) <= limit:
        return text
    half = max(limit // 2, 1)
    return f"{text[:half]}...[truncated {len(text) - 2 * half:,} chars]...{text[-half:]}"


def _show(value: Any, limit: int) -> str:
    if isinstance(value, str):
        return _clip(value, limit)
    try:
        return _clip(json.dumps(value, ensure_ascii=False), limit)
    except (TypeError, ValueError):
        return _clip(repr(value), limit)


class TextualGradient(Propagator):
    """A language model writes each input's feedback from its output's feedback (TextGrad style).

    Walking backwards, for every op output that received feedback and every input of it that
    leads to a trainable parameter, the model is asked (:data:`TEXTUAL_GRADIENT_SYSTEM`,
    :data:`TEXTUAL_GRADIENT_USER`) how that input should change. Inputs that lead to no trainable
    parameter cost no call. A node that feeds several others gets all their feedback, joined.
    ``llm=None`` uses ``feedprop.llm.default()``; ``params`` (``temperature``, ``max_tokens``)
    pass through to every call.

    Example:
        >>> from feedprop.llm import MockLLM
        >>> from feedprop.node import Parameter
        >>> x = Parameter("hello", name="greeting")
        >>> out = x + " world"
        >>> out.backward("should be a question", propagator=TextualGradient(MockLLM("End it with '?'.")))
        >>> x.feedback[0].feedback.text, x.feedback[0].output_feedback.text
        ("End it with '?'.", 'should be a question')
    """

    def __init__(self, llm: LLM | None = None, *, max_value_chars: int = 1500, **params: Any) -> None:
        if llm is not None and not isinstance(llm, LLM):
            raise InvalidInputError(f"llm must be a feedprop.llm.LLM, got {type(llm).__name__}")
        if max_value_chars < 20:
            raise InvalidInputError(f"max_value_chars must be at least 20, got {max_value_chars}")
        self.llm = llm
        self.max_value_chars = max_value_chars
        self.params = {"temperature": 0.0, "max_tokens": 256, **params}
        self._leads: set[int] = set()

    def begin(self, run: BackwardRun) -> None:
        # Which nodes have a trainable parameter among themselves or their ancestors.
        leads: set[int] = set()
        for node in run.order():
            if node.trainable or any(id(p) in leads for p in node.parents):
                leads.add(id(node))
        self._leads = leads

    def deliver(self, parameter: Node[Any], received: Sequence[Feedback], run: BackwardRun) -> ParameterFeedback:
        return ParameterFeedback(parameter, _joined(received), run)

    def propagate(
        self, node: Node[Any], received: Sequence[Feedback], run: BackwardRun
    ) -> Iterable[tuple[Node[Any], Feedback]]:
        targets = [p for p in node.parents if id(p) in self._leads]
        if not targets:
            return []
        feedback = _joined(received)
        model = self.llm if self.llm is not None else llm_module.default()
        out = []
        for target in targets:
            messages = [
                Message(role="system", content=TEXTUAL_GRADIENT_SYSTEM),
                Message(role="user", content=self._prompt(node, target, feedback)),
            ]
            reply = model.complete(messages, **self.params).text.strip()
            out.append((target, _replace_text(feedback, reply or feedback.text)))
        return out

    def _prompt(self, node: Node[Any], target: Node[Any], feedback: Feedback) -> str:
        limit = self.max_value_chars
        inputs = getattr(node, "inputs", ()) or tuple((p.name, p) for p in node.parents)
        lines = []
        for arg, value in inputs:
            shown = value._data if hasattr(value, "_data") else value
            label = f"{arg} ({value.name})" if hasattr(value, "_data") else arg
            lines.append(f"{label} = {_show(shown, limit)}")
        extra = [p for p in node.parents if all(p is not v for _, v in inputs)]
        lines.extend(f"{p.name} (also read) = {_show(p._data, limit)}" for p in extra)
        op = node.op
        role = ""
        if target.trainable:
            description = getattr(target, "description", "")
            role = f", a trainable variable ({description})" if description else ", a trainable variable"
        score = f" (score: {feedback.score:g})" if feedback.score is not None else ""
        return Template(TEXTUAL_GRADIENT_USER).substitute(
            operation=(op.description or op.name) if op is not None else "(none)",
            inputs="\n".join(lines) or "(none)",
            output_name=node.name,
            output=_show(node._data, limit),
            feedback=_clip(feedback.text, limit) + score,
            target=target.name,
            target_role=role,
        )


def _joined(received: Sequence[Feedback]) -> Feedback:
    """One feedback from several (a node used twice hears from both uses)."""
    if len(received) == 1:
        return received[0]
    texts: list[str] = []
    for f in received:
        if f.text not in texts:
            texts.append(f.text)
    return received[0] if len(texts) == 1 else _replace_text(received[0], "\n".join(texts))


def _replace_text(feedback: Feedback, text: str) -> Feedback:
    """A copy of ``feedback`` with new text (no score: the score belongs to the output)."""
    return dataclasses.replace(feedback, text=text, score=None)
