"""The real embedded model (slow: run with ``pytest -m integration``)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedprop.agent import TOOL_RESULT, run_agent
from feedprop.errors import ContextLengthExceededError
from feedprop.llm import LocalModel, thread_map, track_usage
from feedprop.llm import model_file as mf
from feedprop.node import MessageNode
from feedprop.propagate import toposort
from feedprop.tool import Tool

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalModel]:
    """One 1.5B model for the whole session, from the user's real feedprop home (assembled once)."""
    llm = LocalModel("qwen2.5-coder-1.5b", n_parallel=4, cache=False)
    yield llm
    llm.close()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_short_factual_answer(local_model: LocalModel) -> None:
    with track_usage() as usage:
        reply = local_model.complete(
            ask("What is the capital of France? Answer with one word."), temperature=0, max_tokens=8
        )
    assert "paris" in reply.text.lower()
    assert reply.model == "qwen2.5-coder-1.5b"
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 8
    assert usage.calls == 1 and usage.total_tokens == reply.usage.total_tokens


def test_json_mode_reply_parses(local_model: LocalModel) -> None:
    reply = local_model.complete(
        [
            {"role": "system", "content": "Reply with a JSON object only."},
            {"role": "user", "content": 'Give {"city": <capital of Italy>, "country": "Italy"}.'},
        ],
        temperature=0,
        max_tokens=40,
        response_format={"type": "json_object"},
    )
    data = json.loads(reply.text)
    assert isinstance(data, dict) and "rome" in json.dumps(data).lower()


def test_four_parallel_requests_all_succeed(local_model: LocalModel) -> None:
    questions = [f"What is {a} + {a}? Answer with the number only." for a in (2, 3, 4, 5)]
    with track_usage() as usage:
        replies = thread_map(
            lambda q: local_model.complete(ask(q), temperature=0, max_tokens=6).text, questions, max_workers=4
        )
    assert [str(2 * a) in r for a, r in zip((2, 3, 4, 5), replies, strict=True)] == [True] * 4
    assert usage.calls == 4 and usage.errors == 0
    assert local_model.limit.max_in_use <= 4


def test_async_call(local_model: LocalModel) -> None:
    async def main() -> str:
        return (await local_model.acomplete(ask("Say the word 'yes' and nothing else."), max_tokens=4)).text

    assert "yes" in asyncio.run(main()).lower()


def secret_code(person: str) -> str:
    """The secret code of a person."""
    return {"ada": "QX-7731", "bob": "LM-2044"}[person.strip().lower()]


def add(a: float, b: float) -> float:
    """The sum of two numbers."""
    return a + b


def test_an_agent_calls_a_tool_and_answers_with_its_result(local_model: LocalModel) -> None:
    # Left to its chat template, the 1.5B model fenced its call as JSON, which llama.cpp does not read
    # as a call; the constrained reply makes it one (seen: one call, then the answer; 70 to 150 s on 2 shared CPUs).
    tools = [Tool(secret_code), Tool(add)]
    answer = run_agent(
        "Answer with the help of the tools.",
        "What is Ada's secret code?",
        tools=tools,
        llm=local_model,
        temperature=0,
        max_tokens=100,
        max_turns=4,
    )
    results = [n for n in toposort(answer) if isinstance(n, MessageNode) and n.op is TOOL_RESULT]
    assert [(r.info or {}).get("tool") for r in results][:1] == ["secret_code"]
    assert not (results[0].info or {}).get("error") and results[0].data == "QX-7731"
    assert "QX-7731" in answer.data and not (answer.info or {}).get("tool_calls")


def test_prompt_too_long_is_context_length_exceeded(local_model: LocalModel) -> None:
    too_long = "word " * (local_model.n_ctx + 500)
    with pytest.raises(ContextLengthExceededError, match="context"):
        local_model.complete(ask(too_long), max_tokens=4)


def test_corrupt_model_file_is_detected_and_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDPROP_HOME", str(tmp_path / "home"))
    path = mf.ensure_model_file("qwen2.5-coder-0.5b")
    size = path.stat().st_size
    with open(path, "r+b") as f:  # flip bytes inside the weights, keeping the size
        f.seek(size // 2)
        chunk = f.read(64)
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))
    assert mf.sha256_file(path) != mf.MODELS["qwen2.5-coder-0.5b"].sha256
    with pytest.warns(RuntimeWarning, match="corrupt"):
        llm = LocalModel("qwen2.5-coder-0.5b", n_parallel=1, n_ctx=1024, cache=False)
    try:
        assert mf.sha256_file(path) == mf.MODELS["qwen2.5-coder-0.5b"].sha256
        assert llm.path == path and os.path.getsize(path) == size
        assert llm.complete(ask("Say hi."), max_tokens=4).text.strip()
    finally:
        llm.close()
    assert not llm.running
