"""An OpenAI-compatible endpoint on loopback, a proxy in front of it that injects faults, and a training
run that talks to both through :class:`~feedprop.llm.OpenAICompatible`.

* :class:`ScriptedEndpoint` answers ``/v1/chat/completions`` from a deterministic Python handler
  (a MockLLM-style function of the request), so two runs asking the same things get the same answers.
* :class:`FaultyProxy` forwards every request to it, but first draws a fault for the request:
  latency, a reply slower than the client's timeout, HTTP 500/503, 429 with ``Retry-After`` (in
  seconds) or ``retry-after-ms``, a body cut off mid-stream, a complete body that is not JSON, or a
  connection dropped before or after the endpoint did the work. The draw is a pure function of the
  seed, the request body and how often that body was seen, and no body fails more than
  ``max_consecutive`` times in a row, so a client that retries always gets through.
* :func:`run_training` trains a one-prompt workflow whose every model call — the workflow's and the
  optimizer's — goes through a given base URL, and returns what must not depend on the faults.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from feedprop import ops
from feedprop.llm import OpenAICompatible, RetryPolicy
from feedprop.module import Module
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import Optimizer, OptoPrime
from feedprop.training import train

Handler = Callable[[str, list[dict[str, Any]], dict[str, Any]], str]


def _serve(handler_class: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, threading.Thread]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return httpd, thread


class _Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

    def send(self, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


class ScriptedEndpoint:
    """``/v1/chat/completions`` answered by ``handler(model, messages, params) -> text``.

    ``/v1/models`` lists ``models``; ``calls`` counts the chat requests answered.
    """

    def __init__(self, handler: Handler, models: tuple[str, ...] = ("workflow", "optimizer")) -> None:
        self.handler = handler
        self.models = models
        self.calls = 0
        self._lock = threading.Lock()
        endpoint = self

        class Serve(_Base):
            def do_GET(self) -> None:
                listing = {"object": "list", "data": [{"id": m, "object": "model"} for m in endpoint.models]}
                self.send(200, json.dumps(listing).encode())

            def do_POST(self) -> None:
                request = json.loads(self.body() or b"{}")
                messages = request.pop("messages", [])
                model = request.pop("model", "")
                with endpoint._lock:
                    endpoint.calls += 1
                text = endpoint.handler(model, messages, request)
                prompt = sum(len(m.get("content") or "") for m in messages)
                reply = {
                    "id": "chatcmpl-scripted",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                    ],
                    "usage": {"prompt_tokens": prompt // 4, "completion_tokens": len(text) // 4 + 1},
                }
                self.send(200, json.dumps(reply).encode())

        self.httpd, self._thread = _serve(Serve)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


#: Every fault the proxy injects.
FAULTS = (
    "latency",  # a slow answer, within the client's timeout
    "hang",  # an answer slower than the client's timeout
    "500",
    "503",
    "429",  # Retry-After in seconds
    "429-ms",  # retry-after-ms
    "truncated",  # headers promise more bytes than are sent, then the connection closes
    "not-json",  # a complete HTTP reply whose body is cut JSON
    "drop",  # the connection closes before the request reaches the endpoint
    "drop-after",  # the endpoint did the work, then the connection closes without an answer
)


@dataclass
class FaultPlan:
    """Which requests fail: a pure function of ``seed``, the request body and how often it was seen.

    Which fault a failing request gets cycles through ``kinds``, so a run with ``len(kinds)``
    faults has injected each of them.
    """

    seed: int = 0
    rate: float = 0.35
    max_consecutive: int = 2
    kinds: tuple[str, ...] = FAULTS
    latency: float = 0.15
    hang: float = 1.5
    retry_after_seconds: int = 1
    retry_after_ms: int = 40

    def fails(self, body: bytes, seen: int) -> bool:
        if seen >= self.max_consecutive:
            return False
        digest = hashlib.sha256(b"%d|%d|" % (self.seed, seen) + body).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < self.rate


class FaultyProxy:
    """A loopback HTTP proxy to ``upstream`` that injects the faults of ``plan``; ``injected`` counts them."""

    def __init__(self, upstream: str, plan: FaultPlan, outage_after: int | None = None) -> None:
        self.plan = plan
        #: After this many requests every request gets a 503: an endpoint that went down for good.
        self.outage_after = outage_after
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.faults = 0
        self._seen: Counter[bytes] = Counter()
        self._lock = threading.Lock()
        parts = urlsplit(upstream)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        proxy = self

        class Serve(_Base):
            def forward(self, method: str, body: bytes) -> tuple[int, bytes]:
                conn = http.client.HTTPConnection(host, port, timeout=30)
                try:
                    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
                    conn.request(method, self.path, body=body if method == "POST" else None, headers=headers)
                    answer = conn.getresponse()
                    return answer.status, answer.read()
                finally:
                    conn.close()

            def drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def handle_request(self, method: str) -> None:
                body = self.body() if method == "POST" else b""
                fault = proxy.draw(method, body)
                try:
                    self.serve_with(fault, method, body)
                except OSError:  # the client gave up first (after a hang): nothing left to answer
                    self.close_connection = True

            def serve_with(self, fault: str | None, method: str, body: bytes) -> None:
                plan = proxy.plan
                if fault == "drop":
                    self.drop()
                    return
                if fault in ("500", "503"):
                    self.send(
                        int(fault), b'{"error": {"message": "injected server error", "code": %s}}' % fault.encode()
                    )
                    return
                if fault == "429":
                    error = b'{"error": {"message": "injected rate limit"}}'
                    self.send(429, error, {"Retry-After": str(plan.retry_after_seconds)})
                    return
                if fault == "429-ms":
                    error = b'{"error": {"message": "injected rate limit"}}'
                    self.send(429, error, {"retry-after-ms": str(plan.retry_after_ms)})
                    return
                if fault == "latency":
                    time.sleep(plan.latency)
                elif fault == "hang":
                    time.sleep(plan.hang)
                status, payload = self.forward(method, body)
                if fault == "drop-after":
                    self.drop()
                elif fault == "truncated":
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.drop()
                elif fault == "not-json":
                    self.send(status, payload[: len(payload) // 2])
                else:
                    self.send(status, payload)

            def do_GET(self) -> None:
                self.handle_request("GET")

            def do_POST(self) -> None:
                self.handle_request("POST")

        self.httpd, self._thread = _serve(Serve)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def draw(self, method: str, body: bytes) -> str | None:
        key = method.encode() + b" " + body
        with self._lock:
            seen = self._seen[key]
            self._seen[key] += 1
            self.requests += 1
            if self.outage_after is not None and self.requests > self.outage_after:
                self.injected["outage"] += 1
                return "503"
            if not self.plan.fails(key, seen):
                return None
            fault = self.plan.kinds[self.faults % len(self.plan.kinds)]
            self.faults += 1
            self.injected[fault] += 1
            return fault

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- the training run ---------------------------------------------------------------------------------

#: Instructions the scripted optimizer proposes; the endpoint's "workflow" model follows their keywords.
INSTRUCTIONS = (
    "Repeat the text.",
    "Repeat the text in upper case.",
    "Repeat the text and end with an exclamation mark.",
    "Repeat the text in upper case and end with an exclamation mark.",
    "Reverse the text.",
    "Reverse the text in upper case.",
)


def workflow_answer(instruction: str, text: str) -> str:
    """What the scripted workflow model writes: it follows the instruction's keywords literally."""
    lowered = instruction.lower()
    out = text[::-1] if "reverse" in lowered else text
    if "upper case" in lowered:
        out = out.upper()
    if "exclamation" in lowered:
        out += "!"
    return out


def scripted_handler(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """The endpoint's two models. ``workflow`` follows its system prompt. ``optimizer`` suggests the
    instruction that fixes the problems its prompt's feedback names, except that one prompt in three
    (by a hash of the whole prompt) gets an arbitrary instruction: it climbs, with detours."""
    if model == "workflow":
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        return workflow_answer(system, messages[-1]["content"])
    prompt = json.dumps(messages, sort_keys=True)
    digest = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    if digest % 3 == 0:
        choice = INSTRUCTIONS[digest // 3 % len(INSTRUCTIONS)]
    else:
        upper, exclaim = "use upper case" in prompt, "end with '!'" in prompt
        # One fix at a time: upper case first, then the exclamation mark.
        choice = INSTRUCTIONS[1] if upper and exclaim else INSTRUCTIONS[3] if upper or exclaim else INSTRUCTIONS[0]
    return json.dumps({"reasoning": "follow the feedback", "suggestion": {"instruction": choice}})


class Shout(Module):
    """One prompt, one model call per input."""

    def __init__(self, llm: OpenAICompatible) -> None:
        self.instruction = Parameter(INSTRUCTIONS[0], name="instruction", description="the system prompt")
        self.llm = llm

    def forward(self, text: str) -> Node[Any]:
        return ops.llm_call(self.instruction, text, llm=self.llm, temperature=0)


def shout_guide(output: Any, target: Any) -> Feedback:
    """The input's words in order, or nothing; then half a point for upper case and half for the final '!'."""
    if output.rstrip("!").upper() != target.rstrip("!"):
        return Feedback("Wrong: the answer must repeat the input's words in order.", 0.0)
    problems = [p for p, ok in (("use upper case", output.isupper()), ("end with '!'", output.endswith("!"))) if not ok]
    return Feedback("Correct." if not problems else "Wrong: " + " and ".join(problems) + ".", 1.0 - 0.5 * len(problems))


WORDS = ("apple", "river", "stone", "cloud", "ember", "maple", "orbit", "pearl", "tiger", "violet", "willow", "zephyr")
TRAIN = [(f"{w} {v}", f"{w} {v}".upper() + "!") for w, v in zip(WORDS, WORDS[3:] + WORDS[:3], strict=True)]
VAL = [(w, w.upper() + "!") for w in WORDS[:6]]


def client(base_url: str, model: str, timeout: float) -> OpenAICompatible:
    """An endpoint client with no cache (every call must reach the proxy) and quick, patient retries."""
    retry = RetryPolicy(max_retries=6, initial_delay=0.02, max_delay=0.2, jitter=0.5, max_retry_after=2.0)
    return OpenAICompatible(base_url, model=model, cache=False, timeout=timeout, retry=retry, max_concurrency=4)


def without_seconds(value: Any) -> Any:
    """``value`` with every ``seconds`` entry dropped, at any depth (wall-clock time is all a fault may change)."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    return value


def run_training(
    base_url: str,
    *,
    epochs: int = 1,
    timeout: float = 2.0,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    optimizer: type[Optimizer] = OptoPrime,
) -> dict[str, Any]:
    """Train :class:`Shout` with every model call through ``base_url``; return what must not depend on faults."""
    workflow, thinker = client(base_url, "workflow", timeout), client(base_url, "optimizer", timeout)
    try:
        model = Shout(workflow)
        opt = optimizer(model.parameters(), llm=thinker)
        result = train(
            model,
            TRAIN,
            shout_guide,
            opt,
            val_set=VAL,
            batch_size=3,
            epochs=epochs,
            seed=3,
            max_workers=4,
            checkpoint=checkpoint,
            resume=resume,
            progress=False,
            plot=False,
        )
    finally:
        workflow.close()
        thinker.close()
    history = [
        {k: v for k, v in entry.items() if k not in ("seconds",)} for entry in result.history
    ]  # wall-clock time is the only thing faults may change
    return {
        "best_state": result.best_state,
        "final_state": model.state_dict(),
        "val_before": result.val_before,
        "val_after": result.val_after,
        "history": history,
        "scores": [(h["train_score"], h["val_score"], h["accepted"]) for h in result.history],
        "usage": without_seconds(result.usage),
        "optimizer": opt.state_dict(),
    }
