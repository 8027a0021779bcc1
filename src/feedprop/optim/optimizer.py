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

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from feedprop import llm as llm_package
from feedprop.errors import ConfigurationError, InvalidInputError, StateDictError, SuggestionError
from feedprop.llm.base import LLM, Completion, Message
from feedprop.llm.usage import UsageMeter, track_usage
from feedprop.optim.keys import match_key, normalize_key
from feedprop.optim.validate import infer_kind, validate_value

if TYPE_CHECKING:  # only the type; the node layer's objects are used through their attributes
    from feedprop.node import Parameter

__all__ = ["Candidate", "Optimizer", "Proposal", "Rejection"]

STATE_FORMAT = "feedprop.optim/1"
#: How many refused suggestions are kept to show the model on the next attempt.
MAX_REMEMBERED_REJECTIONS = 8


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
        """The refusal as one line addressed to the model."""
        return f"{self.key!r}: {self.reason}"

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


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidInputError(f"{what} must be JSON-serialisable ({e}); store only plain JSON data there") from None


def kind_of(param: Parameter) -> str:
    """The parameter's kind ("text", "code", "number" or "json"), inferred from its value when unset."""
    kind = getattr(param, "kind", None)
    return str(kind) if kind else infer_kind(param.data)


def _is_parameter(obj: Any) -> bool:
    return all(hasattr(obj, attr) for attr in ("data", "name", "feedback", "zero_feedback"))


def set_value(param: Parameter, value: Any) -> None:
    """Give ``param`` a new value through its own setter (so the node layer can check types)."""
    setter = getattr(param, "set", None)
    if callable(setter):
        setter(value)
    else:
        param.data = value


class Optimizer:
    """Base class of every feedprop optimizer. Subclasses implement :meth:`_propose` only.

    ``params`` is an iterable of parameters, or of dicts ``{"params": [...], **options}`` to give
    groups of parameters their own options (as in torch). ``llm=None`` uses
    :func:`feedprop.llm.default` (resolved on first use, so constructing is cheap). Keyword
    ``defaults`` are the options every group starts from.

    Example:
        >>> from feedprop import Parameter
        >>> from feedprop.llm import MockLLM
        >>> from feedprop.optim import OptoPrime
        >>> x = Parameter(1.0, name="x")
        >>> opt = OptoPrime([x], llm=MockLLM(['{"reasoning": "r", "suggestion": {"x": 2.0}}']))
        >>> opt.apply({"x": 3.0}); x.data
        3.0
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        llm: LLM | None = None,
        **defaults: Any,
    ) -> None:
        if llm is not None and not isinstance(llm, LLM):
            raise InvalidInputError(
                f"llm must be a feedprop.llm.LLM (e.g. feedprop.llm.MockLLM or OpenAICompatible), "
                f"got {type(llm).__name__}"
            )
        if isinstance(params, Mapping) or _is_parameter(params):
            raise InvalidInputError("params must be an iterable of parameters, e.g. model.parameters() or [p1, p2]")
        self.defaults: dict[str, Any] = dict(defaults)
        self._llm = llm
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[str, dict[str, Any]] = {}
        self.global_state: dict[str, Any] = {"step": 0, "rejected": []}
        self._names: dict[str, Parameter] = {}
        groups = list(params)
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
        for p in members:
            if not _is_parameter(p):
                raise InvalidInputError(
                    f"optimizers take Parameter objects, got {type(p).__name__}; wrap values as fp.Parameter(value)"
                )
            if not getattr(p, "trainable", True):
                raise ConfigurationError(f"parameter {p.name!r} is not trainable; leave it out of the optimizer")
            if any(p is q for q in self._names.values()):
                raise ConfigurationError(f"parameter {p.name!r} appears in more than one group; list it once")
        new = {**self.defaults, **group, "params": members}
        self.param_groups.append(new)
        for p in members:
            name = self._unique_name(str(p.name) or "param")
            self._names[name] = p
            self.state.setdefault(name, {})

    def _unique_name(self, name: str) -> str:
        # The same rule a problem report uses for colliding names: suffix only when needed.
        if name not in self._names:
            return name
        i = 2
        while f"{name}_{i}" in self._names:
            i += 1
        return f"{name}_{i}"

    def named_parameters(self) -> dict[str, Parameter]:
        """The owned parameters by the names this optimizer uses for them (in updates and state)."""
        return dict(self._names)

    def parameters(self) -> list[Parameter]:
        return list(self._names.values())

    def name_of(self, param: Parameter) -> str:
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
        checked: list[tuple[Parameter, Any]] = []
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
            set_value(param, value)

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
        return validate_value(
            kind_of(param),
            param.data,
            value,
            bounds=getattr(param, "bounds", None),
            constraint=getattr(param, "constraint", None),
            name=name,
        )

    def resolve(
        self,
        suggestion: Mapping[str, Any],
        *,
        shown: Mapping[str, Parameter] | None = None,
        others: Iterable[str] = (),
    ) -> tuple[dict[str, Any], list[Rejection]]:
        """Turn a parsed suggestion into validated updates and rejections.

        ``shown`` maps the names the model saw to the parameters (default: this optimizer's
        names); ``others`` are names of variables the model saw but may not change (inputs,
        intermediate results). Keys are matched tolerantly (see :func:`~feedprop.optim.keys.match_key`);
        a key naming a non-parameter, an unknown key and an invalid value are each refused with
        a reason the model will see next time. Suggestions equal to the current value are dropped.
        """
        legal = dict(self._names) if shown is None else dict(shown)
        other_names = [o for o in others if o not in legal]
        legal_list = ", ".join(repr(n) for n in legal)
        updates: dict[str, Any] = {}
        rejected: list[Rejection] = []
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
            if checked == self._names[name].data and type(checked) is type(self._names[name].data):
                continue
            updates[name] = checked
        return updates, rejected

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
        for group, saved_group in zip(self.param_groups, data["param_groups"], strict=True):
            group.update({k: v for k, v in saved_group.items() if k != "params"})
