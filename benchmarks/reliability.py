"""Reliability at full counts: hostile replies, endpoint faults and kill -9, with every survival counted.

The same machinery as ``tests/reliability`` (which runs a few of each in ``make test``), run many
times:

* **hostile replies** — generated replies through every reply reader (the optimizers' JSON and
  XML parsers, the LLMJudge grade parser), and optimizer steps (OptoPrime, Hindsight, TGD, OPRO,
  both reply formats), LLMJudge grades and textual gradients fed hostile replies by a MockLLM;
* **endpoint faults** — training runs whose every model call goes through a loopback proxy
  injecting latency, timeouts, 500/503, 429 with Retry-After, cut and garbled bodies and dropped
  connections, each compared with the fault-free run;
* **kill -9** — training runs killed at random points and inside checkpoint writes, then resumed.

It prints, per part and in total, the trials run, the failures survived (replies refused with a
typed error or fed to a step, grade or gradient that ended cleanly; faults injected; kills) and
the states lost (a step, grade or run whose result is wrong, a half-written file, a lost completed
step, a resumed run that differs from the uninterrupted one), which must be 0.

Usage::

    nice -n 19 .venv/bin/python benchmarks/reliability.py                  # 10,000 replies, 20 fault runs, 24 kills
    nice -n 19 .venv/bin/python benchmarks/reliability.py --replies 500 --fault-trials 2 --kills 3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the machinery lives in tests/reliability (before this file's own dir)

from reliability import crash, endpoint, hostile  # noqa: E402

from feedprop.errors import ReplyParseError  # noqa: E402
from feedprop.optim.replies import parse_reply  # noqa: E402


@dataclass
class Part:
    """One part's counts."""

    name: str
    trials: int = 0
    survived: int = 0
    states_lost: int = 0
    crashes: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.name:<16} trials {self.trials:>6}   failures survived {self.survived:>6}   "
            f"crashes {self.crashes:>3}   states lost {self.states_lost:>3}   ({self.seconds:.0f}s)"
        )


def _crash(part: Part, what: str, exc: BaseException) -> None:
    part.crashes += 1
    if len(part.problems) < 10:
        part.problems.append(f"{what}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}")


def hostile_replies(n: int, steps: int, seed: int) -> Part:
    part = Part("hostile replies")
    started = time.monotonic()
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    for i in range(n):
        text = hostile.hostile_reply(rng)
        part.trials += 1
        refused = False
        for fmt in ("json", "xml"):
            try:
                parse_reply(text, fmt)
                outcomes[f"read as {fmt}"] += 1
            except ReplyParseError:
                outcomes[f"refused as {fmt} (ReplyParseError)"] += 1
                refused = True
            except Exception as exc:
                _crash(part, f"parse_reply({fmt}) on reply {i}", exc)
        part.survived += refused
        try:
            hostile.check_parsers(text)
        except Exception as exc:
            _crash(part, f"check_parsers on reply {i}", exc)
        if i % 10 == 0:  # the judge and the textual gradient cost a model call each
            for name, check in (("judge", hostile.check_judge), ("textual gradient", hostile.check_textual_gradient)):
                part.trials += 1
                try:
                    check(text)
                    part.survived += 1
                except Exception as exc:
                    _crash(part, f"{name} on reply {i}", exc)
    for i in range(steps):
        optimizer = hostile.OPTIMIZERS[i % len(hostile.OPTIMIZERS)]
        fmt = ("json", "xml")[i // len(hostile.OPTIMIZERS) % 2]
        part.trials += 1
        try:
            hostile.check_optimizer_steps(optimizer, hostile.hostile_reply(rng), hostile.hostile_reply(rng), fmt)
            part.survived += 1
            outcomes[f"{optimizer.__name__} steps"] += 2
        except AssertionError as exc:  # a step ended but left an invalid parameter: a state lost
            part.states_lost += 1
            _crash(part, f"{optimizer.__name__}/{fmt} step {i}", exc)
        except Exception as exc:
            _crash(part, f"{optimizer.__name__}/{fmt} step {i}", exc)
    part.details = dict(sorted(outcomes.items()))
    part.seconds = time.monotonic() - started
    return part


def endpoint_faults(trials: int, seed: int, epochs: int) -> Part:
    part = Part("endpoint faults")
    started = time.monotonic()
    server = endpoint.ScriptedEndpoint(endpoint.scripted_handler)
    injected: Counter[str] = Counter()
    requests = 0
    try:
        reference = endpoint.run_training(server.base_url, epochs=epochs)
        keys = ("best_state", "final_state", "scores", "history", "usage", "optimizer", "val_before", "val_after")
        for trial in range(trials):
            proxy = endpoint.FaultyProxy(server.base_url, endpoint.FaultPlan(seed=seed + trial, hang=3.3))
            part.trials += 1
            try:
                faulty = endpoint.run_training(proxy.base_url, epochs=epochs, timeout=3.0)
                differ = [k for k in keys if faulty[k] != reference[k]]
                if differ:
                    part.states_lost += 1
                    part.problems.append(f"trial {trial}: the run differs from the fault-free one in {differ}")
            except Exception as exc:
                _crash(part, f"trial {trial}", exc)
            finally:
                proxy.stop()
            injected.update(proxy.injected)
            requests += proxy.requests
            part.survived += sum(proxy.injected.values())
    finally:
        server.stop()
    part.details = {"requests through the proxy": requests, "faults injected": dict(sorted(injected.items()))}
    part.details["fault-free run"] = {
        "steps": len(reference["scores"]),
        "val": [reference["val_before"], reference["val_after"]],
    }
    part.seconds = time.monotonic() - started
    return part


def kills(total: int, per_chain: int, seed: int) -> Part:
    part = Part("kill -9")
    started = time.monotonic()
    rng = random.Random(seed)
    modes: Counter[str] = Counter()
    temp_files = 0
    with tempfile.TemporaryDirectory(prefix="feedprop-kills-") as tmp:
        reference = crash.reference_run(Path(tmp) / "uninterrupted")
        index = 0
        while part.trials < total:
            index += 1
            want = min(per_chain, total - part.trials)
            chain = crash.run_chain(Path(tmp) / f"chain{index}", reference, want, rng)
            part.trials += len(chain.kills)
            part.survived += len(chain.kills)
            part.states_lost += chain.lost_states
            part.problems.extend(chain.problems)
            for kill in chain.kills:
                modes[kill.mode] += 1
                temp_files += bool(kill.temp_files)
                part.problems.extend(kill.problems)
                part.states_lost += bool(kill.problems)  # a half-written file or a history that is not a prefix
            if not chain.kills and chain.problems:
                break
    part.details = {
        "kills by kind": dict(modes),
        "kills that left a temporary file (never read; removed on resume)": temp_files,
        "chains": index,
        "steps in the run": len(reference["history"]),
    }
    part.seconds = time.monotonic() - started
    return part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=10_000, help="hostile replies through the parsers")
    parser.add_argument("--optimizer-steps", type=int, default=2_000, help="optimizer checks (two steps each)")
    parser.add_argument("--fault-trials", type=int, default=20, help="training runs through the faulty proxy")
    parser.add_argument("--fault-epochs", type=int, default=2, help="epochs of each of those runs")
    parser.add_argument("--kills", type=int, default=24, help="kill -9 trials")
    parser.add_argument("--kills-per-chain", type=int, default=6, help="kills of one run before it may finish")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args()

    parts = [
        hostile_replies(args.replies, args.optimizer_steps, args.seed),
        endpoint_faults(args.fault_trials, args.seed, args.fault_epochs),
        kills(args.kills, args.kills_per_chain, args.seed),
    ]
    print("\nfeedprop reliability")
    for part in parts:
        print(part.line())
        for key, value in part.details.items():
            print(f"    {key}: {value}")
        for problem in part.problems[:10]:
            print(f"    PROBLEM {problem}")
    total = Part(
        "TOTAL",
        trials=sum(p.trials for p in parts),
        survived=sum(p.survived for p in parts),
        states_lost=sum(p.states_lost for p in parts),
        crashes=sum(p.crashes for p in parts),
        seconds=sum(p.seconds for p in parts),
    )
    print(total.line())
    if args.json:
        args.json.write_text(json.dumps([asdict(p) for p in [*parts, total]], indent=1), encoding="utf-8")
    sys.exit(1 if total.states_lost or total.crashes else 0)


if __name__ == "__main__":
    main()
