"""The conversation an optimizer has with its model: ask, read the reply, retry, sample candidates.

An optimizer that asks a model for new values holds a :class:`Conversation` over itself. The
conversation checks the prompt against ``max_prompt_tokens``, calls the model (the cost is
counted on the proposal being built), reads the reply (:func:`~feedprop.optim.replies.parse_reply`)
and turns its suggestion into validated updates and refusals (:meth:`Conversation.resolve`).
An unreadable reply, or one whose every suggestion was refused or repeated the current value,
is retried with the reason shown to the model; :meth:`Conversation.propose` samples
``n_candidates`` such answers into one :class:`~feedprop.optim.optimizer.Proposal`. The
optimizer supplies the parameters (under its names), their validation
(:meth:`~feedprop.optim.optimizer.Optimizer.validate`), the model and the options
(:data:`~feedprop.optim.optimizer.COMMON_DEFAULTS`).

Example:
    >>> from feedprop.llm import Message, MockLLM
    >>> from feedprop.node import Parameter
    >>> from feedprop.optim import OptoPrime
    >>> llm = MockLLM(["x should be 2", '{"reasoning": "r", "suggestion": {"x": 2}}'])
    >>> opt = OptoPrime([Parameter(1.0, name="x")], llm=llm)
    >>> attempt = opt.conversation.ask([Message(role="user", content="Improve x.")])
    >>> attempt.candidate.updates, len(attempt.errors)
    ({'x': 2.0}, 1)
"""

from __future__ import annotations

import ast
import json
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from feedprop._text import truncate_middle
from feedprop.errors import ConfigurationError, ReplyParseError, SuggestionError
from feedprop.llm import Completion, Message, thread_map
from feedprop.llm.tokens import estimate_prompt_tokens
from feedprop.node import Parameter
from feedprop.optim.keys import match_key, normalize_key
from feedprop.optim.optimizer import Candidate, Optimizer, Proposal, Rejection, jsonable, kind_of
from feedprop.optim.replies import Reply, parse_reply
from feedprop.optim.templates import fill

__all__ = ["Attempt", "Conversation", "describe_parameter", "same_value"]

#: Per kind: the JSON schema of a suggested value (code and text are strings; a JSON value is anything).
_VALUE_SCHEMA: dict[str, dict[str, Any]] = {
    "number": {"type": "number"},
    "code": {"type": "string"},
    "text": {"type": "string"},
}

#: Per kind: the placeholder for a value in a JSON example, and in an XML example.
_PLACEHOLDER = {
    "number": ("<new number>", "new number"),
    "code": ('"<the whole new function>"', "the whole new function"),
    "text": ('"<new text>"', "new text"),
    "json": ("<new JSON value, same shape>", "new JSON value, same shape"),
    "demos": ('[{"input": "<question>", "output": "<reply>"}]', "JSON list of {input, output} demonstrations"),
}


@dataclass
class Attempt:
    """The outcome of :meth:`Conversation.ask`: one candidate (or none) and what happened on the way."""

    candidate: Candidate | None = None
    reply: Reply | None = None
    rejected: list[Rejection] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def same_value(new: Any, current: Any, kind: str = "text") -> bool:
    """Whether a suggested value is the current one.

    Text is compared ignoring trailing whitespace of lines; code (``kind="code"``) by its syntax
    tree, so a change of quotes, comments or blank lines is no change.

    Example:
        >>> same_value("def f():\\n    return 1\\n", "def f():\\n    return 1"), same_value(1, 1.0)
        (True, False)
        >>> same_value("def f():\\n    return 'a'  # note", 'def f():\\n    return "a"', kind="code")
        True
    """
    if isinstance(new, str) and isinstance(current, str):
        if kind == "code":
            try:
                return ast.dump(ast.parse(textwrap.dedent(new))) == ast.dump(ast.parse(textwrap.dedent(current)))
            except (SyntaxError, ValueError):
                pass
        return [line.rstrip() for line in new.strip("\n").splitlines()] == [
            line.rstrip() for line in current.strip("\n").splitlines()
        ]
    return bool(new == current) and type(new) is type(current)


def describe_parameter(name: str, param: Parameter[Any]) -> str:
    """One line telling the model what a variable is: kind, bounds, description, constraint.

    Example:
        >>> describe_parameter("t", Parameter(0.5, name="t", bounds=(0, 1), description="sampling temperature"))
        't (number, between 0 and 1): sampling temperature'
    """
    kind = kind_of(param)
    parts = [f"{name} ({kind}"]
    bounds = getattr(param, "bounds", None)
    if bounds is not None:
        parts.append(f", between {bounds[0]} and {bounds[1]}")
    parts.append(")")
    line = "".join(parts)
    if param.description:
        line += f": {param.description}"
    constraint = getattr(param, "constraint", None)
    if isinstance(constraint, str) and constraint:
        line += f" [constraint: {constraint}]"
    return line


def _refusal(key: str, why: str, how: str, others: list[str], legal_list: str) -> str:
    """Why a key that names no parameter the model may change is refused, in words for the model."""
    norm = normalize_key(key)
    if how != "ambiguous" and any(o == key or normalize_key(o) == norm for o in others):
        return (
            f"{key!r} is not a trainable parameter (it is an input or an intermediate value); "
            f"only these may be changed: {legal_list}"
        )
    if how == "ambiguous":
        return f"{why}. Legal keys: {legal_list}"
    return f"{key!r} is not a trainable parameter; only these may be changed: {legal_list}"


def _unusable_note(rejected: list[Rejection], echoed: list[str]) -> str:
    """Why nothing in a reply could be used: each refusal, and each value repeated unchanged."""
    return "\n".join(
        [f"- {r.message()}" for r in rejected]
        + [
            f"- {n}: your suggestion is its current value unchanged, which is what produced the feedback; "
            "write a changed value that acts on your reasoning"
            for n in echoed
        ]
    )


class Conversation:
    """How ``optimizer`` asks its model for new values and reads the replies into candidates.

    The options come from ``optimizer.defaults`` as they are at each call (so a loaded state
    applies), the model from ``optimizer.llm``. Subclasses change the reply's form
    (:meth:`format_help`, :meth:`reply_schema`) or refuse more suggestions (``_resolve``).

    Example:
        >>> from feedprop.llm import Message, MockLLM
        >>> from feedprop.node import Parameter
        >>> from feedprop.optim import Optimizer, Proposal
        >>> class Ask(Optimizer):
        ...     def __init__(self, params, llm=None, **options):
        ...         super().__init__(params, llm, **options)
        ...         self.conversation = Conversation(self)
        ...     def _propose(self) -> Proposal:
        ...         return self.conversation.propose([Message(role="user", content="Improve t.")])
        >>> t = Parameter(0.5, name="t", bounds=(0, 1))
        >>> opt = Ask([t], llm=MockLLM(['{"suggestion": {"t": 3}}', '{"suggestion": {"t": 0.25}}']))
        >>> proposal = opt.step(); t.data, [r.reason.split(";")[0] for r in proposal.rejected]
        (0.25, ['3 is outside the bounds [0, 1]'])
    """

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer

    @property
    def options(self) -> dict[str, Any]:
        """The optimizer's options (:data:`~feedprop.optim.optimizer.COMMON_DEFAULTS` and its own)."""
        return self.optimizer.defaults

    def complete(self, messages: list[Message], **params: Any) -> Completion:
        """Call the model; the cost is counted on the proposal being built."""
        return self.optimizer.llm.complete(messages, **params)

    def check_prompt(self, messages: list[Message]) -> int:
        """The prompt's estimated tokens; :class:`ConfigurationError` if it exceeds ``max_prompt_tokens``."""
        used = estimate_prompt_tokens(messages)
        limit = int(self.options["max_prompt_tokens"])
        if used > limit:
            raise ConfigurationError(
                f"the prompt needs about {used} tokens even after summarising, over max_prompt_tokens={limit}; "
                "raise max_prompt_tokens (if the model's context allows) or optimize fewer parameters at once"
            )
        return used

    # -- the reply's form ----------------------------------------------------------------------

    def format_help(self, names: Iterable[str] | None = None) -> str:
        """How the model must write its answer, with an example keyed by the variables ``names``.

        Small models copy the example's keys, so it names the real variables (all owned ones by
        default) with a placeholder of the right kind for each value.
        """
        return fill(f"format_{self.options['reply_format']}", **self._format_fields(names))

    def _format_fields(self, names: Iterable[str] | None) -> dict[str, str]:
        """The ``$suggestion`` example and the ``$legal`` names a reply-format prompt is filled with."""
        owned = dict(self.optimizer.named_parameters())
        chosen = list(owned if names is None else names)
        kinds = {n: kind_of(owned[n]) if n in owned else "text" for n in chosen}
        shown = chosen[:3]
        if self.options["reply_format"] == "xml":
            example = "\n".join(f'<suggestion name="{n}">{_PLACEHOLDER[kinds[n]][1]}</suggestion>' for n in shown)
        else:
            pairs = ", ".join(f"{json.dumps(n)}: {_PLACEHOLDER[kinds[n]][0]}" for n in shown)
            example = "{" + pairs + (", ..." if len(chosen) > 3 else "") + "}"
        return {"suggestion": example, "legal": ", ".join(chosen)}

    def reply_schema(self, names: Iterable[str] | Mapping[str, Parameter[Any]] | None = None) -> dict[str, Any]:
        """The JSON schema of a reply: ``reasoning`` then ``suggestion``, keyed by the legal ``names`` only.

        ``names`` are the names the model saw (a map of them to the parameters when they differ
        from the optimizer's names); by default, every owned parameter.

        Sent as ``response_format`` to models that enforce schemas (see :meth:`response_format`),
        so a small model can neither break the JSON nor invent a key. Subclasses asking for more
        fields extend it.

        Example:
            >>> from feedprop.node import Parameter
            >>> from feedprop.llm import MockLLM
            >>> from feedprop.optim import OptoPrime
            >>> opt = OptoPrime([Parameter(1.0, name="x")], llm=MockLLM("{}"))
            >>> opt.conversation.reply_schema()["properties"]["suggestion"]["properties"]
            {'x': {'type': 'number'}}
        """
        owned = dict(self.optimizer.named_parameters())
        params: Mapping[str, Parameter[Any]] = names if isinstance(names, Mapping) else owned
        chosen = list(owned if names is None else names)
        values = {n: dict(_VALUE_SCHEMA.get(kind_of(params[n]), {})) if n in params else {} for n in chosen}
        return {
            "type": "object",
            "properties": {
                "reasoning": {"type": "string"},
                "suggestion": {"type": "object", "properties": values, "additionalProperties": False},
            },
            "required": ["reasoning", "suggestion"],
            "additionalProperties": False,
        }

    def response_format(
        self, names: Iterable[str] | Mapping[str, Parameter[Any]] | None = None
    ) -> dict[str, Any] | None:
        """The ``response_format`` to send with a JSON request, or ``None`` to send none.

        A schema (:meth:`reply_schema`) goes only to a model whose ``supports_json_schema`` is
        true, with ``reply_format="json"`` and the ``json_schema`` option on; the tolerant reply
        parser reads the reply either way.

        Example:
            >>> from feedprop.node import Parameter
            >>> from feedprop.llm import MockLLM
            >>> from feedprop.optim import OptoPrime
            >>> x = Parameter(1.0, name="x")
            >>> OptoPrime([x], llm=MockLLM("{}")).conversation.response_format() is None
            True
            >>> opt = OptoPrime([x], llm=MockLLM("{}", json_schema=True), json_schema=True)
            >>> opt.conversation.response_format()["type"]
            'json_schema'
        """
        if self.options["reply_format"] != "json" or not self.options["json_schema"]:
            return None
        if not self.optimizer.llm.supports_json_schema:
            return None
        return {"type": "json_schema", "json_schema": {"name": "reply", "schema": self.reply_schema(names)}}

    # -- reading a suggestion ------------------------------------------------------------------

    def resolve(
        self,
        suggestion: Mapping[str, Any],
        *,
        shown: Mapping[str, Parameter[Any]] | None = None,
        others: Iterable[str] = (),
    ) -> tuple[dict[str, Any], list[Rejection]]:
        """Turn a parsed suggestion into validated updates and rejections.

        ``shown`` maps the names the model saw to the parameters (default: the optimizer's
        names); ``others`` are names of variables the model saw but may not change (inputs,
        intermediate results). Keys are matched tolerantly (see :func:`~feedprop.optim.keys.match_key`);
        a key naming a non-parameter, an unknown key and an invalid value are each refused with
        a reason the model will see next time. Suggestions equal to the current value are dropped.

        Example:
            >>> from feedprop.node import Parameter
            >>> from feedprop.llm import MockLLM
            >>> from feedprop.optim import OptoPrime
            >>> opt = OptoPrime([Parameter(1.0, name="x", bounds=(0, 5))], llm=MockLLM("{}"))
            >>> updates, rejected = opt.conversation.resolve({"X": "2.5", "y": 1})
            >>> updates, [r.key for r in rejected]
            ({'x': 2.5}, ['y'])
        """
        updates, rejected, _ = self._resolve(suggestion, shown=shown, others=others)
        return updates, rejected

    def _resolve(
        self,
        suggestion: Mapping[str, Any],
        *,
        shown: Mapping[str, Parameter[Any]] | None = None,
        others: Iterable[str] = (),
    ) -> tuple[dict[str, Any], list[Rejection], list[str]]:
        """:meth:`resolve`, plus the names whose suggested value repeated the current one."""
        legal = dict(self.optimizer.named_parameters()) if shown is None else dict(shown)
        other_names = [o for o in others if o not in legal]
        legal_list = ", ".join(repr(n) for n in legal)
        updates: dict[str, Any] = {}
        rejected: list[Rejection] = []
        echoed: list[str] = []
        for raw_key, value in suggestion.items():
            key = str(raw_key)
            match = match_key(key, legal)
            if match.name is None:
                reason = self._not_offered(key, legal, legal_list) or _refusal(
                    key, match.reason, match.how, other_names, legal_list
                )
                rejected.append(Rejection(key, jsonable(value), reason))
                continue
            name = self.optimizer.name_of(legal[match.name])
            if name in updates:
                rejected.append(Rejection(key, jsonable(value), f"a value for {name!r} was already given", name))
                continue
            try:
                checked = self.optimizer.validate(name, value)
            except SuggestionError as e:
                rejected.append(Rejection(key, jsonable(value), str(e), name))
                continue
            param = self.optimizer.get_parameter(name)
            if same_value(checked, param.data, kind_of(param)):
                echoed.append(name)
                continue
            updates[name] = checked
        return updates, rejected, echoed

    def _not_offered(self, key: str, legal: Mapping[str, Parameter[Any]], legal_list: str) -> str | None:
        """Why ``key`` may not be set when it names a parameter of the optimizer (so trainable) not offered now."""
        owned_params = dict(self.optimizer.named_parameters())
        owned = match_key(key, owned_params)
        if owned.name is None or any(p is owned_params[owned.name] for p in legal.values()):
            return None
        if not owned_params[owned.name].feedback:
            return (
                f"{owned.name!r} is trainable but received no feedback this step, so it stays as it is; "
                f"only these, which did, may be changed now: {legal_list}"
            )
        return f"{owned.name!r} is trainable but not part of this request; only these may be changed here: {legal_list}"

    def rejection_notes(self) -> list[str]:
        """The refusals of the optimizer's previous proposal, as lines to show the model on this attempt (each once)."""
        return list(
            dict.fromkeys(Rejection.from_dict(r).message() for r in self.optimizer.global_state.get("rejected", []))
        )

    # -- asking --------------------------------------------------------------------------------

    def ask(
        self,
        messages: list[Message],
        *,
        shown: Mapping[str, Parameter[Any]] | None = None,
        others: Iterable[str] = (),
        sample: int = 0,
    ) -> Attempt:
        """Ask the model and read its reply into one validated :class:`~feedprop.optim.optimizer.Candidate`.

        An unreadable reply is retried (up to ``max_retries`` times) with the parse error shown
        to the model; so is a reply whose every suggestion was refused or repeated the current
        value, with the reasons. Sample 0 uses ``temperature``, later samples and retries
        ``candidate_temperature`` (later samples also a distinct cache salt). A model that
        enforces JSON schemas gets :meth:`response_format` (a sampling parameter, so it is part
        of the cache key).
        """
        opts = self.options
        self.check_prompt(messages)
        params = self._sampling(sample, shown)
        conversation = list(messages)
        out = Attempt()
        others = list(others)
        legal_names = list(shown) if shown is not None else None
        for attempt in range(int(opts["max_retries"]) + 1):
            if attempt:  # a retry at temperature 0 tends to repeat the refused answer word for word
                params["temperature"] = max(float(params["temperature"]), float(opts["candidate_temperature"]))
            completion = self.complete(conversation, **params)
            out.replies.append(completion.text)
            try:
                reply = parse_reply(completion.text, opts["reply_format"])
            except ReplyParseError as e:
                out.errors.append(str(e))
                note = fill("retry_parse", error=str(e), format_help=self.format_help(legal_names))
                conversation = self._retry_messages(messages, completion.text, note)
                continue
            updates, rejected, echoed = self._resolve(reply.suggestion, shown=shown, others=others)
            out.rejected.extend(replace(r, attempt=attempt + 1) for r in rejected)
            out.reply = reply
            last = attempt == int(opts["max_retries"])
            if updates or not (rejected or echoed) or last:
                out.candidate = Candidate(updates, reply.reasoning, dict(reply.extras))
                break
            # Nothing usable: every suggestion was refused, or repeated its variable's current value
            # (small models often copy the current value while their reasoning says what to change).
            reasons = _unusable_note(rejected, echoed)
            note = fill("retry_rejected", rejections=reasons, format_help=self.format_help(legal_names))
            conversation = self._retry_messages(messages, completion.text, note)
        return out

    def _sampling(self, sample: int, shown: Mapping[str, Parameter[Any]] | None) -> dict[str, Any]:
        """The sampling parameters of sample number ``sample``'s first call."""
        opts = self.options
        temperature = opts["temperature"] if sample == 0 else opts["candidate_temperature"]
        params: dict[str, Any] = {"temperature": temperature, "max_tokens": opts["max_tokens"]}
        if sample:
            params["cache_salt"] = sample
        response_format = self.response_format(shown)
        if response_format is not None:
            params["response_format"] = response_format
        return params

    def _retry_messages(self, messages: list[Message], reply: str, note: str) -> list[Message]:
        """The messages of a retry: the model's own reply when the budget allows (cut in the middle), then ``note``."""
        base = [*messages, Message(role="user", content=note)]
        room = int(self.options["max_prompt_tokens"]) - estimate_prompt_tokens(base) - 8
        if room < 50:
            return base
        echo = truncate_middle(reply, min(room * 4, 4000))
        return [*messages, Message(role="assistant", content=echo), Message(role="user", content=note)]

    # -- sampling candidates -------------------------------------------------------------------

    def sample_candidates(self, build: Callable[[int], Attempt]) -> Proposal:
        """Run ``build(sample) -> Attempt`` for each of ``n_candidates`` samples and collect a proposal.

        Samples run in parallel threads (the model's concurrency limit applies). Candidates with
        identical updates are merged; empty candidates are kept only if no other exists.
        """
        n = int(self.options["n_candidates"])
        attempts: list[Attempt] = thread_map(build, range(n), max_workers=n) if n > 1 else [build(0)]
        proposal = Proposal()
        seen: set[str] = set()
        for attempt in attempts:
            proposal.rejected.extend(attempt.rejected)
            proposal.replies.extend(attempt.replies)
            proposal.errors.extend(attempt.errors)
            if attempt.candidate is None:
                continue
            key = json.dumps(attempt.candidate.updates, sort_keys=True, default=repr)
            if key not in seen:
                seen.add(key)
                proposal.candidates.append(attempt.candidate)
        non_empty = [c for c in proposal.candidates if c.updates]
        if non_empty:
            proposal.candidates = non_empty
        return proposal

    def propose(
        self,
        messages: list[Message],
        *,
        shown: Mapping[str, Parameter[Any]] | None = None,
        others: Iterable[str] = (),
    ) -> Proposal:
        """:meth:`ask` with the same ``messages`` for each of ``n_candidates`` samples, as one proposal.

        Example:
            >>> from feedprop.llm import Message, MockLLM
            >>> from feedprop.node import Parameter
            >>> from feedprop.optim import OptoPrime
            >>> llm = MockLLM(['{"suggestion": {"x": 2}}', '{"suggestion": {"x": 3}}'])
            >>> opt = OptoPrime([Parameter(1.0, name="x")], llm=llm, n_candidates=2)
            >>> proposal = opt.conversation.propose([Message(role="user", content="Improve x.")])
            >>> sorted(c.updates["x"] for c in proposal.candidates)
            [2.0, 3.0]
        """

        def build(sample: int) -> Attempt:
            return self.ask(messages, shown=shown, others=others, sample=sample)

        return self.sample_candidates(build)
