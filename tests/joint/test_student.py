"""Student: the adapter is a parameter (state, save/load, checks) and calls run on the right engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError, ModelFileError
from feedprop.joint.gguf_adapter import GGUFAdapter, write_adapter
from feedprop.joint.student import Rollout, Student
from feedprop.llm import MockLLM, track_usage
from feedprop.module import Module
from feedprop.node import Parameter
from feedprop.ops import llm_call

np = pytest.importorskip("numpy")
pytest.importorskip("gguf", reason="the joint extra (gguf) is not installed")

ASK = [{"role": "user", "content": "hello"}]


def adapter_file(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    tensors = {
        "blk.0.attn_q.weight.lora_a": rng.standard_normal((2, 8)).astype(np.float32),
        "blk.0.attn_q.weight.lora_b": rng.standard_normal((8, 2)).astype(np.float32),
    }
    return write_adapter(path, GGUFAdapter("qwen2", 4.0, tensors))


class Solver(Module):
    def __init__(self) -> None:
        self.instruction = Parameter("Answer.", name="instruction")
        self.student = Student("qwen2.5-coder-0.5b")

    def forward(self, question: str) -> Any:
        return llm_call(self.instruction, question, llm=self.student, temperature=0)


def test_the_adapter_is_a_non_trainable_parameter_of_the_workflow() -> None:
    solver = Solver()
    assert solver.state_dict() == {"instruction": "Answer.", "student.adapter": {}}
    adapter = dict(solver.named_parameters())["student.adapter"]
    assert adapter.trainable is False and adapter.kind == "json"
    assert [p.name for p in solver.parameters() if p.trainable] == ["instruction"]


def test_bad_construction() -> None:
    with pytest.raises(ConfigurationError, match="neither an embedded model"):
        Student("no-such-model")
    with pytest.raises(InvalidInputError, match="LoRAConfig"):
        Student("qwen2.5-coder-0.5b", lora={"r": 8})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cannot be set"):
        Student().model = "other"


def test_loading_an_adapter_records_its_file_checksum_and_shape(tmp_path: Path) -> None:
    path = adapter_file(tmp_path / "a.gguf")
    student = Student("qwen2.5-coder-0.5b", adapter=path, scale=0.5)
    value = student.adapter.data
    assert value["file"] == str(path.resolve()) and len(value["sha256"]) == 64
    assert value["scale"] == 0.5 and value["lora"] == {"r": 2, "alpha": 4.0, "targets": ["q_proj"]}
    assert student.model == f"qwen2.5-coder-0.5b+lora-{value['sha256'][:12]}@0.5"
    assert student.adapter_path == path.resolve()
    student.load_adapter(None)
    assert student.adapter.data == {} and student.model == "qwen2.5-coder-0.5b"
    with pytest.raises(ModelFileError):
        student.load_adapter(tmp_path / "missing.gguf")


def test_calls_run_on_an_engine_started_with_the_current_adapter(tmp_path: Path, fake_engine: Any) -> None:
    student = Student("qwen2.5-coder-0.5b", cache=False)
    assert student.complete(ASK).text == "base"
    assert student.complete(ASK).text == "base"
    assert len(fake_engine.started) == 1 and fake_engine.started[0].lora == []
    path = adapter_file(tmp_path / "a.gguf")
    student.load_adapter(path, scale=0.8)
    reply = student.complete(ASK)
    assert reply.text == "adapted" and reply.model == student.model
    assert len(fake_engine.started) == 2 and fake_engine.started[1].lora == [(path.resolve(), 0.8)]
    assert fake_engine.started[0].running is False  # the old engine was stopped
    student.close()
    assert fake_engine.started[1].running is False


def test_cached_replies_never_cross_adapters(tmp_path: Path, fake_engine: Any) -> None:
    student = Student("qwen2.5-coder-0.5b", cache=True)
    assert student.complete(ASK).text == "base"
    student.load_adapter(adapter_file(tmp_path / "a.gguf"))
    assert student.complete(ASK).text == "adapted"
    student.load_adapter(None)
    with track_usage() as usage:
        assert student.complete(ASK).text == "base"
    assert usage.cache_hits == 1


def test_a_saved_workflow_restores_its_weights(tmp_path: Path, fake_engine: Any) -> None:
    solver = Solver()
    path = adapter_file(tmp_path / "a.gguf")
    solver.student.load_adapter(path)
    solver.save(tmp_path / "solver.json")
    fresh = Solver()
    assert fresh.student.adapter.data == {}
    fresh.load(tmp_path / "solver.json")
    assert fresh.student.adapter.data == solver.student.adapter.data
    assert fresh("q").data == "adapted"


def test_a_missing_or_changed_adapter_file_is_refused(tmp_path: Path, fake_engine: Any) -> None:
    path = adapter_file(tmp_path / "a.gguf")
    student = Student("qwen2.5-coder-0.5b", adapter=path, cache=False)
    adapter_file(path, seed=1)  # same path, other weights
    with pytest.raises(ModelFileError, match="changed since it was recorded"):
        student.complete(ASK)
    path.unlink()
    with pytest.raises(ModelFileError, match="is missing"):
        student.complete(ASK)
    with pytest.raises(InvalidInputError, match="holds a dict"):
        student.adapter.set(None)  # type: ignore[arg-type]


def test_save_adapter_is_content_addressed(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    tensors = {
        "blk.0.attn_v.weight.lora_a": rng.standard_normal((2, 8)).astype(np.float32),
        "blk.0.attn_v.weight.lora_b": rng.standard_normal((4, 2)).astype(np.float32),
    }
    student = Student("qwen2.5-coder-0.5b")
    first = student.save_adapter(GGUFAdapter("qwen2", 4.0, tensors), tmp_path)
    second = student.save_adapter(GGUFAdapter("qwen2", 4.0, tensors), tmp_path)
    assert first == second and first.name.startswith("adapter-") and first.parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]
    assert student.adapter_path == first.resolve()
    assert student.adapter_weights() is not None


def test_a_teacher_answers_in_the_students_place(fake_engine: Any) -> None:
    seen: list[dict[str, Any]] = []

    def teacher_reply(messages: Any, **params: Any) -> str:
        seen.append(params)
        return "from the teacher"

    teacher = MockLLM(teacher_reply, model="big")
    student = Student("qwen2.5-coder-0.5b", cache=False)
    with student.rollout(Rollout(teacher=teacher, overrides={"temperature": 0.7}, salt=2)) as name:
        reply = student.complete(ASK, temperature=0)
    assert name == "qwen2.5-coder-0.5b<=big" and reply.model == name
    assert reply.text == "from the teacher" and seen[0]["temperature"] == 0.7
    assert fake_engine.started == []  # the student's engine was never needed
    assert student.complete(ASK).text == "base"  # outside the block, the student answers again


def test_rollout_checks_the_teacher() -> None:
    with pytest.raises(InvalidInputError, match="teacher"), Student().rollout(Rollout(teacher="gpt")):  # type: ignore[arg-type]
        pass
