"""The ``feedprop`` command line.

Subcommands:

- ``feedprop demo``: train a two-stage BBH workflow on the embedded model (see :mod:`feedprop.demo`);
- ``feedprop serve``: run the embedded model as an OpenAI-compatible server on a loopback port
  for other programs (prints the base URL and model name; stops on Ctrl-C or SIGTERM);
- ``feedprop model``: assemble and verify the embedded model's file, and print its path;
- ``feedprop view RUN_DIR``: write the run's page (one self-contained HTML file, see
  :mod:`feedprop.run_page`) and print its path; ``--serve`` also serves it on a loopback port.

Each subcommand is a ``register_<name>(subparsers)`` function that adds its parser and sets
``handler``; :data:`COMMANDS` lists them in the order ``--help`` shows them.

Example:
    >>> main(["model", "--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from feedprop.demo import DemoConfig, run_demo
from feedprop.errors import FeedpropError
from feedprop.llm.local import DEFAULT_LOCAL_MODEL, LocalModel
from feedprop.llm.model_file import MODELS, ensure_model_file, sha256_file
from feedprop.run_page import serve_run_page, write_run_page

__all__ = ["COMMANDS", "build_parser", "main"]

Subparsers = Any  # argparse's _SubParsersAction is private; only add_parser is used


def _serve(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"feedprop serve: loading {args.model_path or args.model} ...", file=sys.stderr, flush=True)
        llm = LocalModel(
            args.model if args.model_path is None else None,
            model_path=args.model_path,
            n_parallel=args.n_parallel,
            n_ctx=args.n_ctx,
            threads=args.threads,
            host=args.host,
            port=args.port,
            cache=False,
        )
        try:
            print(f"base_url: {llm.base_url}", flush=True)
            print(f"model: {llm.model}", flush=True)
            print(
                f"Use it with FEEDPROP_BASE_URL={llm.base_url} (or any OpenAI client). Ctrl-C stops the server.",
                file=sys.stderr,
                flush=True,
            )
            while not stop.wait(0.5):
                pass
        finally:
            llm.close()
        print("feedprop serve: stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register_serve(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the embedded model over an OpenAI-compatible HTTP API",
        description="Run the embedded model as an OpenAI-compatible server until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--model", default=DEFAULT_LOCAL_MODEL, choices=sorted(MODELS), help="embedded model")
    parser.add_argument("--model-path", default=None, help="serve this GGUF file instead of an embedded model")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--n-parallel", type=int, default=4, help="parallel decoding slots (default: 4)")
    parser.add_argument("--n-ctx", type=int, default=8192, help="context tokens per slot (default: 8192)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.set_defaults(handler=_serve)


def _model(args: argparse.Namespace) -> int:
    path = ensure_model_file(args.name)
    if args.verify:
        actual = sha256_file(path)  # a fresh hash, whatever this process has seen before
        expected = MODELS[args.name].sha256
        if actual != expected:
            print(f"sha256 mismatch for {path}: {actual} != {expected}", file=sys.stderr)
            return 1
        print(f"sha256 {actual} OK", file=sys.stderr)
    print(path)
    return 0


def register_model(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "model",
        help="assemble and verify the embedded model file; print its path",
        description="Assemble the embedded model from its installed parts (once), verify it, print its path.",
    )
    parser.add_argument("--name", default=DEFAULT_LOCAL_MODEL, choices=sorted(MODELS), help="which model")
    parser.add_argument("--verify", action="store_true", help="hash the file again and report the result")
    parser.set_defaults(handler=_model)


def _demo(args: argparse.Namespace) -> int:
    config = DemoConfig(
        task=args.task,
        n_train=args.train,
        n_val=args.val,
        n_test=args.test,
        strategy=args.strategy,
        steps=args.steps,
        batch_size=args.batch_size,
        samples=args.samples,
        n_candidates=args.candidates,
        minutes=args.minutes,
        run_dir=args.run_dir,
    )
    run_demo(config, progress=not args.no_progress)
    return 0


def register_demo(subparsers: Subparsers) -> None:
    defaults = DemoConfig()
    parser = subparsers.add_parser(
        "demo",
        help="train a two-stage BBH workflow on the embedded model and show before/after accuracy",
        description="Train an instruction, an answer-extraction function and the student's weights end to end "
        "on BBH object_counting.",
    )
    parser.add_argument("--task", default=defaults.task, help="BBH task (default: %(default)s)")
    parser.add_argument("--train", type=int, default=defaults.n_train, help="training examples (%(default)s)")
    parser.add_argument("--val", type=int, default=defaults.n_val, help="validation examples (%(default)s)")
    parser.add_argument("--test", type=int, default=defaults.n_test, help="held-out test examples (%(default)s)")
    parser.add_argument(
        "--strategy", default=defaults.strategy, help="phases: p prompts and code, w weights (%(default)r)"
    )
    parser.add_argument(
        "--steps", type=int, default=defaults.steps, help="optimizer steps per prompt phase (%(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="minibatch (%(default)s)")
    parser.add_argument(
        "--candidates", type=int, default=defaults.n_candidates, help="proposals per step (%(default)s)"
    )
    parser.add_argument(
        "--samples", type=int, default=defaults.samples, help="answers per training question in a w phase (%(default)s)"
    )
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="time limit of training (%(default)s)")
    parser.add_argument("--run-dir", default=defaults.run_dir, help="where the run is written (%(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_demo)


def _view(args: argparse.Namespace) -> int:
    page = write_run_page(args.run_dir, args.out)
    print(page)
    if not args.serve:
        return 0
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = serve_run_page(args.run_dir, port=args.port)
    try:
        print(f"serving http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def register_view(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "view",
        help="write a run's page (curve, steps, candidates, items, usage, graph) as one HTML file",
        description="Write one self-contained HTML page for a run directory (of fp.train, fp.joint.alternate or "
        "the demo), readable offline, and print its path.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's directory (the checkpoint= of the run)")
    parser.add_argument("--out", default=None, help="where to write the page (default: RUN_DIR/run.html)")
    parser.add_argument("--serve", action="store_true", help="also serve the page on 127.0.0.1 until Ctrl-C")
    parser.add_argument("--port", type=int, default=0, help="port for --serve (default: a free one)")
    parser.set_defaults(handler=_view)


#: Subcommand registrars, in help order.
COMMANDS: list[Callable[[Subparsers], None]] = [register_demo, register_serve, register_model, register_view]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedprop", description="Train AI workflows end to end: trace Python, propagate feedback, optimize."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``feedprop`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status: int = args.handler(args)
    except FeedpropError as exc:
        print(f"feedprop {args.command}: {exc}", file=sys.stderr)
        return 1
    return status
