"""benchmarks/proposals.py end to end on a scripted model: the table of parsed and changed replies."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from feedprop.llm import Message, MockLLM
from feedprop.tasks import load_bbh

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import proposals  # noqa: E402  (benchmarks/ is not a package: its directory goes on the path first)

FIXED = (
    "```python\ndef extract_answer(self, response: str) -> str:\n"
    "    numbers = re.findall(r'\\d+', response)\n"
    "    return numbers[-1] if numbers else response.strip()\n```"
)


def scripted() -> MockLLM:
    """Answers questions the way the embedded model does; JSON only when a schema constrains it."""
    task = load_bbh("object_counting")
    answers = {ex.input: ex.target for ex in task.train}

    def handler(messages: list[Message], **params: Any) -> str:
        user = messages[-1]["content"]
        if user in answers:
            return f"Counting them 1 by 1.\nYou have {answers[user]} items in total."
        if messages[0]["content"].startswith("You are an optimizer"):
            if "response_format" not in params:  # unconstrained, the small model breaks its JSON
                return '{"reasoning": "take the last number", "suggestion": {"extract_answer": "def extract_answer('
            return json.dumps({"reasoning": "r", "suggestion": {"instruction": "Answer the question."}})
        if "what rule would fix it" in user:
            return "It takes the first number; the answer is the last number."
        if "Python function" in user:
            return FIXED
        return "New instruction: Count each item, then end with the total."

    return MockLLM(handler, json_schema=True)


def test_main_prints_a_row_per_system(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "proposals.json"
    argv = ["--rounds", "2", "--batch-size", "2", "--samples", "2", "--score", "--out", str(out)]
    rows = {row.system: row for row in proposals.main(argv, llm=scripted())}
    assert list(rows) == list(proposals.SYSTEMS)
    plain, schema, reflect = rows["optoprime-json"], rows["optoprime-schema"], rows["reflect"]
    assert (plain.replies, plain.parsed, plain.changed) == (4, 0, 0)
    assert (schema.replies, schema.parsed, schema.changed) == (4, 4, 0), "parsed, but it repeats the old value"
    assert (reflect.replies, reflect.parsed, reflect.changed) == (8, 8, 8)
    assert reflect.changed_kinds == {"code": 4, "text": 4}
    assert reflect.calls == 2 * 2 * (1 + 2), "per round: two parameters, each one diagnosis and two rewrites"
    assert (reflect.scored, reflect.improved) == (8, 4), "the code rewrites fix the minibatch, the text ones do not"
    printed = capsys.readouterr().out
    assert "JSON schemas enforced" in printed
    header = next(line for line in printed.splitlines() if line.startswith("system"))
    assert header.split() == ["system", "calls", "replies", "parsed", "changed", "code", "text", "improved", "seconds"]
    assert any(line.split()[:6] == ["reflect", "12", "8", "100%", "100%", "4"] for line in printed.splitlines())
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert [row["system"] for row in saved] == list(proposals.SYSTEMS)
    assert len(saved[2]["samples"]) == 8 and saved[2]["samples"][0]["diagnosis"].startswith("It takes the first")


def test_unknown_systems_are_refused() -> None:
    with pytest.raises(SystemExit):
        proposals.main(["--systems", "gepa"], llm=scripted())
