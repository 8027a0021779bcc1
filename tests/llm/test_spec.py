"""LLM specs: models described as JSON, rebuilt in another process."""

from __future__ import annotations

from typing import Any

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import LLM, MockLLM, OpenAICompatible, set_default
from feedprop.llm.pool import EndpointPool
from feedprop.llm.spec import check_spec, from_spec, import_object, spec_of

ASK = [{"role": "user", "content": "2+2?"}]


def shout(messages: Any, **params: Any) -> str:
    return messages[-1]["content"].upper()


def make_mock(reply: str) -> LLM:
    return MockLLM(reply, model="made")


def test_mock_specs() -> None:
    assert from_spec({"kind": "mock", "handler": f"{__name__}:shout"}).complete(ASK).text == "2+2?"
    llm = from_spec({"kind": "mock", "reply": "4", "model": "scripted", "latency": 0})
    assert llm.complete(ASK).text == "4" and llm.model == "scripted"


def test_openai_specs_make_one_client_or_a_pool() -> None:
    one = from_spec({"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "cache": False})
    assert isinstance(one, OpenAICompatible) and one.base_url == "http://127.0.0.1:9/v1"
    urls = ["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"]
    pool = from_spec({"kind": "openai", "base_url": urls, "model": "m", "cooldown": 5})
    assert isinstance(pool, EndpointPool) and pool.cooldown == 5
    assert [s["endpoint"] for s in pool.status()] == urls


def test_env_spec_reads_this_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDPROP_BASE_URL", "http://127.0.0.1:9/v1, http://127.0.0.1:10/v1")
    monkeypatch.setenv("FEEDPROP_MODEL", "m")
    pool = from_spec({"kind": "env"})
    assert isinstance(pool, EndpointPool) and len(pool.status()) == 2 and pool.model == "m"
    monkeypatch.delenv("FEEDPROP_BASE_URL")
    mock = MockLLM("default")
    set_default(mock)
    try:
        assert from_spec({"kind": "env"}) is mock
    finally:
        set_default(None)


def test_factory_specs() -> None:
    llm = from_spec({"kind": "factory", "factory": f"{__name__}:make_mock", "kwargs": {"reply": "x"}})
    assert llm.model == "made" and llm.complete(ASK).text == "x"
    with pytest.raises(ConfigurationError, match="returned str, not an LLM"):
        from_spec({"kind": "factory", "factory": "json:dumps", "kwargs": {"obj": [1]}})


def test_spec_of_describes_endpoints_and_refuses_the_rest() -> None:
    single = OpenAICompatible("http://127.0.0.1:9/v1", model="m")
    assert from_spec(spec_of(single)).base_url == single.base_url  # type: ignore[attr-defined]
    pool = EndpointPool(["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"], model="m")
    again = from_spec(spec_of(pool))
    assert isinstance(again, EndpointPool) and again.status() == pool.status()
    with pytest.raises(ConfigurationError, match="'kind': 'mock'"):
        spec_of(MockLLM("x"))


def test_bad_specs_say_what_to_write() -> None:
    with pytest.raises(InvalidInputError, match="is a dict"):
        check_spec("openai")
    with pytest.raises(ConfigurationError, match="kind must be one of"):
        check_spec({"kind": "llama"})
    with pytest.raises(InvalidInputError, match="plain JSON"):
        check_spec({"kind": "mock", "reply": object()})
    with pytest.raises(ConfigurationError, match="unknown key"):
        from_spec({"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "temprature": 0})
    with pytest.raises(ConfigurationError, match="base_url"):
        from_spec({"kind": "openai", "model": "m"})
    with pytest.raises(ConfigurationError, match="exactly one of"):
        from_spec({"kind": "mock"})
    with pytest.raises(ConfigurationError, match="cannot import"):
        from_spec({"kind": "mock", "handler": "no_such_module_here:f"})
    with pytest.raises(ConfigurationError, match="has no attribute"):
        import_object("json:nothing", "thing")
    with pytest.raises(ConfigurationError, match="import path"):
        import_object("json.dumps", "thing")


def test_json_schema_support_travels_in_the_spec() -> None:
    single = from_spec({"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "json_schema": True})
    assert single.supports_json_schema and spec_of(single)["json_schema"] is True
    urls = ["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"]
    pool = from_spec({"kind": "openai", "base_url": urls, "model": "m", "json_schema": True})
    assert isinstance(pool, EndpointPool) and pool.supports_json_schema
    assert from_spec(spec_of(pool)).supports_json_schema
    assert "json_schema" not in spec_of(OpenAICompatible("http://127.0.0.1:9/v1", model="m"))
