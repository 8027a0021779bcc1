"""Cheap screening: score a candidate on a minibatch its parent already ran, re-using the parent's LLM replies.

Every ``llm_call`` of the parent's run is in its outcomes' graphs, with the messages, sampling
parameters, model and reply (``node.info``). :func:`screen` runs the candidate on the same items
with those calls as a :func:`~feedprop.llm.replay` recording: a call whose request is unchanged
is answered from the record, and only calls the candidate changed (a new prompt, new
demonstrations, a downstream call fed a different input) reach the model. A candidate that
changes only code after the last LLM call therefore costs no model call at all. Trainable code
runs as it always does (through its bundle's executor, sandboxed by default).

Example:
    >>> from feedprop.bundle import bundle
    >>> from feedprop.llm import MockLLM
    >>> from feedprop.module import Module
    >>> from feedprop.node import Parameter
    >>> from feedprop.ops import llm_call
    >>> from feedprop.sandbox import InProcessExecutor
    >>> from feedprop.training.data import as_items
    >>> from feedprop.training.evaluation import run_items
    >>> llm = MockLLM(lambda messages, **params: "I think 3, no: 4")
    >>> class Solver(Module):
    ...     def __init__(self):
    ...         self.instruction = Parameter("Answer.", name="instruction")
    ...     @bundle(trainable=True, executor=InProcessExecutor())
    ...     def extract(self, reply):
    ...         return reply.split()[2].strip(",:")
    ...     def forward(self, question):
    ...         return self.extract(llm_call(self.instruction, question, llm=llm, temperature=0))
    >>> solver, items = Solver(), as_items([("2+2?", "4")], "items")
    >>> exact = lambda output, target: output == target
    >>> parent = run_items(solver, items, exact)          # the parent's run: one real call
    >>> solver.extract.parameter.set('''def extract(self, reply):
    ...     return reply.split()[-1]''')
    >>> result = screen(solver, items, exact, parent)     # the candidate: answered from the record
    >>> result.scores, result.calls, result.saved, len(llm.calls)
    ([1.0], 0, 1, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from feedprop.errors import InvalidInputError
from feedprop.llm import RecordedCall, ToolCall, replay, track_usage
from feedprop.node import MessageNode, Node
from feedprop.ops import llm_calls
from feedprop.training.data import Item, as_items
from feedprop.training.evaluation import GuideFn, ItemExecutor, Outcome, resolve_executor

__all__ = ["Screening", "recorded_calls", "screen"]


@dataclass
class Screening:
    """A screened candidate: per-item ``scores`` and ``outcomes``, the real model ``calls`` it made,
    and the calls ``saved`` (answered from the parent's recorded replies). ``score`` is the mean.

    Example:
        >>> screening = Screening(scores=[1.0, 0.0], outcomes=[], calls=1, saved=3)
        >>> screening.score, screening.to_dict()
        (0.5, {'score': 0.5, 'scores': [1.0, 0.0], 'calls': 1, 'saved': 3})
    """

    scores: list[float]
    outcomes: list[Outcome]
    calls: int
    saved: int

    @property
    def score(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready data (for logs and reports); the outcomes are left out."""
        return {"score": self.score, "scores": list(self.scores), "calls": self.calls, "saved": self.saved}


def _record(node: MessageNode[Any]) -> RecordedCall:
    info = node.info or {}
    missing = [k for k in ("model", "messages", "response") if k not in info]
    if missing:
        raise InvalidInputError(
            f"the llm_call node {node.name!r} has no {missing} in its info, so its reply cannot be replayed; "
            "screen outcomes whose graphs were made by feedprop.ops.llm_call"
        )
    calls = tuple(ToolCall.from_dict(call) for call in info.get("tool_calls") or ())
    return RecordedCall.from_request(info["model"], info["messages"], info.get("params") or {}, info["response"], calls)


def recorded_calls(outcomes: Iterable[Outcome]) -> list[RecordedCall]:
    """Every LLM call in the graphs of ``outcomes``, as records for :func:`~feedprop.llm.replay`.

    An outcome's graph is its ``output`` node, or for a workflow error the error's node (the
    calls made before the code raised). Outcomes without a graph (plain outputs, made while
    tracing was off) hold no calls.

    Example:
        >>> from feedprop.llm import MockLLM
        >>> from feedprop.node import Feedback
        >>> from feedprop.ops import llm_call
        >>> out = llm_call("Be brief.", "2+2?", llm=MockLLM("4"), temperature=0)
        >>> [(c.model, c.params, c.text) for c in recorded_calls([Outcome(0, out, Feedback("ok", score=1.0))])]
        [('mock', {'temperature': 0}, '4')]
    """
    calls: list[RecordedCall] = []
    for outcome in outcomes:
        if not isinstance(outcome, Outcome):
            raise InvalidInputError(
                f"outcomes must be the parent's Outcome objects (from run_items), got {type(outcome).__name__}"
            )
        root = outcome.output if isinstance(outcome.output, Node) else None
        if root is None and outcome.error is not None:
            root = outcome.error.node
        if root is not None:
            calls.extend(_record(node) for node in llm_calls(root))
    return calls


def screen(
    model: Callable[[Any], Any],
    items: Sequence[Item],
    guide: GuideFn,
    outcomes: Sequence[Outcome],
    *,
    executor: str | ItemExecutor | None = None,
    max_workers: int | None = None,
    check: Callable[[], None] | None = None,
) -> Screening:
    """Score ``model`` (its parameters already set to the candidate) on ``items``, replaying ``outcomes``' LLM calls.

    ``outcomes`` are the parent's outcomes on the same items (:func:`~feedprop.training.evaluation.run_items`
    while tracing). Items run through ``executor`` (default: threads here) exactly as in an
    evaluation, scored by ``guide``; ``check`` runs before each item (raise ``BudgetExhausted``
    from it to stop). Real calls count in the caller's usage meters and budgets as usual;
    replayed ones cost nothing. With ``executor="ray"`` the records travel to the workers with
    the items, so they replay there too.

    See the module docs for an example.
    """
    if not callable(model):
        raise InvalidInputError(f"model must be callable (input) -> output, got {type(model).__name__}")
    batch = list(items) if all(isinstance(i, Item) for i in items) else as_items(items, "items")
    records = recorded_calls(outcomes)
    runner, made_here = resolve_executor(executor)
    with replay(records), track_usage() as meter:
        try:
            screened = runner.run_items(model, batch, guide, max_workers=max_workers, check=check)
        finally:
            if made_here:
                runner.close()
    return Screening(scores=[o.score for o in screened], outcomes=screened, calls=meter.calls, saved=meter.replayed)
