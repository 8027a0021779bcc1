"""A counting HTTP proxy on loopback, in front of an OpenAI-compatible model server.

Every system under comparison reaches the model through this proxy, on one of two ports: the
*student* port (the workflow being trained answering questions) and the *optimizer* port
(everything the optimizer asks: proposals, textual gradients, instruction drafts, teacher
demonstrations). The proxy counts calls and the prompt and completion tokens the server reports
for each port, so every system is measured by the same counter, whatever its own bookkeeping.

Each role may have its own upstream server (the 0.5B student and the 1.5B optimizer are two
servers). The proxy keeps a *phase* (``"train"`` or ``"test"``, set by the harness or, from a
worker, with ``POST /_bench/phase``) and counts every call under the phase it was made in: the
budget is the training phase's tokens of both roles.

It also applies the protocol's settings the same way to every system:

- a per-role cap on ``max_tokens`` (a request asking for more, or not saying, gets the cap);
- per-role request defaults (the student's fixed ``seed`` where a system sets none), and
  per-phase settings (in the test phase the seed and ``cache_prompt: false``, so llama.cpp
  computes each reply from scratch);
- optionally, a hard budget on the optimizer port: once its calls (started) or tokens reach the
  limit, further optimizer requests are refused with HTTP 400 and a message saying why.

``GET /_bench/usage`` on either port returns the counters as JSON, so a worker in another process
can check the budget between steps.

Example:
    >>> proxy = CountingProxy("http://127.0.0.1:9/v1", caps={"student": 512, "optimizer": 1024})
    >>> proxy.start()
    >>> proxy.url("student").startswith("http://127.0.0.1:")
    True
    >>> proxy.usage()["optimizer"]["calls"], proxy.phase
    (0, 'train')
    >>> proxy.close()
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["PHASES", "ROLES", "CountingProxy", "Limit", "fetch_usage", "set_phase"]

ROLES = ("student", "optimizer")
PHASES = ("train", "test")
USAGE_PATH = "/_bench/usage"
PHASE_PATH = "/_bench/phase"
_COUNTERS = ("calls", "failed", "refused", "prompt_tokens", "completion_tokens", "seconds", "estimated")


class Limit:
    """A hard budget for one role: ``calls`` started and ``tokens`` used (``None``: unlimited)."""

    def __init__(self, calls: int | None = None, tokens: int | None = None) -> None:
        self.calls = calls
        self.tokens = tokens

    def reason(self, started: int, tokens: int) -> str | None:
        """Why a new call may not start, or ``None`` when it may."""
        if self.calls is not None and started >= self.calls:
            return f"optimizer budget exhausted: calls ({started}/{self.calls})"
        if self.tokens is not None and tokens >= self.tokens:
            return f"optimizer budget exhausted: tokens ({tokens}/{self.tokens})"
        return None

    def to_dict(self) -> dict[str, int | None]:
        return {"calls": self.calls, "tokens": self.tokens}


class _Counter:
    def __init__(self) -> None:
        self.values: dict[str, float] = {name: 0 for name in _COUNTERS}
        self.values["seconds"] = 0.0
        self.started = 0

    @property
    def tokens(self) -> int:
        return int(self.values["prompt_tokens"] + self.values["completion_tokens"])

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: (round(v, 3) if k == "seconds" else int(v)) for k, v in self.values.items()}
        out["tokens"] = self.tokens
        out["started"] = self.started
        return out


def _usage_of(body: bytes) -> tuple[int, int, bool]:
    """(prompt, completion, estimated) tokens of a chat completion response body."""
    try:
        data = json.loads(body)
    except ValueError:
        return 0, 0, True
    usage = data.get("usage") if isinstance(data, dict) else None
    if isinstance(usage, dict) and "prompt_tokens" in usage:
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), False
    # No usage reported: estimate four characters per token from the reply's text.
    text = ""
    for choice in (data.get("choices") or []) if isinstance(data, dict) else []:
        message = choice.get("message") or {}
        text += str(message.get("content") or "")
    return 0, max(1, len(text) // 4), True


class CountingProxy:
    """Two loopback ports (student, optimizer) forwarding to ``upstream`` and counting usage.

    ``upstream`` is the server's base URL including ``/v1``, or a mapping role -> base URL (the
    same path prefix for each). ``caps`` maps a role to its ``max_tokens`` cap; ``params`` a role
    to request fields set on its requests that do not set them; ``phase_params`` a phase to a role
    to fields set (overriding the request's) in that phase. :meth:`set_limit` arms a hard budget
    for a role.
    """

    def __init__(
        self,
        upstream: str | dict[str, str],
        *,
        caps: dict[str, int] | None = None,
        params: dict[str, dict[str, Any]] | None = None,
        phase_params: dict[str, dict[str, dict[str, Any]]] | None = None,
        timeout: float = 3600.0,
    ) -> None:
        upstreams = dict.fromkeys(ROLES, upstream) if isinstance(upstream, str) else dict(upstream)
        self._targets: dict[str, tuple[str, int]] = {}
        prefixes = set()
        for role in ROLES:
            url = upstreams[role].rstrip("/")
            parsed = urllib.parse.urlsplit(url)
            if parsed.scheme != "http" or not parsed.hostname:
                raise ValueError(f"upstream must be an http:// base URL such as http://127.0.0.1:8080/v1, got {url!r}")
            self._targets[role] = (parsed.hostname, parsed.port or 80)
            prefixes.add(parsed.path)
        if len(prefixes) != 1:
            raise ValueError(f"the upstreams must share one path prefix (such as /v1), got {sorted(prefixes)}")
        self.upstream = upstreams["student"].rstrip("/")
        self.upstreams = {role: upstreams[role].rstrip("/") for role in ROLES}
        self._prefix = prefixes.pop()  # e.g. "/v1"
        self.caps = dict(caps or {})
        self.params = {role: dict(v) for role, v in (params or {}).items()}
        self.phase_params = {
            phase: {r: dict(v) for r, v in roles.items()} for phase, roles in (phase_params or {}).items()
        }
        self.phase = "train"
        self._by_phase: dict[str, dict[str, _Counter]] = {}
        self.timeout = timeout
        self.limits: dict[str, Limit] = {}
        self._lock = threading.Lock()
        self._counters = {role: _Counter() for role in ROLES}
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._threads: list[threading.Thread] = []
        self.log: list[dict[str, Any]] = []

    # -- lifetime ----------------------------------------------------------------------------

    def start(self) -> None:
        for role in ROLES:
            server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(role))
            server.daemon_threads = True
            self._servers[role] = server
            thread = threading.Thread(target=server.serve_forever, name=f"proxy-{role}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> CountingProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what callers use --------------------------------------------------------------------

    def url(self, role: str) -> str:
        """Base URL (with ``/v1``) a client of ``role`` should use."""
        return f"http://127.0.0.1:{self._servers[role].server_port}{self._prefix}"

    def usage_url(self) -> str:
        return f"http://127.0.0.1:{self._servers['optimizer'].server_port}{USAGE_PATH}"

    def usage(self) -> dict[str, Any]:
        """Counters per role over the whole run, and under ``"phases"`` per phase and role."""
        with self._lock:
            out: dict[str, Any] = {role: counter.snapshot() for role, counter in self._counters.items()}
            out["phases"] = {
                phase: {role: counters[role].snapshot() for role in ROLES} for phase, counters in self._by_phase.items()
            }
            out["phase"] = self.phase
            return out

    def set_phase(self, phase: str) -> None:
        """Count the calls from now on under ``phase`` (one of :data:`PHASES`)."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        with self._lock:
            self.phase = phase

    def set_limit(self, role: str, limit: Limit | None) -> None:
        with self._lock:
            if limit is None:
                self.limits.pop(role, None)
            else:
                self.limits[role] = limit

    # -- forwarding ----------------------------------------------------------------------------

    def _admit(self, role: str) -> str | None:
        """Reserve a call for ``role``; the refusal reason when its budget is spent."""
        with self._lock:
            counter = self._counters[role]
            limit = self.limits.get(role)
            reason = limit.reason(counter.started, counter.tokens) if limit else None
            if reason:
                counter.values["refused"] += 1
                return reason
            counter.started += 1
            return None

    def _record(self, role: str, phase: str, status: int, body: bytes, seconds: float) -> None:
        with self._lock:
            by_phase = self._by_phase.setdefault(phase, {r: _Counter() for r in ROLES})[role]
            by_phase.started += 1
            entry: dict[str, Any] = {
                "role": role,
                "phase": phase,
                "status": status,
                "seconds": round(seconds, 3),
                "t": time.time(),
            }
            prompt, completion, estimated = _usage_of(body) if status == 200 else (0, 0, False)
            if status == 200:
                entry.update(prompt_tokens=prompt, completion_tokens=completion)
            for counter in (self._counters[role], by_phase):
                if status == 200:
                    counter.values["calls"] += 1
                    counter.values["prompt_tokens"] += prompt
                    counter.values["completion_tokens"] += completion
                    counter.values["estimated"] += int(estimated)
                else:
                    counter.values["failed"] += 1
                counter.values["seconds"] += seconds
            self.log.append(entry)

    def _cap(self, role: str, phase: str, body: bytes) -> bytes:
        """The request with the role's ``max_tokens`` cap and the role's and phase's parameters set."""
        cap = self.caps.get(role)
        defaults = self.params.get(role, {})
        forced = self.phase_params.get(phase, {}).get(role, {})
        if cap is None and not defaults and not forced:
            return body
        try:
            data = json.loads(body)
        except ValueError:
            return body
        if not isinstance(data, dict):
            return body
        if cap is not None:
            key = "max_completion_tokens" if "max_completion_tokens" in data else "max_tokens"
            asked = data.get(key)
            if not isinstance(asked, int) or asked > cap:
                data[key] = cap
        for key, value in defaults.items():
            data.setdefault(key, value)
        data.update(forced)
        return json.dumps(data).encode()

    def _handler(self, role: str) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the counters are the log
                pass

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, message: str, kind: str) -> None:
                body = json.dumps({"error": {"message": message, "type": kind, "code": kind}}).encode()
                self._reply(status, body)

            def do_GET(self) -> None:
                if self.path == USAGE_PATH:
                    usage = proxy.usage()
                    usage["limits"] = {r: lim.to_dict() for r, lim in proxy.limits.items()}
                    self._reply(200, json.dumps(usage).encode())
                    return
                self._forward(b"", counted=False)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.path == PHASE_PATH:
                    try:
                        proxy.set_phase(str(json.loads(body)["phase"]))
                    except (ValueError, KeyError, TypeError) as exc:
                        self._error(400, f'POST {PHASE_PATH} takes {{"phase": one of {PHASES}}}: {exc}', "invalid")
                        return
                    self._reply(200, json.dumps({"phase": proxy.phase}).encode())
                    return
                counted = self.path.rstrip("/").endswith("/completions")
                if counted:
                    try:
                        streaming = bool(json.loads(body).get("stream"))
                    except (ValueError, AttributeError):
                        streaming = False
                    if streaming:
                        self._error(
                            400,
                            "the counting proxy does not relay streamed replies; set stream=False",
                            "invalid_request_error",
                        )
                        return
                    reason = proxy._admit(role)
                    if reason:
                        self._error(400, reason, "budget_exhausted")
                        return
                    phase = proxy.phase
                    body = proxy._cap(role, phase, body)
                    self._forward(body, counted=True, phase=phase)
                    return
                self._forward(body, counted=False)

            def _forward(self, body: bytes, *, counted: bool, phase: str = "train") -> None:
                path = self.path
                if not path.startswith(proxy._prefix):
                    path = proxy._prefix + path
                headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                auth = self.headers.get("Authorization")
                if auth:
                    headers["Authorization"] = auth
                started = time.perf_counter()
                status, data, content_type = 502, b"", "application/json"
                host, port = proxy._targets[role]
                try:
                    conn = http.client.HTTPConnection(host, port, timeout=proxy.timeout)
                    try:
                        conn.request(self.command, path, body=body or None, headers=headers)
                        response = conn.getresponse()
                        status, data = response.status, response.read()
                        content_type = response.getheader("Content-Type", "application/json")
                    finally:
                        conn.close()
                except OSError as exc:
                    data = json.dumps({"error": {"message": f"upstream unreachable: {exc}", "type": "proxy"}}).encode()
                if counted:
                    proxy._record(role, phase, status, data, time.perf_counter() - started)
                self._reply(status, data, content_type)

        return Handler


def fetch_usage(usage_url: str, timeout: float = 30.0) -> dict[str, Any]:
    """Read a proxy's counters from another process (``GET /_bench/usage``)."""
    parsed = urllib.parse.urlsplit(usage_url)
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=timeout)
    try:
        conn.request("GET", parsed.path)
        response = conn.getresponse()
        data: dict[str, Any] = json.loads(response.read())
        return data
    finally:
        conn.close()


def set_phase(usage_url: str, phase: str, timeout: float = 30.0) -> None:
    """Tell a proxy in another process which phase its calls belong to from now on (``POST /_bench/phase``)."""
    parsed = urllib.parse.urlsplit(usage_url)
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=timeout)
    try:
        conn.request(
            "POST", PHASE_PATH, body=json.dumps({"phase": phase}), headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"the proxy refused phase {phase!r}: {body[:300]!r}")
    finally:
        conn.close()
