"""Fixtures for the weights side: an isolated home, a tiny random Qwen2 model, and a fake engine.

The tiny model has the real architecture (so LoRA names, GGUF export and chat-template
tokenisation are exercised for real) but two layers of width 32 and a byte-level vocabulary,
so a fine-tuning step takes milliseconds. The fake engine stands in for llama.cpp in unit
tests: it records the adapters it was started with and answers through a handler.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from feedprop.llm import Completion, Usage, set_cache_enabled, set_default

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "feedprop-home"
    monkeypatch.setenv("FEEDPROP_HOME", str(home))
    for name in ("FEEDPROP_CACHE", "FEEDPROP_BASE_URL", "FEEDPROP_MODEL", "FEEDPROP_LOCAL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    set_cache_enabled(None)
    set_default(None)
    yield home
    set_cache_enabled(None)
    set_default(None)


def make_tiny_base(seed: int = 0) -> Any:
    """A TorchBase holding a randomly initialised two-layer Qwen2 model and a byte-level tokenizer."""
    torch = pytest.importorskip("torch", reason="the joint extra (torch) is not installed")
    transformers = pytest.importorskip("transformers", reason="the joint extra (transformers) is not installed")
    pytest.importorskip("peft", reason="the joint extra (peft) is not installed")
    tokenizers = pytest.importorskip("tokenizers")
    from feedprop.joint.torch_model import TorchBase

    alphabet = tokenizers.pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = transformers.Qwen2Config(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        initializer_range=0.5,  # a frozen random output layer this wide can then express confident predictions
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    model = transformers.Qwen2ForCausalLM(config).float().eval()
    return TorchBase("tiny-qwen2", Path("tiny.gguf"), "ab" * 32, "qwen2", model, fast, threading.Lock())


@pytest.fixture
def tiny_base() -> Any:
    return make_tiny_base()


class FakeEngine:
    """Stands in for LocalModel: remembers how it was started, answers through ``handler``."""

    started: ClassVar[list[FakeEngine]] = []
    handler: Callable[[FakeEngine, list[dict[str, str]], dict[str, Any]], str] = staticmethod(
        lambda engine, messages, params: "base" if not engine.lora else "adapted"
    )

    def __init__(self, name: str | None = None, *, model_path: Any = None, lora: Any = (), **options: Any) -> None:
        self.name = name
        self.model_path = model_path
        self.lora = list(lora)
        self.options = options
        self.running = True
        self.calls = 0
        type(self).started.append(self)

    def _complete(self, messages: list[dict[str, str]], **params: Any) -> Completion:
        self.calls += 1
        text = type(self).handler(self, messages, params)
        return Completion(text, model="engine", usage=Usage(prompt_tokens=10, completion_tokens=2))

    def close(self) -> None:
        self.running = False


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeEngine]]:
    """Replace the llama.cpp engine behind every Student with :class:`FakeEngine`."""
    from feedprop.joint import student

    class Engine(FakeEngine):
        started: ClassVar[list[FakeEngine]] = []

    monkeypatch.setattr(student, "LocalModel", Engine)
    yield Engine


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and the machine's cores are shared."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
