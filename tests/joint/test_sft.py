"""Fine-tuning data: chat-template rendering, reply-only labels, padding, and the reply loss."""

from __future__ import annotations

from typing import Any

import pytest

from feedprop.errors import InvalidInputError
from feedprop.joint.sft import SFTExample, collate, fingerprint_examples, response_loss, tokenize


def example(text: str = "What is 2+2?", reply: str = "4") -> SFTExample:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    return SFTExample.from_messages(messages, reply)


def test_examples_are_values_with_a_json_round_trip() -> None:
    ex = example()
    assert SFTExample.from_dict(ex.to_dict()) == ex
    assert len({ex, example()}) == 1
    assert fingerprint_examples([ex]) != fingerprint_examples([example(reply="5")])


@pytest.mark.parametrize(
    ("messages", "reply", "match"),
    [
        ("hello", "x", "not a string"),
        ([{"role": "user", "content": "q"}], "", "non-empty str response"),
        ([{"role": "robot", "content": "q"}], "x", "role"),
    ],
)
def test_bad_examples_are_refused(messages: Any, reply: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        SFTExample.from_messages(messages, reply)


def test_only_the_reply_and_its_end_of_turn_are_learned(tiny_base: Any) -> None:
    tok = tiny_base.tokenizer
    encoded = tokenize(tok, example(reply="four"), max_length=1024)
    assert encoded is not None
    learned = [i for i, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != -100]
    assert tok.decode(learned) == "four<|im_end|>\n"
    prompt_part = encoded.input_ids[: encoded.labels.index(learned[0])]
    assert tok.decode(list(prompt_part)).endswith("<|im_start|>assistant\n")
    assert encoded.trained_tokens == len(learned)


def test_too_long_examples_are_skipped(tiny_base: Any) -> None:
    assert tokenize(tiny_base.tokenizer, example(text="x" * 200), max_length=64) is None


def test_collate_pads_on_the_right(tiny_base: Any) -> None:
    tok = tiny_base.tokenizer
    short, long = (tokenize(tok, example(text=t), 1024) for t in ("a", "a much longer question"))
    assert short is not None and long is not None
    batch = collate([short, long], tok.pad_token_id)
    width = len(long.input_ids)
    assert tuple(batch.input_ids.shape) == (2, width)
    assert batch.attention_mask[0].tolist() == [1] * len(short.input_ids) + [0] * (width - len(short.input_ids))
    assert batch.labels[0, len(short.input_ids) :].tolist() == [-100] * (width - len(short.input_ids))


def test_reply_loss_matches_the_full_logits_loss(tiny_base: Any) -> None:
    torch = pytest.importorskip("torch")
    encoded = tokenize(tiny_base.tokenizer, example(reply="four"), 1024)
    assert encoded is not None
    batch = collate([encoded], tiny_base.tokenizer.pad_token_id)
    with torch.no_grad():
        ours = response_loss(tiny_base.model, batch)
        reference = tiny_base.model(input_ids=batch.input_ids, labels=batch.labels).loss
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)


def test_a_soft_prefix_is_read_but_not_learned(tiny_base: Any) -> None:
    torch = pytest.importorskip("torch")
    encoded = tokenize(tiny_base.tokenizer, example(reply="four"), 1024)
    assert encoded is not None
    batch = collate([encoded], tiny_base.tokenizer.pad_token_id)
    prefix = torch.zeros(3, tiny_base.model.config.hidden_size, requires_grad=True)
    loss = response_loss(tiny_base.model, batch, prefix_embeds=prefix)
    loss.backward()
    assert prefix.grad is not None and float(prefix.grad.abs().sum()) > 0
