"""Replaying recorded replies: a recorded request costs no model call, anything else reaches the model."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from feedprop.errors import BudgetExhausted, InvalidInputError
from feedprop.llm import (
    ContextThreadPoolExecutor,
    MockLLM,
    RecordedCall,
    Replay,
    ResponseCache,
    replay,
    thread_map,
    track_usage,
)
from feedprop.llm.replay import active_records, is_replayed, replayed_call

ASK = [{"role": "system", "content": "Count."}, {"role": "user", "content": "a pear and a fig"}]


def live(messages: list[dict[str, str]], **params: Any) -> str:
    return f"live reply to {messages[-1]['content']}"


def recorded(text: str = "2", **params: Any) -> RecordedCall:
    return RecordedCall.from_request("mock", ASK, params, text)


def test_a_recorded_request_is_answered_without_a_backend_call_or_usage() -> None:
    llm = MockLLM(live)
    with replay([recorded(temperature=0, max_tokens=50)]) as session, track_usage() as usage:
        reply = llm.complete(ASK, temperature=0, max_tokens=50)
    assert reply.text == "2" and reply.model == "mock" and reply.cached
    assert llm.calls == []
    assert (usage.calls, usage.total_tokens, usage.cache_hits, usage.replayed) == (0, 0, 0, 1)
    assert session.hits == 1


def test_an_unrecorded_request_goes_to_the_model_and_is_counted() -> None:
    llm = MockLLM(live)
    other = [{"role": "user", "content": "three cows"}]
    with replay([recorded(temperature=0)]) as session, track_usage() as usage:
        reply = llm.complete(other, temperature=0)
    assert reply.text == "live reply to three cows" and not reply.cached
    assert len(llm.calls) == 1 and llm.calls[0].messages == other
    assert (usage.calls, usage.replayed) == (1, 0) and usage.total_tokens > 0
    assert session.hits == 0


def test_a_different_temperature_is_not_a_match_but_an_equal_one_written_differently_is() -> None:
    llm = MockLLM(live)
    with replay([recorded(temperature=0)]) as session, track_usage() as usage:
        hotter = llm.complete(ASK, temperature=0.7)
        same = llm.complete(ASK, temperature=0.0)  # 0 and 0.0 are one request, as in the response cache
    assert hotter.text == "live reply to a pear and a fig" and same.text == "2"
    assert len(llm.calls) == 1 and llm.calls[0].params == {"temperature": 0.7}
    assert (usage.calls, usage.replayed, session.hits) == (1, 1, 1)


@pytest.mark.parametrize(
    ("change", "kwargs"),
    [
        ("another parameter", {"temperature": 0, "max_tokens": 10}),
        ("a missing parameter", {}),
        ("another salt", {"temperature": 0, "cache_salt": 1}),
    ],
)
def test_any_other_difference_in_the_request_is_not_a_match(change: str, kwargs: dict[str, Any]) -> None:
    llm = MockLLM(live)
    with replay([recorded(temperature=0)]) as session:
        llm.complete(ASK, **kwargs)
    assert len(llm.calls) == 1, change
    assert session.hits == 0


def test_another_model_name_or_message_is_not_a_match() -> None:
    with replay([recorded(temperature=0)]) as session:
        MockLLM(live, model="other").complete(ASK, temperature=0)
        MockLLM(live).complete([ASK[0], {"role": "user", "content": "a pear"}], temperature=0)
    assert session.hits == 0


def test_the_salt_and_the_cache_switch_of_the_recorded_request_are_handled_like_the_cache() -> None:
    call = RecordedCall.from_request("mock", ASK, {"temperature": 0.8, "cache_salt": 3, "cache": False}, "x")
    assert (call.params, call.salt) == ({"temperature": 0.8}, 3)
    llm = MockLLM(live)
    with replay([call]) as session:
        assert llm.complete(ASK, temperature=0.8, cache_salt=3).text == "x"
        assert llm.complete(ASK, temperature=0.8, cache_salt=3, cache=False).text == "x"
        assert llm.complete(ASK, temperature=0.8, cache_salt=4).text.startswith("live")
    assert session.hits == 2 and len(llm.calls) == 1


def test_replay_answers_before_the_response_cache_and_never_writes_to_it(tmp_path: Path) -> None:
    store = ResponseCache(tmp_path / "cache.sqlite")
    llm = MockLLM(live, cache=store)
    cached = llm.complete(ASK, temperature=0).text  # now in the cache
    with replay([recorded("from the record", temperature=0)]), track_usage() as usage:
        assert llm.complete(ASK, temperature=0).text == "from the record"
        llm.complete(ASK, temperature=0, seed=1)  # not recorded: the model answers, the cache stores it
    assert (usage.replayed, usage.calls, usage.cache_hits) == (1, 1, 0)
    assert llm.complete(ASK, temperature=0).text == cached  # the cache entry is untouched
    assert len(store) == 2 and len(llm.calls) == 2


def test_a_replayed_call_needs_no_budget() -> None:
    llm = MockLLM(live)
    with replay([recorded(temperature=0)]), track_usage(max_calls=0) as usage:
        assert llm.complete(ASK, temperature=0).text == "2"
        with pytest.raises(BudgetExhausted):
            llm.complete(ASK, temperature=1)
    assert usage.replayed == 1 and llm.calls == []


def test_nothing_is_replayed_outside_the_block() -> None:
    llm = MockLLM(live)
    with replay([recorded(temperature=0)]):
        pass
    assert replayed_call("mock", ASK, {"temperature": 0}, None) is None
    assert llm.complete(ASK, temperature=0).text.startswith("live")


def test_feedprop_threads_see_the_replay() -> None:
    llm = MockLLM(live)
    with replay([recorded(temperature=0)]) as session, track_usage() as usage:
        texts = thread_map(lambda _: llm.complete(ASK, temperature=0).text, range(8), max_workers=4)
        with ContextThreadPoolExecutor(max_workers=2) as pool:
            texts.append(pool.submit(llm.complete, ASK, temperature=0).result().text)
    assert texts == ["2"] * 9
    assert session.hits == 9 and usage.replayed == 9 and usage.calls == 0 and llm.calls == []


def test_a_raw_thread_does_not_inherit_the_replay() -> None:
    # As with usage meters: a plain thread starts with an empty context.
    llm = MockLLM(live)
    texts: list[str] = []
    with replay([recorded(temperature=0)]) as session:
        worker = threading.Thread(target=lambda: texts.append(llm.complete(ASK, temperature=0).text))
        worker.start()
        worker.join()
    assert texts[0].startswith("live") and session.hits == 0


def test_asyncio_tasks_see_the_replay() -> None:
    llm = MockLLM(live)
    other = [{"role": "user", "content": "one cow"}]

    async def main() -> list[str]:
        with replay([recorded(temperature=0)]):
            replies = await asyncio.gather(
                llm.acomplete(ASK, temperature=0),
                asyncio.create_task(llm.acomplete(ASK, temperature=0)),
                llm.acomplete(other, temperature=0),
            )
        return [r.text for r in replies]

    with track_usage() as usage:
        texts = asyncio.run(main())
    assert texts == ["2", "2", "live reply to one cow"]
    assert (usage.calls, usage.replayed) == (1, 2) and len(llm.calls) == 1


def test_the_first_record_of_a_request_answers_and_nested_replays_ask_the_innermost_first() -> None:
    llm = MockLLM(live)
    outer = Replay([recorded("outer", temperature=0), recorded("outer, other", temperature=1)])
    with replay(outer), replay([recorded("first", temperature=0), recorded("second", temperature=0)]) as inner:
        assert len(inner) == 1
        assert llm.complete(ASK, temperature=0).text == "first"
        assert llm.complete(ASK, temperature=1).text == "outer, other"
    assert (inner.hits, outer.hits) == (1, 1)
    with replay(outer):  # the same replay, active again: its count keeps growing
        llm.complete(ASK, temperature=0)
    assert outer.hits == 2 and llm.calls == []


def test_active_records_list_every_replay_innermost_first_and_checks_count_no_hit() -> None:
    outer, inner = recorded("outer", temperature=0), recorded("inner", temperature=0)
    other = recorded("other", temperature=1)
    assert active_records() == []
    with replay([outer, other]) as first, replay([inner]) as second:
        assert active_records() == [inner, outer, other]
        assert Replay(active_records()).lookup(inner.key) == inner  # first per key: the innermost answers
        assert is_replayed("mock", ASK, {"temperature": 1}, None)
        assert not is_replayed("mock", ASK, {"temperature": 2}, None)
    assert (first.hits, second.hits) == (0, 0)
    assert first.records == [outer, other] and first.holds(other.key) and not second.holds(other.key)
    assert not is_replayed("mock", ASK, {"temperature": 1}, None)


def test_records_round_trip_through_json() -> None:
    call = RecordedCall.from_request("m", ASK, {"temperature": 0.5, "stop": ["\n"], "cache_salt": [1, 2]}, "hi")
    again = RecordedCall.from_dict(json.loads(json.dumps(call.to_dict())))
    assert again.key == call.key and again.text == "hi"


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: Replay(["not a record"]), "RecordedCall"),  # type: ignore[list-item]
        (lambda: RecordedCall("m", ASK, {"cache_salt": 1}, "x"), "from_request"),
        (lambda: RecordedCall("m", ASK, {"temperature": object()}, "x"), "JSON-like"),
        (lambda: RecordedCall("m", [], {}, "x"), "non-empty"),
        (lambda: RecordedCall("m", [{"role": "user"}], {}, "x"), "'content'"),
        (lambda: RecordedCall("m", ASK, {}, None), "text"),  # type: ignore[arg-type]
        (lambda: RecordedCall.from_dict({"text": "x"}), "'model'"),
    ],
)
def test_malformed_records_are_refused_with_a_fix(make: Any, words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        make()
