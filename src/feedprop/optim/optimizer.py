"""The optimizer base class: parameter groups, per-parameter state, propose / apply / step.

An optimizer owns some :class:`~feedprop.node.Parameter` objects. After feedback has been
propagated to them, :meth:`Optimizer.propose` returns a :class:`Proposal` — one or more
validated :class:`Candidate` updates plus the suggestions that were refused and why — without
touching any parameter. :meth:`Optimizer.apply` sets the values of a candidate;
:meth:`Optimizer.step` does both. A trainer that wants to compare candidates calls
``propose()``, evaluates each candidate, and ``apply()``-s the best one.

Subclasses implement one method, :meth:`Optimizer._propose`. Those that ask a model hold a
:class:`~feedprop.optim.conversation.Conversation`, which asks, reads the replies into
validated candidates and retries.

Like ``torch.optim.Optimizer``: ``param_groups`` is a list of dicts, each with ``"params"`` and
the options for those parameters; ``state`` holds per-parameter state, keyed here by the
parameter's name so it survives a JSON round trip. ``global_state`` holds what belongs to the
optimizer as a whole (memory of past steps, the refusals to show the model next time).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

from feedprop import llm as llm_package
from feedprop._text import truncate_middle
from feedprop.errors import ConfigurationError, InvalidInputError, StateDictError, SuggestionError
from feedprop.llm import LLM, UsageMeter, track_usage
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim.keys import match_key
from feedprop.optim.replies import REPLY_FORMATS
from feedprop.optim.validate import check_constraint, copied_passage, infer_kind, validate_value

if TYPE_CHECKING:
    from feedprop.propagate import ParameterFeedback

__all__ = ["COMMON_DEFAULTS", "Candidate", "Optimizer", "Proposal", "Rejection"]

STATE_FORMAT = "feedprop.optim/1"
#: How many refused suggestions are kept to show the model on the next attempt.
MAX_REMEMBERED_REJECTIONS = 8
#: How much of a refused key, and of the reason, a note shows (a hostile reply must not flood the next prompt).
MAX_NOTE_KEY_CHARS = 80
MAX_NOTE_CHARS = 400

#: Options every optimizer understands. They apply to the optimizer's model calls as a whole.
COMMON_DEFAULTS: dict[str, Any] = {
    "reply_format": "json",  # "json" or "xml" (see feedprop.optim.replies)
    "max_retries": 1,  # extra calls after an unreadable reply or a reply whose every suggestion was refused
    "max_tokens": 800,  # the reply's length limit
    "temperature": 0.0,  # of the first candidate
    "n_candidates": 1,  # how many candidates propose() samples
    "candidate_temperature": 0.8,  # of the candidates after the first
    "max_prompt_tokens": 3000,  # the prompt's budget: graphs, values and history are summarised to fit
    "json_schema": False,  # JSON replies: constrain them with a schema when the model enforces one (opt-in, see docs)
}


@dataclass
class Candidate:
    """One proposed update: ``updates`` maps parameter name → new, already validated value."""

    updates: dict[str, Any] = field(default_factory=dict)
    reasoning: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"updates": copy.deepcopy(self.updates), "reasoning": self.reasoning, "extras": dict(self.extras)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        return cls(dict(data.get("updates", {})), str(data.get("reasoning", "")), dict(data.get("extras", {})))


@dataclass(frozen=True)
class Rejection:
    """A suggestion that was refused: the ``key`` the model wrote, its ``value`` and the ``reason``.

    ``parameter`` is the parameter the key resolved to, when it resolved to one. ``attempt``
    numbers the reply it came from when the optimizer asked again after refusals (1 for the
    first reply, 2 for the first retry, ...), so a suggestion refused on each try is listed once
    per attempt, each with its number.
    """

    key: str
    value: Any
    reason: str
    parameter: str | None = None
    attempt: int | None = None

    def message(self) -> str:
        """The refusal as one line addressed to the model (a runaway key or reason is cut in the middle)."""
        return f"{truncate_middle(self.key, MAX_NOTE_KEY_CHARS)!r}: {truncate_middle(self.reason, MAX_NOTE_CHARS)}"

    def to_dict(self) -> dict[str, Any]:
        data = {"key": self.key, "value": jsonable(self.value), "reason": self.reason, "parameter": self.parameter}
        if self.attempt is not None:
            data["attempt"] = self.attempt
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rejection:
        return cls(str(data["key"]), data.get("value"), str(data["reason"]), data.get("parameter"), data.get("attempt"))


@dataclass
class Proposal:
    """What :meth:`Optimizer.propose` returns.

    ``candidates`` holds one :class:`Candidate` (several when ``n_candidates > 1``), best or
    first first; ``rejected`` the refused suggestions; ``usage`` what the model calls cost;
    ``replies`` the raw replies; ``errors`` the parse errors met on the way (each retried).
    """

    candidates: list[Candidate] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    usage: UsageMeter = field(default_factory=UsageMeter)
    replies: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def best(self) -> Candidate:
        """The first candidate, or an empty one when the model proposed nothing valid."""
        return self.candidates[0] if self.candidates else Candidate()

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": [c.to_dict() for c in self.candidates],
            "rejected": [r.to_dict() for r in self.rejected],
            "usage": self.usage.to_dict(),
            "replies": list(self.replies),
            "errors": list(self.errors),
        }


def jsonable(value: Any) -> Any:
    """``value`` if it is JSON data (NaN and Infinity excluded), else its ``repr``."""
    try:
        json.dumps(value, allow_nan=False)  # NaN and Infinity would make the state unsavable later
    except (TypeError, ValueError, RecursionError):
        return _safe_repr(value)
    return value


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except (ValueError, RecursionError):  # an int too long for str(), a structure nested too deeply
        return f"<{type(value).__name__} that cannot be shown>"


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidInputError(f"{what} must be JSON-serialisable ({e}); store only plain JSON data there") from None


def kind_of(param: Parameter[Any]) -> str:
    """The parameter's kind ("text", "code", "number", "json" or "demos"), inferred from its value when unset."""
    kind = getattr(param, "kind", None)
    return str(kind) if kind else infer_kind(param.data)


def _traced_texts(param: Parameter[Any]) -> tuple[list[list[str]], list[str]]:
    """The texts around ``param``'s feedback paths, one list per example; and the parameters' own texts.

    For every node on the path from ``param`` to an output that gave feedback: its value, its
    inputs (the question an LLM call was asked, say) and, for an LLM call, its messages. The
    feedback entries whose runs started from the same data (the same question, run again by a
    teacher, say) are one example and give one list.
    """
    groups: dict[object, list[str]] = {}
    known: list[str] = []
    for entry in param.feedback:
        seen: set[int] = set()
        texts: list[str] = []
        data: set[str] = set()

        def add(value: Any, texts: list[str] = texts, seen: set[int] = seen) -> None:
            if id(value) in seen or value is param:
                return
            seen.add(id(value))
            content = value.data if isinstance(value, Node) else value
            if isinstance(content, str):
                (known if isinstance(value, Parameter) else texts).append(content)

        for node in getattr(entry, "subgraph", ()):
            add(node)
            for _, value in getattr(node, "inputs", ()):
                add(value)
                if isinstance(value, str) or _is_data(value):
                    data.add(value if isinstance(value, str) else value.data)
            info = getattr(node, "info", None)
            for message in (info.get("messages") or ()) if isinstance(info, Mapping) else ():
                if isinstance(message, Mapping):
                    add(message.get("content"))
        groups.setdefault(frozenset(data) if data else id(entry), []).extend(texts)
    return list(groups.values()), known


def _is_data(value: Any) -> bool:
    """A traced input that no operation made and no optimizer may change: a workflow's text input."""
    return (
        isinstance(value, Node)
        and not isinstance(value, Parameter)
        and getattr(value, "op", None) is None
        and isinstance(value.data, str)
    )


def _is_parameter(obj: Any) -> bool:
    return isinstance(obj, Parameter)


def check_int_option(options: Mapping[str, Any], key: str, low: int) -> None:
    """Raise :class:`ConfigurationError` unless ``options[key]`` is an int >= ``low``."""
    value = options.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigurationError(f"{key} must be an int >= {low}, got {value!r}")


def _check_options(options: Mapping[str, Any]) -> None:
    fmt = options.get("reply_format")
    if fmt not in REPLY_FORMATS:
        raise ConfigurationError(f"reply_format must be one of {REPLY_FORMATS}, got {fmt!r}")
    for key, low in (("max_retries", 0), ("max_tokens", 1), ("n_candidates", 1), ("max_prompt_tokens", 200)):
        check_int_option(options, key, low)
    if not isinstance(options.get("json_schema"), bool):
        raise ConfigurationError(f"json_schema must be True or False, got {options.get('json_schema')!r}")
    for key in ("temperature", "candidate_temperature"):
        value = options.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
            raise ConfigurationError(f"{key} must be a number between 0 and 2, got {value!r}")


class Optimizer:
    """Base class of every feedprop optimizer. Subclasses implement :meth:`_propose` only.

    ``params`` is an iterable of parameters, or of dicts ``{"params": [...], **options}`` to give
    groups of parameters their own options (as in torch). ``llm=None`` uses
    :func:`feedprop.llm.default` (resolved on first use, so constructing is cheap). Keyword
    ``defaults`` are the options every group starts from: :data:`COMMON_DEFAULTS` plus the
    names a subclass lists in :attr:`OPTIONS`.

    Example:
        >>> from feedprop.node import Feedback, Node, Parameter
        >>> from feedprop.llm import MockLLM
        >>> from feedprop.optim import OptoPrime
        >>> x = Parameter(1.0, name="x")
        >>> opt = OptoPrime([x], llm=MockLLM(['{"reasoning": "r", "suggestion": {"x": 2.0}}']))
        >>> opt.apply({"x": 3.0}); x.data
        3.0
    """

    #: The options a subclass adds to :data:`COMMON_DEFAULTS` (anything else is refused as a typo).
    OPTIONS: ClassVar[tuple[str, ...]] = ()
    #: The parameter kinds this optimizer takes (``None``: every kind), and where the others belong.
    KINDS: ClassVar[tuple[str, ...] | None] = None
    OTHER_KINDS_HINT: ClassVar[str] = ""

    def __init__(
        self,
        params: Iterable[Parameter[Any]] | Iterable[dict[str, Any]],
        llm: LLM | None = None,
        **defaults: Any,
    ) -> None:
        if llm is not None and not isinstance(llm, LLM):
            raise InvalidInputError(
                f"llm must be a feedprop.llm.LLM (e.g. feedprop.llm.MockLLM or OpenAICompatible), "
                f"got {type(llm).__name__}"
            )
        if isinstance(params, Mapping | str | bytes) or _is_parameter(params) or not isinstance(params, Iterable):
            raise InvalidInputError(
                f"params must be an iterable of parameters, e.g. model.parameters() or [p1, p2]; "
                f"got {type(params).__name__}"
            )
        unknown = sorted(set(defaults) - set(COMMON_DEFAULTS) - set(self.OPTIONS))
        if unknown:
            known = sorted({*COMMON_DEFAULTS, *self.OPTIONS})
            raise ConfigurationError(f"unknown option(s) {unknown} for {type(self).__name__}; known options: {known}")
        self.defaults: dict[str, Any] = {**COMMON_DEFAULTS, **defaults}
        self.check_options(self.defaults)
        self._llm = llm
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[str, dict[str, Any]] = {}
        self.global_state: dict[str, Any] = {"step": 0, "rejected": []}
        self._names: dict[str, Parameter[Any]] = {}
        groups: list[Any] = list(params)
        if not groups:
            raise ConfigurationError("the optimizer got an empty parameter list; pass model.parameters()")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- parameters -----------------------------------------------------------------------

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group ``{"params": [...], **options}``; missing options come from ``defaults``."""
        if not isinstance(group, dict) or "params" not in group:
            raise InvalidInputError("a parameter group must be a dict with a 'params' list")
        unknown = sorted(set(group) - set(self.defaults) - {"params"})
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {unknown} for {type(self).__name__}; known options: {sorted(self.defaults)}"
            )
        raw = group["params"]
        members = [raw] if _is_parameter(raw) else list(raw)
        for i, p in enumerate(members):
            if not _is_parameter(p):
                raise InvalidInputError(
                    f"optimizers take Parameter objects, got {type(p).__name__}; wrap values as fp.Parameter(value)"
                )
            if not getattr(p, "trainable", True):
                raise ConfigurationError(f"parameter {p.name!r} is not trainable; leave it out of the optimizer")
            if self.KINDS is not None and kind_of(p) not in self.KINDS:
                raise ConfigurationError(
                    f"{type(self).__name__} takes {' and '.join(self.KINDS)} parameters; {p.name!r} is a "
                    f"{kind_of(p)} parameter. {self.OTHER_KINDS_HINT}".rstrip()
                )
            if any(p is q for q in self._names.values()) or any(p is q for q in members[:i]):
                raise ConfigurationError(f"parameter {p.name!r} appears more than once; list each parameter once")
        new = {**self.defaults, **group, "params": members}
        self.check_options(new)
        self.param_groups.append(new)
        for p in members:
            name = self._unique_name(str(p.name) or "param")
            self._names[name] = p
            self.state.setdefault(name, {})

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise a typed error naming an invalid option value. Subclasses check their :attr:`OPTIONS` too."""
        _check_options(options)

    def _unique_name(self, name: str) -> str:
        # The same rule a problem report uses for colliding names: suffix only when needed.
        if name not in self._names:
            return name
        i = 2
        while f"{name}_{i}" in self._names:
            i += 1
        return f"{name}_{i}"

    def named_parameters(self) -> Iterator[tuple[str, Parameter[Any]]]:
        """``(name, parameter)`` pairs under the names this optimizer uses (in updates and state).

        Example:
            >>> from feedprop.node import Parameter
            >>> from feedprop.llm import MockLLM
            >>> from feedprop.optim import OptoPrime
            >>> a, b = Parameter("x", name="p"), Parameter("y", name="p")
            >>> [name for name, _ in OptoPrime([a, b], llm=MockLLM("{}")).named_parameters()]
            ['p', 'p_2']
        """
        yield from self._names.items()

    def get_parameter(self, name: str) -> Parameter[Any]:
        """The parameter this optimizer calls ``name``; :class:`ConfigurationError` if it owns none.

        Example:
            >>> from feedprop.node import Parameter
            >>> from feedprop.llm import MockLLM
            >>> from feedprop.optim import OptoPrime
            >>> OptoPrime([Parameter(1.0, name="x")], llm=MockLLM("{}")).get_parameter("x").data
            1.0
        """
        try:
            return self._names[name]
        except KeyError:
            raise ConfigurationError(
                f"this optimizer owns no parameter named {name!r}; it owns {sorted(self._names)}"
            ) from None

    def parameters(self) -> list[Parameter[Any]]:
        """The owned parameters, in the order they were added."""
        return list(self._names.values())

    def name_of(self, param: Parameter[Any]) -> str:
        """The name under which this optimizer knows ``param``."""
        for name, p in self._names.items():
            if p is param:
                return name
        raise ConfigurationError(f"parameter {getattr(param, 'name', param)!r} is not owned by this optimizer")

    def options(self, name: str) -> dict[str, Any]:
        """The options of the group holding the parameter called ``name``."""
        param = self._names[name]
        for group in self.param_groups:
            if any(p is param for p in group["params"]):
                return group
        raise ConfigurationError(f"no group holds {name!r}")  # unreachable unless param_groups was edited

    @property
    def llm(self) -> LLM:
        """The model this optimizer asks; the process default when none was given."""
        if self._llm is None:
            self._llm = llm_package.default()
        return self._llm

    # -- the loop ---------------------------------------------------------------------------

    def zero_feedback(self) -> None:
        """Clear the feedback of every owned parameter."""
        for p in self._names.values():
            p.zero_feedback()

    def propose(self) -> Proposal:
        """New values from the parameters' feedback, validated; changes no parameter."""
        with track_usage() as usage:
            proposal = self._propose()
        proposal.usage = usage
        self.global_state["step"] = int(self.global_state.get("step", 0)) + 1
        self.global_state["rejected"] = [r.to_dict() for r in proposal.rejected[-MAX_REMEMBERED_REJECTIONS:]]
        return proposal

    def apply(self, proposal: Proposal | Candidate | Mapping[str, Any]) -> None:
        """Set parameter values from a proposal (its first candidate), a candidate, or a name → value map.

        A candidate's values were validated when it was proposed; a map's values are validated
        here. Either way they are set all or none: if any is invalid nothing is changed and
        :class:`~feedprop.errors.SuggestionError` says which and why.
        """
        if isinstance(proposal, Proposal):
            if not proposal.candidates:
                return
            updates: Mapping[str, Any] = proposal.candidates[0].updates
        elif isinstance(proposal, Candidate):
            updates = proposal.updates
        elif isinstance(proposal, Mapping):
            updates = proposal
        else:
            raise InvalidInputError(
                f"apply() takes a Proposal, a Candidate or a mapping of name → value, got {type(proposal).__name__}"
            )
        raw = not isinstance(proposal, Proposal | Candidate)
        changes: list[tuple[str, Any]] = []
        for key, value in updates.items():
            match = match_key(str(key), self._names)
            if match.name is None:
                raise SuggestionError(
                    f"cannot apply {key!r}: {match.reason}; this optimizer owns {sorted(self._names)}",
                    parameter=str(key),
                    value=value,
                )
            changes.append((match.name, self.validate(match.name, value) if raw else value))
        self._set_all(changes)

    def _set_all(self, changes: list[tuple[str, Any]]) -> None:
        """Set every ``(name, value)``, or none: a value its parameter refuses undoes those set before it."""
        done: list[tuple[Parameter[Any], Any]] = []
        for name, value in changes:
            param = self._names[name]
            old = param.data
            try:
                param.set(value)
            except (InvalidInputError, SuggestionError) as e:
                for earlier, earlier_value in reversed(done):
                    earlier.set(earlier_value)
                if isinstance(e, SuggestionError):
                    raise
                raise SuggestionError(f"cannot apply {name!r}: {e}", parameter=name, value=value) from None
            done.append((param, old))

    def step(self) -> Proposal:
        """:meth:`propose`, then :meth:`apply` its first candidate. Returns the proposal."""
        proposal = self.propose()
        self.apply(proposal)
        return proposal

    def _propose(self) -> Proposal:
        """Build a :class:`Proposal` from the parameters' feedback. The one method subclasses implement."""
        raise NotImplementedError(f"{type(self).__name__} must implement _propose()")

    def validate(self, name: str, value: Any) -> Any:
        """Validate ``value`` for the parameter called ``name``; return it converted or raise SuggestionError."""
        param = self._names[name]
        checked = validate_value(
            kind_of(param),
            param.data,
            value,
            bounds=getattr(param, "bounds", None),
            constraint=getattr(param, "constraint", None),
            name=name,
        )
        if kind_of(param) == "text" and isinstance(checked, str):
            self._refuse_copied_example(name, param, checked, value)
        limit = getattr(param, "max_demos", None)
        if limit is not None and isinstance(checked, list) and len(checked) > limit:
            raise SuggestionError(
                f"{name!r} holds at most {limit} demonstrations, got {len(checked)}; keep the best {limit}",
                parameter=name,
                value=value,
            )
        for constraint in self.options(name).get("constraints") or ():  # a group's extra constraints
            problem = check_constraint(constraint, checked)
            if problem:
                raise SuggestionError(problem, parameter=name, value=value)
        return checked

    def _refuse_copied_example(self, name: str, param: Parameter[Any], checked: str, value: Any) -> None:
        """Refuse a text that pastes in a passage of the values this step's feedback came through."""
        examples, known = _traced_texts(param)
        current = "\n".join([str(param.data), *known])
        passage = copied_passage(checked, examples, current=current, one_source_only=True)
        if passage is not None:
            raise SuggestionError(
                f"the new {name!r} copies a passage of one example ({truncate_middle(passage, 80)!r}); write a "
                "rule that holds for every input, without any one example's text or answer",
                parameter=name,
                value=value,
            )

    # -- reading feedback ----------------------------------------------------------------------

    def feedback_entries(self, name: str) -> list[ParameterFeedback]:
        """What backward delivered to the parameter called ``name`` since the last zero_feedback()."""
        return list(self._names[name].feedback)

    def observed_feedback(self) -> list[Feedback]:
        """The distinct output feedbacks that reached any owned parameter, in order of arrival."""
        seen: set[int] = set()
        out: list[Feedback] = []
        for param in self._names.values():
            for entry in param.feedback:
                fb = cast(Feedback, getattr(entry, "output_feedback", getattr(entry, "feedback", entry)))
                if id(fb) not in seen:
                    seen.add(id(fb))
                    out.append(fb)
        return out

    def current_values(self) -> dict[str, Any]:
        """A deep copy of every owned parameter's value, by name."""
        return {name: copy.deepcopy(p.data) for name, p in self._names.items()}

    # -- saving -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state as plain JSON data (parameters are referred to by name)."""
        groups = []
        for group in self.param_groups:
            opts = {k: v for k, v in group.items() if k != "params" and jsonable(v) is v}
            groups.append({"params": [self.name_of(p) for p in group["params"]], **opts})
        sd = {
            "format": STATE_FORMAT,
            "optimizer": type(self).__name__,
            "defaults": {k: v for k, v in self.defaults.items() if jsonable(v) is v},
            "state": self.state,
            "global_state": self.global_state,
            "param_groups": groups,
        }
        _check_json(sd, "the optimizer state")
        copied: dict[str, Any] = json.loads(json.dumps(sd))
        return copied

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned. Parameter names must match exactly.

        Raises :class:`~feedprop.errors.StateDictError` listing missing and unexpected names.
        """
        if not isinstance(state_dict, Mapping) or state_dict.get("format") != STATE_FORMAT:
            raise InvalidInputError(
                f"not an optimizer state dict (expected format {STATE_FORMAT!r}); pass what state_dict() returned"
            )
        _check_json(state_dict, "the optimizer state")
        if state_dict.get("optimizer") != type(self).__name__:
            raise ConfigurationError(
                f"this state belongs to a {state_dict.get('optimizer')} optimizer, not a {type(self).__name__}; "
                "load it into the same kind of optimizer"
            )
        saved = set(state_dict.get("state", {}))
        missing = sorted(set(self._names) - saved)
        unexpected = sorted(saved - set(self._names))
        if missing or unexpected:
            raise StateDictError(
                f"optimizer state does not match its parameters: missing {missing}, unexpected {unexpected}; "
                "build the optimizer over the same parameters (same names) that were saved",
                missing=missing,
                unexpected=unexpected,
            )
        saved_groups = state_dict.get("param_groups", [])
        if [g.get("params") for g in saved_groups] != [
            [self.name_of(p) for p in g["params"]] for g in self.param_groups
        ]:
            raise StateDictError(
                "the saved parameter groups differ from this optimizer's; build it with the same groups"
            )
        data = json.loads(json.dumps(state_dict))
        self.state = {name: dict(data["state"][name]) for name in self._names}
        self.global_state = dict(data.get("global_state", {}))
        self.defaults.update(data.get("defaults", {}))
        for group, saved_group in zip(self.param_groups, data["param_groups"], strict=True):
            group.update({k: v for k, v in saved_group.items() if k != "params"})
