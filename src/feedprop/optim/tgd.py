"""Textual gradient descent: each parameter is rewritten from the feedback it received.

The TextGrad recipe, one model call per parameter: the variable's role, its current value, the
feedback that reached it (its "textual gradient" — written per edge by the textual-gradient
propagator, or the output's feedback with the output it concerns under minimal-subgraph
propagation), its constraints and in-context examples, then "write an improved value".

Momentum that works: every step stores the value the parameter had *and the feedback that
value received* (with its score) in the parameter's state. With ``momentum=k`` the last ``k``
of these pairs are shown, oldest first, so the model can see which changes improved the
feedback and must not undo them — and a value that did worse is visibly marked as such.
(Showing past values without the feedback each got, or recording a value after it has been
replaced, gives the model nothing to learn from.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from feedprop._text import truncate_middle
from feedprop.errors import InvalidInputError
from feedprop.llm import LLM, Message, thread_map
from feedprop.llm.tokens import estimate_prompt_tokens, estimate_tokens
from feedprop.node import Feedback, Parameter
from feedprop.optim.conversation import Attempt, Conversation
from feedprop.optim.fitting import fit_blocks
from feedprop.optim.memory import format_value
from feedprop.optim.opro import feedback_summary, mean_score
from feedprop.optim.optimizer import Candidate, Optimizer, Proposal, check_int_option, kind_of
from feedprop.optim.templates import fill, template

__all__ = ["TextualGradientDescent"]


class TextualGradientDescent(Optimizer):
    """Rewrites each parameter from its own feedback (TextGrad's TGD), with momentum that works.

    Options (per group, like torch): ``momentum`` — how many past (value, feedback) pairs of
    each parameter to show (0 turns it off); ``constraints`` — sentences each new value must
    satisfy (checked when checkable, see :func:`~feedprop.optim.validate.check_constraint`);
    ``examples`` — in-context examples of good values. Plus the common options.

    Example:
        >>> from feedprop.node import Parameter
        >>> from feedprop.llm import MockLLM
        >>> p = Parameter("Answer.", name="prompt")
        >>> reply = '{"reasoning": "r", "suggestion": {"prompt": "Answer briefly."}}'
        >>> opt = TextualGradientDescent([p], llm=MockLLM(reply), constraints=["at most 10 words"])
        >>> (p + " Q: 2+2?").backward("too verbose")
        >>> _ = opt.step(); p.data
        'Answer briefly.'
    """

    OPTIONS = ("momentum", "constraints", "examples")

    def __init__(
        self,
        params: Iterable[Parameter[Any]] | Iterable[dict[str, Any]],
        llm: LLM | None = None,
        *,
        momentum: int = 3,
        constraints: list[str] | None = None,
        examples: list[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            params,
            llm,
            momentum=momentum,
            constraints=_as_list("constraints", constraints),
            examples=_as_list("examples", examples),
            **options,
        )
        self.conversation = Conversation(self)

    def check_options(self, options: Mapping[str, Any]) -> None:
        super().check_options(options)
        check_int_option(options, "momentum", 0)
        for key in ("constraints", "examples"):
            _as_list(key, options.get(key))

    def _feedback_text(self, name: str) -> tuple[str, list[Feedback]]:
        lines: list[str] = []
        feedbacks: list[Feedback] = []
        for entry in self.feedback_entries(name):
            fb: Feedback = entry.feedback
            feedbacks.append(fb)
            out_fb = entry.output_feedback
            if fb is out_fb:  # the output's own feedback: say which output it is about
                output = format_value(entry.output.data, 300)
                lines.append(f"- On the output {entry.output.name} = {output}: {fb.text}")
            else:
                lines.append(f"- {fb.text}")
        return "\n".join(dict.fromkeys(lines)), feedbacks

    def _momentum_block(self, name: str, room: int) -> str:
        past = self.state[name].get("momentum", [])
        if not past:
            return ""
        blocks = []
        for entry in reversed(past):
            score = "" if entry["score"] is None else f" (score {entry['score']:.4g})"
            blocks.append(
                f"Step {entry['step']}: {format_value(entry['value'], 800)}\n  feedback{score}: {entry['feedback']}"
            )
        kept = list(reversed(fit_blocks(blocks, room)))
        return fill("tgd_momentum", name=name, history="\n".join(kept)) if kept else ""

    def _messages(self, name: str, feedback: str) -> list[Message]:
        param = self.get_parameter(name)
        opts = self.options(name)
        constraints = [c for c in [getattr(param, "constraint", None), *opts["constraints"]] if isinstance(c, str)]
        bounds = getattr(param, "bounds", None)
        if bounds is not None:
            constraints.append(f"between {bounds[0]} and {bounds[1]}")
        budget = int(self.defaults["max_prompt_tokens"])
        examples = ""
        if opts["examples"]:
            shown = fit_blocks([truncate_middle(str(e), 1200) for e in opts["examples"]], budget // 5)
            examples = "\nExamples of good values:\n" + "\n".join(f"- {e}" for e in shown)
        notes = [n for n in self.conversation.rejection_notes() if name in n]
        fields = {
            "name": name,
            "kind": kind_of(param),
            "description": param.description or "(no description)",
            "constraints": ("Constraints: " + "; ".join(constraints)) if constraints else "",
            "value": format_value(param.data, budget),  # cut below to the room left
            "feedback": truncate_middle(feedback, budget * 2),
            "examples": examples,
            "notes": ("Your previous suggestion was refused:\n" + "\n".join(notes)) if notes else "",
            "format_help": self.conversation.format_help([name]),
        }
        system = template("tgd_system").strip()
        bare = fill("tgd_user", momentum="", **{**fields, "value": "", "feedback": ""})
        room = budget - estimate_prompt_tokens([Message(role="system", content=system)]) - estimate_tokens(bare) - 8
        # Share what is left: the value first, then feedback, then momentum.
        fields["value"] = format_value(param.data, max(200, room * 4 // 2))
        room -= estimate_tokens(fields["value"])
        fields["feedback"] = truncate_middle(feedback, max(200, room * 4 * 2 // 3))
        room -= estimate_tokens(fields["feedback"])
        user = fill("tgd_user", momentum=self._momentum_block(name, max(room, 0)), **fields)
        return [Message(role="system", content=system), Message(role="user", content=user)]

    def _propose(self) -> Proposal:
        jobs: list[tuple[str, list[Message]]] = []
        step = int(self.global_state.get("step", 0))
        for name, _ in self.named_parameters():
            text, feedbacks = self._feedback_text(name)
            if not feedbacks:
                continue
            jobs.append((name, self._messages(name, text)))
            self._remember(name, step, feedbacks)
        if not jobs:
            return Proposal()

        def build(sample: int) -> Attempt:
            def one(job: tuple[str, list[Message]]) -> Attempt:
                name, messages = job
                return self.conversation.ask(messages, shown={name: self.get_parameter(name)}, sample=sample)

            attempts = thread_map(one, jobs, max_workers=len(jobs)) if len(jobs) > 1 else [one(jobs[0])]
            merged = Attempt(candidate=Candidate())
            assert merged.candidate is not None
            for (name, _), attempt in zip(jobs, attempts, strict=True):
                merged.rejected.extend(attempt.rejected)
                merged.replies.extend(attempt.replies)
                merged.errors.extend(attempt.errors)
                if attempt.candidate is not None and attempt.candidate.updates:
                    merged.candidate.updates.update(attempt.candidate.updates)
                    merged.candidate.reasoning += f"[{name}] {attempt.candidate.reasoning}\n"
            merged.candidate.reasoning = merged.candidate.reasoning.strip()
            return merged

        return self.conversation.sample_candidates(build)

    def _remember(self, name: str, step: int, feedbacks: list[Feedback]) -> None:
        # The value *and* the feedback it received — the pair momentum needs.
        k = int(self.options(name)["momentum"])
        if k <= 0:
            return
        past: list[dict[str, Any]] = self.state[name].setdefault("momentum", [])
        value = json.loads(json.dumps(self.get_parameter(name).data))
        past.append(
            {"step": step, "value": value, "feedback": feedback_summary(feedbacks), "score": mean_score(feedbacks)}
        )
        del past[: max(0, len(past) - k)]


def _as_list(key: str, value: Any) -> list[Any]:
    """``constraints`` and ``examples`` as lists; one sentence passed alone is a mistake worth naming."""
    if value is None:
        return []
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise InvalidInputError(
            f"{key} must be a list of sentences, e.g. {key}=['at most 50 words'], got {type(value).__name__}"
        )
    return list(value)
