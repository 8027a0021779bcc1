"""The optimizer base class: parameter groups, per-parameter state, propose / apply / step.

An optimizer owns some :class:`~feedprop.node.Parameter` objects. After feedback has been
propagated to them, :meth:`Optimizer.propose` asks the model for new values and returns a
:class:`Proposal` — one or more validated :class:`Candidate` updates plus the suggestions that
were refused and why — without touching any parameter. :meth:`Optimizer.apply` sets the values
of a candidate; :meth:`Optimizer.step` does both. A trainer that wants to compare candidates
calls ``propose()``, evaluates each candidate, and ``apply()``-s the best one.

Subclasses implement one method, :meth:`Optimizer._propose`, and use the helpers here:
:meth:`Optimizer.complete` to call the model (the cost is counted on the proposal) and
:meth:`Optimizer.resolve` to turn a parsed suggestion into validated updates and rejections.

Like ``torch.optim.Optimizer``: ``param_groups`` is a list of dicts, each with ``"params"`` and
the options for those parameters; ``state`` holds per-parameter state, keyed here by the
parameter's name so it survives a JSON round trip. ``global_state`` holds what belongs to the
optimizer as a whole (memory of past steps, the refusals to show the model next time).
"""

from __future__ import annotations

import ast
import copy
import json
import textwrap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

from feedprop import llm as llm_package
from feedprop._text import truncate_middle
from feedprop.errors import ConfigurationError, InvalidInputError, ReplyParseError, StateDictError, SuggestionError
from feedprop.llm import LLM, Completion, Message, UsageMeter, thread_map, track_usage
from feedprop.llm.tokens import estimate_prompt_tokens
from feedprop.node import Feedback, Parameter
from feedprop.optim.keys import match_key, normalize_key
from feedprop.optim.replies import REPLY_FORMATS, Reply, parse_reply
from feedprop.optim.templates import fill
from feedprop.optim.validate import check_constraint, infer_kind, validate_value

if TYPE_CHECKING:
    from feedprop.propagate import ParameterFeedback

__all__ = ["COMMON_DEFAULTS", "Attempt", "Candidate", "Optimizer", "Proposal", "Rejection"]

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

    ``parameter`` is the parameter the key resolved to, when it resolved to one.
    """

    key: str
    value: Any
    reason: str
    parameter: str | None = None

    def message(self) -> str:
        """The refusal as one line addressed to the model (a runaway key or reason is cut in the middle)."""
        return f"{truncate_middle(self.key, MAX_NOTE_KEY_CHARS)!r}: {truncate_middle(self.reason, MAX_NOTE_CHARS)}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": _jsonable(self.value), "reason": self.reason, "parameter": self.parameter}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rejection:
        return cls(str(data["key"]), data.get("value"), str(data["reason"]), data.get("parameter"))


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


@dataclass
class Attempt:
    """The outcome of :meth:`Optimizer.ask`: one candidate (or none) and what happened on the way."""

    candidate: Candidate | None = None
    reply: Reply | None = None
    rejected: list[Rejection] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


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


def _jsonable(value: Any) -> Any:
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


def describe_parameter(name: str, param: Parameter[Any]) -> str:
    """One line telling the model what a variable is: kind, bounds, description, constraint."""
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


class Optimizer:
    """Base class of every feedprop optimizer. Subclasses implement :meth:`_propose` only.

    ``params`` is an iterable of parameters, or of dicts ``{"params": [...], **options}`` to give
    groups of parameters their own options (as in torch). ``llm=None`` uses
    :func:`feedprop.llm.default` (resolved on first use, so constructing is cheap). Keyword
    ``defaults`` are the options every group starts from: :data:`COMMON_DEFAULTS` plus the
    names a subclass lists in :attr:`OPTIONS`.

    Example:
        >>> from feedprop.node import Feedback, Parameter
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
        """The parameter this optimizer calls ``name``; :class:`ConfigurationError` if it owns none."""
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
        """Ask the model for new values. Validates them; changes no parameter."""
        with track_usage() as usage:
            proposal = self._propose()
        proposal.usage = usage
        self.global_state["step"] = int(self.global_state.get("step", 0)) + 1
        self.global_state["rejected"] = [r.to_dict() for r in proposal.rejected[-MAX_REMEMBERED_REJECTIONS:]]
        return proposal

    def apply(self, proposal: Proposal | Candidate | Mapping[str, Any]) -> None:
        """Set parameter values from a proposal (its first candidate), a candidate, or a name → value map.

        Every value is validated first; if any is invalid nothing is changed and
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
        checked: list[tuple[Parameter[Any], Any]] = []
        for key, value in updates.items():
            match = match_key(str(key), self._names)
            if match.name is None:
                raise SuggestionError(
                    f"cannot apply {key!r}: {match.reason}; this optimizer owns {sorted(self._names)}",
                    parameter=str(key),
                    value=value,
                )
            param = self._names[match.name]
            checked.append((param, self.validate(match.name, value)))
        for param, value in checked:
            param.set(value)

    def step(self) -> Proposal:
        """:meth:`propose`, then :meth:`apply` its first candidate. Returns the proposal."""
        proposal = self.propose()
        self.apply(proposal)
        return proposal

    def _propose(self) -> Proposal:
        """Build a :class:`Proposal` from the parameters' feedback. The one method subclasses implement."""
        raise NotImplementedError(f"{type(self).__name__} must implement _propose()")

    # -- helpers for subclasses -------------------------------------------------------------

    def complete(self, messages: list[Message], **params: Any) -> Completion:
        """Call the model; the cost is counted on the proposal being built."""
        return self.llm.complete(messages, **params)

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

    def resolve(
        self,
        suggestion: Mapping[str, Any],
        *,
        shown: Mapping[str, Parameter[Any]] | None = None,
        others: Iterable[str] = (),
    ) -> tuple[dict[str, Any], list[Rejection]]:
        """Turn a parsed suggestion into validated updates and rejections.

        ``shown`` maps the names the model saw to the parameters (default: this optimizer's
        names); ``others`` are names of variables the model saw but may not change (inputs,
        intermediate results). Keys are matched tolerantly (see :func:`~feedprop.optim.keys.match_key`);
        a key naming a non-parameter, an unknown key and an invalid value are each refused with
        a reason the model will see next time. Suggestions equal to the current value are dropped.
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
        legal = dict(self._names) if shown is None else dict(shown)
        other_names = [o for o in others if o not in legal]
        legal_list = ", ".join(repr(n) for n in legal)
        updates: dict[str, Any] = {}
        rejected: list[Rejection] = []
        echoed: list[str] = []
        for raw_key, value in suggestion.items():
            key = str(raw_key)
            match = match_key(key, legal)
            if match.name is None:
                reason = self._refusal(key, match.reason, match.how, other_names, legal_list)
                rejected.append(Rejection(key, _jsonable(value), reason))
                continue
            name = self.name_of(legal[match.name])
            if name in updates:
                rejected.append(Rejection(key, _jsonable(value), f"a value for {name!r} was already given", name))
                continue
            try:
                checked = self.validate(name, value)
            except SuggestionError as e:
                rejected.append(Rejection(key, _jsonable(value), str(e), name))
                continue
            if same_value(checked, self._names[name].data, kind_of(self._names[name])):
                echoed.append(name)
                continue
            updates[name] = checked
        return updates, rejected, echoed

    def format_help(self, names: Iterable[str] | None = None) -> str:
        """How the model must write its answer, with an example keyed by the variables ``names``.

        Small models copy the example's keys, so it names the real variables (all owned ones by
        default) with a placeholder of the right kind for each value.
        """
        return fill(f"format_{self.defaults['reply_format']}", **self._format_fields(names))

    def _format_fields(self, names: Iterable[str] | None) -> dict[str, str]:
        chosen = list(self._names if names is None else names)
        kinds = {n: kind_of(self._names[n]) if n in self._names else "text" for n in chosen}
        shown = chosen[:3]
        if self.defaults["reply_format"] == "xml":
            example = "\n".join(f'<suggestion name="{n}">{_PLACEHOLDER[kinds[n]][1]}</suggestion>' for n in shown)
        else:
            pairs = ", ".join(f"{json.dumps(n)}: {_PLACEHOLDER[kinds[n]][0]}" for n in shown)
            example = "{" + pairs + (", ..." if len(chosen) > 3 else "") + "}"
        return {"suggestion": example, "legal": ", ".join(chosen)}

    def reply_schema(self, names: Iterable[str] | Mapping[str, Parameter[Any]] | None = None) -> dict[str, Any]:
        """The JSON schema of a reply: ``reasoning`` then ``suggestion``, keyed by the legal ``names`` only.

        ``names`` are the names the model saw (a map of them to the parameters when they differ
        from this optimizer's names); by default, every owned parameter.

        Sent as ``response_format`` to models that enforce schemas (see :meth:`response_format`),
        so a small model can neither break the JSON nor invent a key. Subclasses asking for more
        fields extend it.

        Example:
            >>> from feedprop.node import Parameter
            >>> from feedprop.llm import MockLLM
            >>> from feedprop.optim import OptoPrime
            >>> opt = OptoPrime([Parameter(1.0, name="x")], llm=MockLLM("{}"))
            >>> opt.reply_schema()["properties"]["suggestion"]["properties"]
            {'x': {'type': 'number'}}
        """
        params: Mapping[str, Parameter[Any]] = names if isinstance(names, Mapping) else self._names
        chosen = list(self._names if names is None else names)
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
            >>> OptoPrime([x], llm=MockLLM("{}")).response_format() is None
            True
            >>> OptoPrime([x], llm=MockLLM("{}", json_schema=True), json_schema=True).response_format()["type"]
            'json_schema'
        """
        if self.defaults["reply_format"] != "json" or not self.defaults["json_schema"]:
            return None
        if not self.llm.supports_json_schema:
            return None
        return {"type": "json_schema", "json_schema": {"name": "reply", "schema": self.reply_schema(names)}}

    def check_prompt(self, messages: list[Message]) -> int:
        """The prompt's estimated tokens; :class:`ConfigurationError` if it exceeds ``max_prompt_tokens``."""
        used = estimate_prompt_tokens(messages)
        limit = int(self.defaults["max_prompt_tokens"])
        if used > limit:
            raise ConfigurationError(
                f"the prompt needs about {used} tokens even after summarising, over max_prompt_tokens={limit}; "
                "raise max_prompt_tokens (if the model's context allows) or optimize fewer parameters at once"
            )
        return used

    def ask(
        self,
        messages: list[Message],
        *,
        shown: Mapping[str, Parameter[Any]] | None = None,
        others: Iterable[str] = (),
        sample: int = 0,
    ) -> Attempt:
        """Ask the model and read its reply into one validated :class:`Candidate`.

        An unreadable reply is retried (up to ``max_retries`` times) with the parse error shown
        to the model; so is a reply whose every suggestion was refused or repeated the current
        value, with the reasons. Sample 0 uses ``temperature``, later samples and retries
        ``candidate_temperature`` (later samples also a distinct cache salt). A model that
        enforces JSON schemas gets :meth:`response_format` (a sampling parameter, so it is part
        of the cache key).
        """
        opts = self.defaults
        temperature = opts["temperature"] if sample == 0 else opts["candidate_temperature"]
        params: dict[str, Any] = {"temperature": temperature, "max_tokens": opts["max_tokens"]}
        if sample:
            params["cache_salt"] = sample
        self.check_prompt(messages)
        conversation = list(messages)
        out = Attempt()
        others = list(others)
        legal_names = list(shown) if shown is not None else None
        response_format = self.response_format(shown)
        if response_format is not None:
            params["response_format"] = response_format
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
                conversation = self._retry_conversation(messages, completion.text, note)
                continue
            updates, rejected, echoed = self._resolve(reply.suggestion, shown=shown, others=others)
            out.rejected.extend(rejected)
            out.reply = reply
            last = attempt == int(opts["max_retries"])
            if updates or not (rejected or echoed) or last:
                out.candidate = Candidate(updates, reply.reasoning, dict(reply.extras))
                break
            # Nothing usable: every suggestion was refused, or repeated its variable's current value
            # (small models often copy the current value while their reasoning says what to change).
            reasons = "\n".join(
                [f"- {r.message()}" for r in rejected]
                + [
                    f"- {n}: your suggestion is its current value unchanged, which is what produced the feedback; "
                    "write a changed value that acts on your reasoning"
                    for n in echoed
                ]
            )
            note = fill("retry_rejected", rejections=reasons, format_help=self.format_help(legal_names))
            conversation = self._retry_conversation(messages, completion.text, note)
        return out

    def _retry_conversation(self, messages: list[Message], reply: str, note: str) -> list[Message]:
        # Show the model its own reply when the budget allows, cut in the middle if needed.
        base = [*messages, Message(role="user", content=note)]
        room = int(self.defaults["max_prompt_tokens"]) - estimate_prompt_tokens(base) - 8
        if room < 50:
            return base
        echo = truncate_middle(reply, min(room * 4, 4000))
        return [*messages, Message(role="assistant", content=echo), Message(role="user", content=note)]

    def sample_candidates(self, build: Any) -> Proposal:
        """Run ``build(sample) -> Attempt`` for each of ``n_candidates`` samples and collect a proposal.

        Samples run in parallel threads (the model's concurrency limit applies). Candidates with
        identical updates are merged; empty candidates are kept only if no other exists.
        """
        n = int(self.defaults["n_candidates"])
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

    @staticmethod
    def _refusal(key: str, why: str, how: str, others: list[str], legal_list: str) -> str:
        norm = normalize_key(key)
        if how != "ambiguous" and any(o == key or normalize_key(o) == norm for o in others):
            return (
                f"{key!r} is not a trainable parameter (it is an input or an intermediate value); "
                f"only these may be changed: {legal_list}"
            )
        if how == "ambiguous":
            return f"{why}. Legal keys: {legal_list}"
        return f"{key!r} is not a trainable parameter; only these may be changed: {legal_list}"

    def rejection_notes(self) -> list[str]:
        """The refusals of the previous proposal, as lines to show the model on this attempt."""
        return [Rejection.from_dict(r).message() for r in self.global_state.get("rejected", [])]

    # -- saving -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state as plain JSON data (parameters are referred to by name)."""
        groups = []
        for group in self.param_groups:
            opts = {k: v for k, v in group.items() if k != "params" and _jsonable(v) is v}
            groups.append({"params": [self.name_of(p) for p in group["params"]], **opts})
        sd = {
            "format": STATE_FORMAT,
            "optimizer": type(self).__name__,
            "defaults": {k: v for k, v in self.defaults.items() if _jsonable(v) is v},
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
