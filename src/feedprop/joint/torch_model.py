"""The embedded model's weights in torch: the same GGUF file, dequantised by transformers.

The first load reads the GGUF file through ``transformers`` (``from_pretrained(dir,
gguf_file=name)``), which dequantises every tensor to float32 — minutes on a small CPU. The
result is then kept in a cache directory, ``<feedprop home>/torch/<name>-<sha256[:16]>/``
(``config.json``, ``model.safetensors``, tokenizer files), from which later loads take seconds.
The cache is keyed by the GGUF file's checksum, so a different file never reuses it; it is
written atomically (a temporary directory renamed into place), so a crash never leaves half a
cache. Within one process, a loaded model is shared: :func:`load_base` returns the same object
until it is garbage-collected, and the weight phases only add and remove LoRA layers on it.

Example:
    >>> base = load_base("qwen2.5-coder-0.5b")           # doctest: +SKIP
    >>> base.model.config.model_type, base.tokenizer.eos_token  # doctest: +SKIP
    ('qwen2', '<|im_end|>')
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from feedprop._files import replacing
from feedprop.errors import ConfigurationError, ModelFileError
from feedprop.joint._deps import require
from feedprop.llm.home import home_dir
from feedprop.llm.model_file import MODELS, ensure_model_file, sha256_file

__all__ = ["TorchBase", "base_cache_dir", "load_base"]

logger = logging.getLogger("feedprop.joint")

_CACHE_FORMAT = "feedprop.torch-cache/1"
_loaded: weakref.WeakValueDictionary[str, TorchBase] = weakref.WeakValueDictionary()
_load_lock = threading.Lock()


@dataclass(eq=False)
class TorchBase:
    """A base model loaded for torch: ``model`` (a transformers causal LM, float32, CPU) and ``tokenizer``.

    ``name`` is the embedded model's name (or the GGUF file's stem), ``gguf_path`` the file the
    weights came from and ``sha256`` its checksum; ``architecture`` is the GGUF architecture
    (``"qwen2"``), the one a LoRA adapter for llama.cpp must declare.
    """

    name: str
    gguf_path: Path
    sha256: str
    architecture: str
    model: Any
    tokenizer: Any
    # Fine-tuning adds LoRA layers to ``model`` in place; one phase at a time.
    lock: threading.Lock

    @property
    def parameters(self) -> int:
        """How many weights the base model has."""
        return int(sum(p.numel() for p in self.model.parameters()))


def _resolve(name_or_path: str | os.PathLike[str]) -> tuple[str, Path, str]:
    """(name, GGUF path, sha256) for an embedded model's name or a GGUF file's path."""
    text = os.fspath(name_or_path)
    if text in MODELS:
        return text, ensure_model_file(text), MODELS[text].sha256
    path = Path(text)
    if not path.is_file():
        raise ModelFileError(
            f"{text!r} is neither an embedded model ({sorted(MODELS)}) nor a GGUF file; pass one of those"
        )
    return path.stem, path, sha256_file(path)


def base_cache_dir(name: str, sha256: str) -> Path:
    """Where the dequantised copy of a GGUF file with checksum ``sha256`` is cached."""
    return home_dir() / "torch" / f"{name}-{sha256[:16]}"


def _cache_complete(directory: Path, sha256: str) -> bool:
    marker = directory / "feedprop-cache.json"
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(data.get("format") == _CACHE_FORMAT and data.get("gguf_sha256") == sha256)


def _architecture(config: Any) -> str:
    model_type = str(getattr(config, "model_type", ""))
    return model_type


def _from_gguf(gguf_path: Path) -> tuple[Any, Any]:
    torch = require("torch")
    transformers = require("transformers")
    require("gguf")  # transformers reads GGUF through it
    logger.info("dequantising %s for torch (slow the first time; cached afterwards)", gguf_path.name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    return model, tokenizer


def _write_cache(directory: Path, model: Any, tokenizer: Any, sha256: str, gguf_path: Path) -> None:
    safetensors_torch = require("safetensors.torch")
    with replacing(directory, directory=True) as temp:
        # A GGUF-loaded model refuses save_pretrained; the plain tensors and config are all it is.
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        if getattr(model.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        safetensors_torch.save_file(state, str(temp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
            config.pop(key, None)
        (temp / "config.json").write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
        tokenizer.save_pretrained(str(temp))
        marker = {"format": _CACHE_FORMAT, "gguf_sha256": sha256, "gguf_file": gguf_path.name}
        (temp / "feedprop-cache.json").write_text(json.dumps(marker), encoding="utf-8")


def _from_cache(directory: Path) -> tuple[Any, Any]:
    torch = require("torch")
    transformers = require("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    return model, tokenizer


def load_base(name_or_path: str | os.PathLike[str] = "qwen2.5-coder-0.5b", *, cache: bool = True) -> TorchBase:
    """Load an embedded model (by name) or a GGUF file for torch, dequantised to float32 on the CPU.

    ``cache=True`` keeps a dequantised copy under the feedprop home (see the module docs) and
    shares the loaded model within the process. Needs the ``joint`` extra.
    """
    name, gguf_path, sha256 = _resolve(name_or_path)
    with _load_lock:
        shared = _loaded.get(sha256) if cache else None
        if shared is not None:
            return shared
        started = time.perf_counter()
        if cache:
            directory = base_cache_dir(name, sha256)
            directory.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(directory) + ".lock", timeout=3600):
                if not _cache_complete(directory, sha256):
                    model, tokenizer = _from_gguf(gguf_path)
                    _write_cache(directory, model, tokenizer, sha256, gguf_path)
                    del model, tokenizer
                model, tokenizer = _from_cache(directory)
        else:
            model, tokenizer = _from_gguf(gguf_path)
        model.eval()
        architecture = _architecture(model.config)
        if not architecture:
            raise ConfigurationError(f"{gguf_path.name}: transformers loaded a model without a model_type")
        base = TorchBase(name, gguf_path, sha256, architecture, model, tokenizer, threading.Lock())
        if cache:
            _loaded[sha256] = base
        logger.info("%s loaded for torch in %.1fs", name, time.perf_counter() - started)
        return base
