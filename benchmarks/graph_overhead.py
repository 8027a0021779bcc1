"""What tracing and backward cost per node, in feedprop and in trace-opt (Microsoft Trace).

Builds chains, binary trees and random DAGs from 1,000 to 100,000 nodes (a chain up to
1,000,000) with ordinary Python arithmetic on nodes, back-propagates one feedback string from
the output with the default propagator, and prints microseconds per node (trace, backward,
both) and bytes per node (tracemalloc peak over trace + backward, measured in a separate run
because tracemalloc slows everything down). Parameters are the graphs' leaves.

The same graphs then run through trace-opt (``trace-opt==0.1.3.8``, the ``bench`` extra) in a
subprocess — by default the interpreter of ``.venv-bench`` next to this repository, because
installing trace-opt into the main environment would change its package versions — and the
ratio trace-opt / feedprop is printed. Sizes at which trace-opt takes too long are skipped and
reported as such.

    python benchmarks/graph_overhead.py               # everything (several minutes)
    python benchmarks/graph_overhead.py --quick       # 1,000 and 10,000 nodes only
    python benchmarks/graph_overhead.py --no-trace-opt

The machine's load average is printed with the results: on a shared machine, absolute times
move with it; the ratios and the per-node trend across sizes are the figures to read.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "chain": [1_000, 10_000, 100_000, 1_000_000],
    "tree": [1_000, 10_000, 100_000],
    "dag": [1_000, 10_000, 100_000],
}
QUICK_SIZES = {shape: [s for s in sizes if s <= 10_000] for shape, sizes in SIZES.items()}
DAG_PARAMETERS = 10


# -- graph builders, written once against two tiny adapters (feedprop or trace-opt) ----------------


def build_chain(n: int, param: Callable[[float], Any]) -> Any:
    """x, x+1, (x+1)+1, ...: n op nodes after one parameter."""
    y = param(0.0)
    for _ in range(n - 1):
        y = y + 1
    return y


def build_tree(n: int, param: Callable[[float], Any]) -> Any:
    """n/2 parameter leaves summed pairwise up to one root (n - 1 nodes in all)."""
    level = [param(float(i)) for i in range(max(n // 2, 1))]
    while len(level) > 1:
        nxt = [level[i] + level[i + 1] for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def build_dag(n: int, param: Callable[[float], Any]) -> Any:
    """A few parameters, then nodes each adding the previous node and a random earlier one."""
    rng = random.Random(n)
    nodes = [param(float(i)) for i in range(DAG_PARAMETERS)]
    for i in range(DAG_PARAMETERS, n):
        nodes.append(nodes[i - 1] + nodes[rng.randrange(i - 1)])
    return nodes[-1]


BUILDERS = {"chain": build_chain, "tree": build_tree, "dag": build_dag}


# -- one measurement ------------------------------------------------------------------------------


def measure(
    shape: str, n: int, param: Callable[[float], Any], backward: Callable[[Any], None], cleanup: Callable[[], None]
) -> dict[str, Any]:
    """Time trace and backward (best of up to 3 runs within ~5 s), then separately their tracemalloc peak."""
    build = BUILDERS[shape]
    best: tuple[float, float] | None = None
    spent = 0.0
    for _ in range(3):
        cleanup()
        gc.collect()
        gc.disable()  # the collector's pauses would be charged to whichever op triggers them
        try:
            t0 = time.perf_counter()
            out = build(n, param)
            t1 = time.perf_counter()
            backward(out)
            t2 = time.perf_counter()
        finally:
            gc.enable()
        del out
        if best is None or (t2 - t0) < sum(best):
            best = (t1 - t0, t2 - t1)
        spent += t2 - t0
        if spent > 5.0:
            break
    assert best is not None
    cleanup()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    out = build(n, param)
    backward(out)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del out
    cleanup()
    gc.collect()
    return {
        "shape": shape,
        "nodes": n,
        "trace_us": best[0] / n * 1e6,
        "backward_us": best[1] / n * 1e6,
        "total_us": sum(best) / n * 1e6,
        "bytes": peak / n,
        "seconds": sum(best),
    }


def feedprop_adapters() -> tuple[Callable[[float], Any], Callable[[Any], None], Callable[[], None]]:
    sys.path.insert(0, str(ROOT / "src"))
    from feedprop.node import Parameter

    params: list[Any] = []

    def param(value: float) -> Any:
        p = Parameter(value)
        params.append(p)
        return p

    def backward(out: Any) -> None:
        out.backward("the output is wrong")

    def cleanup() -> None:
        for p in params:
            p.zero_feedback()
        params.clear()

    return param, backward, cleanup


def trace_opt_adapters() -> tuple[Callable[[float], Any], Callable[[Any], None], Callable[[], None]]:
    from opto.trace import GRAPH, node

    def param(value: float) -> Any:
        return node(value, trainable=True)

    def backward(out: Any) -> None:
        out.backward("the output is wrong", visualize=False)

    def cleanup() -> None:
        GRAPH.clear()

    return param, backward, cleanup


def run_all(which: str, sizes: dict[str, list[int]], give_up_seconds: float) -> list[dict[str, Any]]:
    adapters = feedprop_adapters() if which == "feedprop" else trace_opt_adapters()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    results = []
    for shape, shape_sizes in sizes.items():
        too_slow = False
        previous: dict[str, Any] | None = None
        for n in shape_sizes:
            if too_slow:
                skipped = {"shape": shape, "nodes": n, "skipped": f"projected to take over {give_up_seconds:g} s"}
                results.append(skipped)
                print(json.dumps({"which": which, **skipped}), flush=True)
                continue
            try:
                row = measure(shape, n, *adapters)
            except (RecursionError, MemoryError) as e:
                row = {"shape": shape, "nodes": n, "skipped": f"{type(e).__name__}"}
                too_slow = True
            else:
                # Project the next size (10x larger) from how the per-node cost grew so far; with one
                # size seen, assume it grows 10x too (quadratic), which is what trace-opt shows on chains.
                growth = 10.0 if previous is None else max(1.0, row["total_us"] / previous["total_us"])
                too_slow = which == "trace-opt" and row["seconds"] * 10 * growth > give_up_seconds
                previous = row
            results.append(row)
            print(json.dumps({"which": which, **row}), flush=True)
    return results


# -- the report -----------------------------------------------------------------------------------


def table(ours: list[dict[str, Any]], theirs: dict[tuple[str, int], dict[str, Any]]) -> str:
    header = (
        f"{'shape':<6} {'nodes':>9} | {'trace':>7} {'backward':>8} {'total':>7} {'bytes':>6} |"
        f" {'trace-opt total':>15} {'bytes':>7} | {'ratio':>6}"
    )
    lines = ["feedprop (µs per node, bytes per node) vs trace-opt", header, "-" * len(header)]
    for row in ours:
        other = theirs.get((row["shape"], row["nodes"]))
        if other is None:
            cmp_text, ratio = f"{'not run':>15} {'':>7}", ""
        elif "skipped" in other:
            cmp_text, ratio = f"{'skipped':>15} {'':>7}", ""
        else:
            cmp_text = f"{other['total_us']:>15.1f} {other['bytes']:>7.0f}"
            ratio = f"{other['total_us'] / row['total_us']:>5.0f}x"
        lines.append(
            f"{row['shape']:<6} {row['nodes']:>9,} | {row['trace_us']:>7.2f} {row['backward_us']:>8.2f}"
            f" {row['total_us']:>7.2f} {row['bytes']:>6.0f} | {cmp_text} | {ratio:>6}"
        )
    return "\n".join(lines)


def linearity(ours: list[dict[str, Any]]) -> str:
    out = []
    for shape in SIZES:
        rows = [r for r in ours if r["shape"] == shape and "total_us" in r]
        if len(rows) >= 2:
            first, last = rows[0], rows[-1]
            time_ratio = last["total_us"] / first["total_us"]
            memory_ratio = last["bytes"] / first["bytes"]
            out.append(
                f"{shape}: per-node time x{time_ratio:.2f}, per-node memory x{memory_ratio:.2f} "
                f"from {first['nodes']:,} to {last['nodes']:,} nodes (1.00 = linear growth)"
            )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only 1,000 and 10,000 nodes")
    parser.add_argument("--no-trace-opt", action="store_true", help="measure feedprop only")
    parser.add_argument(
        "--trace-opt-python",
        default=str(ROOT / ".venv-bench" / "bin" / "python"),
        help="interpreter with trace-opt==0.1.3.8 installed (default: .venv-bench)",
    )
    parser.add_argument("--give-up-seconds", type=float, default=60.0, help="skip larger trace-opt sizes after this")
    parser.add_argument("--worker", choices=["feedprop", "trace-opt"], help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = QUICK_SIZES if args.quick else SIZES
    if args.worker:  # a subprocess measuring one library, printing JSON lines
        run_all(args.worker, json.loads(args.sizes) if args.sizes else sizes, args.give_up_seconds)
        return
    load = os.getloadavg()
    machine = f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    print(f"{machine}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    ours = run_all("feedprop", sizes, args.give_up_seconds)
    theirs: dict[tuple[str, int], dict[str, Any]] = {}
    if not args.no_trace_opt:
        if not Path(args.trace_opt_python).exists():
            print(
                f"trace-opt interpreter {args.trace_opt_python} not found: create it with "
                "python -m venv .venv-bench && .venv-bench/bin/pip install trace-opt==0.1.3.8"
            )
        else:
            their_sizes = {shape: [n for n in s if n <= 100_000] for shape, s in sizes.items()}
            proc = subprocess.run(
                [
                    args.trace_opt_python,
                    __file__,
                    "--worker",
                    "trace-opt",
                    "--sizes",
                    json.dumps(their_sizes),
                    "--give-up-seconds",
                    str(args.give_up_seconds),
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            for line in proc.stdout.splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    theirs[(row["shape"], row["nodes"])] = row
            if proc.returncode != 0:
                print(f"trace-opt run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    print()
    print(table(ours, theirs))
    print()
    print(linearity(ours))
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
