"""LocalModel's argument checks, adapter naming and tool support (no model is loaded here)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from feedprop.errors import ConfigurationError, ModelFileError
from feedprop.llm import LocalModel, ToolCall
from feedprop.llm.local import _adapter_tag

from .fakes import FakeOpenAIServer, calls, ok


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n_parallel": 0}, "n_parallel"),
        ({"n_ctx": 16}, "n_ctx"),
        ({"port": -1}, "port"),
        ({"threads": 0}, "threads"),
        ({"n_parallel": True}, "n_parallel"),
    ],
)
def test_bad_settings_fail_before_loading(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        LocalModel("qwen2.5-coder-0.5b", **kwargs)


def test_unknown_model_names_list_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="choose one of"):
        LocalModel("llama-70b")
    monkeypatch.setenv("FEEDPROP_LOCAL_MODEL", "tiny-typo")
    with pytest.raises(ConfigurationError, match="tiny-typo"):
        LocalModel()


def test_missing_files_are_model_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no model file"):
        LocalModel(model_path=tmp_path / "absent.gguf")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(ModelFileError, match="no LoRA adapter file"):
        LocalModel(model_path=model, lora=[(tmp_path / "absent-adapter.gguf", 1.0)])


def test_adapter_tag_follows_content_and_scale(tmp_path: Path) -> None:
    adapter = tmp_path / "a.gguf"
    adapter.write_bytes(b"weights v1")
    first = _adapter_tag([(adapter, 1.0)])
    assert _adapter_tag([(adapter, 1.0)]) == first
    assert _adapter_tag([(adapter, 0.5)]) != first
    adapter.write_bytes(b"weights v2")
    assert _adapter_tag([(adapter, 1.0)]) != first


class _Params:
    """The parts of xllamacpp.CommonParams that LocalModel sets; ``jinja`` says whether the build has templates."""

    def __init__(self, jinja: bool) -> None:
        self.model = SimpleNamespace(path="")
        self.cpuparams = SimpleNamespace(n_threads=0)
        self.cpuparams_batch = SimpleNamespace(n_threads=0)
        if jinja:
            self.use_jinja = False


def _engine(monkeypatch: pytest.MonkeyPatch, server: FakeOpenAIServer, jinja: bool) -> list[_Params]:
    """A stand-in xllamacpp whose Server is ``server``; returns the params it was started with."""
    started: list[_Params] = []

    def start(params: _Params) -> SimpleNamespace:
        started.append(params)
        return SimpleNamespace(listening_address=server.base_url.removesuffix("/v1"))

    fake = ModuleType("xllamacpp")
    fake.CommonParams = lambda: _Params(jinja)  # type: ignore[attr-defined]
    fake.Server = start  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "xllamacpp", fake)
    monkeypatch.setattr(LocalModel, "_wait_healthy", lambda self, address: None)
    return started


LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
ASK = [{"role": "user", "content": "What does a map cost?"}]


def test_the_embedded_engine_serves_tools_through_its_jinja_templates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_server: Callable[..., FakeOpenAIServer]
) -> None:
    server = fake_server([calls([{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}])])
    started = _engine(monkeypatch, server, jinja=True)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with LocalModel(model_path=model, cache=False, constrain_tools=False) as llm:
        assert llm.supports_tools and started[0].use_jinja is True and not llm.constrain_tools
        assert llm.complete(ASK, tools=[LOOKUP]).tool_calls == (ToolCall("c1", "lookup", "{}"),)
    assert server.requests[0]["tools"] == [LOOKUP] and "response_format" not in server.requests[0]


def test_the_embedded_engine_constrains_tool_replies_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_server: Callable[..., FakeOpenAIServer]
) -> None:
    # What the 1.5B model wrote when offered tools: its call fenced as JSON, which llama.cpp leaves as text.
    fenced = '```json\n{"name": "lookup", "arguments": {"item": "map"}}\n```'
    answered = '{"name": "final_answer", "arguments": {"answer": "A map costs 15."}}'
    server = fake_server([ok(fenced), ok(answered)])
    _engine(monkeypatch, server, jinja=True)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with LocalModel(model_path=model, cache=False) as llm:
        assert llm.constrain_tools
        reply = llm.complete(ASK, tools=[LOOKUP])
        assert reply.tool_calls == (ToolCall("call_0", "lookup", '{"item": "map"}'),) and reply.text == ""
        transcript: list[dict[str, Any]] = [
            *ASK,
            {"role": "assistant", "content": "", "tool_calls": [reply.tool_calls[0].to_message()]},
            {"role": "tool", "tool_call_id": "call_0", "content": "15"},
        ]
        final = llm.complete(transcript, tools=[LOOKUP])
        assert final.text == "A map costs 15." and final.tool_calls == () and final.finish_reason == "stop"
    sent = server.requests[0]
    assert [t["function"]["name"] for t in sent["tools"]] == ["lookup", "final_answer"]
    assert sent["response_format"]["type"] == "json_schema"


def test_an_engine_without_templates_refuses_tools_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_server: Callable[..., FakeOpenAIServer]
) -> None:
    server = fake_server([ok("15")])
    _engine(monkeypatch, server, jinja=False)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with LocalModel(model_path=model, cache=False) as llm:
        assert not llm.supports_tools
        with pytest.raises(ConfigurationError, match=r"no Jinja chat templates.*upgrade it"):
            llm.complete(ASK, tools=[LOOKUP])
        assert server.requests == [] and llm.complete(ASK).text == "15"
