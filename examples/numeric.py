"""Tune numbers with an LLM optimizer, side by side with torch.optim.Adam.

The program below mixes three numbers through ``*``, ``+``, ``abs`` and a square; its output
must reach a target. OptoPrime and Hindsight see the traced computation and only the feedback
"the output should be larger/smaller by N"; Adam (lr 0.1) sees the exact gradient of the
squared error. All three start from the same values and take the same number of steps.

Run it (the default model is the embedded one; ``FEEDPROP_BASE_URL`` points it elsewhere)::

    .venv/bin/python examples/numeric.py --steps 5

Needs torch (``pip install 'feedprop[bench]'``).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from feedprop.llm import default, track_usage
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import Hindsight, OptoPrime

START = {"a": 1.0, "b": -2.0, "c": 0.5}
TARGET = 13.0  # reached, for example, at a = 3, b = 1, c = 4


def program(a: Any, b: Any, c: Any, three: Any) -> Any:
    """``(a*b + 3)^2 / 4 + |c|`` written once, run on traced nodes and on torch tensors alike."""
    inner = a * b + three
    return inner * inner / 4 + abs(c)


def run_llm(name: str, steps: int) -> None:
    params = {k: Parameter(v, name=k) for k, v in START.items()}
    three = Node(3.0, name="three")
    opt_class = OptoPrime if name == "OptoPrime" else Hindsight
    opt = opt_class(params.values(), max_tokens=300)
    print(f"\n{name}")
    with track_usage() as usage:
        for step in range(steps):
            opt.zero_feedback()
            out = program(params["a"], params["b"], params["c"], three)
            error = TARGET - out.data
            values = ", ".join(f"{k}={p.data:g}" for k, p in params.items())
            print(f"  step {step}: {values}  output {out.data:.4g}  error {abs(error):.4g}")
            if abs(error) < 1e-6:
                break
            direction = "larger" if error > 0 else "smaller"
            out.backward(Feedback(f"The output should be {direction} by {abs(error):.4g}.", score=-abs(error)))
            opt.step()
    final = program(*(p.data for p in params.values()), 3.0)
    print(f"  final error {abs(TARGET - final):.4g} after {usage.calls} LLM calls")


def run_adam(steps: int) -> None:
    xs = {k: torch.tensor(v, requires_grad=True) for k, v in START.items()}
    opt = torch.optim.Adam(xs.values(), lr=0.1)
    print("\nAdam (lr 0.1)")
    for step in range(steps):
        opt.zero_grad()
        out = program(xs["a"], xs["b"], xs["c"], 3.0)
        values = ", ".join(f"{k}={float(x.detach()):.4g}" for k, x in xs.items())
        value = float(out.detach())
        print(f"  step {step}: {values}  output {value:.4g}  error {abs(TARGET - value):.4g}")
        ((out - TARGET) ** 2).backward()
        opt.step()
    final = program(*(float(x.detach()) for x in xs.values()), 3.0)
    print(f"  final error {abs(TARGET - final):.4g}")


def main() -> None:
    parser = argparse.ArgumentParser(description="LLM optimizers vs Adam on one numeric program")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    print(f"target {TARGET}, start {START}, model {getattr(default(), 'model', '?')}")
    run_adam(args.steps)
    for name in ("OptoPrime", "Hindsight"):
        run_llm(name, args.steps)


if __name__ == "__main__":
    main()
