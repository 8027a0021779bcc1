"""Numeric optimization: OptoPrime and Hindsight against torch.optim.Adam on random computation graphs.

The numerical problems from the Trace work: a random graph of ``+ - * /`` and simple functions
(square, abs) over a few number Parameters, whose output must reach a target. The LLM
optimizers see only the traced graph and the feedback "the output should be larger/smaller by
N" (score ``-|error|``); Adam (lr 0.1) gets the exact gradient of the squared error. All three
start from the same values on the same graphs and take the same number of steps (Adam is also
shown after 100 steps, for scale).

Usage::

    .venv/bin/python benchmarks/numeric.py                    # 10 graphs, 5 steps, the default model
    .venv/bin/python benchmarks/numeric.py --graphs 3 --steps 3 --json out.json

The model is :func:`feedprop.llm.default` (the embedded one unless ``FEEDPROP_BASE_URL`` is
set). The response cache is switched off, so every LLM call counted is a real one.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from feedprop.errors import ExecutionError
from feedprop.llm import LLM, default, set_cache_enabled, thread_map, track_usage
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import Hindsight, Optimizer, OptoPrime

# An instruction is (op, operand indices into the value list); values are params, consts, results.
UNARY: dict[str, Callable[[Any], Any]] = {"square": lambda a: a * a, "abs": lambda a: abs(a)}
BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,  # the divisor is always a non-zero constant
}
SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


@dataclass
class Graph:
    """A random computation graph over ``len(init)`` parameters, with a reachable ``target``."""

    index: int
    init: list[float]
    consts: list[float]
    program: list[tuple[str, tuple[int, ...]]]
    target: float = 0.0

    def run(self, params: list[Any], const: Callable[[int, float], Any]) -> Any:
        """Evaluate with any number-like values: floats, traced Nodes or torch tensors."""
        values: list[Any] = [*params, *(const(i, c) for i, c in enumerate(self.consts))]
        for op, args in self.program:
            fn = UNARY.get(op) or BINARY[op]
            values.append(fn(*(values[a] for a in args)))
        return values[-1]

    def value(self, xs: list[float]) -> float:
        return float(self.run(list(xs), lambda i, c: c))

    def formula(self) -> str:
        names = [f"x{i}" for i in range(len(self.init))] + [f"{c:g}" for c in self.consts]
        for op, args in self.program:
            a = [names[i] for i in args]
            names.append(f"{op}({a[0]})" if op in UNARY else f"({a[0]} {SYMBOL[op]} {a[1]})")
        return names[-1]


def random_program(rng: random.Random, n: int, n_consts: int) -> list[tuple[str, tuple[int, ...]]]:
    """Chain every parameter in with + - *, sometimes followed by square, abs or a constant op."""
    program: list[tuple[str, tuple[int, ...]]] = []
    width = n + n_consts
    acc = 0
    for p in range(1, n):
        program.append((rng.choice(["add", "sub", "mul"]), (acc, p)))
        acc = width + len(program) - 1
        if rng.random() < 0.6:
            kind = rng.choice(["square", "abs", "const"])
            if kind == "const":
                program.append((rng.choice(["add", "mul", "div", "sub"]), (acc, n + rng.randrange(n_consts))))
            else:
                program.append((kind, (acc,)))
            acc = width + len(program) - 1
    return program


def make_graph(index: int, seed: int) -> Graph:
    """A graph whose target is its value at hidden random parameters (so it is reachable)."""
    rng = random.Random(seed * 1000 + index)
    while True:
        n = rng.choice([2, 3])
        init = [round(rng.uniform(-5, 5), 1) for _ in range(n)]
        consts = [float(rng.choice([2, 3, 4, 5])) for _ in range(3)]
        graph = Graph(index, init, consts, random_program(rng, n, len(consts)))
        hidden = [round(rng.uniform(-5, 5), 1) for _ in range(n)]
        graph.target = round(graph.value(hidden), 3)
        start_error = abs(graph.value(init) - graph.target)
        if abs(graph.target) < 500 and 1.0 < start_error < 500:
            return graph


def feedback(error: float) -> Feedback:
    """What the LLM optimizers are told: the direction and size of the miss, scored -|error|."""
    direction = "larger" if error > 0 else "smaller"
    return Feedback(f"The output should be {direction} by {abs(error):.4g}.", score=-abs(error))


@dataclass
class Run:
    errors: list[float] = field(default_factory=list)
    calls: int = 0
    seconds: float = 0.0
    rejected: int = 0


def run_llm(graph: Graph, make: Callable[[list[Parameter[float]]], Optimizer], steps: int) -> Run:
    params = [Parameter(x, name=f"x{i}", description="an input to the computation") for i, x in enumerate(graph.init)]
    opt = make(params)
    out = Run()
    start = time.perf_counter()
    with track_usage() as usage:
        for _ in range(steps):
            opt.zero_feedback()
            try:
                y = graph.run(list(params), lambda i, c: Node(c, name=f"c{i}"))
            except ExecutionError as e:  # e.g. an overflow: the error itself is the feedback
                e.node.backward(Feedback(f"The computation failed: {e}", score=-1e6))
                out.errors.append(math.inf)
                opt.step()
                continue
            error = graph.target - float(y.data)
            out.errors.append(abs(error))
            if abs(error) < 1e-6:
                break
            y.backward(feedback(error))
            out.rejected += len(opt.step().rejected)
    out.errors.append(abs(graph.target - graph.value([p.data for p in params])))
    out.calls = usage.calls
    out.seconds = time.perf_counter() - start
    return out


def run_adam(graph: Graph, steps: int, lr: float = 0.1) -> float:
    xs = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in graph.init]
    opt = torch.optim.Adam(xs, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        y = graph.run(list(xs), lambda i, c: torch.tensor(c, dtype=torch.float64))
        loss = (y - graph.target) ** 2
        loss.backward()
        opt.step()
    return abs(graph.target - graph.value([float(x.detach()) for x in xs]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=4, help="graphs optimized at the same time")
    parser.add_argument("--max-tokens", type=int, default=300, help="reply length limit of each LLM call")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    set_cache_enabled(False)  # count real calls only
    llm: LLM = default()
    graphs = [make_graph(i, args.seed) for i in range(args.graphs)]
    makers: dict[str, Callable[[list[Parameter[float]]], Optimizer]] = {
        "OptoPrime": lambda ps: OptoPrime(ps, llm=llm, max_tokens=args.max_tokens),
        "Hindsight": lambda ps: Hindsight(ps, llm=llm, max_tokens=args.max_tokens),
    }
    jobs = [(g, name) for g in graphs for name in makers]
    print(f"model: {getattr(llm, 'model', llm)}; {len(graphs)} graphs, {args.steps} steps each", flush=True)
    started = time.perf_counter()

    printing = threading.Lock()

    def job(item: tuple[Graph, str]) -> Run:
        graph, name = item
        result = run_llm(graph, makers[name], args.steps)
        with printing:
            print(
                f"  graph {graph.index} {name}: error {result.errors[0]:.4g} -> {result.errors[-1]:.4g} "
                f"({result.calls} calls, {result.seconds:.0f}s)",
                flush=True,
            )
        return result

    runs = thread_map(job, jobs, max_workers=args.workers)
    results = {(g.index, name): run for (g, name), run in zip(jobs, runs, strict=True)}
    wall = time.perf_counter() - started

    rows = []
    header = (
        f"{'graph':>5} {'start':>9} | {'OptoPrime':>10} {'calls':>5} | {'Hindsight':>10} {'calls':>5} | "
        f"{'Adam@' + str(args.steps):>10} {'Adam@100':>10} | formula"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for g in graphs:
        o, h = results[(g.index, "OptoPrime")], results[(g.index, "Hindsight")]
        adam_t, adam_100 = run_adam(g, args.steps), run_adam(g, 100)
        rows.append(
            {
                "graph": g.index,
                "formula": g.formula(),
                "target": g.target,
                "start": o.errors[0],
                "optoprime": o.errors[-1],
                "optoprime_calls": o.calls,
                "hindsight": h.errors[-1],
                "hindsight_calls": h.calls,
                "adam_same_steps": adam_t,
                "adam_100": adam_100,
            }
        )
        print(
            f"{g.index:>5} {o.errors[0]:>9.4g} | {o.errors[-1]:>10.4g} {o.calls:>5} | {h.errors[-1]:>10.4g} "
            f"{h.calls:>5} | {adam_t:>10.4g} {adam_100:>10.4g} | {g.formula()} = {g.target:g}"
        )

    def summary(key: str) -> str:
        values = [r[key] for r in rows]
        finite = [v for v in values if math.isfinite(v)]
        solved = sum(1 for v in values if v < 0.05)
        return (
            f"mean {statistics.fmean(finite):8.4g}  median {statistics.median(finite):8.4g}  "
            f"solved (error < 0.05) {solved}/{len(values)}"
        )

    print()
    for key, label in [
        ("start", "start"),
        ("optoprime", "OptoPrime"),
        ("hindsight", "Hindsight"),
        ("adam_same_steps", f"Adam, {args.steps} steps"),
        ("adam_100", "Adam, 100 steps"),
    ]:
        print(f"{label:>16}: {summary(key)}")
    calls = {n: sum(results[(g.index, n)].calls for g in graphs) for n in makers}
    print(f"LLM calls: OptoPrime {calls['OptoPrime']}, Hindsight {calls['Hindsight']}; wall time {wall:.0f}s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "rows": rows, "calls": calls, "seconds": wall}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
