"""GGUF LoRA adapters: llama.cpp's tensor names and metadata, and a lossless write/read round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError, ModelFileError
from feedprop.joint.gguf_adapter import GGUFAdapter, gguf_name, peft_name, read_adapter, state_from_peft, write_adapter

np = pytest.importorskip("numpy")
gguf = pytest.importorskip("gguf", reason="the joint extra (gguf) is not installed")


def pair(layer: int, proj: str, rank: int = 2, width: int = 8, out: int = 8) -> dict[str, object]:
    rng = np.random.default_rng(layer)
    return {
        f"blk.{layer}.{proj}.weight.lora_a": rng.standard_normal((rank, width)).astype(np.float32),
        f"blk.{layer}.{proj}.weight.lora_b": rng.standard_normal((out, rank)).astype(np.float32),
    }


@pytest.mark.parametrize(
    ("peft_key", "expected"),
    [
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", "blk.0.attn_q.weight.lora_a"),
        ("base_model.model.model.layers.11.self_attn.v_proj.lora_B.weight", "blk.11.attn_v.weight.lora_b"),
        ("model.layers.2.self_attn.o_proj.lora_A.weight", "blk.2.attn_output.weight.lora_a"),
        ("base_model.model.model.layers.3.mlp.down_proj.lora_B.default.weight", "blk.3.ffn_down.weight.lora_b"),
    ],
)
def test_names_follow_llama_cpp(peft_key: str, expected: str) -> None:
    assert gguf_name(peft_key) == expected
    assert gguf_name(peft_name(expected)) == expected


def test_unknown_layers_cannot_be_named() -> None:
    with pytest.raises(ConfigurationError, match="only LoRA on the linear layers"):
        gguf_name("base_model.model.lm_head.lora_A.default.weight")
    with pytest.raises(ModelFileError):
        peft_name("blk.0.attn_qkv.weight.lora_a")


def test_round_trip_keeps_every_value_and_the_metadata(tmp_path: Path) -> None:
    tensors = {**pair(0, "attn_q"), **pair(0, "attn_v", out=4), **pair(1, "attn_q")}
    adapter = GGUFAdapter("qwen2", 16.0, tensors, {"feedprop.steps": 7, "feedprop.base": "tiny"})
    path = write_adapter(tmp_path / "a.gguf", adapter)
    back = read_adapter(path)
    assert back.architecture == "qwen2" and back.alpha == 16.0 and back.rank == 2
    assert back.targets == ["q_proj", "v_proj"]
    assert back.metadata == {"feedprop.steps": 7, "feedprop.base": "tiny"}
    assert sorted(back.tensors) == sorted(tensors)
    for name, value in tensors.items():
        assert back.tensors[name].shape == value.shape  # type: ignore[attr-defined]
        np.testing.assert_array_equal(back.tensors[name], value)


def test_the_file_says_what_llama_cpp_checks(tmp_path: Path) -> None:
    path = write_adapter(tmp_path / "a.gguf", GGUFAdapter("qwen2", 8.0, pair(0, "attn_q", rank=3, width=5, out=7)))
    reader = gguf.GGUFReader(str(path))
    fields = {k: v.contents() for k, v in reader.fields.items() if not k.startswith("GGUF.")}
    assert fields["general.type"] == "adapter"
    assert fields["general.architecture"] == "qwen2"
    assert fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == pytest.approx(8.0)
    shapes = {t.name: list(t.shape) for t in reader.tensors}
    # GGUF lists dimensions innermost first: lora_a is [in, rank], lora_b is [rank, out] (llama.cpp's check).
    assert shapes == {"blk.0.attn_q.weight.lora_a": [5, 3], "blk.0.attn_q.weight.lora_b": [3, 7]}


def test_a_crash_leaves_no_half_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError, match="disk full"):
        write_adapter(tmp_path / "a.gguf", GGUFAdapter("qwen2", 8.0, pair(0, "attn_q")))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ({}, "no tensors"),
        ({"blk.0.attn_q.weight.lora_a": np.zeros((2, 4), np.float32)}, "miss one half"),
        ({"blk.0.attn_q.lora_a": np.zeros((2, 4), np.float32)}, "not a llama.cpp LoRA tensor name"),
        (
            {
                "blk.0.attn_q.weight.lora_a": np.zeros((2, 4), np.float32),
                "blk.0.attn_q.weight.lora_b": np.zeros((4, 3), np.float32),
            },
            "rank",
        ),
        (
            {
                "blk.0.attn_q.weight.lora_a": np.zeros((2,), np.float32),
                "blk.0.attn_q.weight.lora_b": np.zeros((4, 2), np.float32),
            },
            "2-d",
        ),
    ],
)
def test_malformed_adapters_are_refused(tmp_path: Path, tensors: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        write_adapter(tmp_path / "a.gguf", GGUFAdapter("qwen2", 8.0, tensors))


def test_unsupported_architecture_and_metadata(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="supports the architectures"):
        write_adapter(tmp_path / "a.gguf", GGUFAdapter("llama", 8.0, pair(0, "attn_q")))
    with pytest.raises(InvalidInputError, match=r"start with 'feedprop\.'"):
        write_adapter(tmp_path / "a.gguf", GGUFAdapter("qwen2", 8.0, pair(0, "attn_q"), {"steps": 3}))
    with pytest.raises(InvalidInputError, match="must be a str, int, float or bool"):
        write_adapter(tmp_path / "a.gguf", GGUFAdapter("qwen2", 8.0, pair(0, "attn_q"), {"feedprop.x": [1]}))


def test_reading_what_is_not_an_adapter(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no LoRA adapter file"):
        read_adapter(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelFileError, match="not a readable GGUF file"):
        read_adapter(junk)
    model = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(model), arch="qwen2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelFileError, match="is not a LoRA adapter"):
        read_adapter(model)


def test_state_from_peft_takes_only_lora_weights() -> None:
    torch = pytest.importorskip("torch")
    state = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight": torch.ones(2, 8),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight": torch.zeros(8, 2),
        "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight": torch.ones(8, 8),
    }
    out = state_from_peft(state)
    assert sorted(out) == ["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"]
    assert out["blk.0.attn_q.weight.lora_a"].dtype == np.float32
