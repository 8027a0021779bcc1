"""LLM endpoint faults: a training run through a faulty loopback proxy ends exactly like a fault-free one.

The workflow and the optimizer both talk to an OpenAI-compatible endpoint on 127.0.0.1 through
:class:`~feedprop.llm.OpenAICompatible`; a proxy in front of it injects latency, replies slower than
the timeout, 500/503s, 429s with Retry-After, bodies cut off mid-stream or not JSON, and dropped
connections. ``benchmarks/reliability.py`` runs many more seeds.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from feedprop.errors import LLMError, RetriesExhaustedError
from feedprop.llm import OpenAICompatible, RetryPolicy

from .endpoint import FAULTS, FaultPlan, FaultyProxy, ScriptedEndpoint, _Base, run_training, scripted_handler

EPOCHS = 2


@pytest.fixture(scope="module")
def endpoint() -> Iterator[ScriptedEndpoint]:
    server = ScriptedEndpoint(scripted_handler)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fault_free(endpoint: ScriptedEndpoint) -> dict[str, Any]:
    return run_training(endpoint.base_url, epochs=EPOCHS)


def test_the_fault_free_run_learns(fault_free: dict[str, Any]) -> None:
    assert fault_free["val_before"] == 0.0 and fault_free["val_after"] == 1.0
    assert 1 < sum(accepted for _, _, accepted in fault_free["scores"]) < len(fault_free["scores"])


def test_a_run_through_a_faulty_proxy_ends_like_the_fault_free_run(
    endpoint: ScriptedEndpoint, fault_free: dict[str, Any]
) -> None:
    proxy = FaultyProxy(endpoint.base_url, FaultPlan(seed=11, hang=3.3))
    try:
        faulty = run_training(proxy.base_url, epochs=EPOCHS, timeout=3.0)
    finally:
        proxy.stop()
    assert set(proxy.injected) == set(FAULTS), f"every kind of fault was injected: {dict(proxy.injected)}"
    for key in ("best_state", "final_state", "scores", "history", "usage", "optimizer", "val_before", "val_after"):
        assert faulty[key] == fault_free[key], f"{key} differs after faults {dict(proxy.injected)}"


def test_an_outage_stops_the_run_with_a_typed_error_and_resume_finishes_it(
    endpoint: ScriptedEndpoint, fault_free: dict[str, Any], tmp_path: Path
) -> None:
    proxy = FaultyProxy(endpoint.base_url, FaultPlan(rate=0.0), outage_after=40)
    try:
        with pytest.raises(RetriesExhaustedError, match="503"):
            run_training(proxy.base_url, epochs=EPOCHS, checkpoint=tmp_path)
    finally:
        proxy.stop()
    done = json.loads((tmp_path / "checkpoint.json").read_text())["step"]
    assert 0 < done < len(fault_free["scores"]), "the outage came mid-run"
    resumed = run_training(endpoint.base_url, epochs=EPOCHS, checkpoint=tmp_path, resume=True)
    for key in ("best_state", "final_state", "scores", "val_before", "val_after"):
        assert resumed[key] == fault_free[key], key


# -- replies garbled in ways a proxy or an overloaded server garbles them ------------------------------

GOOD = {
    "id": "x",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "fine"}}],
}
GARBLED = {
    "cut JSON": json.dumps(GOOD)[:40].encode(),
    "HTML error page": b"<html><body>502 Bad Gateway</body></html>",
    "no choices": b'{"id": "x"}',
    "null message": json.dumps({**GOOD, "choices": [{"index": 0, "message": None}]}).encode(),
    "choice is a string": json.dumps({**GOOD, "choices": ["fine"]}).encode(),
    "content is a list": json.dumps({**GOOD, "choices": [{"index": 0, "message": {"content": [1]}}]}).encode(),
    "not UTF-8": b'{"id": "\xff\xfe"}',
    "a JSON list": b"[1, 2]",
}


def _garbling_server(bad: bytes, times: int) -> tuple[ThreadingHTTPServer, str]:
    count = {"n": 0}

    class Serve(_Base):
        def do_POST(self) -> None:
            self.body()
            count["n"] += 1
            self.send(200, bad if count["n"] <= times else json.dumps(GOOD).encode())

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


@pytest.mark.parametrize("bad", GARBLED.values(), ids=GARBLED.keys())
def test_a_garbled_reply_is_retried_then_a_typed_error(bad: bytes) -> None:
    retry = RetryPolicy(max_retries=2, initial_delay=0.01, jitter=0.0)
    ask = [{"role": "user", "content": "hi"}]
    httpd, url = _garbling_server(bad, times=2)
    try:
        assert OpenAICompatible(url, model="m", cache=False, retry=retry).complete(ask).text == "fine"
    finally:
        httpd.shutdown()
        httpd.server_close()
    httpd, url = _garbling_server(bad, times=10)
    try:
        with pytest.raises(RetriesExhaustedError, match="3 time") as info:
            OpenAICompatible(url, model="m", cache=False, retry=retry).complete(ask)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert isinstance(info.value, LLMError) and "healthy" in str(info.value)
