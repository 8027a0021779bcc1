"""LoRA fine-tuning on a tiny Qwen2 model: it learns, leaves the base untouched, exports, resumes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from feedprop.errors import CheckpointError, ConfigurationError, InvalidInputError
from feedprop.joint.finetune import FinetuneConfig, LoRAConfig, attach_lora, finetune_lora
from feedprop.joint.gguf_adapter import read_adapter, write_adapter
from feedprop.joint.sft import SFTExample, collate, response_loss, tokenize

torch = pytest.importorskip("torch", reason="the joint extra (torch) is not installed")

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def examples(n: int = 4) -> list[SFTExample]:
    return [SFTExample.from_messages([{"role": "user", "content": f"id {i}"}], f"code-{i}") for i in range(n)]


def config(**overrides: Any) -> FinetuneConfig:
    options: dict[str, Any] = {"steps": 12, "lr": 1e-2, "batch_size": 2, "lora": LoRAConfig(r=4, alpha=8, targets=ALL)}
    options.update(overrides)
    return FinetuneConfig(**options)


def mean_loss(base: Any, items: list[SFTExample]) -> float:
    batch = collate([t for t in (tokenize(base.tokenizer, e, 1024) for e in items) if t], base.tokenizer.pad_token_id)
    with torch.no_grad():
        return float(response_loss(base.model, batch))


def snapshot(model: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: LoRAConfig(r=0), ConfigurationError),
        (lambda: LoRAConfig(r=2.5), InvalidInputError),
        (lambda: LoRAConfig(targets=("lm_head",)), ConfigurationError),
        (lambda: LoRAConfig(targets="q_proj"), InvalidInputError),
        (lambda: LoRAConfig(dropout=1.0), ConfigurationError),
        (lambda: FinetuneConfig(steps=0), ConfigurationError),
        (lambda: FinetuneConfig(lr=float("nan")), ConfigurationError),
        (lambda: FinetuneConfig(batch_size=True), InvalidInputError),
        (lambda: FinetuneConfig(lora={"r": 8}), InvalidInputError),
        (lambda: FinetuneConfig(threads=0), ConfigurationError),
    ],
)
def test_bad_configurations_are_refused(make: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


def test_schedule_and_config_round_trip() -> None:
    assert FinetuneConfig(epochs=2, batch_size=3).total_steps(7) == 6
    assert FinetuneConfig(steps=5).total_steps(100) == 5
    lora = LoRAConfig(r=4, alpha=8, targets=("q_proj", "v_proj"))
    assert LoRAConfig.from_dict(lora.to_dict()) == lora


def test_training_lowers_the_loss_and_leaves_the_base_unchanged(tiny_base: Any) -> None:
    before = snapshot(tiny_base.model)
    start_loss = mean_loss(tiny_base, examples())
    result = finetune_lora(tiny_base, examples(), config(), progress=False)
    assert result.steps == 12 and len(result.losses) == 12
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert result.examples == 4 and result.skipped == 0
    assert result.trained_tokens > 0 and result.tokens > result.trained_tokens
    after = snapshot(tiny_base.model)
    assert sorted(after) == sorted(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any("lora" in name for name, _ in tiny_base.model.named_modules())
    assert mean_loss(tiny_base, examples()) == pytest.approx(start_loss)


def test_the_adapter_names_shapes_and_provenance(tiny_base: Any) -> None:
    adapter = finetune_lora(tiny_base, examples(), config(steps=2), progress=False).adapter
    assert adapter.architecture == "qwen2" and adapter.alpha == 8.0 and adapter.rank == 4
    assert adapter.targets == sorted(ALL)
    hidden = tiny_base.model.config.hidden_size
    assert adapter.tensors["blk.0.attn_q.weight.lora_a"].shape == (4, hidden)
    assert adapter.tensors["blk.1.attn_k.weight.lora_b"].shape == (tiny_base.model.config.num_key_value_heads * 8, 4)
    assert adapter.metadata["feedprop.base_sha256"] == tiny_base.sha256
    assert adapter.metadata["feedprop.steps"] == 2


def test_a_gguf_round_trip_carries_what_was_learned(tiny_base: Any, tmp_path: Path) -> None:
    base_loss = mean_loss(tiny_base, examples())
    result = finetune_lora(tiny_base, examples(), config(steps=20), progress=False)
    back = read_adapter(write_adapter(tmp_path / "a.gguf", result.adapter))
    peft_model = attach_lora(tiny_base, LoRAConfig(r=4, alpha=8, targets=ALL), back)
    try:
        adapted_loss = mean_loss(tiny_base, examples())
    finally:
        peft_model.unload()
    assert adapted_loss < 0.5 * base_loss
    assert adapted_loss == pytest.approx(result.losses[-1], rel=0.5)


def test_warm_start_continues_from_an_adapter(tiny_base: Any) -> None:
    first = finetune_lora(tiny_base, examples(), config(steps=20), progress=False)
    again = finetune_lora(tiny_base, examples(), config(steps=1), init=first.adapter, progress=False)
    fresh = finetune_lora(tiny_base, examples(), config(steps=1), progress=False)
    assert again.losses[0] < 0.5 * fresh.losses[0]


def test_warm_start_needs_the_same_shape(tiny_base: Any) -> None:
    adapter = finetune_lora(tiny_base, examples(), config(steps=1), progress=False).adapter
    with pytest.raises(ConfigurationError, match="same shape"):
        finetune_lora(tiny_base, examples(), config(lora=LoRAConfig(r=2, targets=ALL)), init=adapter, progress=False)
    assert not any("lora" in name for name, _ in tiny_base.model.named_modules())


class Stop(Exception):
    pass


def test_a_killed_run_resumes_to_the_same_result(tiny_base: Any, tmp_path: Path) -> None:
    whole = finetune_lora(tiny_base, examples(), config(steps=6, checkpoint_every=2), progress=False)

    def kill_at_three(step: int, loss: float) -> None:
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        finetune_lora(
            tiny_base,
            examples(),
            config(steps=6, checkpoint_every=2),
            checkpoint=tmp_path,
            on_step=kill_at_three,
            progress=False,
        )
    assert not any("lora" in name for name, _ in tiny_base.model.named_modules())
    resumed = finetune_lora(
        tiny_base, examples(), config(steps=6, checkpoint_every=2), checkpoint=tmp_path, resume=True, progress=False
    )
    assert resumed.steps == 6
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-4)
    for name, value in whole.adapter.tensors.items():
        assert resumed.adapter.tensors[name] == pytest.approx(value, rel=1e-3, abs=1e-5)
    # A finished run resumed again does no more steps.
    again = finetune_lora(
        tiny_base, examples(), config(steps=6, checkpoint_every=2), checkpoint=tmp_path, resume=True, progress=False
    )
    assert again.steps == 6 and again.losses == resumed.losses


def test_checkpoints_refuse_to_mix_runs(tiny_base: Any, tmp_path: Path) -> None:
    finetune_lora(tiny_base, examples(), config(steps=2, checkpoint_every=1), checkpoint=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="resume=True"):
        finetune_lora(tiny_base, examples(), config(steps=2), checkpoint=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="different run configuration"):
        finetune_lora(tiny_base, examples(3), config(steps=2), checkpoint=tmp_path, resume=True, progress=False)
    with pytest.raises(ConfigurationError, match="needs checkpoint"):
        finetune_lora(tiny_base, examples(), config(), resume=True, progress=False)


def test_a_passed_deadline_stops_cleanly(tiny_base: Any) -> None:
    result = finetune_lora(tiny_base, examples(), config(), deadline=time.monotonic() - 1, progress=False)
    assert result.steps == 0 and result.stop_reason.startswith("budget: seconds")


def test_bad_inputs(tiny_base: Any) -> None:
    with pytest.raises(InvalidInputError, match="non-empty sequence"):
        finetune_lora(tiny_base, [], config(), progress=False)
    with pytest.raises(InvalidInputError, match="FinetuneConfig"):
        finetune_lora(tiny_base, examples(), {"steps": 3}, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_length"):
        finetune_lora(tiny_base, examples(), config(max_length=8), progress=False)


def test_progress_bar_shows_the_loss(tiny_base: Any, capsys: pytest.CaptureFixture[str]) -> None:
    finetune_lora(tiny_base, examples(), config(steps=2), progress=True)
    err = capsys.readouterr().err
    assert "fine-tune" in err and "loss=" in err
