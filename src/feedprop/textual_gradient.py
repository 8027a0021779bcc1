"""TextGrad-style propagation: a language model writes the feedback each input of an op should get.

:class:`TextualGradient` is the :class:`~feedprop.propagate.Propagator` that needs an LLM, so it
lives above the LLM layer while :mod:`feedprop.propagate` and :mod:`feedprop.node` import none.
Walking backwards, the model reads an op, its inputs and output, and the feedback the output got,
and writes the feedback one input should get; so each parameter receives feedback written for it.
Its prompts are the module constants :data:`TEXTUAL_GRADIENT_SYSTEM` and
:data:`TEXTUAL_GRADIENT_USER`.

Example:
    >>> from feedprop.llm import MockLLM
    >>> from feedprop.node import Parameter
    >>> x = Parameter("hello", name="greeting")
    >>> out = x + " world"
    >>> out.backward("should be a question", propagator=TextualGradient(MockLLM("End it with '?'.")))
    >>> x.feedback[0].feedback.text
    "End it with '?'."
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from string import Template
from typing import Any

from feedprop import llm as llm_module
from feedprop._text import show, truncate_middle
from feedprop.errors import InvalidInputError
from feedprop.llm.base import LLM, Message
from feedprop.node import Feedback, Node
from feedprop.propagate import BackwardRun, ParameterFeedback, Propagator

__all__ = ["TEXTUAL_GRADIENT_SYSTEM", "TEXTUAL_GRADIENT_USER", "TextualGradient"]

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


class TextualGradient(Propagator):
    """A language model writes each input's feedback from its output's feedback (TextGrad style).

    Walking backwards, for every op output that received feedback and every input of it that
    leads to a trainable parameter, the model is asked (:data:`TEXTUAL_GRADIENT_SYSTEM`,
    :data:`TEXTUAL_GRADIENT_USER`) how that input should change. Inputs that lead to no trainable
    parameter cost no call. A node that feeds several others gets all their feedback, joined.
    ``llm=None`` uses ``feedprop.llm.default()``; ``params`` (``temperature``, ``max_tokens``)
    pass through to every call. Values longer than ``max_value_chars`` are shown cut in the middle.

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
        op = node.op
        score = f" (score: {feedback.score:g})" if feedback.score is not None else ""
        return Template(TEXTUAL_GRADIENT_USER).substitute(
            operation=(op.description or op.name) if op is not None else "(none)",
            inputs="\n".join(_input_lines(node, limit)) or "(none)",
            output_name=node.name,
            output=show(node._data, limit),
            feedback=truncate_middle(feedback.text, limit) + score,
            target=target.name,
            target_role=_role(target),
        )


def _input_lines(node: Node[Any], limit: int) -> list[str]:
    """``name = value`` for each input of ``node``, then for each parent it read without an argument."""
    inputs = getattr(node, "inputs", ()) or tuple((p.name, p) for p in node.parents)
    lines = []
    for arg, value in inputs:
        if isinstance(value, Node):
            lines.append(f"{arg} ({value.name}) = {show(value._data, limit)}")
        else:
            lines.append(f"{arg} = {show(value, limit)}")
    extra = [p for p in node.parents if all(p is not v for _, v in inputs)]
    lines.extend(f"{p.name} (also read) = {show(p._data, limit)}" for p in extra)
    return lines


def _role(target: Node[Any]) -> str:
    """What the prompt says the target is, after its name."""
    if not target.trainable:
        return ""
    description = getattr(target, "description", "")
    return f", a trainable variable ({description})" if description else ", a trainable variable"


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
