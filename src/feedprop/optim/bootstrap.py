"""BootstrapDemos: fill demonstrations parameters from the workflow's own well-scored runs.

A :class:`~feedprop.node.Demos` parameter passed to :func:`~feedprop.ops.llm_call` becomes an
input of every call that reads it, so backward delivers to it the graph of each run together
with the guide's feedback on the run's output. In that graph sit the calls that read the
parameter, each with the question it was asked and the reply it gave. A run the guide scored
at least ``min_score`` makes each such (question, reply) a demonstration; a run that scored
lower contributes, when the guide's feedback carries the item's gold answer
(``Feedback.extras["target"]``, or ``["expected"]`` as the built-in guides write it), a labelled
demonstration (question, gold answer), as BootstrapFewShot does where too few runs succeed.

Both pools live in the optimizer state (JSON), grow across steps, and are saved with it. Each
step proposes ``n_candidates`` distinct random subsets of them (well-scored runs first, labelled
ones filling up), never the current set again; the trainer's validation picks among them
(random search over demonstration sets). No model is called.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from typing import Any

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import LLM
from feedprop.node import MessageNode, Node, Parameter
from feedprop.ops import llm_calls
from feedprop.optim.optimizer import Candidate, Optimizer, Proposal, check_int_option

__all__ = ["BootstrapDemos"]

Demo = dict[str, str]


class BootstrapDemos(Optimizer):
    """Proposes demonstration sets for :class:`~feedprop.node.Demos` parameters from scored runs.

    For each owned Demos parameter, the LLM calls that read it in the runs backward reached are
    harvested: (question, reply) from runs whose output feedback scored at least ``min_score``;
    with ``labelled=True``, (question, gold answer) from the others when the feedback's
    ``extras`` carry ``"target"`` (or ``"expected"``). The question is the call's last user
    message, never the demonstrations shown before it. (A labelled demonstration pairs the call's
    question with the item's final answer, so it suits the call whose reply is the answer;
    ``labelled=False`` leaves intermediate calls to successful runs only.) The pools (at most ``max_pool`` each,
    the oldest dropped first) accumulate across steps in the optimizer state. Each step proposes
    ``n_candidates`` (default 4) distinct random subsets of at most the parameter's
    ``max_demos``, never the current set; ``seed`` and the number of proposals made (kept in the
    state) seed the draws, so a resumed run proposes exactly what the uninterrupted one would.
    No model is called (``llm`` is accepted for a uniform constructor and never used).

    Demonstrations come only from feedback delivered by backward. :func:`feedprop.train`
    backwards only the training minibatches, so validation and test items never become
    demonstrations.

    Other parameter kinds are refused: give text and code parameters to ``Reflect`` or
    :class:`~feedprop.optim.OptoPrime`.

    Example:
        >>> from feedprop import ops
        >>> from feedprop.llm import MockLLM
        >>> from feedprop.node import Demos, Feedback
        >>> shots = Demos(name="shots", max_demos=2)
        >>> out = ops.llm_call("Answer.", "2+2?", demos=shots, llm=MockLLM("4"))
        >>> out.backward(Feedback("Correct.", score=1.0))
        >>> opt = BootstrapDemos([shots], n_candidates=2)
        >>> [c.updates for c in opt.propose().candidates]
        [{'shots': [{'input': '2+2?', 'output': '4'}]}]
        >>> opt.state["shots"]["successes"]
        [{'input': '2+2?', 'output': '4'}]
    """

    OPTIONS = ("min_score", "labelled", "max_pool", "seed")
    KINDS = ("demos",)
    OTHER_KINDS_HINT = (
        "Give text and code parameters to Reflect or OptoPrime, and only the Demos ones to BootstrapDemos: "
        "BootstrapDemos([p for p in model.parameters() if isinstance(p, fp.Demos)]), or use fp.optim.recommended()"
    )

    def __init__(
        self,
        params: Iterable[Parameter[Any]] | Iterable[dict[str, Any]],
        llm: LLM | None = None,
        *,
        min_score: float = 1.0,
        labelled: bool = True,
        max_pool: int = 50,
        seed: int = 0,
        n_candidates: int = 4,
        **options: Any,
    ) -> None:
        super().__init__(
            params,
            llm,
            min_score=min_score,
            labelled=labelled,
            max_pool=max_pool,
            seed=seed,
            n_candidates=n_candidates,
            **options,
        )
        for name, _ in self.named_parameters():
            _pools(self.state[name])

    def check_options(self, options: Mapping[str, Any]) -> None:
        super().check_options(options)
        min_score = options.get("min_score")
        if isinstance(min_score, bool) or not isinstance(min_score, int | float) or not math.isfinite(min_score):
            raise ConfigurationError(f"min_score must be a finite number (a run's score), got {min_score!r}")
        if not isinstance(options.get("labelled"), bool):
            raise InvalidInputError(f"labelled must be True or False, got {options.get('labelled')!r}")
        check_int_option(options, "max_pool", 1)
        seed = options.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidInputError(f"seed must be an int, got {seed!r}")

    def _propose(self) -> Proposal:
        subsets: dict[str, list[list[Demo]]] = {}
        for name, param in self.named_parameters():
            self._harvest(name, param)
            subsets[name] = self._subsets(name, param)
        proposal = Proposal()
        for i in range(max((len(s) for s in subsets.values()), default=0)):
            updates = {name: s[i] for name, s in subsets.items() if i < len(s)}
            reasoning = "; ".join(self._describe(name, demos) for name, demos in updates.items())
            proposal.candidates.append(Candidate(updates, reasoning))
        return proposal

    def _harvest(self, name: str, param: Parameter[Any]) -> None:
        """Add the demonstrations in the feedback delivered to ``param`` to its pools."""
        options = self.options(name)
        successes, labelled = _pools(self.state[name])
        cap = int(options["max_pool"])
        for entry in self.feedback_entries(name):
            feedback = getattr(entry, "output_feedback", None) or getattr(entry, "feedback", None)
            if feedback is None:
                continue
            graph: Iterable[Node[Any]] = getattr(entry, "subgraph", None) or llm_calls(entry.output)
            good = feedback.score is not None and feedback.score >= float(options["min_score"])
            extras = feedback.extras if isinstance(feedback.extras, Mapping) else {}
            target = extras.get("target", extras.get("expected"))
            for node in graph:
                call = _call_reading(node, param)
                if call is None:
                    continue
                question, reply = call
                if good and reply.strip():
                    _add(successes, {"input": question, "output": reply}, cap)
                elif not good and options["labelled"] and target is not None:
                    _add(labelled, {"input": question, "output": str(target)}, cap)

    def _subsets(self, name: str, param: Parameter[Any]) -> list[list[Demo]]:
        """Up to ``n_candidates`` distinct demonstration sets for ``param``, none equal to its value."""
        state = self.state[name]
        successes, labelled = _pools(state)
        inputs = {d["input"] for d in successes} | {d["input"] for d in labelled}
        if not inputs:
            return []
        draw = int(state.get("proposals", 0))
        state["proposals"] = draw + 1
        rng = random.Random(f"{self.options(name)['seed']}/{name}/{draw}")
        largest = min(int(getattr(param, "max_demos", 4)), len(inputs))
        n = int(self.options(name)["n_candidates"])
        seen = {_key(param.data)}
        out: list[list[Demo]] = []
        for attempt in range(20 * n + 20):  # small pools have few distinct subsets
            if len(out) == n:
                break
            size = largest if attempt == 0 else rng.randint(1, largest)
            demos = _draw(rng, successes, labelled, size)
            key = _key(demos)
            if key not in seen:
                seen.add(key)
                out.append(demos)
        return out

    def _describe(self, name: str, demos: list[Demo]) -> str:
        successes, _ = _pools(self.state[name])
        good = {(d["input"], d["output"]) for d in successes}
        n_good = sum((d["input"], d["output"]) in good for d in demos)
        return (
            f"{len(demos)} demonstrations for {name!r}: {n_good} from well-scored runs, "
            f"{len(demos) - n_good} labelled training items"
        )


def _pools(state: dict[str, Any]) -> tuple[list[Demo], list[Demo]]:
    """The two pools of a parameter's state, created when missing."""
    return state.setdefault("successes", []), state.setdefault("labelled", [])


def _call_reading(node: Node[Any], param: Parameter[Any]) -> tuple[str, str] | None:
    """``(question, reply)`` of an LLM call that was given ``param`` as its demonstrations, else ``None``."""
    if not isinstance(node, MessageNode) or not any(k == "demos" and v is param for k, v in node.inputs):
        return None
    info = node.info if isinstance(node.info, dict) else {}
    messages = info.get("messages") or []
    reply = info.get("response")
    users = [m.get("content") for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users or not isinstance(users[-1], str) or not isinstance(reply, str):
        return None
    return users[-1], reply


def _add(pool: list[Demo], demo: Demo, cap: int) -> None:
    if demo in pool:
        return
    pool.append(demo)
    del pool[: max(0, len(pool) - cap)]  # the oldest go first


def _draw(rng: random.Random, successes: list[Demo], labelled: list[Demo], size: int) -> list[Demo]:
    """``size`` demonstrations with distinct questions: well-scored runs first, labelled ones filling up."""
    chosen: list[Demo] = []
    questions: set[str] = set()
    for pool in (successes, labelled):
        for demo in rng.sample(pool, len(pool)):
            if len(chosen) == size:
                return chosen
            if demo["input"] not in questions:
                questions.add(demo["input"])
                chosen.append(dict(demo))
    return chosen


def _key(demos: Any) -> tuple[tuple[str, str], ...]:
    """A demonstration set's identity: its (input, output) pairs, order aside."""
    if not isinstance(demos, list):
        return ()
    return tuple(sorted((str(d.get("input")), str(d.get("output"))) for d in demos if isinstance(d, Mapping)))
