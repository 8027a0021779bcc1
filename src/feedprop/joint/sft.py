"""Supervised fine-tuning data: a chat transcript and the reply the model should give.

An :class:`SFTExample` is what one successful LLM call of a workflow teaches: the messages the
model received and the reply it gave (or should have given). For training it is rendered with
the model's own chat template — the same template llama.cpp applies when serving — so the
weights learn exactly the token sequence they will see at inference. The loss covers only the
reply (and the end-of-turn token that stops generation), never the prompt.

Example:
    >>> ex = SFTExample.from_messages([{"role": "user", "content": "2+2?"}], "4")
    >>> ex.to_dict()["response"], SFTExample.from_dict(ex.to_dict()) == ex
    ('4', True)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from feedprop.errors import InvalidInputError
from feedprop.joint._deps import require
from feedprop.llm.base import check_messages

__all__ = ["Batch", "SFTExample", "TokenizedExample", "collate", "fingerprint_examples", "response_loss", "tokenize"]


@dataclass(frozen=True)
class SFTExample:
    """One training example: chat ``messages`` (role/content pairs) and the ``response`` to learn."""

    messages: tuple[tuple[str, str], ...]
    response: str

    @classmethod
    def from_messages(cls, messages: Sequence[Mapping[str, Any]], response: str) -> SFTExample:
        """Build from ``[{"role": ..., "content": ...}, ...]`` and the reply text."""
        checked = check_messages(messages if isinstance(messages, str) else list(messages))
        if not isinstance(response, str) or not response:
            raise InvalidInputError(f"an SFT example needs a non-empty str response, got {response!r:.60}")
        return cls(tuple((m["role"], m["content"]) for m in checked), response)

    def chat(self) -> list[dict[str, str]]:
        """The messages as a list of dicts (what chat templates take)."""
        return [{"role": role, "content": content} for role, content in self.messages]

    def to_dict(self) -> dict[str, Any]:
        return {"messages": self.chat(), "response": self.response}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SFTExample:
        if not isinstance(data, Mapping) or "messages" not in data or "response" not in data:
            raise InvalidInputError("an SFT example is a mapping with 'messages' and 'response'")
        return cls.from_messages(data["messages"], data["response"])


def fingerprint_examples(examples: Iterable[SFTExample]) -> str:
    """A digest of the examples in order (checkpoints refuse to resume on different data)."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps(ex.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids of prompt + reply, and the labels: ``-100`` on the prompt (not learned), ids on the reply."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != -100)


def tokenize(tokenizer: Any, example: SFTExample, max_length: int) -> TokenizedExample | None:
    """Render ``example`` with the tokenizer's chat template; ``None`` if it is longer than ``max_length``.

    The prompt is the template with the assistant turn opened; the target is whatever the
    template adds after it for the reply (the reply, the end-of-turn token, its newline).
    """
    chat = example.chat()
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*chat, {"role": "assistant", "content": example.response}], tokenize=False)
    if not isinstance(prompt, str) or not isinstance(full, str) or not full.startswith(prompt):
        raise InvalidInputError(
            "the tokenizer's chat template renders the reply in a way that does not extend the prompt; "
            "this model's template cannot be used for reply-only fine-tuning"
        )
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    target_ids = list(tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"])
    if len(prompt_ids) + len(target_ids) > max_length:
        return None
    return TokenizedExample(tuple(prompt_ids + target_ids), tuple([-100] * len(prompt_ids) + target_ids))


@dataclass
class Batch:
    """Right-padded tensors of a minibatch."""

    input_ids: Any
    attention_mask: Any
    labels: Any


def collate(examples: Sequence[TokenizedExample], pad_id: int) -> Batch:
    """Pad a minibatch on the right to its longest example."""
    torch = require("torch")
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels, dtype=torch.long)
    return Batch(ids, mask, labels)


def response_loss(causal_lm: Any, batch: Batch, prefix_embeds: Any = None) -> Any:
    """Mean next-token cross-entropy over the reply tokens of ``batch``.

    Only the positions that predict a reply token go through the output layer: with a 150k-token
    vocabulary, full logits for a batch would take gigabytes. ``prefix_embeds`` (``[n, hidden]``)
    is prepended to every sequence as trainable soft-prompt vectors (not learned as targets).
    """
    torch = require("torch")
    functional = require("torch.nn.functional")
    backbone = getattr(causal_lm, causal_lm.base_model_prefix)
    embeds = causal_lm.get_input_embeddings()(batch.input_ids)
    mask = batch.attention_mask
    labels = batch.labels
    if prefix_embeds is not None:
        rows = batch.input_ids.shape[0]
        prefix = prefix_embeds.unsqueeze(0).expand(rows, -1, -1).to(embeds.dtype)
        embeds = torch.cat([prefix, embeds], dim=1)
        n = prefix_embeds.shape[0]
        mask = torch.cat([torch.ones((rows, n), dtype=mask.dtype), mask], dim=1)
        labels = torch.cat([torch.full((rows, n), -100, dtype=labels.dtype), labels], dim=1)
    hidden = backbone(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    # Position t predicts token t + 1.
    targets = labels[:, 1:]
    keep = targets != -100
    if not bool(keep.any()):
        raise InvalidInputError("the batch has no reply tokens to learn; every example's reply was empty")
    selected = hidden[:, :-1][keep]
    logits = causal_lm.get_output_embeddings()(selected)
    return functional.cross_entropy(logits.float(), targets[keep])
