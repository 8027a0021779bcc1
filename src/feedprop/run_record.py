"""A run directory read back for people: the facts the run page shows, from the files the run wrote.

:func:`load_run` reads the directory of an :func:`feedprop.train` run (``events.jsonl``,
``checkpoint.json``, ``best.json``, ``graph.json``) or of an :func:`feedprop.joint.alternate`
run and the demo (``joint.json``, its ``phase-N-p`` trainer directories, ``events.jsonl`` with
the test set's per-item outcomes, ``graph.json``) into one :class:`RunView`:

- ``points``: the learning curve (train minibatch, validation and test score against the step
  and against the LLM tokens spent), and ``marks`` where joint phases begin;
- ``steps``: every optimizer step with its candidates, each with a unified diff of every
  parameter it changes against the program it was proposed from, its validation score and why
  it was kept or refused;
- ``items``: the test set's per-item outcomes before and after (which items flipped);
- ``usage`` by phase, ``models`` (each model's calls, tokens and seconds, and the phases they
  were counted in; for a run recorded before usage was counted by model, ``roles`` instead: which
  role's calls each phase holds), ``graph``, and the initial and best parameters.

A part the run did not record (an older run without ``graph.json``, a run without a test set)
is left empty and ``notes`` says why, so the page can say so. Only a directory that holds no
run at all is an error.

Example:
    >>> import tempfile
    >>> load_run(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    feedprop.errors.ConfigurationError: ... is not a feedprop run directory: it holds none of joint.json, ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.graph_data import GraphRecord, read_graph
from feedprop.training.events import ITEM_OUTCOME_SCHEMA, read_events
from feedprop.training.run_files import EVENTS_FILE, GRAPH_FILE
from feedprop.training.summary import parameter_diff, where_calls_went

__all__ = [
    "CandidateView",
    "CurvePoint",
    "ItemRow",
    "ModelUsage",
    "PhaseView",
    "RoleUsage",
    "RunView",
    "StepView",
    "load_run",
]

_JOINT_FILE = "joint.json"
_CHECKPOINT_FILE = "checkpoint.json"


@dataclass
class CandidateView:
    """One candidate of a step: ``status`` (``kept``, ``admitted``, ``not kept``, ``refused`` or
    ``invalid``), ``reason``, ``val_score`` (when it was validated), the optimizer's ``reasoning``,
    ``diffs`` (parameter -> unified diff against the program it was proposed from) and ``gate``
    (the minibatch comparison of a Pareto search, as text)."""

    index: int
    status: str
    reason: str
    val_score: float | None
    reasoning: str
    diffs: dict[str, str]
    gate: str = ""


@dataclass
class StepView:
    """One optimizer step: where it sits (``phase`` label in a joint run, ``step`` within it, ``x``
    on the curve), its scores, whether it changed the kept program and why, what it cost, its
    candidates, the suggestions the optimizer refused (``refused``) and what the diffs are against
    (``base``)."""

    phase: str
    step: int
    x: int
    train_score: float | None
    val_score: float | None
    val_previous: float | None
    accepted: bool
    reason: str
    calls: int
    tokens: int
    seconds: float
    candidates: list[CandidateView]
    refused: list[str]
    base: str


@dataclass
class PhaseView:
    """A phase of a joint run: ``label`` (``1:p``), ``kind``, scores after it, whether it was
    ``kept``, its usage, ``notes`` (one line) and ``skipped`` (why it did not run)."""

    label: str
    kind: str
    val: float | None
    test: float | None
    kept: bool
    calls: int
    cache_hits: int
    tokens: int
    seconds: float
    notes: str
    skipped: str


@dataclass
class CurvePoint:
    """A point of the learning curve: ``x`` (step; joint runs count every phase's steps, and a weight
    phase as one), ``tokens`` spent so far, and whichever scores were measured there."""

    x: int
    tokens: int
    train: float | None = None
    val: float | None = None
    test: float | None = None
    label: str = ""


@dataclass
class ItemRow:
    """One test item before and after: scores, outputs, and the guide's feedback after."""

    index: int
    before: float | None
    after: float | None
    output_before: str = ""
    output_after: str = ""
    feedback_after: str = ""

    @property
    def flip(self) -> str:
        """``gained`` or ``lost`` when the score moved, else ``""``.

        Example:
            >>> ItemRow(0, 0.0, 1.0).flip, ItemRow(1, 1.0, 1.0).flip
            ('gained', '')
        """
        if self.before is None or self.after is None or self.before == self.after:
            return ""
        return "gained" if self.after > self.before else "lost"


@dataclass
class ModelUsage:
    """One model's usage in a run: its calls, cache hits, tokens and seconds, and ``phases``, where its
    calls were counted (e.g. ``"evaluation 12, test 5"``)."""

    model: str
    phases: str
    calls: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float


@dataclass
class RoleUsage:
    """For a run that did not count usage by model: a ``role``, the ``model`` it names, the usage ``phases``
    its calls are counted in, and those phases' calls and tokens."""

    role: str
    model: str
    phases: str
    calls: int
    tokens: int


@dataclass
class RunView:
    """Everything the run page shows; see the module docs. ``kind`` is ``train`` or ``joint``."""

    path: Path
    kind: str
    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    val_before: float | None = None
    val_after: float | None = None
    test_before: float | None = None
    test_after: float | None = None
    points: list[CurvePoint] = field(default_factory=list)
    candidate_points: list[tuple[int, float, str]] = field(default_factory=list)
    marks: list[tuple[int, str]] = field(default_factory=list)
    steps: list[StepView] = field(default_factory=list)
    phases: list[PhaseView] = field(default_factory=list)
    items: list[ItemRow] = field(default_factory=list)
    items_caption: str = ""
    usage: dict[str, dict[str, float]] = field(default_factory=dict)
    models: list[ModelUsage] = field(default_factory=list)
    roles: list[RoleUsage] = field(default_factory=list)
    graph: GraphRecord | None = None
    initial: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    notes: dict[str, str] = field(default_factory=dict)


# -- reading files ---------------------------------------------------------------------------


def _json(path: Path, notes: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name} could not be read ({exc})")
        return None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _tokens(usage: Any) -> int:
    if not isinstance(usage, Mapping):
        return 0
    return int(usage.get("prompt_tokens", 0) or 0) + int(usage.get("completion_tokens", 0) or 0)


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


@dataclass
class _TrainFiles:
    """What one trainer directory holds (a train run, or a prompt phase of a joint run)."""

    config: dict[str, Any]
    history: list[dict[str, Any]]
    initial: dict[str, Any] | None
    best: dict[str, Any] | None
    scores: dict[str, float | None]
    usage: dict[str, Any]
    items: list[dict[str, Any]]
    stop_reason: str
    seconds: float | None
    problems: list[str]


def _read_train(directory: Path) -> _TrainFiles:
    problems: list[str] = []
    events: list[dict[str, Any]] = []
    if (directory / EVENTS_FILE).is_file():
        try:
            events = read_events(directory / EVENTS_FILE)
        except OSError as exc:
            problems.append(f"{EVENTS_FILE} could not be read ({exc})")
    checkpoint = _dict(_json(directory / _CHECKPOINT_FILE, problems))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_kind.setdefault(str(e.get("event")), []).append(e)
    start = (by_kind.get("start") or [{}])[0]
    finish = (by_kind.get("finish") or [{}])[-1]
    evaluate = next((e for e in by_kind.get("evaluate", []) if e.get("step") == 0), {})
    if isinstance(checkpoint.get("history"), list):
        history = [dict(h) for h in checkpoint["history"] if isinstance(h, Mapping)]
    else:  # from the log: the last record of each step (a resumed run may repeat one)
        steps = {int(e.get("step", 0)): e for e in by_kind.get("step", [])}
        history = [{k: v for k, v in steps[s].items() if k not in ("event", "time")} for s in sorted(steps)]
    saved = _dict(checkpoint.get("scores"))
    scores = {
        "val_before": _num(saved.get("val_before", evaluate.get("val_score", finish.get("val_before")))),
        "test_before": _num(saved.get("test_before", evaluate.get("test_score", finish.get("test_before")))),
        "test_after": _num(saved.get("test_after", finish.get("test_after"))),
        "val_after": _num(finish.get("val_after")),
    }
    initial = checkpoint.get("initial_state", start.get("parameters"))
    best = _json(directory / "best.json", problems)
    items = [e for e in by_kind.get("items", []) if e.get("schema") == ITEM_OUTCOME_SCHEMA]
    return _TrainFiles(
        config=_dict(checkpoint.get("config", start.get("config"))),
        history=history,
        initial=dict(initial) if isinstance(initial, Mapping) else None,
        best=dict(best) if isinstance(best, Mapping) else None,
        scores=scores,
        usage=_dict(checkpoint.get("usage", finish.get("usage"))),
        items=items,
        stop_reason=str(checkpoint.get("stop_reason") or finish.get("stop_reason") or ""),
        seconds=_num(checkpoint.get("elapsed_seconds")),
        problems=problems,
    )


# -- steps and candidates -----------------------------------------------------------------------


def _diffs(base: Mapping[str, Any] | None, updates: Any) -> dict[str, str]:
    if not isinstance(updates, Mapping):
        return {}
    out = {}
    for name, value in updates.items():
        before = base.get(name) if base is not None else None
        out[str(name)] = parameter_diff(str(name), before, value) or "(the same value)"
    return out


def _candidate(entry: Mapping[str, Any], record: Mapping[str, Any], base: Mapping[str, Any] | None) -> CandidateView:
    val = _num(entry.get("val_score"))
    gate = ""
    if isinstance(entry.get("minibatch"), Mapping):
        mb = entry["minibatch"]
        gate = f"minibatch: {mb.get('child', 0):g} vs parent {mb.get('parent', 0):g}"
        if mb.get("saved"):
            gate += f"; {mb.get('saved')} calls replayed, {mb.get('calls', 0)} made"
    if entry.get("error"):
        status, reason = "invalid", str(entry["error"])
    elif "admitted" in entry:  # Pareto search: the minibatch gate, then validation
        best = entry.get("id") is not None and entry.get("id") == record.get("best") and record.get("accepted")
        status = ("kept" if best else "admitted") if entry["admitted"] else "refused"
        reason = str(entry.get("reason", ""))
        if best:
            reason += f"; became the best program (#{entry.get('id')})"
        elif entry["admitted"]:
            reason += f"; joined the pool as #{entry.get('id')}"
    else:
        status = "kept" if entry.get("kept") else "not kept"
        previous = _num(record.get("val_previous"))
        if entry.get("kept") and record.get("accepted") and val == _num(record.get("val_score")):
            reason = str(record.get("reason", ""))
        elif entry.get("kept"):  # a beam keeps states besides the best
            reason = "kept in the beam" + (f" (validation {val:.4f})" if val is not None else "")
        elif val is not None and previous is not None:
            reason = f"validation {val:.4f} against {previous:.4f} before the step"
        else:
            reason = "not validated"
    return CandidateView(
        index=int(entry.get("index", 0)),
        status=status,
        reason=reason,
        val_score=val,
        reasoning=str(entry.get("reasoning") or ""),
        diffs=_diffs(base, entry.get("updates")),
        gate=gate,
    )


def _steps(files: _TrainFiles, phase: str, x0: int) -> list[StepView]:
    """Step views with each candidate diffed against the program it came from.

    Pareto steps name their parent program; the pool is rebuilt from the start state and the
    admitted candidates (each joins as ``#id``). Greedy and beam steps are diffed against the
    kept (best) program before the step, rebuilt from the start state and the kept updates; a
    beam's other members are not rebuilt, and the step says so.
    """
    initial = files.initial
    programs: dict[int, dict[str, Any]] = {0: dict(initial)} if initial is not None else {}
    current = dict(initial) if initial is not None else None
    out: list[StepView] = []
    for record in files.history:
        parent = record.get("parent")
        entries = [e for e in record.get("candidates") or [] if isinstance(e, Mapping)]
        if parent is not None:
            merge = next((e.get("merge") for e in entries if isinstance(e.get("merge"), Mapping)), None)
            key = merge.get("ancestor") if merge else parent
            base = programs.get(key) if isinstance(key, int) else None
            where = f"program #{key}" + (" (the merge's common ancestor)" if merge else " (the parent)")
        elif any(int(e.get("member", 0) or 0) > 0 for e in entries):  # a beam: only its best state is rebuilt
            base, where = current, "the best program before the step (beam search: some came from other beam members)"
        else:
            base, where = current, "the kept program before the step"
        candidates = [_candidate(e, record, base) for e in entries]
        for e in entries:
            if isinstance(e.get("id"), int) and base is not None and isinstance(e.get("updates"), Mapping):
                programs[e["id"]] = {**base, **e["updates"]}
        if parent is None and record.get("accepted") and current is not None:
            kept = [e for e in entries if e.get("kept")]
            top = next((e for e in kept if _num(e.get("val_score")) == _num(record.get("val_score"))), None)
            if top is None and kept:
                top = kept[0]
            if top is not None and isinstance(top.get("updates"), Mapping):
                current = {**current, **top["updates"]}
        refused = [
            f"{r.get('key') or r.get('parameter') or '?'}: {r.get('reason', '')}"
            for r in record.get("rejected_suggestions") or []
            if isinstance(r, Mapping)
        ]
        usage = _dict(record.get("usage"))
        step = int(record.get("step", len(out) + 1))
        out.append(
            StepView(
                phase=phase,
                step=step,
                x=x0 + step,
                train_score=_num(record.get("train_score")),
                val_score=_num(record.get("val_score")),
                val_previous=_num(record.get("val_previous")),
                accepted=bool(record.get("accepted")),
                reason=str(record.get("reason", "")),
                calls=int(usage.get("calls", 0) or 0),
                tokens=_tokens(usage),
                seconds=float(record.get("seconds", 0.0) or 0.0),
                candidates=candidates,
                refused=refused,
                base=where if base is not None else "unknown (the start state was not recorded)",
            )
        )
    return out


def _step_points(steps: Sequence[StepView], tokens0: int) -> list[CurvePoint]:
    points, tokens = [], tokens0
    for s in steps:
        tokens += s.tokens
        label = f"phase {s.phase}, step {s.step}" if s.phase else f"step {s.step}"
        points.append(CurvePoint(s.x, tokens, train=s.train_score, val=s.val_score, label=label))
    return points


def _candidate_points(steps: Sequence[StepView]) -> list[tuple[int, float, str]]:
    return [
        (s.x, c.val_score, f"step {s.step} candidate {c.index}: {c.status}, validation {c.val_score:.4f}")
        for s in steps
        for c in s.candidates
        if c.val_score is not None
    ]


# -- per-item outcomes -----------------------------------------------------------------------------


def _item_rows(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[ItemRow]:
    def by_index(event: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
        return {int(i["index"]): i for i in event.get("items") or [] if isinstance(i, Mapping) and "index" in i}

    old, new = by_index(before), by_index(after)
    rows = []
    for index in sorted(set(old) | set(new)):
        o, n = old.get(index, {}), new.get(index, {})
        rows.append(
            ItemRow(
                index=index,
                before=_num(o.get("score")),
                after=_num(n.get("score")),
                output_before=str(o.get("error") or o.get("output", "")),
                output_after=str(n.get("error") or n.get("output", "")),
                feedback_after=str(n.get("feedback", "")),
            )
        )
    order = {"gained": 0, "lost": 1, "": 2}
    return sorted(rows, key=lambda r: (order[r.flip], r.index))


def _mean(event: Mapping[str, Any]) -> float | None:
    scores = [_num(i.get("score")) for i in event.get("items") or [] if isinstance(i, Mapping)]
    known = [s for s in scores if s is not None]
    return sum(known) / len(known) if known else None


# -- usage by model ----------------------------------------------------------------------------------


def _workflow_models(graph: GraphRecord | None) -> str:
    if graph is None:
        return "not recorded (no graph.json)"
    models = sorted({n["model"] for n in graph["nodes"] if n["role"] == "llm_call" and n["model"]})
    return ", ".join(models) if models else "no LLM call in the graph"


def _roles(usage: Mapping[str, Any], graph: GraphRecord | None, optimizer: str, teacher: str) -> list[RoleUsage]:
    def part(*names: str) -> tuple[int, int]:
        calls = sum(int(_dict(usage.get(n)).get("calls", 0) or 0) for n in names)
        return calls, sum(_tokens(usage.get(n)) for n in names)

    rows = [RoleUsage("workflow", _workflow_models(graph), "evaluation + test", *part("evaluation", "test"))]
    if teacher:
        rows.append(RoleUsage("teacher (weight phases)", teacher, "counted in evaluation", 0, 0))
    rows.append(RoleUsage("optimizer", optimizer or "not recorded", "optimizer", *part("optimizer")))
    return rows


def _models(by_model: Mapping[str, Any]) -> list[ModelUsage]:
    rows = []
    for model, entry in by_model.items():
        u = _dict(entry)
        rows.append(
            ModelUsage(
                model=str(model),
                phases=where_calls_went(u),
                calls=int(u.get("calls", 0) or 0),
                cache_hits=int(u.get("cache_hits", 0) or 0),
                prompt_tokens=int(u.get("prompt_tokens", 0) or 0),
                completion_tokens=int(u.get("completion_tokens", 0) or 0),
                seconds=float(u.get("seconds", 0.0) or 0.0),
            )
        )
    return sorted(rows, key=lambda r: (-r.calls, r.model))


def _usage(value: Any) -> dict[str, dict[str, float]]:
    """The usage by phase (and its total); ``by_model`` is read by :func:`_usage_by_model`."""
    return {
        str(k): {str(c): float(n) for c, n in v.items() if isinstance(n, int | float)}
        for k, v in _dict(value).items()
        if k != "by_model" and isinstance(v, Mapping)
    }


def _usage_by_model(
    view: RunView, usage: Mapping[str, Any], graph: GraphRecord | None, optimizer: str, teacher: str
) -> None:
    """Fill ``view.models`` from the record's ``by_model``; without one, ``view.roles`` and a note saying why."""
    by_model = usage.get("by_model")
    if isinstance(by_model, Mapping):
        view.models = _models(by_model)
        return
    view.roles = _roles(view.usage, graph, optimizer, teacher)
    if usage:
        view.notes["models"] = (
            "Usage by model was not recorded: this run was written before feedprop counted usage per model (or it "
            "resumed such a run). Below, each role's calls are the phases they are counted in."
        )


# -- the two kinds of run ------------------------------------------------------------------------------


def _graph(directories: Sequence[Path], notes: dict[str, str]) -> GraphRecord | None:
    for d in directories:
        if (d / GRAPH_FILE).is_file():
            try:
                return read_graph(d / GRAPH_FILE)
            except InvalidInputError as exc:
                notes["graph"] = str(exc)
                return None
    notes["graph"] = (
        "This run has no graph.json: it was written before runs recorded their workflow's graph, or its "
        "workflow never produced a traced output."
    )
    return None


def _load_train(path: Path) -> RunView:
    files = _read_train(path)
    config = files.config
    view = RunView(path, "train", f"Training run: {config.get('model', 'a model')} with {config.get('optimizer', '?')}")
    steps = _steps(files, "", 0)
    view.steps = steps
    view.val_before, view.test_before = files.scores["val_before"], files.scores["test_before"]
    view.test_after = files.scores["test_after"]
    view.val_after = files.scores["val_after"]
    if view.val_after is None:
        kept = [s.val_score for s in steps if s.val_score is not None]
        view.val_after = kept[-1] if kept else view.val_before
    view.points = [CurvePoint(0, 0, val=view.val_before, test=view.test_before, label="start")]
    view.points += _step_points(steps, 0)
    view.candidate_points = _candidate_points(steps)
    tests = sorted(files.items, key=lambda e: int(e.get("step", 0)))
    if tests:  # the measured test scores, at the step they were measured
        for p in view.points:
            p.test = None
        for event in tests:
            x = int(event.get("step", 0))
            at = next((p for p in reversed(view.points) if p.x == x), None)
            if at is None:
                at = CurvePoint(x, view.points[-1].tokens)
                view.points.append(at)
            at.test = _mean(event)
    elif view.test_after is not None and view.points:
        view.points[-1].test = view.test_after
    if len(tests) >= 2:
        view.items = _item_rows(tests[0], tests[-1])
        view.items_caption = f"test set: before training (step 0) and after (step {tests[-1].get('step')})"
    else:
        view.notes["items"] = (
            "No per-item outcomes before and after: the run had no test set, or was written before runs logged "
            f"'{ITEM_OUTCOME_SCHEMA}' items events."
            if not tests
            else "Only one scoring of the test set was logged (the run did not finish)."
        )
    view.usage = _usage(files.usage)
    view.graph = _graph([path], view.notes)
    _usage_by_model(view, files.usage, view.graph, str(config.get("optimizer", "")), "")
    view.initial, view.best = files.initial, files.best
    budget = _dict(config.get("budget"))
    limits = ", ".join(f"{k}={budget[k]}" for k in ("calls", "tokens", "seconds") if budget.get(k) is not None)
    view.facts = [
        ("data", f"{config.get('train_size', '?')} train, {config.get('val_size', '?')} validation, "
         f"{config.get('test_size', '?')} test"),
        ("search", f"{config.get('search', 'greedy')}, batch size {config.get('batch_size', '?')}, "
         f"epochs {config.get('epochs', '?')}"),
        ("budget", f"{limits or 'none'} (scope: {budget.get('scope', 'all')})"),
        ("steps", f"{len(steps)} ({sum(s.accepted for s in steps)} changed the kept program)"),
        ("stopped", files.stop_reason or "unknown (the run may still be going, or was killed)"),
    ]  # fmt: skip
    if files.seconds is not None:
        view.facts.append(("time", f"{files.seconds:.1f} s"))
    if files.problems:
        view.notes["files"] = "; ".join(files.problems)
    return view


def _phase_notes(result: Mapping[str, Any]) -> str:
    d = _dict(result.get("detail"))
    if result.get("kind") == "p":
        changed = d.get("changed") or []
        text = f"{d.get('steps', 0)} steps, {d.get('accepted', 0)} accepted"
        return text + (f"; changed: {', '.join(map(str, changed))}" if changed else "")
    ft = _dict(d.get("finetune"))
    text = f"{d.get('examples', 0)} examples from {d.get('successes', 0)} of {d.get('runs', 0)} runs"
    if ft:
        text += f"; {ft.get('steps', 0)} LoRA steps"
        if _num(ft.get("first_loss")) is not None and _num(ft.get("last_loss")) is not None:
            text += f", loss {ft['first_loss']:.3f} -> {ft['last_loss']:.3f}"
    return text


def _load_joint(path: Path, state: Mapping[str, Any]) -> RunView:
    fingerprint = _dict(state.get("fingerprint"))
    strategy = " -> ".join(map(str, fingerprint.get("strategy") or [])) or "?"
    demo = fingerprint.get("model") == "feedprop.demo.CountingSolver"
    title = f"{'feedprop demo' if demo else 'Joint run'}: strategy '{strategy}'"
    view = RunView(path, "joint", title)
    results = [r for r in state.get("results") or [] if isinstance(r, Mapping)]
    best = _dict(state.get("best"))
    best_phase = int(best.get("phase", 0) or 0)
    view.val_before, view.test_before = _num(state.get("val_before")), _num(state.get("test_before"))
    after = next((r for r in results if r.get("index") == best_phase), None)
    view.val_after = _num(after.get("val")) if after else view.val_before
    view.test_after = _num(after.get("test")) if after else view.test_before
    view.points = [CurvePoint(0, 0, val=view.val_before, test=view.test_before, label="start")]
    x, tokens = 0, 0
    optimizer = ""
    initial: dict[str, Any] | None = None
    graph_dirs = [path]
    for r in results:
        index, kind = int(r.get("index", 0)), str(r.get("kind", "?"))
        label = f"{index}:{kind}"
        phase_tokens = int(r.get("prompt_tokens", 0) or 0) + int(r.get("completion_tokens", 0) or 0)
        view.phases.append(
            PhaseView(
                label=label,
                kind=kind,
                val=_num(r.get("val")),
                test=_num(r.get("test")),
                kept=bool(r.get("kept")),
                calls=int(r.get("calls", 0) or 0),
                cache_hits=int(r.get("cache_hits", 0) or 0),
                tokens=phase_tokens,
                seconds=float(r.get("seconds", 0.0) or 0.0),
                notes=_phase_notes(r),
                skipped=str(r.get("skipped") or ""),
            )
        )
        view.marks.append((x, label))
        directory = path / f"phase-{index}-{kind}"
        if kind == "p" and directory.is_dir():
            graph_dirs.append(directory)
            files = _read_train(directory)
            optimizer = optimizer or str(files.config.get("optimizer", ""))
            if initial is None and index == 1:
                initial = files.initial
            steps = _steps(files, label, x)
            view.steps += steps
            view.points += _step_points(steps, tokens)
            view.candidate_points += _candidate_points(steps)
            x += max(len(steps), 1)
        elif kind == "p":
            view.notes["steps"] = f"The trainer directory of phase {label} is missing, so its steps are not shown."
            x += 1
        else:
            x += 1
        tokens += phase_tokens
        if not r.get("skipped"):
            view.points.append(CurvePoint(x, tokens, val=_num(r.get("val")), test=_num(r.get("test")), label=label))
    if best_phase == 0 and initial is None:
        initial = _dict(best.get("state")) or None
    view.initial = initial
    view.best = _dict(best.get("state")) or None
    tests: dict[int, Mapping[str, Any]] = {}
    if (path / EVENTS_FILE).is_file():
        for e in read_events(path / EVENTS_FILE):
            if e.get("event") == "items" and e.get("phase") == "test" and e.get("schema") == ITEM_OUTCOME_SCHEMA:
                tests[int(e.get("joint_phase", 0))] = e
    if 0 in tests and best_phase in tests:
        view.items = _item_rows(tests[0], tests[best_phase])
        kept = "the start (no phase was kept)" if best_phase == 0 else f"the kept program (after phase {best_phase})"
        view.items_caption = f"test set: the start against {kept}"
    else:
        view.notes["items"] = (
            "No per-item test outcomes in this directory: the run had no test set, or was written before "
            "joint runs logged them (events.jsonl)."
        )
    view.usage = _usage(state.get("usage"))
    view.graph = _graph(graph_dirs, view.notes)
    teacher = str(_dict(fingerprint.get("weights")).get("teacher") or "") if "w" in strategy else ""
    _usage_by_model(view, _dict(state.get("usage")), view.graph, optimizer, teacher)
    kept_text = "the start" if best_phase == 0 else f"the program after phase {best_phase}"
    data = [f"{(fingerprint.get(k) or ['?'])[0]} {k.split('_')[0]}" for k in ("train_set", "val_set", "test_set")]
    view.facts = [
        ("strategy", strategy),
        ("data", ", ".join(data)),
        ("kept", kept_text),
        ("stopped", str(state.get("stop_reason") or "unknown")),
    ]
    seconds = _num(state.get("elapsed_seconds"))
    if seconds is not None:
        view.facts.append(("time", f"{seconds / 60:.1f} min"))
    return view


def load_run(path: str | os.PathLike[str]) -> RunView:
    """Read the run in ``path`` (a train run, a joint run or the demo's) into a :class:`RunView`.

    Raises :class:`~feedprop.errors.ConfigurationError` if ``path`` is not a directory holding a run.
    """
    directory = Path(path)
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is a file, not a directory"
        raise ConfigurationError(
            f"{directory} {what}; pass a run directory (the checkpoint= of fp.train or fp.joint.alternate, or a "
            "demo's run directory under runs/)"
        )
    if (directory / _JOINT_FILE).is_file():
        problems: list[str] = []
        state = _json(directory / _JOINT_FILE, problems)
        if not isinstance(state, Mapping) or not str(state.get("format", "")).startswith("feedprop.joint/"):
            raise ConfigurationError(
                f"{directory / _JOINT_FILE} is not a joint run's record"
                + (f" ({problems[0]})" if problems else "")
                + "; it may be damaged"
            )
        return _load_joint(directory, state)
    if (directory / EVENTS_FILE).is_file() or (directory / _CHECKPOINT_FILE).is_file():
        return _load_train(directory)
    raise ConfigurationError(
        f"{directory} is not a feedprop run directory: it holds none of {_JOINT_FILE}, {_CHECKPOINT_FILE}, "
        f"{EVENTS_FILE}; pass the directory given as checkpoint= to fp.train or fp.joint.alternate, or a demo's "
        "run directory"
    )
