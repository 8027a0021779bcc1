"""Usage meters and budgets: counted for every call, across threads and tasks, and exact."""

from __future__ import annotations

import _thread
import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from feedprop.errors import BudgetExhausted, ConfigurationError, TransientLLMError, UnattributedCallError
from feedprop.llm import (
    ContextThreadPoolExecutor,
    MockLLM,
    RecordedCall,
    ResponseCache,
    RetryPolicy,
    UsageMeter,
    active_meters,
    estimate_tokens,
    replay,
    thread_map,
    track_usage,
)
from feedprop.llm.usage import add_usage

ASK = [{"role": "user", "content": "twelve chars"}]  # 12 chars -> 3 tokens, +4 framing = 7 prompt tokens


def test_a_call_is_counted_with_its_tokens_and_seconds() -> None:
    llm = MockLLM("abcdefgh", latency=0.01)
    with track_usage() as usage:
        completion = llm.complete(ASK)
    assert usage.calls == 1
    assert usage.prompt_tokens == 7 == completion.usage.prompt_tokens
    assert usage.completion_tokens == 2 == estimate_tokens("abcdefgh")
    assert usage.total_tokens == 9
    assert usage.seconds >= 0.01
    assert usage.cache_hits == 0 and usage.errors == 0


def test_calls_outside_a_scope_are_not_counted_and_nested_scopes_all_count() -> None:
    llm = MockLLM("x")
    llm.complete(ASK)
    with track_usage() as outer:
        llm.complete(ASK)
        with track_usage() as inner:
            assert active_meters() == (outer, inner)
            llm.complete(ASK)
        llm.complete(ASK)
    assert active_meters() == ()
    assert (outer.calls, inner.calls) == (3, 1)


def test_usage_accounting_is_exact_across_16_threads() -> None:
    llm = MockLLM(lambda messages, **params: "reply " * 3, latency=0.002)
    per_thread = 25
    with track_usage() as usage:

        def work(_: int) -> None:
            for _ in range(per_thread):
                llm.complete(ASK)

        with ContextThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(work, range(16)))
    calls = 16 * per_thread
    assert usage.calls == calls == len(llm.calls)
    assert usage.prompt_tokens == 7 * calls
    assert usage.completion_tokens == estimate_tokens("reply " * 3) * calls


def test_plain_threads_started_inside_the_block_are_counted() -> None:
    llm = MockLLM("x")
    with track_usage() as usage:
        threads = [threading.Thread(target=llm.complete, args=(ASK,)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert usage.calls == 16 == len(llm.calls)
    assert usage.prompt_tokens == 7 * 16


def test_a_thread_subclass_and_a_timer_are_counted() -> None:
    llm = MockLLM("x")

    class Worker(threading.Thread):
        def run(self) -> None:
            llm.complete(ASK)

    with track_usage() as usage:
        worker, timer = Worker(), threading.Timer(0.001, llm.complete, args=(ASK,))
        worker.start()
        timer.start()
        worker.join()
        timer.join()
    assert usage.calls == 2


def test_nested_threads_and_nested_scopes_all_count() -> None:
    llm = MockLLM("x")

    def spawn_one() -> None:
        with track_usage() as own:
            inner = threading.Thread(target=llm.complete, args=(ASK,))
            inner.start()
            inner.join()
        seen.append(own.calls)

    seen: list[int] = []
    with track_usage() as outer:
        t = threading.Thread(target=spawn_one)
        t.start()
        t.join()
    assert outer.calls == 1 and seen == [1]


def test_thread_pool_tasks_are_counted_even_in_a_pool_started_before_the_block() -> None:
    llm = MockLLM("x")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: None, range(8)))  # the worker threads exist before any meter
        with track_usage() as usage:
            assert all(f.result().text == "x" for f in [pool.submit(llm.complete, ASK) for _ in range(12)])
        after = pool.submit(llm.complete, ASK).result()  # outside the block: charged to nobody
    assert after.text == "x"
    assert usage.calls == 12 and len(llm.calls) == 13


def test_a_pool_started_inside_a_block_does_not_charge_later_tasks_to_it() -> None:
    llm = MockLLM("x")
    with ThreadPoolExecutor(2) as pool:
        with track_usage() as first:
            pool.submit(llm.complete, ASK).result()  # starts a worker thread inside `first`
        with track_usage() as second:
            pool.submit(llm.complete, ASK).result()
            pool.submit(llm.complete, ASK).result()
        pool.submit(llm.complete, ASK).result()
    assert (first.calls, second.calls) == (1, 2)


def test_asyncio_to_thread_is_counted() -> None:
    llm = MockLLM("x")

    async def main() -> UsageMeter:
        with track_usage() as usage:
            await asyncio.gather(*(asyncio.to_thread(llm.complete, ASK) for _ in range(6)))
        return usage

    assert asyncio.run(main()).calls == 6


def test_copied_contexts_and_thread_map_still_count() -> None:
    llm = MockLLM("x")
    with track_usage() as usage:
        ctx = contextvars.copy_context()
        copied = threading.Thread(target=ctx.run, args=(llm.complete, ASK))
        copied.start()
        copied.join()
        assert thread_map(lambda _: llm.complete(ASK).text, range(5), max_workers=3) == ["x"] * 5
    assert usage.calls == 6


@pytest.mark.parametrize("mechanism", ["thread", "pool", "to_thread"])
def test_two_concurrent_runs_each_count_only_their_own_calls(mechanism: str) -> None:
    llm = MockLLM("x", latency=0.001)
    counts: dict[str, int] = {}
    both_open = threading.Barrier(2)

    def fan_out(n: int) -> None:
        if mechanism == "thread":
            threads = [threading.Thread(target=llm.complete, args=(ASK,)) for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elif mechanism == "pool":
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda _: llm.complete(ASK), range(n)))
        else:

            async def go() -> None:
                await asyncio.gather(*(asyncio.to_thread(llm.complete, ASK) for _ in range(n)))

            asyncio.run(go())

    def run(name: str, n: int) -> None:
        with track_usage() as usage:
            both_open.wait()
            fan_out(n)
            both_open.wait()  # neither block closes before both have finished their calls
        counts[name] = usage.calls

    runs = [threading.Thread(target=run, args=("a", 7)), threading.Thread(target=run, args=("b", 11))]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert counts == {"a": 7, "b": 11}


@pytest.mark.parametrize("mechanism", ["thread", "pool", "to_thread"])
def test_a_budget_holds_in_threads_started_inside_it(mechanism: str) -> None:
    llm = MockLLM("x")
    refused: list[BaseException] = []

    def call() -> None:
        try:
            llm.complete(ASK)
        except BudgetExhausted as e:
            refused.append(e)

    with track_usage(max_calls=5) as usage:
        if mechanism == "thread":
            threads = [threading.Thread(target=call) for _ in range(12)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elif mechanism == "pool":
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda _: call(), range(12)))
        else:

            async def go() -> None:
                await asyncio.gather(*(asyncio.to_thread(call) for _ in range(12)))

            asyncio.run(go())
    assert usage.calls == 5 == len(llm.calls)
    assert len(refused) == 7


def test_a_thread_started_outside_every_block_counts_nowhere_and_is_not_refused() -> None:
    llm = MockLLM("x")
    go, done = threading.Event(), threading.Event()

    def unrelated() -> None:
        go.wait()
        llm.complete(ASK)
        done.set()

    t = threading.Thread(target=unrelated)
    t.start()
    with track_usage() as usage:
        go.set()
        done.wait(5)
    t.join()
    assert usage.calls == 0 and len(llm.calls) == 1


def test_a_call_from_a_thread_threading_did_not_start_is_refused_while_a_meter_is_open() -> None:
    llm = MockLLM("x")
    outcome: list[BaseException | str] = []
    finished = threading.Event()

    def raw(ctx: contextvars.Context | None) -> None:
        try:
            outcome.append((ctx.run(llm.complete, ASK) if ctx else llm.complete(ASK)).text)
        except BaseException as e:
            outcome.append(e)
        finished.set()

    with track_usage() as usage:
        _thread.start_new_thread(raw, (None,))
        assert finished.wait(5)
        finished.clear()
        _thread.start_new_thread(raw, (contextvars.copy_context(),))  # the documented way to carry meters
        assert finished.wait(5)
    assert isinstance(outcome[0], UnattributedCallError)
    assert "contextvars.copy_context()" in str(outcome[0]) and "threading.Thread" in str(outcome[0])
    assert outcome[1] == "x" and usage.calls == 1
    finished.clear()
    _thread.start_new_thread(raw, (None,))  # no meter open anywhere: nothing to protect
    assert finished.wait(5) and outcome[2] == "x"


def test_asyncio_tasks_inherit_the_meter() -> None:
    llm = MockLLM("x", latency=0.005)

    async def main() -> UsageMeter:
        with track_usage() as usage:
            await asyncio.gather(*(llm.acomplete(ASK) for _ in range(10)))
        return usage

    usage = asyncio.run(main())
    assert usage.calls == 10 and usage.prompt_tokens == 70


def test_call_budget_is_exact_under_concurrency() -> None:
    llm = MockLLM("x", latency=0.005)
    refused = []
    with track_usage(max_calls=37) as usage:

        def work(_: int) -> None:
            for _ in range(10):
                try:
                    llm.complete(ASK)
                except BudgetExhausted as exc:
                    refused.append(exc)

        with ContextThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(work, range(16)))
    assert usage.calls == 37 == len(llm.calls)
    assert len(refused) == 160 - 37
    assert "max_calls=37" in str(refused[0]) and "raise max_calls" in str(refused[0])


def test_budget_is_checked_before_the_call_starts() -> None:
    llm = MockLLM("x")
    with track_usage(max_calls=0), pytest.raises(BudgetExhausted):
        llm.complete(ASK)
    assert llm.calls == []  # the model was never reached


def test_token_budget_stops_new_calls_once_reached() -> None:
    llm = MockLLM("abcdefgh")  # 7 prompt + 2 completion = 9 tokens per call
    made = 0
    with track_usage(max_tokens=20) as usage, pytest.raises(BudgetExhausted, match="max_tokens=20"):
        for _ in range(10):
            llm.complete(ASK)
            made += 1
    assert made == 3  # 9, 18 (< 20, so a third call may start), 27 (>= 20: no fourth)
    assert usage.total_tokens == 27 and usage.remaining_tokens == 0


def test_the_innermost_limit_applies_and_outer_meters_still_count() -> None:
    llm = MockLLM("x")
    with track_usage(max_calls=5) as outer:
        with track_usage(max_calls=2) as inner:
            llm.complete(ASK)
            llm.complete(ASK)
            with pytest.raises(BudgetExhausted):
                llm.complete(ASK)
        llm.complete(ASK)
    assert (outer.calls, inner.calls) == (3, 2)
    assert outer.remaining_calls == 2


def test_a_refused_call_does_not_count_anywhere() -> None:
    llm = MockLLM("x")
    with track_usage() as outer, track_usage(max_calls=1) as inner:
        llm.complete(ASK)
        with pytest.raises(BudgetExhausted):
            llm.complete(ASK)
    assert outer.calls == 1 and inner.calls == 1


def test_failed_calls_count_as_calls_and_errors() -> None:
    def handler(messages: Any, **params: Any) -> str:
        raise TransientLLMError("server busy")

    llm = MockLLM(handler, retry=RetryPolicy(max_retries=2, initial_delay=0, jitter=0))
    with track_usage() as usage, pytest.raises(Exception, match="failed 3 time"):
        llm.complete(ASK)
    assert usage.calls == 1 and usage.errors == 1  # one logical call, three attempts
    assert len(llm.calls) == 3


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_bad_limits_are_rejected(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_calls"), track_usage(max_calls=bad):
        pass


def test_meter_reports_as_dict_and_repr() -> None:
    llm = MockLLM("x")
    with track_usage(max_calls=4) as usage:
        llm.complete(ASK)
    data = usage.to_dict()
    assert data["calls"] == 1 and data["total_tokens"] == data["prompt_tokens"] + data["completion_tokens"]
    assert "max_calls=4" in repr(usage)


def test_usage_measured_elsewhere_is_added_to_every_active_meter() -> None:
    elsewhere = {
        "calls": 3,
        "cache_hits": 1,
        "replayed": 2,
        "errors": 1,
        "prompt_tokens": 30,
        "completion_tokens": 6,
        "seconds": 0.5,
    }
    with track_usage(max_calls=2) as outer, track_usage() as inner:
        add_usage(elsewhere)  # limits are not checked: those calls already happened
        counts = {**elsewhere, "total_tokens": 36}
        assert inner.to_dict() == {**counts, "by_model": {"unknown": counts}}, "no by_model: charged to 'unknown'"
        with pytest.raises(BudgetExhausted):
            MockLLM("x").complete(ASK)
    assert outer.calls == 3 and outer.total_tokens == 36
    add_usage(elsewhere)  # no active meter: nothing to do


def _counts(meter: UsageMeter, model: str) -> tuple[int, int, int, int, int]:
    m = meter.by_model[model]
    return m.calls, m.cache_hits, m.replayed, m.errors, m.total_tokens


def test_usage_is_counted_per_model_and_the_models_add_up_to_the_whole(tmp_path: Path) -> None:
    def busy(messages: Any, **params: Any) -> str:
        raise TransientLLMError("busy")

    small = MockLLM("ok", model="small")
    large = MockLLM("a longer reply", model="large", cache=ResponseCache(tmp_path / "cache.sqlite"))
    failing = MockLLM(busy, model="flaky", retry=RetryPolicy(max_retries=0))
    recorded = RecordedCall.from_request("small", ASK, {"temperature": 0.5}, "from the record")
    with track_usage() as outer, track_usage() as usage:
        thread_map(lambda _: small.complete(ASK), range(3), max_workers=3)
        large.complete(ASK)
        large.complete(ASK)  # the same request again: a cache hit
        with replay([recorded]):
            small.complete(ASK, temperature=0.5)
        with pytest.raises(Exception, match="busy"):
            failing.complete(ASK)
    assert sorted(usage.by_model) == ["flaky", "large", "small"]
    assert _counts(usage, "small") == (3, 0, 1, 0, 3 * (7 + estimate_tokens("ok")))
    assert _counts(usage, "large") == (1, 1, 0, 0, 7 + estimate_tokens("a longer reply"))
    assert _counts(usage, "flaky") == (1, 0, 0, 1, 0)
    for name in ("calls", "cache_hits", "replayed", "errors", "prompt_tokens", "completion_tokens", "seconds"):
        assert getattr(usage, name) == pytest.approx(sum(getattr(m, name) for m in usage.by_model.values())), name
    assert outer.to_dict() == usage.to_dict(), "nested meters count each model alike"
    assert usage.to_dict()["by_model"]["large"] == usage.by_model["large"].to_dict()


def test_usage_measured_elsewhere_keeps_its_models() -> None:
    with track_usage() as usage:
        MockLLM("x", model="here").complete(ASK)
        add_usage(
            {
                "calls": 3,
                "prompt_tokens": 9,
                "by_model": {"a": {"calls": 1, "prompt_tokens": 4}, "b": {"calls": 2, "prompt_tokens": 5}},
            }
        )
    assert {name: (m.calls, m.prompt_tokens) for name, m in usage.by_model.items()} == {
        "here": (1, 7),
        "a": (1, 4),
        "b": (2, 5),
    }
    assert usage.calls == 4 and usage.prompt_tokens == 16
