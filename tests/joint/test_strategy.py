"""alternate(): strategies of prompt and weight phases, gating on validation, budgets and resume.

Weight phases run for real on a tiny Qwen2 model (harvest, peft fine-tuning, GGUF export, adapter
loaded into the student); only the llama.cpp engine is replaced by a fake that answers correctly
once an adapter is loaded, so the effect of a phase is visible in the scores.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from feedprop import ops
from feedprop.errors import CheckpointError, ConfigurationError, InvalidInputError
from feedprop.joint import strategy as strategy_module
from feedprop.joint.finetune import FinetuneConfig, LoRAConfig
from feedprop.joint.strategy import JointResult, PhaseResult, WeightOptions, alternate, parse_strategy
from feedprop.joint.student import Student
from feedprop.llm import MockLLM
from feedprop.module import Module
from feedprop.node import Demos, Node, Parameter
from feedprop.optim import OPRO, BootstrapDemos, Hindsight, OptoPrime
from feedprop.training import Budget

pytest.importorskip("torch", reason="the joint extra (torch) is not installed")

ANSWERS = {f"what is {i} + {i}?": str(2 * i) for i in range(1, 7)}
DATA = list(ANSWERS.items())
TRAIN, VAL, TEST = DATA[:2], DATA[2:4], DATA[4:]
SMALL = WeightOptions(finetune=FinetuneConfig(steps=2, lora=LoRAConfig(r=2, alpha=4)), teacher=None)


class Solver(Module):
    def __init__(self) -> None:
        self.instruction = Parameter("Answer.", name="instruction")
        self.student = Student("qwen2.5-coder-0.5b", cache=False)

    def forward(self, question: str) -> Node[Any]:
        return ops.strip(ops.llm_call(self.instruction, question, llm=self.student, temperature=0))


class AsyncSolver(Solver):
    """:class:`Solver` with ``async def forward``: the student is asked with ``ops.allm_call``."""

    async def forward(self, question: str) -> Node[Any]:  # type: ignore[override]
        reply = await ops.allm_call(self.instruction, question, llm=self.student, temperature=0)
        return ops.strip(reply)


def exact(output: Any, target: Any) -> float:
    return float(output == target)


def right_with_adapter(engine: Any, messages: Any, params: Any) -> str:
    """The fake engine: wrong without an adapter, right with one."""
    return ANSWERS[messages[-1]["content"]] if engine.lora else "no idea"


def always_wrong(engine: Any, messages: Any, params: Any) -> str:
    return "no idea"


def teacher() -> MockLLM:
    return MockLLM(lambda messages, **params: ANSWERS[messages[-1]["content"]], model="teacher")


def prompt_optimizer(text: str = "Answer with the number.") -> Any:
    reply = json.dumps({"reasoning": "be precise", "suggestion": {"instruction": text}})
    return lambda params: OptoPrime(params, llm=MockLLM(reply))


@pytest.fixture
def weights_setup(fake_engine: Any, tiny_base: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(strategy_module, "load_base", lambda name: tiny_base)
    fake_engine.handler = staticmethod(right_with_adapter)
    return fake_engine


def options(**overrides: Any) -> WeightOptions:
    values: dict[str, Any] = {
        "finetune": FinetuneConfig(steps=2, lora=LoRAConfig(r=2, alpha=4)),
        "teacher": teacher(),
    }
    values.update(overrides)
    return WeightOptions(**values)


def test_parse_strategy() -> None:
    assert parse_strategy("p -> w -> p") == ["p", "w", "p"]
    assert parse_strategy(" W ->P ") == ["w", "p"]
    for bad in ("", "p -> x", "p -> -> w", "p, w"):
        with pytest.raises(ConfigurationError, match="strategy"):
            parse_strategy(bad)
    with pytest.raises(InvalidInputError):
        parse_strategy(["p"])  # type: ignore[arg-type]


def test_a_weight_phase_trains_exports_and_loads_an_adapter(weights_setup: Any, tmp_path: Path) -> None:
    model = Solver()
    result = alternate(
        model, TRAIN, exact, "w", val_set=VAL, test_set=TEST, weights=options(), checkpoint=tmp_path, progress=False
    )
    assert (result.val_before, result.test_before) == (0.0, 0.0)
    (phase,) = result.phases
    assert phase.kind == "w" and phase.kept and phase.val == 1.0 and phase.test == 1.0
    assert phase.detail["examples"] == 2 and phase.detail["successes"] == 2
    assert phase.detail["finetune"]["steps"] == 2
    adapter = Path(phase.detail["adapter"])
    assert adapter.parent == tmp_path / "adapters" and adapter.is_file()
    assert result.best_phase == 1 and result.val_after == 1.0 and result.test_after == 1.0
    # The model holds the best program: its student runs with the new adapter.
    assert model.student.adapter_path == adapter.resolve()
    assert result.best_state["student.adapter"]["file"] == str(adapter.resolve())
    assert weights_setup.started[-1].lora == [(adapter.resolve(), 1.0)]
    assert model(DATA[0][0]).data == DATA[0][1]
    assert phase.calls > 0 and phase.tokens > 0 and phase.seconds > 0
    assert "w" in result.table() and "LoRA steps" in result.table()


def test_a_weight_phase_that_does_not_help_is_not_kept(weights_setup: Any) -> None:
    weights_setup.handler = staticmethod(always_wrong)
    model = Solver()
    result = alternate(model, TRAIN, exact, "w", val_set=VAL, weights=options(), progress=False)
    (phase,) = result.phases
    assert phase.val == 0.0 and not phase.kept and "adapter" in phase.detail
    assert result.best_phase == 0 and model.student.adapter.data == {}


def test_no_successful_runs_skips_the_phase(weights_setup: Any) -> None:
    model = Solver()
    result = alternate(model, TRAIN, exact, "w", val_set=VAL, weights=options(teacher=None), progress=False)
    (phase,) = result.phases
    assert phase.skipped.startswith("0 example(s)") and phase.val is None and not phase.kept


def test_prompts_then_weights_then_prompts(weights_setup: Any) -> None:
    model = Solver()
    result = alternate(
        model,
        TRAIN,
        exact,
        "p -> w -> p",
        val_set=VAL,
        test_set=TEST,
        optimizer=prompt_optimizer(),
        prompt={"max_steps": 1, "batch_size": 2},
        weights=options(),
        progress=False,
    )
    assert [p.kind for p in result.phases] == ["p", "w", "p"]
    assert [p.val for p in result.phases] == [0.0, 1.0, 1.0]
    assert result.phases[1].kept and result.phases[1].detail["examples"] == 2
    # The first prompt phase ties the start (kept, as the trainer decided); the last keeps the adapter.
    assert result.val_after == 1.0 and model.student.adapter.data != {}
    # The weight phase learned from traces made with the prompt the first phase settled on.
    assert result.phases[0].detail["steps"] == 1


def test_an_async_workflow_alternates_prompts_and_weights(weights_setup: Any, tmp_path: Path) -> None:
    model = AsyncSolver()
    result = alternate(
        model,
        TRAIN,
        exact,
        "p -> w -> p",
        val_set=VAL,
        test_set=TEST,
        optimizer=prompt_optimizer(),
        prompt={"max_steps": 1, "batch_size": 2},
        weights=options(),
        checkpoint=tmp_path,
        progress=False,
    )
    assert [p.kind for p in result.phases] == ["p", "w", "p"]
    assert [p.val for p in result.phases] == [0.0, 1.0, 1.0]
    assert result.phases[1].kept and result.phases[1].detail["examples"] == 2, "harvested from async runs"
    assert result.val_after == 1.0 and result.test_after == 1.0
    assert (tmp_path / "phase-1-p" / "checkpoint.json").is_file()


@pytest.mark.parametrize("optimizer_class", [OptoPrime, Hindsight, OPRO])
def test_prompt_only_with_any_optimizer(tmp_path: Path, optimizer_class: type[Any]) -> None:
    class Echo(Module):
        def __init__(self) -> None:
            self.suffix = Parameter("?", name="suffix")

        def forward(self, x: str) -> Node[Any]:
            return ops.concat(x, self.suffix)

    reply = json.dumps({"reasoning": "", "suggestion": {"suffix": "!"}})
    model = Echo()
    data = [("a", "a!"), ("b", "b!")]
    result = alternate(
        model,
        data,
        exact,
        "p",
        val_set=data,
        test_set=data,
        optimizer=lambda params: optimizer_class(params, llm=MockLLM(reply)),
        checkpoint=tmp_path,
        progress=False,
    )
    assert result.val_before == 0.0 and result.val_after == 1.0 and result.test_after == 1.0
    assert model.suffix.data == "!" and result.phases[0].kept
    assert result.phases[0].calls >= 1 and result.phases[0].tokens > 0
    assert (tmp_path / "phase-1-p" / "checkpoint.json").is_file()
    saved = json.loads((tmp_path / "joint.json").read_text())
    assert saved["best"]["state"] == {"suffix": "!"}


def test_resume_continues_after_the_last_finished_phase(weights_setup: Any, tmp_path: Path, monkeypatch: Any) -> None:
    calls = {"optimizer": 0}

    def counting(params: Any) -> Any:
        calls["optimizer"] += 1
        return prompt_optimizer()(params)

    real = strategy_module.finetune_lora

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(strategy_module, "finetune_lora", crash)
    run = {
        "val_set": VAL,
        "optimizer": counting,
        "prompt": {"max_steps": 1, "batch_size": 2},
        "weights": options(),
        "checkpoint": tmp_path,
        "progress": False,
    }
    with pytest.raises(KeyboardInterrupt):
        alternate(Solver(), TRAIN, exact, "p -> w", **run)
    assert calls["optimizer"] == 1
    assert (tmp_path / "phase-2-w" / "examples.json").is_file()  # the harvest is kept for the resumed phase
    with pytest.raises(CheckpointError, match="resume=True"):
        alternate(Solver(), TRAIN, exact, "p -> w", **run)
    with pytest.raises(CheckpointError, match="different run configuration"):
        alternate(Solver(), TRAIN, exact, "p -> w -> p", resume=True, **run)
    monkeypatch.setattr(strategy_module, "finetune_lora", real)
    model = Solver()
    result = alternate(model, TRAIN, exact, "p -> w", resume=True, **run)
    assert calls["optimizer"] == 1  # the finished prompt phase was not run again
    assert [p.kind for p in result.phases] == ["p", "w"] and result.val_after == 1.0
    assert model.student.adapter.data != {}


def test_a_budget_stops_before_the_next_phase(weights_setup: Any) -> None:
    model = Solver()
    result = alternate(
        model,
        TRAIN,
        exact,
        "w -> w -> w",
        val_set=VAL,
        weights=options(),
        budget=Budget(calls=4),
        progress=False,
    )
    assert result.stop_reason.startswith("budget")
    assert len(result.phases) < 3


def test_argument_checks(weights_setup: Any) -> None:
    class NoStudent(Module):
        def __init__(self) -> None:
            self.p = Parameter("x")

        def forward(self, x: Any) -> Any:
            return self.p

    with pytest.raises(ConfigurationError, match="exactly one"):
        alternate(NoStudent(), TRAIN, exact, "w", val_set=VAL, progress=False)
    with pytest.raises(ConfigurationError, match="must be part of the model"):
        alternate(Solver(), TRAIN, exact, "w", val_set=VAL, student=Student(), progress=False)
    with pytest.raises(ConfigurationError, match="prompt options"):
        alternate(Solver(), TRAIN, exact, "p", val_set=VAL, prompt={"lr": 1}, progress=False)
    with pytest.raises(InvalidInputError, match="WeightOptions"):
        alternate(Solver(), TRAIN, exact, "w", val_set=VAL, weights={"samples": 2}, progress=False)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="Module"):
        alternate(lambda x: x, TRAIN, exact, "p", val_set=VAL)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="needs checkpoint"):
        alternate(Solver(), TRAIN, exact, "p", val_set=VAL, resume=True)
    with pytest.raises(ConfigurationError, match="temperature"):
        WeightOptions(samples=3)


def test_result_table_and_json() -> None:
    phases = [
        PhaseResult(1, "p", val=0.5, test=0.4, kept=True, calls=3, prompt_tokens=100, detail={"steps": 2}),
        PhaseResult(2, "w", skipped="0 example(s)"),
    ]
    result = JointResult("p -> w", phases, 0.25, 0.2, 1, {"x": 1}, 12.0, "done")
    table = result.table()
    assert "| 1:p (prompts) | 0.500 | 0.400 | yes | 3 (+0) | 100 |" in table
    assert "0 example(s)" in table
    assert json.loads(json.dumps(result.to_dict()))["val_after"] == 0.5
    assert PhaseResult.from_dict(phases[0].to_dict()) == phases[0]


def test_unused_small_options_are_valid() -> None:
    assert SMALL.to_dict()["teacher"] is None


def test_progress_shows_scoring_and_a_line_per_phase(capsys: pytest.CaptureFixture[str]) -> None:
    class Echo(Module):
        def __init__(self) -> None:
            self.suffix = Parameter("?", name="suffix")

        def forward(self, x: str) -> Node[Any]:
            return ops.concat(x, self.suffix)

    data = [("a", "a!")]
    reply = json.dumps({"reasoning": "", "suggestion": {"suffix": "!"}})
    alternate(
        Echo(), data, exact, "p", val_set=data, test_set=data, optimizer=lambda ps: OptoPrime(ps, llm=MockLLM(reply))
    )
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "scoring validation set" in text and "scoring test set" in text
    assert "joint phase 1:p (prompts): val 1.000, test 1.000, kept" in text


@pytest.mark.parametrize(("test_workers", "most_at_once"), [(1, 1), (None, 4)])
def test_the_test_set_is_scored_one_request_at_a_time_by_default(test_workers: int | None, most_at_once: int) -> None:
    lock, running, peak = threading.Lock(), [0], {"test": 0, "other": 0}
    test_questions = {f"t{i}" for i in range(8)}

    def answer(messages: Any, **params: Any) -> str:
        question = messages[-1]["content"]
        which = "test" if question in test_questions else "other"
        with lock:
            running[0] += 1
            peak[which] = max(peak[which], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return question

    class Echo(Module):
        def __init__(self) -> None:
            self.instruction = Parameter("Repeat.", name="instruction")

        def forward(self, x: str) -> Node[Any]:
            return ops.llm_call(self.instruction, x, llm=MockLLM(answer), temperature=0)

    val = [(f"v{i}", f"v{i}") for i in range(8)]
    test = [(q, q) for q in sorted(test_questions)]
    reply = json.dumps({"reasoning": "", "suggestion": {"instruction": "Repeat it."}})
    result = alternate(
        Echo(),
        val,
        exact,
        "p",
        val_set=val,
        test_set=test,
        optimizer=lambda params: OptoPrime(params, llm=MockLLM(reply)),
        prompt={"max_steps": 1},
        max_workers=4,
        test_workers=test_workers,
        progress=False,
    )
    assert result.test_before == 1.0
    assert peak["test"] == most_at_once
    assert peak["other"] == 4  # validation still runs in parallel


def test_test_workers_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="test_workers"):
        alternate(Module(), [("a", "a")], exact, "p", val_set=[("a", "a")], test_workers=0)
    with pytest.raises(InvalidInputError, match="test_workers"):
        alternate(Module(), [("a", "a")], exact, "p", val_set=[("a", "a")], test_workers=True)


def test_a_prompt_phase_takes_a_teacher(tmp_path: Path) -> None:
    def answer(messages: list[dict[str, str]]) -> str:
        a, b = messages[-1]["content"].removeprefix("add ").split(" and ")
        return str(int(a) + int(b))

    class Adder(Module):
        def __init__(self) -> None:
            self.instruction = Parameter("Add the numbers.", name="instruction", trainable=False)
            self.shots = Demos(name="shots", max_demos=2)
            # Right only once it has seen a demonstration (an assistant turn before the question).
            self.llm = MockLLM(lambda m, **k: answer(m) if any(x["role"] == "assistant" for x in m) else "no idea")

        def forward(self, question: Any) -> Any:
            return ops.llm_call(self.instruction, question, demos=self.shots, llm=self.llm)

    def items(start: int, n: int) -> list[tuple[str, str]]:
        return [(f"add {i} and {i + 1}", str(2 * i + 1)) for i in range(start, start + n)]

    tutor = MockLLM(lambda m, **k: answer(m))
    result = alternate(
        Adder(),
        items(0, 4),
        exact,
        "p",
        val_set=items(100, 3),
        test_set=items(200, 3),
        optimizer=lambda params: BootstrapDemos(params, labelled=False, n_candidates=2),
        prompt={"max_steps": 1, "batch_size": 2, "teacher": tutor},
        checkpoint=tmp_path,
        progress=False,
    )
    assert (result.test_before, result.test_after) == (0.0, 1.0), "the teacher's runs became demonstrations"
    assert len(tutor.calls) == 2, "it answered the two failed minibatch items"
    saved = json.loads((tmp_path / "joint.json").read_text())
    assert tutor.model in json.dumps(saved), "the checkpoint names the teacher (JSON, not the object)"
