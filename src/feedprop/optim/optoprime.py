"""OptoPrime: one model call sees the whole traced problem and rewrites every parameter.

The parameters' propagated feedback is rendered by :mod:`feedprop.report` as one pseudo-code
problem (#Code, #Definitions, #Variables, #Constraints, #Inputs, #Others, #Outputs,
#Feedback) from the union of their minimal subgraphs. The model answers with its reasoning and
a suggestion of new values; every suggestion is matched to a parameter tolerantly, validated
for its kind, and refused with a reason the model sees next time when it cannot be used.
A bounded memory of past (values, feedback) pairs keeps it from repeating itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from feedprop import report
from feedprop.llm import LLM, Message
from feedprop.llm.tokens import estimate_prompt_tokens, estimate_tokens
from feedprop.node import Parameter
from feedprop.optim.conversation import Conversation
from feedprop.optim.memory import Memory
from feedprop.optim.opro import feedback_summary, mean_score
from feedprop.optim.optimizer import Optimizer, Proposal
from feedprop.optim.templates import fill, template

__all__ = ["OptoPrime"]

#: Share of the prompt budget the context blocks (memory, refusals, history) may use at most.
CONTEXT_SHARE = 0.35


class OptoPrime(Optimizer):
    """Rewrites all its parameters at once from the traced problem and its feedback.

    Options: ``memory_size`` past (values, feedback) pairs to show (0 turns memory off), plus
    the common ones (:data:`~feedprop.optim.optimizer.COMMON_DEFAULTS`): ``reply_format``
    ("json" or "xml"), ``max_retries``, ``n_candidates``, ``max_prompt_tokens`` ...

    Example:
        >>> from feedprop.node import Parameter
        >>> from feedprop.llm import MockLLM
        >>> x = Parameter(1.0, name="x")
        >>> y = x * 3
        >>> y.backward("the output should be larger by 6")
        >>> opt = OptoPrime([x], llm=MockLLM('{"reasoning": "y = 3x", "suggestion": {"x": 3.0}}'))
        >>> _ = opt.step(); x.data
        3.0
    """

    OPTIONS: ClassVar[tuple[str, ...]] = ("memory_size",)

    def __init__(
        self,
        params: Iterable[Parameter[Any]] | Iterable[dict[str, Any]],
        llm: LLM | None = None,
        *,
        memory_size: int = 3,
        **options: Any,
    ) -> None:
        super().__init__(params, llm, memory_size=memory_size, **options)
        self.conversation = Conversation(self)
        self.memory = Memory(self.global_state.setdefault("memory", []), memory_size)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.memory = Memory(self.global_state.setdefault("memory", []), int(self.defaults["memory_size"]))

    # -- building the prompt ----------------------------------------------------------------------

    def context_blocks(self, max_tokens: int) -> list[str]:
        """Blocks shown between the problem and the answer format; subclasses add their own."""
        blocks = []
        notes = self.conversation.rejection_notes()
        if notes:
            blocks.append(fill("refused", notes="\n".join(f"- {n}" for n in notes)))
        used = sum(estimate_tokens(b) for b in blocks)
        if self.memory.entries:
            rendered = self.memory.render(max(0, max_tokens - used - 20))
            if rendered:
                blocks.append(fill("memory", memory=rendered))
        return blocks

    def build_messages(self, blocks: list[str] | None = None) -> tuple[list[Message], report.Problem]:
        """The messages for one call, and the rendered problem they show.

        The problem gets whatever the budget leaves after the fixed text and the context blocks.
        """
        budget = int(self.defaults["max_prompt_tokens"])
        system = template("optoprime_system").strip()
        owned = [name for name, _ in self.named_parameters()]
        help_all = self.conversation.format_help()
        bare = fill("optoprime_user", problem="", context="", legal=", ".join(owned), format_help=help_all)
        fixed = estimate_prompt_tokens([Message(role="system", content=system), Message(role="user", content=bare)])
        if blocks is None:
            blocks = self.context_blocks(int((budget - fixed) * CONTEXT_SHARE))
        context = "\n\n".join(blocks)
        room = budget - fixed - estimate_tokens(context) - 8
        problem = report.render_problem(self.parameters(), max_tokens=max(room, 1))
        names = list(self.shown_names(problem)[0]) or owned
        user = fill(
            "optoprime_user",
            problem=problem.render(),
            context=("\n" + context + "\n") if context else "",
            legal=", ".join(names),
            format_help=self.conversation.format_help(names),
        )
        return [Message(role="system", content=system), Message(role="user", content=user)], problem

    def shown_names(self, problem: report.Problem) -> tuple[dict[str, Parameter[Any]], list[str]]:
        """The variable names shown that this optimizer owns, and every name shown it may not set."""
        owned = {id(p) for p in self.parameters()}
        shown = {name: p for name, p in problem.parameters.items() if id(p) in owned}
        readonly = [*problem.readonly, *(name for name in problem.parameters if name not in shown)]
        return shown, readonly

    # -- one step ------------------------------------------------------------------------------------

    def _propose(self) -> Proposal:
        feedbacks = self.observed_feedback()
        if not feedbacks:  # nothing to learn from: no call
            return Proposal()
        messages, problem = self.build_messages()
        self.memory.add(
            int(self.global_state.get("step", 0)),
            self.current_values(),
            feedback_summary(feedbacks),
            mean_score(feedbacks),
        )
        shown, others = self.shown_names(problem)
        return self.conversation.propose(messages, shown=shown, others=others)
