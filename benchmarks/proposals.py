"""Proposals that parse and proposals that change: OptoPrime's JSON edits beside Reflect's plain rewrites.

On the demo task (BBH ``object_counting`` answered by :class:`feedprop.demo.CountingSolver`: an
instruction and an extractor whose first draft takes the first number of the reply), each round
runs one minibatch of training questions, sends the guide's feedback backward, and then lets
every system propose from that same recorded feedback, without changing the parameters:

* ``optoprime-json`` — :class:`~feedprop.optim.OptoPrime`, one JSON reply per sample, no schema;
* ``optoprime-schema`` — the same, with the reply constrained by a JSON schema (only where the
  model enforces schemas, as the embedded llama.cpp server does; elsewhere it equals the row above);
* ``reflect`` — :class:`~feedprop.optim.Reflect`: per parameter with failures, one diagnosis,
  then plain rewrites.

Every system draws ``--samples`` replies per proposal (OptoPrime: ``n_candidates`` samples with no
retries; Reflect: ``n_candidates`` rewrites for each of the two parameters). Per reply it counts
whether it **parsed** (OptoPrime: a JSON suggestion was read; Reflect: the rewrite held a function
with the right name and parameters, or non-empty text) and whether it **changed** a parameter
(a valid value different from the current one). With ``--score``, each changed candidate is
also run on its round's minibatch and counted as **improved** when it raises the minibatch score
(a code candidate costs no model call: the student's replies come from the response cache).

It prints a table and, with ``--out``, writes the rows and every reply as JSON. It runs on the
default model (:func:`feedprop.llm.default`, the embedded 1.5B model unless ``FEEDPROP_BASE_URL``
is set), which answers the questions too unless ``--student`` names an embedded model for that
(``qwen2.5-coder-0.5b`` is the demo's student). Usage::

    nice -n 19 .venv/bin/python benchmarks/proposals.py --rounds 3 --samples 4 --out proposals.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from feedprop import llm as llm_module
from feedprop.demo import CountingSolver
from feedprop.errors import ExecutionError, ReplyParseError, SuggestionError
from feedprop.llm import LLM, LocalModel, track_usage
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import OptoPrime, Reflect
from feedprop.optim.conversation import same_value
from feedprop.optim.optimizer import kind_of
from feedprop.optim.replies import parse_reply
from feedprop.tasks import load_bbh
from feedprop.training import ExactMatch

SYSTEMS = ("optoprime-json", "optoprime-schema", "reflect")


@dataclass
class Row:
    """One system's counts over all rounds."""

    system: str
    calls: int = 0
    seconds: float = 0.0
    replies: int = 0
    parsed: int = 0
    changed: int = 0
    changed_kinds: dict[str, int] = field(default_factory=dict)
    scored: int = 0
    improved: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def share(self, count: int) -> str:
        return f"{100 * count / self.replies:.0f}%" if self.replies else "-"


def _run_batch(solver: CountingSolver, batch: Sequence[Any], guide: ExactMatch, backward: bool) -> float:
    """Run the minibatch; send each item's feedback backward if asked. Returns the mean score."""
    scores = []
    for example in batch:
        try:
            out = solver(Node(example.input, name="question"))
            feedback = guide(out.data, example.target)
            node: Node[Any] = out
        except ExecutionError as e:
            feedback = Feedback(f"the program raised: {e}", score=0.0)
            node = e.node
        scores.append(float(feedback.score or 0.0))
        if backward:
            node.backward(feedback)
    return sum(scores) / len(scores) if scores else 0.0


def _edited(solver: CountingSolver) -> list[Parameter[Any]]:
    """The parameters a proposal edits: the instruction and the extractor (demonstrations are selected, not written)."""
    return [p for p in solver.parameters() if kind_of(p) in ("text", "code")]


def _optoprime(solver: CountingSolver, llm: LLM, samples: int, schema: bool, row: Row) -> list[dict[str, Any]]:
    opt = OptoPrime(_edited(solver), llm=llm, n_candidates=samples, max_retries=0, json_schema=schema)
    proposal = opt.propose()
    params = dict(opt.named_parameters())
    changes = []
    for text in proposal.replies:
        record: dict[str, Any] = {"reply": text, "parsed": False, "updates": {}}
        try:
            reply = parse_reply(text)
        except ReplyParseError as e:
            record["error"] = str(e)
        else:
            record["parsed"] = True
            updates, rejected = opt.conversation.resolve(reply.suggestion)
            record["updates"] = updates
            record["refused"] = [r.reason for r in rejected]
            for name in updates:
                row.changed_kinds[kind_of(params[name])] = row.changed_kinds.get(kind_of(params[name]), 0) + 1
        changes.append(record)
    return changes


def _reflect(solver: CountingSolver, llm: LLM, samples: int, row: Row) -> list[dict[str, Any]]:
    opt = Reflect(_edited(solver), llm=llm, n_candidates=samples, params_per_step=None)
    params = dict(opt.named_parameters())
    changes = []
    for name in opt.failing():
        param = params[name]
        diagnosis = opt.diagnose(name)
        for i in range(samples):
            text = opt.rewrite(name, diagnosis, i)
            record: dict[str, Any] = {"parameter": name, "diagnosis": diagnosis, "reply": text, "parsed": False}
            try:
                value = opt.read_rewrite(name, text)
            except SuggestionError as e:
                record["error"] = str(e)
                record["updates"] = {}
            else:
                record["parsed"] = True
                changed = not same_value(value, param.data, kind_of(param))
                record["updates"] = {name: value} if changed else {}
                if changed:
                    row.changed_kinds[kind_of(param)] = row.changed_kinds.get(kind_of(param), 0) + 1
            changes.append(record)
    return changes


def _score_changes(
    solver: CountingSolver,
    batch: Sequence[Any],
    guide: ExactMatch,
    base: float,
    records: list[dict[str, Any]],
    row: Row,
) -> None:
    initial = solver.state_dict()
    for record in records:
        if not record["updates"]:
            continue
        solver.load_state_dict({**initial, **record["updates"]})
        try:
            score = _run_batch(solver, batch, guide, backward=False)
        finally:
            solver.load_state_dict(initial)
        record["minibatch_score"] = score
        row.scored += 1
        row.improved += int(score > base)


def run(
    llm: LLM,
    *,
    student: LLM | None = None,
    rounds: int,
    batch_size: int,
    samples: int,
    task: str = "object_counting",
    systems: Sequence[str] = SYSTEMS,
    score: bool = False,
) -> list[Row]:
    """Measure each system over ``rounds`` minibatches of ``batch_size`` training questions.

    ``llm`` proposes; ``student`` (default: ``llm``) answers the questions.
    """
    items = list(load_bbh(task).train)
    guide = ExactMatch()
    solver = CountingSolver(student if student is not None else llm)
    rows = {name: Row(name) for name in systems}
    for r in range(rounds):
        batch = [items[(r * batch_size + i) % len(items)] for i in range(batch_size)]
        for param in solver.parameters():
            param.zero_feedback()
        base = _run_batch(solver, batch, guide, backward=True)
        for name, row in rows.items():
            started = time.perf_counter()
            with track_usage() as usage:
                if name == "reflect":
                    records = _reflect(solver, llm, samples, row)
                else:
                    records = _optoprime(solver, llm, samples, name == "optoprime-schema", row)
            row.calls += usage.calls
            row.seconds += time.perf_counter() - started
            row.replies += len(records)
            row.parsed += sum(1 for rec in records if rec["parsed"])
            row.changed += sum(1 for rec in records if rec["updates"])
            if score:
                _score_changes(solver, batch, guide, base, records, row)
            row.samples.extend({"round": r, "minibatch_score": base, **rec} for rec in records)
    return list(rows.values())


def table(rows: Sequence[Row], score: bool) -> str:
    """The rows as a fixed-width table."""
    head = ["system", "calls", "replies", "parsed", "changed", "code", "text", "seconds"]
    if score:
        head.insert(-1, "improved")
    lines = [head]
    for row in rows:
        cells = [
            row.system,
            str(row.calls),
            str(row.replies),
            row.share(row.parsed),
            row.share(row.changed),
            str(row.changed_kinds.get("code", 0)),
            str(row.changed_kinds.get("text", 0)),
            f"{row.seconds:.0f}",
        ]
        if score:
            cells.insert(-1, f"{row.improved}/{row.scored}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def main(argv: Sequence[str] | None = None, *, llm: LLM | None = None) -> list[Row]:
    """Parse the command line, run, print the table; ``llm`` replaces the default model (tests)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="minibatches, each proposed from by every system")
    parser.add_argument("--batch-size", type=int, default=4, help="training questions per minibatch")
    parser.add_argument("--samples", type=int, default=4, help="replies per proposal (per parameter for Reflect)")
    parser.add_argument("--task", default="object_counting", help="the BBH task (the demo's by default)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {', '.join(SYSTEMS)}")
    parser.add_argument("--score", action="store_true", help="run each changed candidate on its minibatch")
    parser.add_argument("--student", help="an embedded model to answer the questions (default: the proposing model)")
    parser.add_argument("--out", type=Path, help="write the rows and every reply here as JSON")
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or args.rounds < 1 or args.batch_size < 1 or args.samples < 1:
        parser.error(f"unknown systems {unknown}" if unknown else "--rounds, --batch-size and --samples must be >= 1")
    model = llm if llm is not None else llm_module.default()
    print(
        f"proposals on BBH {args.task}: {args.rounds} round(s) of {args.batch_size} questions, "
        f"{args.samples} sample(s) per proposal; model {model.model} "
        f"(JSON schemas {'enforced' if model.supports_json_schema else 'not enforced'}); "
        f"student {args.student or model.model}"
    )
    student = LocalModel(args.student, n_parallel=2, n_ctx=2048) if args.student else None
    try:
        rows = run(
            model,
            student=student,
            rounds=args.rounds,
            batch_size=args.batch_size,
            samples=args.samples,
            task=args.task,
            systems=systems,
            score=args.score,
        )
    finally:
        if student is not None:
            student.close()
    print(table(rows, args.score))
    if args.out is not None:
        args.out.write_text(json.dumps([asdict(row) for row in rows], indent=2, default=repr), encoding="utf-8")
        print(f"replies and counts: {args.out}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
