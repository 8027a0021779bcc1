"""OPRO: optimization by prompting with a scored history of values, and no graph.

Every step records the parameters' current values with the score their feedback carried
(``Feedback.score``, averaged over the feedback of a minibatch). The prompt lists the best
``top_k`` values tried so far, worst first and best last, and asks for new values that score
higher. Without scores, each value is shown with its feedback text instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from feedprop._text import truncate_middle
from feedprop.errors import InvalidInputError
from feedprop.llm import LLM, Message
from feedprop.llm.tokens import estimate_prompt_tokens
from feedprop.node import Feedback, Parameter
from feedprop.optim.conversation import Conversation, describe_parameter
from feedprop.optim.fitting import fit_blocks
from feedprop.optim.memory import format_value
from feedprop.optim.optimizer import Optimizer, Proposal, check_int_option
from feedprop.optim.templates import fill, template

__all__ = ["OPRO"]


def mean_score(feedbacks: Iterable[Feedback]) -> float | None:
    """The mean of the scores that are present, or ``None`` when none is."""
    scores = [fb.score for fb in feedbacks if fb.score is not None]
    return sum(scores) / len(scores) if scores else None


def feedback_summary(feedbacks: list[Feedback], max_chars: int = 600) -> str:
    """The distinct feedback texts, one per line, cut to ``max_chars``."""
    texts = list(dict.fromkeys(fb.text.strip() for fb in feedbacks if fb.text.strip()))
    return truncate_middle("\n".join(texts), max_chars)


class OPRO(Optimizer):
    """Optimization by prompting (OPRO): shows scored past values, asks for better ones.

    Options: ``top_k`` past values shown (best ones), ``history_size`` values remembered,
    ``task`` a sentence describing what is being optimized, plus the common options
    (``n_candidates`` — OPRO works best sampling several — ``reply_format``, ``max_prompt_tokens`` ...).

    Example:
        >>> from feedprop.node import Feedback, Parameter
        >>> from feedprop.llm import MockLLM
        >>> x = Parameter(1.0, name="x")
        >>> opt = OPRO([x], llm=MockLLM('{"reasoning": "higher scored better", "suggestion": {"x": 4.0}}'))
        >>> (x * 2).backward(Feedback("too small", score=-6.0))
        >>> _ = opt.step(); x.data
        4.0
    """

    OPTIONS = ("top_k", "history_size", "task")

    def __init__(
        self,
        params: Iterable[Parameter[Any]] | Iterable[dict[str, Any]],
        llm: LLM | None = None,
        *,
        top_k: int = 8,
        history_size: int = 50,
        task: str = "",
        **options: Any,
    ) -> None:
        super().__init__(params, llm, top_k=top_k, history_size=history_size, task=task, **options)
        self.conversation = Conversation(self)
        self.global_state.setdefault("history", [])

    def check_options(self, options: Mapping[str, Any]) -> None:
        super().check_options(options)
        check_int_option(options, "top_k", 1)
        check_int_option(options, "history_size", 1)
        if not isinstance(options.get("task"), str):
            raise InvalidInputError(
                f"task must be a sentence saying what is optimized (a str), got {type(options.get('task')).__name__}"
            )

    def _record(self, values: dict[str, Any], feedbacks: list[Feedback]) -> None:
        history: list[dict[str, Any]] = self.global_state.setdefault("history", [])
        key = json.dumps(values, sort_keys=True)
        score = mean_score(feedbacks)
        text = feedback_summary(feedbacks)
        for entry in history:
            if entry["key"] == key:  # the same values seen again: average the scores
                if score is not None:
                    n = entry.get("scored", 0)
                    old = entry["score"] if entry["score"] is not None else 0.0
                    entry["score"] = (old * n + score) / (n + 1)
                    entry["scored"] = n + 1
                entry["feedback"] = text or entry["feedback"]
                return
        history.append(
            {
                "key": key,
                "values": values,
                "score": score,
                "scored": int(score is not None),
                "feedback": text,
                "step": self.global_state.get("step", 0),
            }
        )
        limit = int(self.defaults["history_size"])
        if len(history) > limit:  # forget the worst (unscored count as worst)
            history.sort(key=_rank)
            del history[: len(history) - limit]

    def _propose(self) -> Proposal:
        feedbacks = self.observed_feedback()
        if feedbacks:
            self._record(self.current_values(), feedbacks)
        history = self.global_state.get("history", [])
        if not history:
            return Proposal()
        named = dict(self.named_parameters())
        fixed = fill(
            "opro_user",
            task=self.defaults["task"],
            variables="\n".join(f"- {describe_parameter(n, p)}" for n, p in named.items()),
            history="{history}",
            notes=self._notes(),
            legal=", ".join(named),
            format_help=self.conversation.format_help(),
        )
        system = template("opro_system").strip()
        room = int(self.defaults["max_prompt_tokens"]) - estimate_prompt_tokens(
            [Message(role="system", content=system), Message(role="user", content=fixed)]
        )
        shown = self._render_history(history, max(room, 0))
        messages = [
            Message(role="system", content=system),
            Message(role="user", content=fixed.replace("{history}", shown, 1)),
        ]
        return self.conversation.propose(messages)

    def _notes(self) -> str:
        notes = self.conversation.rejection_notes()
        return ("Your previous suggestions were refused:\n" + "\n".join(f"- {n}" for n in notes)) if notes else ""

    def _render_history(self, history: list[dict[str, Any]], max_tokens: int) -> str:
        ranked = sorted(history, key=_rank, reverse=True)[: int(self.defaults["top_k"])]
        blocks = []
        for entry in ranked:  # best first, so the budget keeps the best
            values = "\n".join(f"{k} = {format_value(v, 800)}" for k, v in entry["values"].items())
            if entry["score"] is not None:
                tail = f"score: {entry['score']:.4g}"
            else:
                tail = f"feedback: {entry['feedback'] or '(none)'}"
            blocks.append(f"{values}\n{tail}")
        kept = fit_blocks(blocks, max_tokens)
        return "\n\n".join(reversed(kept)) if kept else "(too long to show; see the current values)"


def _rank(entry: dict[str, Any]) -> tuple[int, float]:
    return (0, 0.0) if entry["score"] is None else (1, float(entry["score"]))
