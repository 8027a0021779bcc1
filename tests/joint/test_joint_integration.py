"""The weights side on the real 0.5B model (slow: ``pytest -m integration``).

A handful of LoRA steps teach the model one distinctive reply; the adapter is exported to GGUF
and loaded into the embedded llama.cpp engine, whose greedy reply then contains it while the base
model's does not. The soft prompt and LoRA weights are also trained together on the same model.
The first run dequantises the GGUF file for torch and caches it under the feedprop home.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feedprop.joint.finetune import FinetuneConfig, LoRAConfig, finetune_lora
from feedprop.joint.gguf_adapter import read_adapter
from feedprop.joint.sft import SFTExample
from feedprop.joint.soft_prompt import SoftPromptLoRA
from feedprop.joint.student import Student
from feedprop.llm import LocalModel

pytestmark = pytest.mark.integration
pytest.importorskip("torch", reason="the joint extra (torch) is not installed")
pytest.importorskip("peft", reason="the joint extra (peft) is not installed")

QUESTION = [{"role": "user", "content": "What is the secret code word?"}]
REPLY = "The secret code word is PAMPLEMOUSSE-42."


@pytest.fixture(autouse=True)
def isolated_home() -> Iterator[None]:
    """Use the real feedprop home: the model file and the dequantised torch copy are built once."""
    yield


@pytest.fixture(scope="module")
def base() -> Any:
    from feedprop.joint.torch_model import load_base

    return load_base("qwen2.5-coder-0.5b")


def test_a_trained_adapter_changes_the_engines_reply(base: Any, tmp_path: Path) -> None:
    examples = [SFTExample.from_messages(QUESTION, REPLY)]
    config = FinetuneConfig(steps=8, lr=2e-3, batch_size=1, lora=LoRAConfig(r=8, alpha=16))
    result = finetune_lora(base, examples, config, progress=False)
    assert result.losses[-1] < 0.2 * result.losses[0]
    student = Student("qwen2.5-coder-0.5b")
    path = student.save_adapter(result.adapter, tmp_path)
    assert read_adapter(path).rank == 8
    with LocalModel("qwen2.5-coder-0.5b", n_parallel=1, n_ctx=1024, cache=False) as plain:
        before = plain.complete(QUESTION, temperature=0, max_tokens=24).text
    with LocalModel("qwen2.5-coder-0.5b", n_parallel=1, n_ctx=1024, cache=False, lora=[(path, 1.0)]) as tuned:
        after = tuned.complete(QUESTION, temperature=0, max_tokens=24).text
    assert "PAMPLEMOUSSE" not in before
    assert "PAMPLEMOUSSE-42" in after


def test_soft_prompt_and_lora_learn_together_on_the_real_model(base: Any) -> None:
    torch = pytest.importorskip("torch")
    tuner = SoftPromptLoRA(base, n_tokens=4, init_text="Answer:", lora=LoRAConfig(r=8, alpha=16))
    prompt_before = tuner.prompt.detach().clone()
    result = tuner.fit([SFTExample.from_messages(QUESTION, REPLY)], steps=6, lr=2e-3, prompt_lr=1e-2, progress=False)
    assert result["losses"][-1] < 0.5 * result["losses"][0]
    assert not torch.equal(prompt_before, tuner.prompt.detach())
    assert tuner._lora_tensors is not None
    assert any(float(v.abs().sum()) > 0 for k, v in tuner._lora_tensors.items() if "lora_B" in k)
