"""Workflows, model handlers and guides for the distributed tests.

Ray workers import this module by name (the tests put this directory on the workers'
PYTHONPATH), so everything here is defined at module level. Every model reply is a pure
function of the prompt, so a run on a cluster and a run in threads make the same calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from feedprop import ops
from feedprop.bundle import bundle
from feedprop.llm import MockLLM
from feedprop.module import Module
from feedprop.node import Feedback, Node, Parameter
from feedprop.sandbox import InProcessExecutor

_IN_PROCESS = InProcessExecutor()


def answer(messages: Any, **params: Any) -> str:
    """The workflow model: echoes the question padded with spaces; 'boom' for questions with a 7."""
    question = messages[-1]["content"]
    if "7" in question:
        return "boom " + question
    return f"  {question}  "


def answer_slowly(messages: Any, **params: Any) -> str:
    """:func:`answer` after 0.2 s, like a remote model (so several items are in flight at once)."""
    time.sleep(0.2)
    return answer(messages, **params)


def optimizer_llm() -> MockLLM:
    """The optimizer's model: suggests a suffix chosen by a hash of the whole prompt it is shown.

    A different prompt (one feedback entry more or less, another order) leads to another
    suffix, so equal final states mean the optimizer saw equal prompts.
    """
    choices = ["!", "?", "!!", ".", "!?"]

    def handler(messages: Any, **params: Any) -> str:
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
        choice = choices[int.from_bytes(digest[:8], "big") % len(choices)]
        return json.dumps({"reasoning": "hashed", "suggestion": {"suffix": choice}})

    return MockLLM(handler)


class Pipeline(Module):
    """llm_call -> a trainable bundled method (which fails on 'boom') -> + a held constant node + suffix."""

    def __init__(self) -> None:
        self.instruction = Parameter("Repeat the question.", name="instruction", description="the system prompt")
        self.suffix = Parameter("?", name="suffix", description="appended to every answer")
        self.separator = Node("", name="separator")

    @bundle(trainable=True, executor=_IN_PROCESS)
    def clean(self, text: str) -> str:
        """Strip the model's reply."""
        if text.startswith("boom"):
            raise ValueError("cannot clean " + text)
        return text.strip()

    def forward(self, question: str) -> Node[Any]:
        reply = ops.llm_call(self.instruction, question)
        return self.clean(reply) + self.separator + self.suffix


class AsyncPipeline(Pipeline):
    """:class:`Pipeline` with ``async def forward``, asking the model with ``ops.allm_call``."""

    async def forward(self, question: str) -> Node[Any]:  # type: ignore[override]
        reply = await ops.allm_call(self.instruction, question)
        return self.clean(reply) + self.separator + self.suffix


def exact(output: Any, target: Any) -> Feedback:
    """Score 1 for an exact match, else 0 with the expected answer in the text."""
    if output == target:
        return Feedback("Correct.", score=1.0)
    return Feedback(f"Wrong: expected {target!r}, got {output!r}.", score=0.0)


def questions(n: int, end: str = "!") -> list[tuple[str, str]]:
    return [(f"q{i}", f"q{i}{end}") for i in range(n)]


class Calls(Module):
    """Makes ``calls`` model calls per item (for budget tests), then appends the suffix."""

    def __init__(self, calls: int = 3) -> None:
        self.calls = calls
        self.suffix = Parameter("?", name="suffix")

    def forward(self, question: str) -> Node[Any]:
        text: Any = question
        for _ in range(self.calls):
            text = ops.llm_call(None, text)
        return ops.strip(text) + self.suffix


class KillOnce(Module):
    """Blocks the first attempt at item 'victim' until the test kills its worker; later attempts run normally.

    The directory in ``FEEDPROP_TEST_KILL_DIR`` (set for the workers) receives ``pid`` (the worker
    running the first attempt); the test writes ``killed`` before it kills that process; the
    attempt that then runs through writes its own pid to ``retried``.
    """

    def __init__(self) -> None:
        self.suffix = Parameter("?", name="suffix")

    def forward(self, question: str) -> Node[Any]:
        folder = Path(os.environ["FEEDPROP_TEST_KILL_DIR"])
        if question == "victim":
            if not (folder / "killed").exists():
                (folder / "pid.tmp").write_text(str(os.getpid()))
                (folder / "pid.tmp").rename(folder / "pid")
                time.sleep(120)  # the test kills this process long before
            (folder / "retried").write_text(str(os.getpid()))
        reply = ops.llm_call(None, question)
        return ops.strip(reply) + self.suffix


class EchoEndpoint:
    """An OpenAI-compatible chat endpoint on loopback that answers with :func:`answer` after ``delay`` seconds.

    ``calls`` counts the chat requests it served.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                time.sleep(endpoint.delay)
                with endpoint._lock:
                    endpoint.calls += 1
                text = answer(body["messages"])
                message = {"role": "assistant", "content": text}
                reply = {
                    "id": "echo",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "echo"),
                    "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broken_guide(output: Any, target: Any) -> Feedback:
    """A guide with a bug: it raises on every item."""
    raise KeyError("no score for " + str(output))
