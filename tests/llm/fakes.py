"""A scriptable OpenAI-compatible HTTP server on a loopback port, for fault-injection tests."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    """What the fake server does for one chat request."""

    kind: str = "ok"  # ok | status | timeout | drop
    text: str = "ok"
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    tool_calls: list[dict[str, Any]] | None = None  # the reply message's tool_calls, as the server writes them


def ok(text: str = "ok") -> Step:
    return Step("ok", text=text)


def calls(tool_calls: list[dict[str, Any]], text: str = "") -> Step:
    """A reply asking for ``tool_calls`` (entries in the wire form, written as given)."""
    return Step("ok", text=text, tool_calls=tool_calls)


def status(code: int, message: str = "error", headers: dict[str, str] | None = None) -> Step:
    return Step("status", status=code, body={"error": {"message": message, "code": code}}, headers=headers or {})


def timeout(delay: float) -> Step:
    return Step("timeout", delay=delay)


def drop() -> Step:
    return Step("drop")


class FakeOpenAIServer:
    """A loopback HTTP server speaking /v1/chat/completions, replaying a script of steps.

    Requests beyond the script get the last step again. ``requests`` records every chat request body.
    """

    def __init__(self, steps: list[Step] | None = None, models: tuple[str, ...] = ("fake-model",)) -> None:
        self.steps = list(steps or [ok()])
        self.models = models
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, code: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                step = server._next(body)
                if step.kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if step.kind == "timeout":
                    time.sleep(step.delay)
                    step = ok("late")
                if step.kind == "status":
                    self._send(step.status, step.body or {}, step.headers)
                    return
                message: dict[str, Any] = {"role": "assistant", "content": step.text}
                if step.tool_calls is not None:
                    message["tool_calls"] = step.tool_calls
                finish = "tool_calls" if step.tool_calls else "stop"
                self._send(
                    200,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "fake-model"),
                        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _next(self, body: dict[str, Any]) -> Step:
        with self._lock:
            index = len(self.requests)
            self.requests.append(body)
            return self.steps[min(index, len(self.steps) - 1)]

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
