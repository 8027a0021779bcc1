"""default(): from the environment, once per process, thread-safe; set_default() overrides it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import feedprop.llm.default_llm as default_module
from feedprop.errors import InvalidInputError
from feedprop.llm import LLM, MockLLM, OpenAICompatible, default, set_default

from .fakes import FakeOpenAIServer, ok


def test_base_url_in_the_environment_selects_an_endpoint(
    fake_server: Callable[..., FakeOpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fake_server([ok("from the endpoint")], models=("served-model",))
    monkeypatch.setenv("FEEDPROP_BASE_URL", server.base_url)
    llm = default()
    assert isinstance(llm, OpenAICompatible)
    assert llm.model == "served-model"  # asked from the server when FEEDPROP_MODEL is unset
    assert default() is llm
    assert llm.complete([{"role": "user", "content": "?"}]).text == "from the endpoint"


def test_model_and_key_from_the_environment(
    fake_server: Callable[..., FakeOpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fake_server(models=("a", "b"))
    monkeypatch.setenv("FEEDPROP_BASE_URL", server.base_url)
    monkeypatch.setenv("FEEDPROP_MODEL", "b")
    monkeypatch.setenv("FEEDPROP_API_KEY", "secret")
    llm = default()
    assert isinstance(llm, OpenAICompatible) and llm.model == "b"


def test_without_a_base_url_the_embedded_model_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    class FakeLocal(MockLLM):
        def __init__(self) -> None:
            made.append("local")
            super().__init__("embedded")

    monkeypatch.setattr(default_module, "LocalModel", FakeLocal)
    assert default().complete([{"role": "user", "content": "?"}]).text == "embedded"
    assert made == ["local"]


def test_built_once_even_when_many_threads_ask_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[LLM] = []

    def slow_build() -> LLM:
        time.sleep(0.05)
        llm = MockLLM("x")
        built.append(llm)
        return llm

    monkeypatch.setattr(default_module, "_from_environment", slow_build)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(default())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and all(r is built[0] for r in results)


def test_set_default_overrides_and_resets() -> None:
    mock = MockLLM("mocked")
    set_default(mock)
    assert default() is mock
    set_default(None)
    assert default_module._default is None
    with pytest.raises(InvalidInputError, match="set_default takes an LLM"):
        set_default("gpt")  # type: ignore[arg-type]
