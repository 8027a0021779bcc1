"""Simultaneous mode: a soft prompt and LoRA weights trained together, from one loss.

A soft prompt is a few trainable vectors in the model's embedding space, placed before every
input — a prompt the optimizer writes in numbers rather than words. :class:`SoftPromptLoRA`
trains those vectors and LoRA layers at the same time: each step computes one loss on the
examples' replies and one backward pass gives both their gradients, which a single AdamW
optimizer (with its own learning rate per group) applies. The two adapt to each other step by
step, instead of in alternating phases.

Soft prompts live in embedding space, which llama.cpp's chat API cannot take as input, so a
model with a soft prompt runs in torch: :meth:`SoftPromptLoRA.generate` decodes greedily, and
:meth:`SoftPromptLoRA.as_llm` wraps it as an :class:`~feedprop.llm.LLM` a workflow can call
(slower than the embedded engine). :meth:`SoftPromptLoRA.save` writes everything to one
safetensors file.

Example:
    >>> from feedprop.joint.torch_model import load_base                        # doctest: +SKIP
    >>> tuner = SoftPromptLoRA(load_base("qwen2.5-coder-0.5b"), n_tokens=8)    # doctest: +SKIP
    >>> result = tuner.fit(examples, steps=20)                                  # doctest: +SKIP
    >>> tuner.generate([{"role": "user", "content": "2+2?"}])                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from feedprop._files import replacing
from feedprop.errors import ConfigurationError, InvalidInputError, ModelFileError
from feedprop.joint._deps import require
from feedprop.joint.finetune import LoRAConfig, attach_lora, load_lora_state, lora_state, torch_threads
from feedprop.joint.sft import SFTExample, TokenizedExample, collate, response_loss, tokenize
from feedprop.joint.torch_model import TorchBase
from feedprop.llm.base import LLM, Completion, Message, Usage

__all__ = ["SoftPromptLLM", "SoftPromptLoRA"]

_FORMAT = "feedprop.soft-prompt-lora/1"


class SoftPromptLoRA:
    """``n_tokens`` trainable prompt vectors plus LoRA layers on ``base``, trained jointly.

    Args:
        base: the model (:func:`~feedprop.joint.torch_model.load_base`); it is shared and left
            unchanged — the LoRA layers are attached only while training or generating.
        n_tokens: how many soft-prompt vectors.
        lora: the LoRA shape (:class:`LoRAConfig`).
        init_text: initialise the vectors from this text's token embeddings (repeated or cut
            to ``n_tokens``); default: embeddings of random vocabulary tokens.
        seed: seeds the initialisation.
        threads: CPU threads torch may use while training or generating (default: torch's choice).

    Example:
        >>> tuner = SoftPromptLoRA(base, n_tokens=4, init_text="Answer:")   # doctest: +SKIP
        >>> tuner.prompt.shape                                              # doctest: +SKIP
        torch.Size([4, 896])
    """

    def __init__(
        self,
        base: TorchBase,
        *,
        n_tokens: int = 8,
        lora: LoRAConfig | None = None,
        init_text: str | None = None,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        if not isinstance(base, TorchBase):
            raise InvalidInputError(f"base must be a TorchBase from load_base(), got {type(base).__name__}")
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1:
            raise ConfigurationError(f"n_tokens must be an int >= 1, got {n_tokens!r}")
        if lora is not None and not isinstance(lora, LoRAConfig):
            raise InvalidInputError(f"lora must be a LoRAConfig, got {type(lora).__name__}")
        torch = require("torch")
        self.base = base
        self.lora = lora if lora is not None else LoRAConfig()
        self.seed = seed
        self.threads = threads
        embedding = base.model.get_input_embeddings().weight.detach()
        generator = torch.Generator().manual_seed(seed)
        if init_text:
            ids = list(base.tokenizer(init_text, add_special_tokens=False)["input_ids"])
            if not ids:
                raise ConfigurationError(f"init_text {init_text!r} has no tokens")
            ids = (ids * math.ceil(n_tokens / len(ids)))[:n_tokens]
        else:
            ids = torch.randint(0, embedding.shape[0], (n_tokens,), generator=generator).tolist()
        self.prompt = torch.nn.Parameter(embedding[torch.tensor(ids)].clone().float())
        self._lora_tensors: dict[str, Any] | None = None  # None until the first attach initialises them
        self._optimizer_state: dict[str, Any] | None = None
        self.steps = 0

    @contextmanager
    def _attached(self) -> Iterator[Any]:
        """The base model with this tuner's LoRA layers, for the duration of the block."""
        torch = require("torch")
        with self.base.lock, torch_threads(self.threads):
            if self._lora_tensors is None:
                torch.manual_seed(self.seed)
            peft_model = attach_lora(self.base, self.lora, None)
            try:
                if self._lora_tensors is not None:
                    load_lora_state(peft_model, self._lora_tensors)
                yield peft_model
                self._lora_tensors = lora_state(peft_model)
            finally:
                peft_model.unload()
                self.base.model.eval()

    def fit(
        self,
        examples: Sequence[SFTExample],
        *,
        steps: int = 20,
        batch_size: int = 4,
        lr: float = 2e-4,
        prompt_lr: float = 1e-2,
        max_length: int = 1024,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Train the soft prompt and the LoRA layers together for ``steps`` steps on ``examples``.

        Every step: one forward pass with the soft prompt in front, one loss on the replies, one
        ``backward()`` giving both groups their gradients, one optimizer step updating both.
        Returns ``{"steps", "losses", "seconds", "examples"}``; calling again continues training.
        """
        items = list(examples)
        if not items or not all(isinstance(e, SFTExample) for e in items):
            raise InvalidInputError("examples must be a non-empty sequence of SFTExample")
        for name, value in (("steps", steps), ("batch_size", batch_size), ("max_length", max_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        torch = require("torch")
        tokenizer = self.base.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        tokenized = [t for t in (tokenize(tokenizer, e, max_length - self.prompt.shape[0]) for e in items) if t]
        if not tokenized:
            raise ConfigurationError(f"every example is longer than max_length={max_length} tokens")
        started = time.monotonic()
        losses: list[float] = []
        rng = random.Random(f"{self.seed}:{self.steps}")
        with self._attached() as peft_model:
            causal_lm = peft_model.get_base_model()
            lora_params = [p for p in peft_model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(
                [{"params": [self.prompt], "lr": prompt_lr}, {"params": lora_params, "lr": lr}], weight_decay=0.0
            )
            if self._optimizer_state is not None:
                optimizer.load_state_dict(self._optimizer_state)
            peft_model.train()
            bar = tqdm(total=steps, desc="soft prompt + LoRA", unit="step") if progress else None
            try:
                for _ in range(steps):
                    batch_items = rng.sample(tokenized, min(batch_size, len(tokenized)))
                    losses.append(self._step(causal_lm, optimizer, batch_items, pad_id, lora_params))
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=True)
            finally:
                if bar is not None:
                    bar.close()
                peft_model.eval()
            self._optimizer_state = optimizer.state_dict()
        return {"steps": steps, "losses": losses, "seconds": time.monotonic() - started, "examples": len(tokenized)}

    def _step(
        self, causal_lm: Any, optimizer: Any, items: list[TokenizedExample], pad_id: int, lora_params: list[Any]
    ) -> float:
        torch = require("torch")
        batch = collate(items, pad_id)
        loss = response_loss(causal_lm, batch, prefix_embeds=self.prompt)
        loss.backward()  # the one backward pass: the soft prompt and the LoRA weights get their gradients
        torch.nn.utils.clip_grad_norm_([self.prompt, *lora_params], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigurationError(f"the loss became {value}; lower the learning rates")
        return value

    def generate(self, messages: Sequence[Mapping[str, Any]], *, max_new_tokens: int = 128) -> tuple[str, int, int]:
        """Greedy reply to ``messages`` with the soft prompt and LoRA applied: ``(text, prompt_tokens, new_tokens)``."""
        torch = require("torch")
        tokenizer = self.base.tokenizer
        chat = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]], dtype=torch.long)
        with self._attached() as peft_model, torch.no_grad():
            causal_lm = peft_model.get_base_model()
            embeds = causal_lm.get_input_embeddings()(ids)
            embeds = torch.cat([self.prompt.detach().unsqueeze(0).to(embeds.dtype), embeds], dim=1)
            mask = torch.ones(embeds.shape[:2], dtype=torch.long)
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            out = causal_lm.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new = out[0].tolist()
        return tokenizer.decode(new, skip_special_tokens=True), int(embeds.shape[1]), len(new)

    def as_llm(self, name: str | None = None) -> SoftPromptLLM:
        """This tuned model as a feedprop :class:`~feedprop.llm.LLM` (greedy, runs in torch)."""
        return SoftPromptLLM(self, name=name)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the soft prompt, LoRA weights and settings to one safetensors file (no pickle)."""
        safetensors_torch = require("safetensors.torch")
        if self._lora_tensors is None:
            with self._attached():
                pass  # initialise the LoRA weights so the file is complete
        assert self._lora_tensors is not None
        tensors = {"soft_prompt": self.prompt.detach().contiguous()}
        tensors.update({f"lora::{k}": v.contiguous() for k, v in self._lora_tensors.items()})
        meta = {
            "format": _FORMAT,
            "base_sha256": self.base.sha256,
            "lora": json.dumps(self.lora.to_dict()),
            "steps": str(self.steps),
            "seed": str(self.seed),
        }
        with replacing(path) as temp:
            safetensors_torch.save_file(tensors, str(temp), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, base: TorchBase, path: str | os.PathLike[str]) -> SoftPromptLoRA:
        """Read what :meth:`save` wrote, for the same base model."""
        safetensors = require("safetensors")
        source = Path(path)
        if not source.is_file():
            raise ModelFileError(f"no soft-prompt file at {source}")
        with safetensors.safe_open(str(source), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        if meta.get("format") != _FORMAT:
            raise ModelFileError(f"{source} is not a saved SoftPromptLoRA (format {meta.get('format')!r})")
        if meta.get("base_sha256") != base.sha256:
            raise ConfigurationError(f"{source} was trained on another base model; load it with that model")
        prompt = tensors.pop("soft_prompt")
        tuner = cls(
            base,
            n_tokens=int(prompt.shape[0]),
            lora=LoRAConfig.from_dict(json.loads(meta["lora"])),
            seed=int(meta.get("seed", "0")),
        )
        tuner.prompt.data.copy_(prompt)
        tuner._lora_tensors = {k.removeprefix("lora::"): v for k, v in tensors.items()}
        tuner.steps = int(meta.get("steps", "0"))
        return tuner


class SoftPromptLLM(LLM):
    """A :class:`SoftPromptLoRA` answering ``complete()`` calls (greedy decoding in torch).

    ``max_tokens`` is honoured; sampling parameters such as ``temperature`` are ignored (the
    reply is always the greedy one).
    """

    def __init__(self, tuner: SoftPromptLoRA, *, name: str | None = None) -> None:
        super().__init__(cache=False, max_concurrency=1)
        self.tuner = tuner
        self.model = name or f"{tuner.base.name}+soft-prompt"

    def _complete(self, messages: list[Message], **params: Any) -> Completion:
        max_tokens = params.get("max_tokens") or 256
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigurationError(f"max_tokens must be a positive int, got {max_tokens!r}")
        text, prompt_tokens, new_tokens = self.tuner.generate(messages, max_new_tokens=max_tokens)
        finish = "length" if new_tokens >= max_tokens else "stop"
        return Completion(text, self.model, Usage(prompt_tokens, new_tokens), finish)
