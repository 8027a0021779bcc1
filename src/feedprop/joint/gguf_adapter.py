"""LoRA adapters in GGUF, the form llama.cpp loads next to a base model.

A peft LoRA layer holds ``lora_A`` (rank x in_features) and ``lora_B`` (out_features x rank)
for a linear layer such as ``model.layers.3.self_attn.q_proj``. llama.cpp names the same
weights after the base model's tensor: ``blk.3.attn_q.weight.lora_a`` and ``...lora_b``, with
the matrices stored as they are in torch (GGUF lists dimensions innermost first, so ``lora_a``
reads as ``[in_features, rank]`` there and ``lora_b`` as ``[rank, out_features]``, which is what
llama.cpp checks against the base tensor). The file says ``general.type = "adapter"``,
``adapter.type = "lora"``, the base ``general.architecture`` and ``adapter.lora.alpha``; llama.cpp
scales the update by ``scale * alpha / rank``, exactly peft's ``lora_alpha / r``.

Only architectures whose attention weights are stored unpermuted are supported (Qwen2, the
family of the embedded models); llama-style models permute q/k rows on conversion, which an
exporter would have to mirror.

Example:
    >>> gguf_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.default.weight")
    'blk.3.attn_q.weight.lora_a'
    >>> peft_name("blk.3.attn_q.weight.lora_a")
    'base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedprop._files import replacing
from feedprop.errors import ConfigurationError, InvalidInputError, ModelFileError
from feedprop.joint._deps import require

__all__ = [
    "PROJECTIONS",
    "SUPPORTED_ARCHITECTURES",
    "GGUFAdapter",
    "gguf_name",
    "peft_name",
    "read_adapter",
    "state_from_peft",
    "write_adapter",
]

#: The base model architectures whose adapters this module can write.
SUPPORTED_ARCHITECTURES = ("qwen2",)

#: transformers' projection name -> (its block in the HF model, llama.cpp's tensor name).
PROJECTIONS: dict[str, tuple[str, str]] = {
    "q_proj": ("self_attn", "attn_q"),
    "k_proj": ("self_attn", "attn_k"),
    "v_proj": ("self_attn", "attn_v"),
    "o_proj": ("self_attn", "attn_output"),
    "gate_proj": ("mlp", "ffn_gate"),
    "up_proj": ("mlp", "ffn_up"),
    "down_proj": ("mlp", "ffn_down"),
}
_GGUF_TO_HF = {gguf: (block, hf) for hf, (block, gguf) in PROJECTIONS.items()}

_PEFT_KEY = re.compile(
    r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.[\w-]+)?\.weight$"
)
_GGUF_KEY = re.compile(r"^blk\.(\d+)\.(\w+)\.weight\.lora_([ab])$")


def gguf_name(peft_key: str) -> str:
    """llama.cpp's name for a peft LoRA weight (``...layers.N.self_attn.q_proj.lora_A...weight``)."""
    match = _PEFT_KEY.match(peft_key)
    if match is None or match.group(3) not in PROJECTIONS:
        raise ConfigurationError(
            f"cannot name LoRA weight {peft_key!r} for llama.cpp: only LoRA on the linear layers "
            f"{sorted(PROJECTIONS)} of a transformer block can be exported"
        )
    layer, _block, proj, ab = match.groups()
    return f"blk.{layer}.{PROJECTIONS[proj][1]}.weight.lora_{ab.lower()}"


def peft_name(gguf_key: str) -> str:
    """peft's name (adapter name left out) for a llama.cpp LoRA tensor name; inverse of :func:`gguf_name`."""
    match = _GGUF_KEY.match(gguf_key)
    if match is None or match.group(2) not in _GGUF_TO_HF:
        raise ModelFileError(f"the adapter holds a tensor {gguf_key!r} this library cannot map to a peft LoRA weight")
    layer, tensor, ab = match.groups()
    block, proj = _GGUF_TO_HF[tensor]
    return f"base_model.model.model.layers.{layer}.{block}.{proj}.lora_{ab.upper()}.weight"


@dataclass
class GGUFAdapter:
    """A LoRA adapter read from (or to be written to) a GGUF file.

    ``tensors`` maps llama.cpp tensor names to float32 numpy arrays in torch layout;
    ``metadata`` holds the file's other string/number keys (``feedprop.*`` provenance included).
    """

    architecture: str
    alpha: float
    tensors: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        """The LoRA rank (rows of every ``lora_a``)."""
        ranks = {int(t.shape[0]) for name, t in self.tensors.items() if name.endswith(".lora_a")}
        if len(ranks) != 1:
            raise ModelFileError(f"the adapter's lora_a tensors disagree on the rank: {sorted(ranks)}")
        return ranks.pop()

    @property
    def targets(self) -> list[str]:
        """The transformers projection names the adapter touches (``["q_proj", "v_proj"]``)."""
        found = {_GGUF_TO_HF[m.group(2)][1] for name in self.tensors if (m := _GGUF_KEY.match(name))}
        return sorted(found)

    def peft_state(self) -> dict[str, Any]:
        """The tensors under peft's names (adapter name left out), as numpy arrays."""
        return {peft_name(name): array for name, array in self.tensors.items()}


def _check(adapter: GGUFAdapter) -> None:
    if adapter.architecture not in SUPPORTED_ARCHITECTURES:
        raise ConfigurationError(
            f"LoRA export supports the architectures {list(SUPPORTED_ARCHITECTURES)}, not {adapter.architecture!r}"
        )
    if not adapter.tensors:
        raise InvalidInputError("the adapter has no tensors; train at least one LoRA layer before exporting")
    pairs: dict[str, set[str]] = {}
    for name, array in adapter.tensors.items():
        match = _GGUF_KEY.match(name)
        if match is None or match.group(2) not in _GGUF_TO_HF:
            raise InvalidInputError(f"{name!r} is not a llama.cpp LoRA tensor name (blk.N.attn_q.weight.lora_a)")
        if getattr(array, "ndim", 0) != 2:
            raise InvalidInputError(
                f"LoRA tensor {name!r} must be a 2-d array, got shape {getattr(array, 'shape', '?')}"
            )
        pairs.setdefault(name.rsplit(".", 1)[0], set()).add(match.group(3))
    broken = [base for base, halves in pairs.items() if halves != {"a", "b"}]
    if broken:
        raise InvalidInputError(f"LoRA tensors come in a/b pairs; these miss one half: {sorted(broken)[:4]}")
    for base in pairs:
        a, b = adapter.tensors[f"{base}.lora_a"], adapter.tensors[f"{base}.lora_b"]
        if a.shape[0] != b.shape[1]:
            raise InvalidInputError(f"{base}: lora_a has rank {a.shape[0]} but lora_b has rank {b.shape[1]}")


def write_adapter(path: str | os.PathLike[str], adapter: GGUFAdapter) -> Path:
    """Write ``adapter`` as a GGUF LoRA file llama.cpp can load; atomic (a crash leaves no half file).

    Example:
        >>> import numpy as np, tempfile, os
        >>> a = np.zeros((2, 896), np.float32); b = np.zeros((896, 2), np.float32)
        >>> path = os.path.join(tempfile.mkdtemp(), "a.gguf")
        >>> _ = write_adapter(path, GGUFAdapter("qwen2", 4.0, {"blk.0.attn_q.weight.lora_a": a,
        ...                                                     "blk.0.attn_q.weight.lora_b": b}))
        >>> read_adapter(path).rank
        2
    """
    _check(adapter)
    gguf = require("gguf")
    np = require("numpy")
    target = Path(path)
    with replacing(target) as temp:
        writer = gguf.GGUFWriter(str(temp), arch=adapter.architecture)
        writer.add_type("adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", float(adapter.alpha))
        for key, value in sorted(adapter.metadata.items()):
            _add_metadata(writer, key, value)
        for name in sorted(adapter.tensors):
            writer.add_tensor(name, np.ascontiguousarray(adapter.tensors[name], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return target


def _add_metadata(writer: Any, key: str, value: Any) -> None:
    if not key.startswith("feedprop."):
        raise InvalidInputError(f"adapter metadata keys must start with 'feedprop.', got {key!r}")
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_int64(key, value)
    elif isinstance(value, float):
        writer.add_float64(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        raise InvalidInputError(
            f"adapter metadata {key!r} must be a str, int, float or bool, got {type(value).__name__}"
        )


def read_adapter(path: str | os.PathLike[str]) -> GGUFAdapter:
    """Read a GGUF LoRA adapter written by :func:`write_adapter` (or llama.cpp's converter, for Qwen2)."""
    gguf = require("gguf")
    np = require("numpy")
    source = Path(path)
    if not source.is_file():
        raise ModelFileError(f"no LoRA adapter file at {source}")
    try:
        reader = gguf.GGUFReader(str(source))
    except Exception as exc:  # the gguf package raises bare ValueErrors on damaged files
        raise ModelFileError(f"{source} is not a readable GGUF file ({exc})") from exc
    fields: dict[str, Any] = {}
    for key, value in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            fields[key] = value.contents()
        except Exception:  # an array type this reader does not decode: not needed here
            continue
    if fields.get("general.type") != "adapter" or fields.get("adapter.type") != "lora":
        raise ModelFileError(f"{source} is not a LoRA adapter (general.type={fields.get('general.type')!r})")
    tensors: dict[str, Any] = {}
    for tensor in reader.tensors:
        if tensor.tensor_type.name not in ("F32", "F16"):
            raise ModelFileError(f"{source}: tensor {tensor.name} is {tensor.tensor_type.name}; only F32/F16 are read")
        # GGUF lists dimensions innermost first; the data is already in torch's row-major layout.
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        tensors[tensor.name] = np.array(tensor.data, dtype=np.float32).reshape(shape)
    metadata = {k: v for k, v in fields.items() if k.startswith("feedprop.")}
    return GGUFAdapter(
        architecture=str(fields.get("general.architecture", "")),
        alpha=float(fields.get("adapter.lora.alpha", 0.0)),
        tensors=tensors,
        metadata=metadata,
    )


def state_from_peft(state: Mapping[str, Any]) -> dict[str, Any]:
    """peft LoRA weights (torch tensors or arrays, any adapter name) as llama.cpp-named float32 arrays."""
    np = require("numpy")
    out: dict[str, Any] = {}
    for key, value in state.items():
        if "lora_" not in key:
            continue
        array = value.detach().to("cpu").float().numpy() if hasattr(value, "detach") else np.asarray(value)
        out[gguf_name(key)] = np.ascontiguousarray(array, dtype=np.float32)
    return out
