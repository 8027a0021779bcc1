"""examples/rag_pipeline.py end to end with its scripted model, plus the real parts it relies on."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from feedprop.errors import FeedbackWarning, InvalidInputError
from feedprop.llm import MockLLM
from feedprop.node import RETURN
from feedprop.report import render_problem


def test_search_finds_the_document_holding_each_answer(load_example: Callable[[str], ModuleType]) -> None:
    rag = load_example("rag_pipeline")
    documents, qa = rag.load_keldmark()
    assert len(documents) == 30 and len(qa) >= 30
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
        "answer_demos",
        "validate_prompt",
        "fallback_prompt",
    }
    out = capsys.readouterr().out
    assert "held-out test accuracy: 0% -> 100%" in out and "SCRIPTED" in out
    assert "optimizer recommended, pareto search" in out


def test_the_default_proposes_demonstrations_and_a_rewrite_and_screens_them(
    load_example: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    rag = load_example("rag_pipeline")
    _, qa = rag.load_keldmark()
    train_answers = {answer for _, answer in rag.split(qa, "multiword")[10:14]}
    first = rag.main(["--mock", "--run-dir", str(tmp_path / "run")]).history[0]
    assert first["parent"] == 0 and first["accepted"]
    demos = [c for c in first["candidates"] if "answer_demos" in c["updates"]]
    rewrites = [c for c in first["candidates"] if "answer_prompt" in c["updates"]]
    # every run failed, so the demonstrations are labelled training items: the gold fact as the reply
    assert demos and all(d["output"] in train_answers for c in demos for d in c["updates"]["answer_demos"])
    # the scripted model ignores demonstrations: they tie with the parent on the minibatch and are not validated
    assert not any(c["admitted"] for c in demos) and all("val_score" not in c for c in demos)
    assert len(rewrites) == 1 and rewrites[0]["admitted"] and rewrites[0]["val_score"] == 1.0
    # screening answered the calls the change does not touch (route, rewrite) from the parent's record
    assert first["screening"]["saved"] > 0 and rewrites[0]["minibatch"]["saved"] > 0


def test_the_default_split_needs_names_that_one_word_cannot_hold(load_example: Callable[[str], ModuleType]) -> None:
    rag = load_example("rag_pipeline")
    _, qa = rag.load_keldmark()
    ordered = rag.split(qa, "multiword")
    assert sorted(ordered) == sorted(qa) and rag.split(qa, "original") == qa
    test, val, train = ordered[:6], ordered[6:10], ordered[10:14]
    for part in (test, val, train):
        assert sum(len(answer.split()) > 1 for _, answer in part) >= len(part) // 2
    assert rag.START_ANSWER_PROMPT == "Answer in one word."
    with pytest.raises(InvalidInputError, match="unknown split"):
        rag.split(qa, "easy")


def test_the_earlier_optimizer_is_still_reachable(
    load_example: Callable[[str], ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rag = load_example("rag_pipeline")
    result = rag.main(["--mock", "--optimizer", "optoprime", "--run-dir", str(tmp_path / "run")])
    assert (result.test_before, result.test_after) == (0.0, 1.0)
    assert "context" in result.best_state["answer_prompt"] and result.best_state["answer_demos"] == []
    assert "optimizer optoprime, greedy search" in capsys.readouterr().out


def test_feedback_reaches_every_prompt_on_the_path(load_example: Callable[[str], ModuleType]) -> None:
    rag = load_example("rag_pipeline")
    documents, qa = rag.load_keldmark()
    rag.llm_module.set_default(rag.scripted_llm(qa))
    pipeline = rag.RAGPipeline(rag.DocumentIndex(documents))
    out = pipeline(qa[0][0])
    out.backward("Wrong: the answer should state 'Hessing'.")
    reached = {name for name, p in pipeline.named_parameters() if p.feedback}
    # the first answer is rejected, so the fallback's answer depends on all five prompts and the demonstrations
    prompts = {"route_prompt", "rewrite_prompt", "answer_prompt", "validate_prompt", "fallback_prompt"}
    assert reached == prompts | {"answer_demos"}


def test_the_route_and_the_verdict_are_plain_ifs_whose_prompts_receive_feedback(
    load_example: Callable[[str], ModuleType],
) -> None:
    rag = load_example("rag_pipeline")
    documents, qa = rag.load_keldmark()
    rag.llm_module.set_default(rag.scripted_llm(qa))
    pipeline = rag.RAGPipeline(rag.DocumentIndex(documents), answer_prompt="Answer from the context.")
    out = pipeline(qa[0][0])
    assert out.data == f"{qa[0][1]}." and out.op is RETURN  # the reviewer said VALID: the first answer is kept
    assert [n.data for n in out.control_parents] == ["SEARCH", "VALID"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeedbackWarning)
        out.backward("Correct.")
    reached = {name for name, p in pipeline.named_parameters() if p.feedback}
    assert reached == {"route_prompt", "rewrite_prompt", "answer_prompt", "answer_demos", "validate_prompt"}
    code = render_problem([pipeline.route_prompt, pipeline.validate_prompt]).code
    assert any('# control: the program read llm_call:0 = "SEARCH"' in line for line in code)
    assert code[-1].startswith("return:0 = return(value=") and '= "VALID" before this call' in code[-1]


def test_a_direct_route_skips_the_search_and_still_teaches_the_router(
    load_example: Callable[[str], ModuleType],
) -> None:
    rag = load_example("rag_pipeline")
    documents, qa = rag.load_keldmark()
    scripted = rag.scripted_llm(qa)

    def direct(messages: list[dict[str, Any]], **params: Any) -> str:
        if messages[-1]["content"].endswith("SEARCH or DIRECT."):
            return "DIRECT"
        return scripted.complete(messages, **params).text

    rag.llm_module.set_default(MockLLM(direct))
    pipeline = rag.RAGPipeline(rag.DocumentIndex(documents))
    out = pipeline(qa[0][0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeedbackWarning)
        out.backward(f"Wrong: the answer should state '{qa[0][1]}'.")
    reached = {name for name, p in pipeline.named_parameters() if p.feedback}
    assert reached == {"route_prompt", "answer_prompt", "answer_demos", "validate_prompt", "fallback_prompt"}


def test_training_sends_feedback_to_the_routing_prompt(
    load_example: Callable[[str], ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rag = load_example("rag_pipeline")
    build = rag.make_optimizer
    reached: list[set[str]] = []

    def spied(name: str, pipeline: Any, n_candidates: int = 4) -> Any:
        optimizer = build(name, pipeline, n_candidates)
        propose = optimizer.propose

        def propose_and_record(*args: Any, **kwargs: Any) -> Any:
            reached.append({n for n, p in pipeline.named_parameters() if p.feedback})
            return propose(*args, **kwargs)

        optimizer.propose = propose_and_record
        return optimizer

    monkeypatch.setattr(rag, "make_optimizer", spied)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeedbackWarning)
        result = rag.main(["--mock", "--run-dir", str(tmp_path / "run")])
    assert (result.test_before, result.test_after) == (0.0, 1.0)
    assert reached and all({"route_prompt", "validate_prompt"} <= names for names in reached)
