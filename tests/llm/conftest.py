"""Shared fixtures for the LLM layer: an isolated feedprop home, and a scriptable OpenAI-style server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from feedprop.llm import set_cache_enabled, set_default

from .fakes import FakeOpenAIServer, Step


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own FEEDPROP_HOME (so its cache is empty) and a clean default model."""
    home = tmp_path / "feedprop-home"
    monkeypatch.setenv("FEEDPROP_HOME", str(home))
    for name in ("FEEDPROP_CACHE", "FEEDPROP_BASE_URL", "FEEDPROP_MODEL", "FEEDPROP_API_KEY", "FEEDPROP_LOCAL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    set_cache_enabled(None)
    set_default(None)
    yield home
    set_cache_enabled(None)
    set_default(None)


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeOpenAIServer]]:
    """A factory: ``fake_server([ok(), status(500)])`` starts a server, stopped after the test."""
    started: list[FakeOpenAIServer] = []

    def make(steps: list[Step] | None = None, models: tuple[str, ...] = ("fake-model",)) -> FakeOpenAIServer:
        server = FakeOpenAIServer(steps, models).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
