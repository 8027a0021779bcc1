"""Simultaneous mode: soft prompt and LoRA weights learn together from one loss and one backward pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError, ModelFileError
from feedprop.joint.finetune import LoRAConfig
from feedprop.joint.sft import SFTExample, collate, response_loss, tokenize
from feedprop.joint.soft_prompt import SoftPromptLLM, SoftPromptLoRA

torch = pytest.importorskip("torch", reason="the joint extra (torch) is not installed")

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ASK = [{"role": "user", "content": "name?"}]


def examples() -> list[SFTExample]:
    return [SFTExample.from_messages(ASK, "zed")]


def tuner(base: Any, **overrides: Any) -> SoftPromptLoRA:
    options: dict[str, Any] = {"n_tokens": 4, "lora": LoRAConfig(r=4, alpha=8, targets=ALL), "seed": 0}
    options.update(overrides)
    return SoftPromptLoRA(base, **options)


def test_one_backward_pass_reaches_both_the_prompt_and_the_lora_weights(tiny_base: Any) -> None:
    t = tuner(tiny_base)
    encoded = tokenize(tiny_base.tokenizer, examples()[0], 1024)
    assert encoded is not None
    prompt_before = t.prompt.detach().clone()
    hits = {"prompt": 0, "lora": 0}
    with t._attached() as peft_model:
        lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
        lora_before = [p.detach().clone() for p in lora_b]
        t.prompt.register_hook(lambda g: hits.__setitem__("prompt", hits["prompt"] + 1))
        lora_b[0].register_hook(lambda g: hits.__setitem__("lora", hits["lora"] + 1))
        optimizer = torch.optim.AdamW([{"params": [t.prompt], "lr": 1e-2}, {"params": lora_b, "lr": 1e-2}])
        batch = [encoded]
        t._step(peft_model.get_base_model(), optimizer, batch, tiny_base.tokenizer.pad_token_id, lora_b)
        lora_after = [p.detach().clone() for p in lora_b]
    assert hits == {"prompt": 1, "lora": 1}  # one backward pass produced both gradients
    assert not torch.equal(prompt_before, t.prompt.detach())
    assert all(not torch.equal(a, b) for a, b in zip(lora_before, lora_after, strict=True))
    assert t.steps == 1


def test_fit_lowers_the_loss_and_generation_learns_the_reply(tiny_base: Any) -> None:
    t = tuner(tiny_base)
    before, _, _ = t.generate(ASK, max_new_tokens=4)
    result = t.fit(examples(), steps=40, lr=3e-2, prompt_lr=3e-2, progress=False)
    assert result["steps"] == 40 and result["losses"][-1] < 0.2 * result["losses"][0]
    text, prompt_tokens, new_tokens = t.generate(ASK, max_new_tokens=4)
    assert text.startswith("zed") and not before.startswith("zed")
    assert prompt_tokens > 4 and 1 <= new_tokens <= 4
    # The shared base is untouched: no LoRA layers left behind.
    assert not any("lora" in name for name, _ in tiny_base.model.named_modules())


def test_both_parts_matter_after_joint_training(tiny_base: Any) -> None:
    t = tuner(tiny_base)
    t.fit(examples(), steps=40, lr=3e-2, prompt_lr=3e-2, progress=False)
    batch = collate([tokenize(tiny_base.tokenizer, examples()[0], 1024)], tiny_base.tokenizer.pad_token_id)  # type: ignore[list-item]
    with t._attached() as peft_model, torch.no_grad():
        lm = peft_model.get_base_model()
        full = float(response_loss(lm, batch, prefix_embeds=t.prompt))
        no_prompt = float(response_loss(lm, batch, prefix_embeds=torch.zeros_like(t.prompt)))
    with torch.no_grad():
        no_lora = float(response_loss(tiny_base.model, batch, prefix_embeds=t.prompt))
    assert full < no_prompt and full < no_lora


def test_save_and_load_reproduce_the_model(tiny_base: Any, tmp_path: Path) -> None:
    t = tuner(tiny_base)
    t.fit(examples(), steps=10, lr=3e-2, prompt_lr=3e-2, progress=False)
    path = t.save(tmp_path / "soft.safetensors")
    back = SoftPromptLoRA.load(tiny_base, path)
    assert back.steps == 10 and back.lora == t.lora
    assert torch.equal(back.prompt, t.prompt)
    assert back.generate(ASK, max_new_tokens=5) == t.generate(ASK, max_new_tokens=5)
    other = type(tiny_base)(**{**tiny_base.__dict__, "sha256": "cd" * 32})
    with pytest.raises(ConfigurationError, match="another base model"):
        SoftPromptLoRA.load(other, path)
    with pytest.raises(ModelFileError):
        SoftPromptLoRA.load(tiny_base, tmp_path / "missing.safetensors")


def test_as_an_llm(tiny_base: Any) -> None:
    t = tuner(tiny_base)
    t.fit(examples(), steps=40, lr=3e-2, prompt_lr=3e-2, progress=False)
    llm = t.as_llm()
    assert isinstance(llm, SoftPromptLLM) and llm.model == "tiny-qwen2+soft-prompt"
    reply = llm.complete(ASK, max_tokens=3)
    assert reply.text.startswith("zed") and reply.usage.completion_tokens <= 3
    with pytest.raises(ConfigurationError, match="max_tokens"):
        llm.complete(ASK, max_tokens=-1)


def test_init_text_and_bad_arguments(tiny_base: Any) -> None:
    t = tuner(tiny_base, init_text="ab")
    embedding = tiny_base.model.get_input_embeddings().weight
    ids = tiny_base.tokenizer("ab", add_special_tokens=False)["input_ids"]
    assert torch.equal(t.prompt.detach()[0], embedding[ids[0]].detach())
    assert torch.equal(t.prompt.detach()[2], embedding[ids[0]].detach())  # repeated to fill n_tokens
    with pytest.raises(ConfigurationError, match="n_tokens"):
        tuner(tiny_base, n_tokens=0)
    with pytest.raises(InvalidInputError, match="TorchBase"):
        SoftPromptLoRA("qwen")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="SFTExample"):
        t.fit([], progress=False)
    with pytest.raises(ConfigurationError, match="steps"):
        t.fit(examples(), steps=0, progress=False)
