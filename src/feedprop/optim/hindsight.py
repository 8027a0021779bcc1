"""Hindsight: an optimizer that learns from its own edits, the way Adam goes beyond plain descent.

OptoPrime sees one step's feedback. Hindsight also keeps, across steps, what its past edits
did — and adapts how it edits. The algorithm, at every step ``t``:

1. **Observe.** Read the parameters' values ``v_t`` and the step's score ``s_t`` (the mean
   ``Feedback.score`` of the feedback that reached them; higher is better; may be absent).
2. **Attribute.** Compare with the previous observation. If values changed, that was an edit
   ``e = (v_{t-1} → v_t)`` and its effect is ``δ = s_t − s_{t-1}``. If they did not change
   although an edit was proposed, the edit was *not accepted* (a trainer's validation gate
   rejected it, or nobody applied it) — evidence against it too.
3. **Trust (second moment, then first).** Normalise the effect by the running scale of
   effects, ``u ← β2·u + (1−β2)·δ²``, ``g = δ / sqrt(û)`` (bias-corrected as in Adam), and
   update each edited parameter's trust ``τ_p ← β1·τ_p + (1−β1)·g`` (bias-corrected). Trust
   is the running, scale-free answer to "do my edits to this parameter help?".
4. **Step size in proportion to trust.** Numbers get an Rprop-style trust region: an edit
   that helped doubles the allowed move, one that hurt halves it (a region exists only after
   the first failure), and suggestions are clipped into it. Text and code get an edit-size
   instruction from ``τ_p``: bold when edits helped, small and careful when they hurt.
5. **Back off.** An edit that made the score worse is undone: the next candidate restores the
   earlier values of what it changed (unless the model proposes something new for them),
   and the model is told what was undone and why. A suggestion that would return a parameter
   to a value already measured worse than the current state (the other parameters as now) is
   refused with that measurement, and the model is asked again; so is a repeat of a candidate
   that was not accepted (the same values for every parameter it would set, the rest as now),
   because a trainer's validation gate would only reject it again.
6. **Recurring feedback (a first moment of the feedback).** Each feedback sentence, with its
   numbers masked, is an exponentially decayed count ``m_k ← β1·m_k + (1−β1)·[k seen now]``;
   points that keep coming back are shown, most frequent first, so a fix that only works for
   one example does not win over the persistent problem.
7. **Ask.** The OptoPrime problem plus the edit history (values before → after, score before
   → after), the recurring feedback, each parameter's step size, and the model's own lessons
   from earlier steps. The reply adds ``lessons`` (a running summary the model keeps) and a
   ``verdict`` on the last edit (better/worse/same) — used as ``δ = ±1`` when no score exists,
   so everything above still works from text feedback alone (without automatic back-off,
   which needs a measured drop; the model sees the history and may revert itself). Before
   any edit exists there is nothing to judge, and the first step asks exactly what OptoPrime
   asks.

Example:
    >>> from feedprop.node import Feedback, Parameter
    >>> from feedprop.llm import MockLLM
    >>> x = Parameter(1.0, name="x")
    >>> opt = Hindsight([x], llm=MockLLM('{"reasoning": "r", "verdict": "same", "lessons": "", '
    ...                                  '"suggestion": {"x": 3.0}}'))
    >>> (x * 3).backward(Feedback("should be larger by 6", score=-6.0))
    >>> _ = opt.step(); x.data
    3.0
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from feedprop._text import truncate_middle
from feedprop.errors import ConfigurationError, SuggestionError
from feedprop.llm import LLM
from feedprop.node import Feedback, Parameter
from feedprop.optim.conversation import Conversation, same_value
from feedprop.optim.fitting import fit_blocks
from feedprop.optim.memory import format_value
from feedprop.optim.opro import mean_score
from feedprop.optim.optimizer import Candidate, Proposal, Rejection, kind_of
from feedprop.optim.optoprime import OptoPrime
from feedprop.optim.templates import fill

__all__ = ["Hindsight", "describe_change", "feedback_keys"]

_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?", re.IGNORECASE)
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_VERDICTS = {"better": 1.0, "improved": 1.0, "worse": -1.0, "same": 0.0, "unchanged": 0.0}
#: How far a trusted text edit may go, as words for the model.
_EDIT_SIZES = (
    (0.3, "edits so far helped: continue in the same direction; a larger change is fine"),
    (-0.3, "make a focused change"),
    (-math.inf, "edits so far hurt: make a small, careful change, or leave it unchanged"),
)


def feedback_keys(text: str, limit: int = 20) -> list[tuple[str, str]]:
    """``(key, sentence)`` pairs: each sentence of ``text`` with numbers masked as its key.

    Example:
        >>> feedback_keys("Output should be larger by 3.5. Fails on x=2!")
        [('output should be larger by #', 'Output should be larger by 3.5.'), ('fails on x=#', 'Fails on x=2!')]
    """
    out: dict[str, str] = {}
    for sentence in _SPLIT.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        key = _NUMBER.sub("#", sentence.lower())
        key = re.sub(r"\s+", " ", key).strip(" .!?;:")
        if key and key not in out:
            out[key] = sentence
        if len(out) >= limit:
            break
    return list(out.items())


def describe_change(name: str, before: Any, after: Any, max_chars: int = 300) -> str:
    """One line saying how a value changed: ``x: 2.0 -> 5.0``, or the changed lines of long text.

    Example:
        >>> describe_change("f", "def f(x):\\n    return x + 1\\n", "def f(x):\\n    return x\\n")
        'f: changed lines [-    return x + 1] [+    return x]'
    """
    long_text = (
        isinstance(before, str)
        and isinstance(after, str)
        and ("\n" in before or "\n" in after or len(before) + len(after) > 160)
    )
    if not long_text:
        return f"{name}: {format_value(before, 80).strip()} -> {format_value(after, 80).strip()}"
    diff = [
        f"[{line[0]}{line[2:].rstrip()}]"
        for line in difflib.ndiff(str(before).splitlines(), str(after).splitlines())
        if line[:1] in "+-" and line[2:].strip()
    ]
    return truncate_middle(f"{name}: changed lines {' '.join(diff) or '(whitespace only)'}", max_chars)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class Hindsight(OptoPrime):
    """OptoPrime plus learning across steps: edit trust, adaptive step size, back-off, recurring feedback.

    The algorithm is described in the module docstring. Options: ``beta1`` (decay of trust and of
    the recurring-feedback counts), ``beta2`` (decay of the scale of score changes),
    ``edit_history`` (edits shown), ``recurring`` (recurring points shown), ``backoff`` (undo an
    edit that lowered the score), ``tolerance`` (score change below which an edit counts as
    neutral), ``memory_size`` (OptoPrime's memory; off by default, the edit history replaces it),
    plus the common options.

    Example:
        >>> from feedprop.node import Parameter
        >>> from feedprop.llm import MockLLM
        >>> opt = Hindsight([Parameter("Be brief.", name="prompt")], llm=MockLLM("{}"), beta1=0.5)
        >>> opt.defaults["beta1"], opt.defaults["backoff"]
        (0.5, True)
    """

    OPTIONS: ClassVar[tuple[str, ...]] = (
        *OptoPrime.OPTIONS,
        "beta1",
        "beta2",
        "edit_history",
        "recurring",
        "backoff",
        "tolerance",
    )

    def __init__(
        self,
        params: Iterable[Parameter[Any]] | Iterable[dict[str, Any]],
        llm: LLM | None = None,
        *,
        beta1: float = 0.7,
        beta2: float = 0.8,
        edit_history: int = 6,
        recurring: int = 5,
        backoff: bool = True,
        tolerance: float = 1e-9,
        memory_size: int = 0,
        **options: Any,
    ) -> None:
        for key, value in (("beta1", beta1), ("beta2", beta2)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise ConfigurationError(f"{key} must be a number in [0, 1), got {value!r}")
        for key, count in (("edit_history", edit_history), ("recurring", recurring)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigurationError(f"{key} must be an int >= 0, got {count!r}")
        super().__init__(
            params,
            llm,
            beta1=float(beta1),
            beta2=float(beta2),
            edit_history=edit_history,
            recurring=recurring,
            backoff=bool(backoff),
            tolerance=float(tolerance),
            memory_size=memory_size,
            **options,
        )
        gs = self.global_state
        gs.setdefault("edits", [])
        gs.setdefault("moment", {})
        gs.setdefault("lessons", "")
        gs.setdefault("scale", {"u": 0.0, "n": 0})
        gs.setdefault("tried", [])
        gs.setdefault("not_accepted", [])
        self.conversation = _Conversation(self)
        for name, _ in self.named_parameters():
            self.state[name].update({"trust": 0.0, "n": 0, "wins": 0, "losses": 0, "radius": None})

    # -- 1-5: observe, attribute, trust, step size, back-off ------------------------------------------

    def _observe(self, values: dict[str, Any], score: float | None) -> dict[str, Any]:
        """Attribute what changed since the last observation; return the values to undo (back-off)."""
        gs = self.global_state
        last: dict[str, Any] | None = gs.get("last")
        pending: dict[str, Any] | None = gs.get("pending")
        step = int(gs.get("step", 0))
        revert: dict[str, Any] = {}
        if last is not None:
            changed = [n for n in values if n in last["values"] and not _same(values[n], last["values"][n])]
            if changed:
                delta = None if score is None or last["score"] is None else score - last["score"]
                edit = {
                    "step": step,
                    "changes": {n: [last["values"][n], values[n]] for n in changed},
                    "score_before": last["score"],
                    "score_after": score,
                    "delta": delta,
                    "outcome": self._outcome(delta),
                    "reverted": False,
                }
                if delta is not None:
                    self._credit(changed, delta, edit)
                    if edit["outcome"] == "worse" and self.defaults["backoff"]:
                        revert = {n: last["values"][n] for n in changed}
                        edit["reverted"] = True
                gs["edits"].append(edit)
            elif pending and any(c for c in pending["candidates"]):
                first = next(c for c in pending["candidates"] if c)
                refused = gs.setdefault("not_accepted", [])
                refused.extend({"values": {**values, **c}, "step": step} for c in pending["candidates"] if c)
                del refused[: max(0, len(refused) - 50)]
                names = [n for n in first if n in values]
                gs["edits"].append(
                    {
                        "step": step,
                        "changes": {n: [values[n], first[n]] for n in names},
                        "score_before": last["score"],
                        "score_after": None,
                        "delta": None,
                        "outcome": "not accepted",
                        "reverted": False,
                    }
                )
                for n in names:  # mild evidence against: the edit did not survive
                    self._update_trust(n, -0.25)
        del gs["edits"][: max(0, len(gs["edits"]) - 50)]
        if score is not None:
            gs.setdefault("tried", []).append({"values": values, "score": score, "step": step})
            del gs["tried"][: max(0, len(gs["tried"]) - 50)]
        if revert and last is not None:  # measure the next edit against the state before the undone one
            gs["last"] = {"values": {**values, **revert}, "score": last["score"], "step": step}
        else:
            gs["last"] = {"values": values, "score": score, "step": step}
        return revert

    def _known_worse(self, name: str, value: Any) -> str | None:
        """Why ``name = value`` (the rest as now) is refused: it was measured worse than now; else ``None``."""
        last: dict[str, Any] | None = self.global_state.get("last")
        if last is None or last["score"] is None:
            return None
        base, now = last["values"], float(last["score"])
        tol = float(self.defaults["tolerance"])
        same = self._equal
        for entry in reversed(self.global_state.get("tried", [])):
            seen = entry["values"]
            if name not in seen or not same(name, value, seen[name]) or float(entry["score"]) >= now - tol:
                continue
            if all(same(n, v, seen.get(n)) for n, v in base.items() if n != name):
                return (
                    f"{name} = {format_value(value, 80).strip()} was tried at step {entry['step']} and scored "
                    f"{float(entry['score']):.4g}, worse than the current {now:.4g}; suggest a different value"
                )
        return None

    def _equal(self, name: str, a: Any, b: Any) -> bool:
        """Whether two values of ``name`` behave the same (code: equal by syntax tree)."""
        params = dict(self.named_parameters())
        return same_value(a, b, kind_of(params[name])) if name in params else _same(a, b)

    def _not_accepted(self, updates: Mapping[str, Any]) -> str | None:
        """Why ``updates`` (the rest as now) is refused: the same candidate was not accepted; else ``None``."""
        last: dict[str, Any] | None = self.global_state.get("last")
        if last is None or not updates:
            return None
        candidate = {**last["values"], **updates}
        for entry in reversed(self.global_state.get("not_accepted", [])):
            seen = entry["values"]
            if seen.keys() == candidate.keys() and all(self._equal(n, v, seen[n]) for n, v in candidate.items()):
                return (
                    f"this was proposed at step {entry['step']} and not accepted (it did not improve "
                    "validation); suggest something different"
                )
        return None

    def _outcome(self, delta: float | None) -> str:
        if delta is None:
            return "unknown"
        tol = float(self.defaults["tolerance"])
        return "better" if delta > tol else "worse" if delta < -tol else "same"

    def _credit(self, changed: list[str], delta: float, edit: dict[str, Any]) -> None:
        scale = self.global_state["scale"]
        b2 = float(self.defaults["beta2"])
        scale["u"] = b2 * scale["u"] + (1 - b2) * delta * delta
        scale["n"] += 1
        u_hat = scale["u"] / (1 - b2 ** scale["n"])
        g = delta / (math.sqrt(u_hat) + 1e-12) if u_hat > 0 else 0.0
        for name in changed:
            self._update_trust(name, g)
            st = self.state[name]
            if edit["outcome"] == "better":
                st["wins"] += 1
            elif edit["outcome"] == "worse":
                st["losses"] += 1
            before, after = edit["changes"][name]
            if kind_of(self.get_parameter(name)) == "number":
                step = abs(float(after) - float(before))
                if edit["outcome"] == "worse":
                    st["radius"] = 0.5 * step
                elif edit["outcome"] == "better" and st["radius"] is not None:
                    st["radius"] = max(st["radius"], 2.0 * step)

    def _update_trust(self, name: str, g: float) -> None:
        st = self.state[name]
        b1 = float(self.defaults["beta1"])
        st["n"] += 1
        raw = st.get("trust_raw", 0.0)
        st["trust_raw"] = b1 * raw + (1 - b1) * max(-3.0, min(3.0, g))
        st["trust"] = st["trust_raw"] / (1 - b1 ** st["n"])

    # -- 6: recurring feedback ---------------------------------------------------------------------------

    def _update_moment(self, feedbacks: list[Feedback]) -> None:
        moment: dict[str, dict[str, Any]] = self.global_state["moment"]
        b1 = float(self.defaults["beta1"])
        seen: dict[str, str] = {}
        for fb in feedbacks:
            for key, sentence in feedback_keys(fb.text):
                seen.setdefault(key, sentence)
        for key in list(moment):
            moment[key]["w"] *= b1
        for key, sentence in seen.items():
            entry = moment.setdefault(key, {"w": 0.0, "n": 0, "text": sentence})
            entry["w"] += 1 - b1
            entry["n"] += 1
            entry["text"] = truncate_middle(sentence, 300)
        for key in [k for k, e in moment.items() if e["w"] < 0.02]:
            del moment[key]
        if len(moment) > 60:
            for key in sorted(moment, key=lambda k: moment[k]["w"])[: len(moment) - 60]:
                del moment[key]

    # -- 7: the prompt -------------------------------------------------------------------------------------

    def context_blocks(self, max_tokens: int) -> list[str]:
        blocks = super().context_blocks(max_tokens)
        pending_revert: dict[str, Any] = self.global_state.get("revert", {})
        if pending_revert:
            undone = "; ".join(f"{n} back to {format_value(v, 200)}" for n, v in pending_revert.items())
            blocks.append(fill("hindsight_undone", undone=undone))
        edits = self._render_edits()
        if edits:
            blocks.append(fill("hindsight_edits", edits=edits))
        recurring = self._render_recurring()
        if recurring:
            blocks.append(fill("hindsight_recurring", recurring=recurring))
        guidance = self._render_guidance()
        if guidance:
            blocks.append(fill("hindsight_guidance", guidance=guidance))
        lessons = str(self.global_state.get("lessons", "")).strip()
        if lessons:
            blocks.append(fill("hindsight_lessons", lessons=lessons))
        # Keep what fits, most important first (the base blocks come first).
        return fit_blocks(blocks, max_tokens)

    def _render_edits(self) -> str:
        shown = self.global_state["edits"][-int(self.defaults["edit_history"]) :]
        lines = []
        for e in shown:
            changes = "; ".join(describe_change(n, b, a) for n, (b, a) in e["changes"].items())
            if e["outcome"] == "not accepted":
                lines.append(f"step {e['step']}: proposed {changes} | not accepted (it did not improve validation)")
                continue
            if e["delta"] is not None:
                effect = f"score {e['score_before']:.4g} -> {e['score_after']:.4g} ({e['delta']:+.4g}, {e['outcome']})"
            else:
                effect = f"effect {e['outcome']}"
            if e.get("reverted"):
                effect += ", undone"
            lines.append(f"step {e['step']}: {changes} | {effect}")
        return "\n".join(lines)

    def _render_recurring(self) -> str:
        moment = self.global_state["moment"]
        top = sorted((e for e in moment.values() if e["n"] >= 2), key=lambda e: -e["w"])
        top = top[: int(self.defaults["recurring"])]
        return "\n".join(f"- ({e['n']} times) {e['text']}" for e in top)

    def _render_guidance(self) -> str:
        lines = []
        for name, param in self.named_parameters():
            st = self.state[name]
            if not st["n"]:
                continue
            record = f"trust {st['trust']:+.2f}, {st['wins']} helped, {st['losses']} hurt"
            if kind_of(param) == "number":
                size = (
                    f"move it by at most {st['radius']:.4g} from its current value"
                    if st["radius"] is not None
                    else "no limit yet on how far to move it"
                )
                rate = self._rate(name)
                if rate is not None:
                    size += f"; its last edit changed the score by {rate:+.4g} per +1 of {name}"
            else:
                size = next(text for bound, text in _EDIT_SIZES if st["trust"] > bound)
            lines.append(f"- {name} ({record}): {size}")
        return "\n".join(lines)

    def _rate(self, name: str) -> float | None:
        """Score change per unit of a number, from the latest scored edit that changed it alone."""
        for edit in reversed(self.global_state["edits"]):
            changes = edit["changes"]
            if name not in changes:
                continue
            if len(changes) != 1 or edit["delta"] is None:
                return None
            before, after = changes[name]
            if float(after) == float(before):
                return None
            return float(edit["delta"]) / (float(after) - float(before))
        return None

    # -- the step ----------------------------------------------------------------------------------------

    def _propose(self) -> Proposal:
        feedbacks = self.observed_feedback()
        if not feedbacks:
            return Proposal()
        values = self.current_values()
        score = mean_score(feedbacks)
        revert = self._observe(values, score)
        self.global_state["revert"] = revert
        self._update_moment(feedbacks)
        messages, problem = self.build_messages()
        shown, others = self.shown_names(problem)
        proposal = self.conversation.propose(messages, shown=shown, others=others)
        for candidate in proposal.candidates:
            self._shape(candidate, values, revert)
        if revert and not proposal.candidates:
            proposal.candidates.append(Candidate(dict(revert), "undo the last edit, which lowered the score"))
        self._learn(proposal, score)
        self.global_state["pending"] = {"candidates": [c.updates for c in proposal.candidates]}
        return proposal

    def _shape(self, candidate: Candidate, values: dict[str, Any], revert: dict[str, Any]) -> None:
        """Clip numbers into their trust region and add the back-off to a candidate."""
        base = {**values, **revert}
        notes = []
        for name, value in list(candidate.updates.items()):
            radius = self.state[name]["radius"]
            if radius is None or kind_of(self.get_parameter(name)) != "number":
                continue
            lo, hi = float(base[name]) - radius, float(base[name]) + radius
            clipped = min(max(float(value), lo), hi)
            if clipped != value:
                try:
                    clipped_value = self.validate(name, clipped)
                except SuggestionError:  # the clipped value broke a constraint: keep the model's valid value
                    continue
                notes.append(f"{name} clipped from {value} to {clipped_value:.6g} (trust region ±{radius:.4g})")
                candidate.updates[name] = clipped_value
        for name, value in revert.items():
            candidate.updates.setdefault(name, value)
        for name in [n for n, v in candidate.updates.items() if _same(v, values[n])]:
            del candidate.updates[name]  # a no-op (e.g. a revert the model already proposed)
        if notes:
            candidate.reasoning = (candidate.reasoning + "\n[" + "; ".join(notes) + "]").strip()

    def _learn(self, proposal: Proposal, score: float | None) -> None:
        """Keep the model's lessons; without scores, use its verdict on the last edit as the effect."""
        gs = self.global_state
        extras = proposal.candidates[0].extras if proposal.candidates else {}
        lessons = extras.get("lessons")
        if isinstance(lessons, str) and lessons.strip():
            gs["lessons"] = truncate_middle(lessons.strip(), 400)
        verdict = str(extras.get("verdict", "")).strip().lower()
        edits = gs["edits"]
        last_edit = edits[-1] if edits else None
        if (
            score is None
            and last_edit is not None
            and last_edit["outcome"] == "unknown"
            and last_edit["step"] == int(gs.get("step", 0))
            and verdict in _VERDICTS
        ):
            delta = _VERDICTS[verdict]
            last_edit["outcome"] = self._outcome(delta) + " (judged)"
            self._credit(list(last_edit["changes"]), delta, {**last_edit, "outcome": self._outcome(delta)})


class _Conversation(Conversation):
    """OptoPrime's conversation with Hindsight's reply form (step 7) and refusals (step 5).

    Once there is an edit to judge, the reply also holds a ``verdict`` and ``lessons``; a value
    measured worse than the current state, or a repeat of a candidate that was not accepted, is
    refused with the reason.
    """

    def __init__(self, hindsight: Hindsight) -> None:
        super().__init__(hindsight)
        self.hindsight = hindsight

    def format_help(self, names: Iterable[str] | None = None) -> str:
        """OptoPrime's answer format, plus ``verdict`` and ``lessons`` once there is an edit to judge."""
        if not self.hindsight.global_state["edits"]:  # nothing to judge or learn from yet: OptoPrime's question
            return super().format_help(names)
        return fill(f"hindsight_format_{self.options['reply_format']}", **self._format_fields(names))

    def reply_schema(self, names: Iterable[str] | Mapping[str, Parameter[Any]] | None = None) -> dict[str, Any]:
        """OptoPrime's schema, plus ``verdict`` and ``lessons`` once there is an edit to judge (as the prompt asks)."""
        schema = super().reply_schema(names)
        if not self.hindsight.global_state["edits"]:
            return schema
        properties = schema["properties"]
        schema["properties"] = {
            "reasoning": properties["reasoning"],
            "verdict": {"type": "string", "enum": ["better", "worse", "same"]},
            "lessons": {"type": "string"},
            "suggestion": properties["suggestion"],
        }
        schema["required"] = ["reasoning", "verdict", "lessons", "suggestion"]
        return schema

    def _resolve(
        self,
        suggestion: Mapping[str, Any],
        *,
        shown: Mapping[str, Parameter[Any]] | None = None,
        others: Iterable[str] = (),
    ) -> tuple[dict[str, Any], list[Rejection], list[str]]:
        """OptoPrime's reading of a suggestion, refusing values measured worse or not accepted."""
        updates, rejected, echoed = super()._resolve(suggestion, shown=shown, others=others)
        for name in list(updates):
            reason = self.hindsight._known_worse(name, updates[name])
            if reason is not None:
                rejected.append(Rejection(name, updates.pop(name), reason, name))
        reason = self.hindsight._not_accepted(updates)
        if reason is not None:
            rejected.extend(Rejection(name, updates.pop(name), reason, name) for name in list(updates))
        return updates, rejected, echoed
