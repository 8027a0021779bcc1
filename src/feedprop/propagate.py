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

:class:`~feedprop.textual_gradient.TextualGradient` is the TextGrad-style alternative, where a
language model writes each input's feedback; it lives above the LLM layer, so this module (and
:mod:`feedprop.node`, which calls it) imports no LLM.

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

import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from feedprop.errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:  # types only: node sits below this module and imports it
    from feedprop.node import Feedback, Node

__all__ = [
    "BackwardRun",
    "MinimalSubgraph",
    "ParameterFeedback",
    "Propagator",
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


#: Names that moved out of this module, and where they are now.
_MOVED = {
    "TextualGradient": "feedprop.textual_gradient",
    "TEXTUAL_GRADIENT_SYSTEM": "feedprop.textual_gradient",
    "TEXTUAL_GRADIENT_USER": "feedprop.textual_gradient",
}


def __getattr__(name: str) -> object:
    """Say where a name that moved out of this module lives now (this module imports no LLM).

    A moved name raises :class:`ImportError` with the new place (``from feedprop.propagate import
    TextualGradient`` would otherwise say only "cannot import name").

    Example:
        >>> from feedprop.propagate import TextualGradient  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ImportError: feedprop.propagate.TextualGradient moved: from feedprop.textual_gradient import ...
    """
    if name in _MOVED:
        raise ImportError(f"feedprop.propagate.{name} moved: from {_MOVED[name]} import {name}")
    raise AttributeError(f"module 'feedprop.propagate' has no attribute {name!r}", name=name)
