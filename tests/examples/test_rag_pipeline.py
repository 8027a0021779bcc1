"""examples/rag_pipeline.py end to end with its scripted model, plus the real parts it relies on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from feedprop.errors import InvalidInputError


def test_search_finds_the_document_holding_each_answer(load_example: Callable[[str], ModuleType]) -> None:
    rag = load_example("rag_pipeline")
    documents, qa = rag.load_keldmark()
    assert len(documents) == 30 and len(qa) >= 20
    index = rag.DocumentIndex(documents)
    for question, answer in qa:
        found = " ".join(d["text"] for d in index.search(question))
        assert answer.lower() in found.lower(), question


def test_search_survives_fts_syntax_in_model_written_queries(load_example: Callable[[str], ModuleType]) -> None:
    rag = load_example("rag_pipeline")
    index = rag.DocumentIndex(rag.load_keldmark()[0])
    assert index.search('NEAR("capital" AND) : -- "') != [] or index.search("???") == []
    assert index.search("the of and") == []
    with pytest.raises(InvalidInputError):
        rag.DocumentIndex([])


def test_guide_reads_the_fact_not_the_wording(load_example: Callable[[str], ModuleType]) -> None:
    guide = load_example("rag_pipeline").ContainsFact()
    assert guide("It has 1,450 metres.", "1,450").score == 1.0
    wrong = guide("I do not know.", "Hessing")
    assert wrong.score == 0.0 and "Hessing" in wrong.text


def test_training_rewrites_the_answer_prompt_and_lifts_test_accuracy(
    load_example: Callable[[str], ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rag = load_example("rag_pipeline")
    result = rag.main(["--mock", "--run-dir", str(tmp_path / "run")])
    assert result.test_before == 0.0
    assert result.test_after == 1.0
    assert "context" in result.best_state["answer_prompt"]
    assert set(result.best_state) == {
        "route_prompt",
        "rewrite_prompt",
        "answer_prompt",
        "validate_prompt",
        "fallback_prompt",
    }
    out = capsys.readouterr().out
    assert "held-out test accuracy: 0% -> 100%" in out and "SCRIPTED" in out


def test_feedback_reaches_every_prompt_on_the_path(load_example: Callable[[str], ModuleType]) -> None:
    rag = load_example("rag_pipeline")
    documents, qa = rag.load_keldmark()
    rag.llm_module.set_default(rag.scripted_llm(qa))
    pipeline = rag.RAGPipeline(rag.DocumentIndex(documents))
    out = pipeline(qa[0][0])
    out.backward("Wrong: the answer should state 'Hessing'.")
    reached = {name for name, p in pipeline.named_parameters() if p.feedback}
    # the first answer is rejected, so the fallback's answer depends on all five prompts
    assert reached == {"route_prompt", "rewrite_prompt", "answer_prompt", "validate_prompt", "fallback_prompt"}
