"""Evaluation throughput on Ray for 1, 2, 4 and 8 workers against a latency-bound model endpoint.

The endpoint is a fake OpenAI-compatible server on loopback in this process: every chat call
sleeps ``--latency`` seconds and then echoes the question, like a remote model whose time is
spent generating, not on this machine's CPU. ``--slots`` caps how many calls it serves at once
(0: no cap), to show what happens once the endpoint is saturated.

The workflow (one ``llm_call`` per item, traced) runs as Ray tasks through
``feedprop.training.RayExecutor`` on a new local Ray instance with 8 logical CPUs; ``max_workers``
caps the items in flight, so 1, 2, 4, 8 workers means that many worker processes calling the
endpoint at once. Items per second and the speed-up over one worker are printed, next to the
same evaluation run in threads of this process for comparison. Each figure is the best of
``--repeat`` runs, after a warm-up that starts every worker process (on a busy machine a Ray
worker can take a minute to start, and one task waiting for it would stall a whole evaluation).

    python benchmarks/scale_out.py                        # 32 items, 0.5 s per call, 1/2/4/8 workers
    python benchmarks/scale_out.py --slots 4              # an endpoint that serves 4 calls at a time
    python benchmarks/scale_out.py --items 64 --latency 1.0 --workers 1,2,4,8

Expect near-linear speed-up while the endpoint is not saturated (workers <= slots): the work
is waiting, and waiting parallelises. The machine's load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from feedprop import ops
from feedprop.llm import OpenAICompatible, set_default
from feedprop.module import Module
from feedprop.node import Node, Parameter
from feedprop.training import RayExecutor, evaluate

HERE = Path(__file__).resolve().parent


class Echo(Module):
    """One model call per item: the instruction as system prompt, the question as user message."""

    def __init__(self) -> None:
        self.instruction = Parameter("Repeat the question.", name="instruction")

    def forward(self, question: str) -> Node[Any]:
        return ops.strip(ops.llm_call(self.instruction, question))


def matches(output: Any, target: Any) -> float:
    return float(output == target)


class SlowEndpoint:
    """A loopback OpenAI-compatible endpoint: each call waits ``latency`` s (at most ``slots`` at once), then echoes."""

    def __init__(self, latency: float, slots: int) -> None:
        self.latency = latency
        self.gate = threading.BoundedSemaphore(slots) if slots > 0 else None
        self.calls = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if endpoint.gate is not None:
                    with endpoint.gate:
                        time.sleep(endpoint.latency)
                else:
                    time.sleep(endpoint.latency)
                with endpoint.lock:
                    endpoint.calls += 1
                message = {"role": "assistant", "content": body["messages"][-1]["content"]}
                reply = {
                    "id": "slow",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "slow-echo",
                    "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 64
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def timed(run: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=32, help="items per evaluation")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds each model call takes")
    parser.add_argument("--slots", type=int, default=0, help="calls the endpoint serves at once (0: no cap)")
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts to measure")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per worker count (the best counts)")
    parser.add_argument("--no-threads", action="store_true", help="skip the local-threads comparison")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    # A busy machine may need more than Ray's default waits to start a local instance (its raylet
    # registering, its Python agents coming up).
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "300")
    os.environ.setdefault("RAY_agent_register_timeout_ms", "300000")
    # Ray workers import the workflow class by its module path: this file, as the module "scale_out".
    sys.path.insert(0, str(HERE))
    from scale_out import Echo as Workflow
    from scale_out import matches as guide

    endpoint = SlowEndpoint(args.latency, args.slots)
    spec = {"kind": "openai", "base_url": endpoint.base_url, "model": "slow-echo", "cache": False}
    items = [(f"question {i}", f"question {i}") for i in range(args.items)]
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH", "")]))
    executor = RayExecutor(
        address="local",
        num_cpus=max(counts),
        llm=spec,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
        ray_init={"object_store_memory": 100 * 2**20},
    )
    print(f"endpoint: {args.latency:g} s per call, {'no cap' if not args.slots else f'{args.slots} at once'}")
    print(f"items per evaluation: {args.items}; load average before: {os.getloadavg()[0]:.1f}")
    try:
        started, _ = timed(executor.connect)
        print(f"Ray: local instance with {max(counts)} logical CPUs up in {started:.1f} s")
        # Warm up every worker process (imports, model clients) outside the measurements. Slow calls
        # keep all tasks in flight at once, so Ray must start one worker process per slot; then
        # rounds at full width repeat until none waits for a worker still starting.
        most = max(counts)
        endpoint.latency = max(10.0, args.latency)
        seconds, _ = timed(lambda: evaluate(Workflow(), items[:most], guide, executor=executor, max_workers=most))
        endpoint.latency = args.latency
        ideal = args.items / most * args.latency
        for _round in range(6):
            took, _ = timed(lambda: evaluate(Workflow(), items, guide, executor=executor, max_workers=most))
            seconds += took
            if took <= 2 * ideal:
                break
        print(f"warm-up: {most} worker processes ready in {seconds:.1f} s")
        rows = []
        for k in counts:
            best = math.inf
            for _ in range(args.repeat):
                took, result = timed(lambda k=k: evaluate(Workflow(), items, guide, executor=executor, max_workers=k))
                assert result.score == 1.0 and result.usage["calls"] == args.items, (result.score, result.usage)
                best = min(best, took)
            rows.append((k, best))
    finally:
        executor.close()
    threads: dict[int, float] = {}
    if not args.no_threads:
        set_default(OpenAICompatible(endpoint.base_url, model="slow-echo", cache=False))
        for k in counts:
            threads[k] = min(
                timed(lambda k=k: evaluate(Workflow(), items, guide, max_workers=k))[0] for _ in range(args.repeat)
            )
        set_default(None)
    endpoint.close()

    base = rows[0][1]
    print()
    print(f"{'workers':>7}  {'seconds':>8}  {'items/s':>8}  {'speed-up':>8}  {'ideal':>6}  {'threads items/s':>15}")
    for k, seconds in rows:
        ideal = min(k, args.slots) if args.slots else k
        local = f"{args.items / threads[k]:15.2f}" if k in threads else f"{'-':>15}"
        speed = f"{base / seconds:7.2f}x  {ideal / counts[0]:5.1f}x"
        print(f"{k:7d}  {seconds:8.2f}  {args.items / seconds:8.2f}  {speed}  {local}")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}; endpoint served {endpoint.calls} calls")


if __name__ == "__main__":
    main()
