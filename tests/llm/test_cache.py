"""The response cache: stable keys over every sampling parameter, shared by threads and processes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import (
    ContextThreadPoolExecutor,
    MockLLM,
    ResponseCache,
    cache_enabled,
    cache_key,
    set_cache_enabled,
    track_usage,
)
from feedprop.llm.cache import canonical_json, default_cache

ASK = [{"role": "user", "content": "What is 2+2?"}]


def counting_llm(store: ResponseCache, model: str = "mock") -> MockLLM:
    return MockLLM(lambda messages, **params: f"reply {params}", model=model, cache=store)


@pytest.fixture
def store(tmp_path: Path) -> ResponseCache:
    return ResponseCache(tmp_path / "cache.sqlite")


def test_key_is_a_stable_sha256_of_canonical_json() -> None:
    key = cache_key("m", ASK, {"temperature": 0.0, "max_tokens": 5})
    assert len(key) == 64 and int(key, 16) >= 0
    # A fixed value: the key must not depend on the process (no salted hash()) or on dict order.
    assert key == cache_key("m", [dict(reversed(list(ASK[0].items())))], {"max_tokens": 5, "temperature": 0})
    canonical = (
        '{"messages":[{"content":"What is 2+2?","role":"user"}],"model":"m",'
        '"params":{"max_tokens":5,"temperature":0},"salt":null,"v":1}'
    )
    assert key == hashlib.sha256(canonical.encode()).hexdigest()


def test_key_changes_with_every_part_of_the_request() -> None:
    base = cache_key("m", ASK, {"temperature": 0})
    variants = [
        cache_key("other", ASK, {"temperature": 0}),
        cache_key("m", [{"role": "user", "content": "What is 2+3?"}], {"temperature": 0}),
        cache_key("m", [{"role": "system", "content": "What is 2+2?"}], {"temperature": 0}),
        cache_key("m", ASK, {"temperature": 0.7}),
        cache_key("m", ASK, {"temperature": 0, "seed": 1}),
        cache_key("m", ASK, {"temperature": 0, "stop": ["\n"]}),
        cache_key("m", ASK, {"temperature": 0, "response_format": {"type": "json_object"}}),
        cache_key("m", ASK, {"temperature": 0}, salt=1),
        cache_key("m", ASK, {}),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_timeout_is_not_part_of_the_key() -> None:
    assert cache_key("m", ASK, {"timeout": 5}) == cache_key("m", ASK, {"timeout": 60})


def test_canonical_json_normalises_numbers_and_rejects_non_json() -> None:
    assert canonical_json({"b": [1.0, 2.5], "a": (True, None)}) == '{"a":[true,null],"b":[1,2.5]}'
    with pytest.raises(InvalidInputError, match="JSON-like"):
        canonical_json({"x": object()})
    with pytest.raises(InvalidInputError, match="finite"):
        canonical_json({"x": float("nan")})


def test_second_identical_call_is_a_hit_and_makes_no_model_call(store: ResponseCache) -> None:
    llm = counting_llm(store)
    with track_usage() as usage:
        first = llm.complete(ASK, temperature=0)
        second = llm.complete(ASK, temperature=0)
    assert first.text == second.text
    assert not first.cached and second.cached
    assert len(llm.calls) == 1
    assert (usage.calls, usage.cache_hits) == (1, 1)
    assert usage.total_tokens == first.usage.total_tokens  # the hit cost nothing


def test_temperature_change_is_a_miss(store: ResponseCache) -> None:
    llm = counting_llm(store)
    llm.complete(ASK, temperature=0)
    llm.complete(ASK, temperature=0.8)
    llm.complete(ASK, temperature=0.0)  # same as 0: a hit
    assert len(llm.calls) == 2


def test_samples_with_a_salt_are_distinct_and_reproducible(store: ResponseCache) -> None:
    samples = iter(f"sample {i}" for i in range(100))
    llm = MockLLM(lambda messages, **params: next(samples), cache=store)
    first = [llm.complete(ASK, temperature=1.0, cache_salt=i).text for i in range(3)]
    again = [llm.complete(ASK, temperature=1.0, cache_salt=i).text for i in range(3)]
    assert first == ["sample 0", "sample 1", "sample 2"] == again
    assert len(llm.calls) == 3
    assert "cache_salt" not in llm.calls[0].params  # feedprop's own options never reach the backend


def test_cache_false_per_call_skips_read_and_write(store: ResponseCache) -> None:
    llm = counting_llm(store)
    llm.complete(ASK, cache=False)
    assert len(store) == 0
    llm.complete(ASK)
    llm.complete(ASK, cache=False)
    assert len(llm.calls) == 3 and len(store) == 1


def test_global_switch_and_environment(store: ResponseCache, monkeypatch: pytest.MonkeyPatch) -> None:
    llm = counting_llm(store)
    monkeypatch.setenv("FEEDPROP_CACHE", "0")
    assert not cache_enabled() and llm.cache is None
    llm.complete(ASK)
    llm.complete(ASK)
    assert len(llm.calls) == 2 and len(store) == 0
    set_cache_enabled(True)  # the explicit switch wins over the environment
    llm.complete(ASK)
    llm.complete(ASK)
    assert len(llm.calls) == 3
    set_cache_enabled(None)
    monkeypatch.setenv("FEEDPROP_CACHE", "maybe")
    with pytest.raises(ConfigurationError, match="FEEDPROP_CACHE"):
        cache_enabled()


def test_mock_does_not_cache_by_default_and_true_means_the_home_cache(isolated_home: Path) -> None:
    assert MockLLM("x").cache is None
    llm = MockLLM("x", cache=True)
    assert llm.cache is not None and llm.cache.path == isolated_home / "llm-cache.sqlite"
    assert llm.cache is default_cache()


def test_errors_are_not_cached(store: ResponseCache) -> None:
    replies = iter([ValueError("boom"), "fine"])

    def handler(messages: object, **params: object) -> str:
        reply = next(replies)
        if isinstance(reply, Exception):
            raise reply
        return reply

    llm = MockLLM(handler, cache=store)
    with pytest.raises(ValueError):
        llm.complete(ASK)
    assert llm.complete(ASK).text == "fine"


def test_threads_share_the_cache(store: ResponseCache) -> None:
    llm = counting_llm(store)
    prompts = [[{"role": "user", "content": f"q{i % 10}"}] for i in range(200)]
    with ContextThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(llm.complete, prompts))
    assert len(store) == 10
    assert 10 <= len(llm.calls) <= 200  # races may duplicate a miss, never lose an entry
    with track_usage() as usage, ContextThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(llm.complete, prompts))
    assert usage.calls == 0 and usage.cache_hits == 200


RUN = textwrap.dedent(
    """
    import json, sys
    from feedprop.llm import MockLLM, ResponseCache, track_usage

    path, mode = sys.argv[1], sys.argv[2]
    def handler(messages, **params):
        if mode == "forbid":
            raise AssertionError("the model was called although the request is cached")
        return "answer to " + messages[-1]["content"]

    llm = MockLLM(handler, cache=ResponseCache(path))
    with track_usage() as usage:
        texts = [llm.complete([{"role": "user", "content": f"q{i}"}], temperature=0.5).text for i in range(20)]
    print(json.dumps({"texts": texts, "calls": usage.calls, "hits": usage.cache_hits}))
    """
)


def run(path: Path, mode: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", RUN, str(path), mode], capture_output=True, text=True, timeout=120, check=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_same_request_in_a_new_process_is_a_hit(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    first = run(path, "answer")
    second = run(path, "forbid")
    assert first["calls"] == 20 and first["hits"] == 0
    assert second["calls"] == 0 and second["hits"] == 20
    assert first["texts"] == second["texts"]


def test_concurrent_processes_can_write_one_cache(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    procs = [
        subprocess.Popen([sys.executable, "-c", RUN, str(path), "answer"], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all(o["texts"] == outputs[0]["texts"] for o in outputs)
    assert len(ResponseCache(path)) == 20


def test_unwritable_location_gives_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    llm = MockLLM("x", cache=ResponseCache(blocker / "cache.sqlite"))
    with pytest.raises(ConfigurationError, match="FEEDPROP_CACHE=0"):
        llm.complete(ASK)
