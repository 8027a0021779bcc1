"""Generation throughput of the embedded model: sequential requests vs four in parallel.

Each request asks for exactly ``--max-tokens`` tokens (``ignore_eos``), so both runs generate the
same amount of text. Prints tokens per second for each run and their ratio.

    .venv/bin/python benchmarks/llm_throughput.py [--model qwen2.5-coder-1.5b] [--requests 4] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import time

from feedprop.llm import LocalModel, thread_map, track_usage
from feedprop.llm.model_file import MODELS

PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome, with a docstring.",
    "Explain in a few sentences what a hash table is and when to use one.",
    "Write a Python class for a stack with push, pop and peek methods.",
    "Describe the difference between a list and a tuple in Python.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Explain what recursion is, with a short example.",
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Explain what a race condition is and how a lock prevents it.",
]


def run(llm: LocalModel, prompts: list[str], max_tokens: int, workers: int) -> tuple[int, float]:
    def one(prompt: str) -> int:
        reply = llm.complete(
            [{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=max_tokens,
            ignore_eos=True,
            cache=False,
        )
        return reply.usage.completion_tokens

    with track_usage() as usage:
        start = time.perf_counter()
        thread_map(one, prompts, max_workers=workers)
        elapsed = time.perf_counter() - start
    return usage.completion_tokens, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b", choices=sorted(MODELS))
    parser.add_argument("--requests", type=int, default=4, help="requests per run")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--parallel", type=int, default=4, help="slots and workers of the parallel run")
    args = parser.parse_args()

    prompts = (PROMPTS * (args.requests // len(PROMPTS) + 1))[: args.requests]
    with LocalModel(args.model, n_parallel=args.parallel, cache=False) as llm:
        run(llm, prompts[:1], 8, 1)  # warm-up: page the weights in
        seq_tokens, seq_seconds = run(llm, prompts, args.max_tokens, workers=1)
        par_tokens, par_seconds = run(llm, prompts, args.max_tokens, workers=args.parallel)
    seq_rate = seq_tokens / seq_seconds
    par_rate = par_tokens / par_seconds
    print(f"model: {args.model}, {args.requests} requests x {args.max_tokens} tokens")
    print(f"sequential:        {seq_tokens:5d} tokens in {seq_seconds:6.1f} s = {seq_rate:6.1f} tokens/s")
    print(f"{args.parallel} in parallel:     {par_tokens:5d} tokens in {par_seconds:6.1f} s = {par_rate:6.1f} tokens/s")
    print(f"parallel / sequential: {par_rate / seq_rate:.2f}x")


if __name__ == "__main__":
    main()
