"""The :class:`LLMJudge` guide: a language model grades an output against a rubric.

:func:`parse_judgement` reads the grade out of the judge's reply, however loosely it is written.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import re
from typing import Any

from feedprop._text import truncate_middle
from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import LLM, default
from feedprop.llm.base import Message, valid_unicode
from feedprop.node import Feedback
from feedprop.training.answers import as_text
from feedprop.training.guide import Guide

__all__ = ["JUDGE_SYSTEM", "JUDGE_TEMPLATE", "LLMJudge", "parse_judgement"]

#: The judge's instructions (data, not code): a system message and a user-message template.
JUDGE_SYSTEM = (
    "You are a strict, fair grader. You grade one answer against a rubric and reply with JSON only: "
    '{"score": <integer from 0 to 10>, "feedback": "<one or two sentences: what is wrong and how to fix it, '
    'or why it is right>"}'
)
JUDGE_TEMPLATE = """Rubric:
{rubric}
{question}{reference}
Answer to grade:
{output}

Reply with the JSON object only."""

_SCORE_FIELD = re.compile(r"[\"']?score[\"']?\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_FEEDBACK_FIELD = re.compile(r"[\"']?(?:feedback|reason|explanation)[\"']?\s*[:=]\s*[\"']?(.+)", re.IGNORECASE)


class LLMJudge(Guide):
    """A language model grades the output against a rubric (and the reference answer, if any).

    The model replies ``{"score": 0..10, "feedback": "..."}``; the reply is read robustly
    (code fences, prose around the JSON, single quotes, a bare ``score: 7``). Scores are
    mapped to [0, 1]. A reply that cannot be read after ``retries`` extra attempts scores 0
    with a feedback saying so. ``llm=None`` uses :func:`feedprop.llm.default` at call time;
    ``**params`` (e.g. ``temperature``) go to every call.

    Example:
        >>> from feedprop.llm import MockLLM
        >>> judge = LLMJudge("Is it polite?", llm=MockLLM(lambda m, **p: '{"score": 9, "feedback": "Polite."}'))
        >>> judge("Thank you kindly.", None).score
        0.9
    """

    def __init__(self, rubric: str, llm: LLM | None = None, *, retries: int = 1, **params: Any) -> None:
        if not isinstance(rubric, str) or not rubric.strip():
            raise InvalidInputError("LLMJudge needs a rubric: a non-empty string saying what a good answer is")
        if llm is not None and not isinstance(llm, LLM):
            raise InvalidInputError(
                f"llm must be a feedprop.llm.LLM (e.g. OpenAICompatible or MockLLM), got {type(llm).__name__}"
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(f"retries must be an int >= 0 (extra tries at an unreadable grade): {retries!r}")
        self.rubric = rubric
        self.llm = llm
        self.retries = retries
        self.params: dict[str, Any] = {"temperature": 0.0, "max_tokens": 300, **params}

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        text = as_text(output)
        if text is None or not text.strip():
            return Feedback("Wrong: the output is empty, so there is nothing to grade.", 0.0)
        question = as_text(getattr(example, "input", None)) if example is not None else None
        reference = as_text(target)
        messages: list[Message] = [
            {"role": "system", "content": JUDGE_SYSTEM},
            {
                "role": "user",
                "content": JUDGE_TEMPLATE.format(
                    rubric=self.rubric,
                    question=f"\nQuestion:\n{truncate_middle(question, 4000)}\n" if question else "",
                    reference=f"\nReference answer:\n{truncate_middle(reference, 2000)}\n" if reference else "",
                    output=truncate_middle(text, 8000),
                ),
            },
        ]
        llm = self.llm if self.llm is not None else default()
        reply = ""
        for attempt in range(self.retries + 1):
            params = self.params
            if attempt:  # the same request would get the same (cached, greedy) reply: vary it
                params = {**params, "temperature": max(0.7, params.get("temperature") or 0.0), "cache_salt": attempt}
            reply = llm.complete(messages, **params).text
            parsed = parse_judgement(reply)
            if parsed is not None:
                score, feedback = parsed
                return Feedback(feedback or f"Score {score:.2f}.", score, {"judge_reply": truncate_middle(reply, 1000)})
        return Feedback(
            "Ungraded: the judge's reply could not be read, so this output scores 0.",
            0.0,
            {"judge_reply": truncate_middle(reply, 1000), "judge_error": True},
        )

    def __repr__(self) -> str:
        return f"LLMJudge(rubric={truncate_middle(self.rubric, 60)!r})"


def parse_judgement(reply: str) -> tuple[float, str] | None:
    """Read ``(score in [0, 1], feedback)`` from a judge's reply, or ``None`` if it holds no score.

    Example:
        >>> parse_judgement('```json\\n{"score": 7, "feedback": "Mostly right."}\\n```')
        (0.7, 'Mostly right.')
    """
    raw_score: Any = None
    feedback = ""
    for candidate in _json_objects(reply):
        if isinstance(candidate, dict) and "score" in candidate:
            raw_score = candidate["score"]
            feedback = str(candidate.get("feedback") or candidate.get("reason") or candidate.get("explanation") or "")
            break
    if raw_score is None:
        match = _SCORE_FIELD.search(reply)
        if match is None:
            return None
        raw_score = match.group(1)
        fb = _FEEDBACK_FIELD.search(reply)
        feedback = fb.group(1).strip().rstrip("\"'}, ") if fb else ""
    try:
        value = float(raw_score)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int with hundreds of digits
        return None
    if not math.isfinite(value):
        return None
    # Asked for 0..10; a fractional value up to 1 is read as already on the [0, 1] scale.
    score = value if (0 <= value <= 1 and not value.is_integer()) else value / 10
    return min(1.0, max(0.0, score)), valid_unicode(feedback.strip())


def _json_objects(text: str) -> list[Any]:
    """Every JSON object that can be read from ``text``, outermost first."""
    found: list[Any] = []
    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(50):  # a bounded number of tries: a reply of ten thousand braces must stay cheap
        if start == -1 or len(found) >= 20:
            break
        try:
            obj, _ = decoder.raw_decode(text, start)
            found.append(obj)
        except (ValueError, RecursionError):
            end = text.find("}", start)
            if end != -1 and end - start < 10_000:
                # Small models write single-quoted pseudo-JSON. Any malformed literal is skipped,
                # e.g. "{{}}" (unhashable) or absurd nesting.
                with contextlib.suppress(Exception):
                    found.append(ast.literal_eval(text[start : end + 1]))
        start = text.find("{", start + 1)
    return found
