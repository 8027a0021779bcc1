"""``Student``: a local model whose weights are a parameter of the workflow.

A :class:`Student` is two things at once. As an :class:`~feedprop.llm.LLM` it answers
``complete()`` calls — pass it as ``llm=`` to :func:`~feedprop.ops.llm_call` — on the embedded
llama.cpp engine, with its LoRA adapter applied. As a :class:`~feedprop.Module` it holds that
adapter as a parameter, ``adapter``, so the weights are saved, loaded, checkpointed and
restored with the rest of the model's state (``model.state_dict()["student.adapter"]``).

The adapter parameter holds a small JSON value, never the weights themselves: the adapter's
GGUF file path, its sha256, the scale it is applied with and its LoRA shape (``{}`` means the
base weights). The file is checked against the checksum before the engine loads it, so a state
can never silently run with other weights. The parameter is not trainable by text optimizers
(they never see it); the weight phases of :mod:`feedprop.joint` set it. Whenever its value
changes, the next call restarts the engine with the new adapter — inference always runs on the
fast engine.

Example:
    >>> import feedprop as fp
    >>> from feedprop.joint import Student
    >>> class Solver(fp.Module):
    ...     def __init__(self):
    ...         self.instruction = fp.Parameter("Answer the question.")
    ...         self.student = Student("qwen2.5-coder-0.5b")
    ...     def forward(self, question):
    ...         return fp.ops.llm_call(self.instruction, question, llm=self.student, temperature=0)
    >>> sorted(Solver().state_dict())
    ['instruction', 'student.adapter']
"""

from __future__ import annotations

import contextvars
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from feedprop._files import replacing
from feedprop.errors import ConfigurationError, InvalidInputError, ModelFileError
from feedprop.joint.finetune import LoRAConfig
from feedprop.joint.gguf_adapter import GGUFAdapter, read_adapter, write_adapter
from feedprop.llm.base import LLM, Completion, Message
from feedprop.llm.home import home_dir
from feedprop.llm.local import LocalModel
from feedprop.llm.model_file import MODELS, sha256_file
from feedprop.llm.retry import RetryPolicy
from feedprop.module import Module
from feedprop.node import Parameter

__all__ = ["Rollout", "Student", "adapter_store"]


def adapter_store() -> Path:
    """Where adapters are kept when no run directory is given: ``<feedprop home>/adapters``."""
    return home_dir() / "adapters"


@dataclass(frozen=True)
class Rollout:
    """How a student answers while traces are collected: ``teacher`` (another LLM answers in its
    place), sampling ``overrides`` (e.g. ``{"temperature": 0.7}``) and a ``salt`` that makes
    each sample a distinct cache entry. Set with :meth:`Student.rollout`."""

    teacher: LLM | None = None
    overrides: Mapping[str, Any] | None = None
    salt: int = 0


_ROLLOUT: contextvars.ContextVar[tuple[int, Rollout] | None] = contextvars.ContextVar("feedprop_rollout", default=None)


def _check_adapter_value(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"an adapter value is a dict (or {{}} for none), got {type(value).__name__}")
    if not value:
        return value
    missing = [k for k in ("file", "sha256", "scale") if k not in value]
    if missing:
        raise InvalidInputError(f"adapter value misses {missing}; it needs file, sha256 and scale")
    return value


class Student(Module, LLM):
    """The embedded llama.cpp model with a trainable LoRA adapter (see the module docs).

    Args:
        name: an embedded model (``"qwen2.5-coder-0.5b"``, ``"qwen2.5-coder-1.5b"``) or the path
            of a GGUF file.
        lora: the shape of adapters the weight phases train (:class:`LoRAConfig`).
        adapter: a GGUF LoRA adapter to start from (optional), applied with ``scale``.
        n_parallel, n_ctx, threads: the engine's slots, context per slot, and CPU threads.
        cache, retry: as for every :class:`~feedprop.llm.LLM`; the cache key includes the adapter.

    Example:
        >>> s = Student("qwen2.5-coder-0.5b")
        >>> s.model, s.adapter.data, s.adapter.trainable
        ('qwen2.5-coder-0.5b', {}, False)
    """

    def __init__(
        self,
        name: str | os.PathLike[str] = "qwen2.5-coder-0.5b",
        *,
        lora: LoRAConfig | None = None,
        adapter: str | os.PathLike[str] | None = None,
        scale: float = 1.0,
        n_parallel: int = 2,
        n_ctx: int = 4096,
        threads: int | None = None,
        cache: bool = True,
        retry: RetryPolicy | None = None,
    ) -> None:
        LLM.__init__(self, cache=cache, retry=retry, max_concurrency=n_parallel)
        text = os.fspath(name) if isinstance(name, str | os.PathLike) else None
        if text is None:
            raise InvalidInputError(f"name must be an embedded model name or a GGUF path, got {name!r}")
        if text not in MODELS and not Path(text).is_file():
            raise ConfigurationError(f"{text!r} is neither an embedded model ({sorted(MODELS)}) nor a GGUF file path")
        if lora is not None and not isinstance(lora, LoRAConfig):
            raise InvalidInputError(f"lora must be a LoRAConfig, got {type(lora).__name__}")
        self.base = text
        self.label = text if text in MODELS else Path(text).stem
        self.lora = lora if lora is not None else LoRAConfig()
        self.engine_options: dict[str, Any] = {"n_parallel": n_parallel, "n_ctx": n_ctx, "threads": threads}
        self.adapter: Parameter[dict[str, Any]] = Parameter(
            {},
            name="adapter",
            kind="json",
            trainable=False,
            description="LoRA adapter of the student model: file, sha256, scale (set by weight phases)",
        )
        self._engine: LocalModel | None = None
        self._engine_key: tuple[str, float] | None = None
        self._engine_lock = threading.Lock()
        if adapter is not None:
            self.load_adapter(adapter, scale=scale)

    # -- the adapter as a parameter -------------------------------------------------------------

    @property
    def adapter_value(self) -> dict[str, Any]:
        """The adapter parameter's value, checked (``{}``: base weights)."""
        return _check_adapter_value(self.adapter._data)

    @property
    def adapter_path(self) -> Path | None:
        """The current adapter's GGUF file, or ``None`` for the base weights."""
        value = self.adapter_value
        return Path(value["file"]) if value else None

    def load_adapter(self, path: str | os.PathLike[str] | None, *, scale: float = 1.0) -> None:
        """Use the GGUF LoRA adapter at ``path`` (``None``: back to the base weights)."""
        if path is None:
            self.adapter.set({})
            return
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise InvalidInputError(f"scale must be a number, got {scale!r}")
        info = read_adapter(path)  # refuses files that are not LoRA adapters
        source = Path(path).resolve()
        self.adapter.set(
            {
                "file": str(source),
                "sha256": sha256_file(source),
                "scale": float(scale),
                "lora": {"r": info.rank, "alpha": info.alpha, "targets": info.targets},
                "base": self.label,
            }
        )

    def save_adapter(self, adapter: GGUFAdapter, directory: str | os.PathLike[str] | None = None) -> Path:
        """Write ``adapter`` (content-addressed, ``adapter-<sha>.gguf``) under ``directory`` and use it."""
        folder = Path(directory) if directory is not None else adapter_store()
        folder.mkdir(parents=True, exist_ok=True)
        # The name is the content's hash, so the file is written and hashed first, then moved into place.
        with tempfile.TemporaryDirectory(dir=folder, prefix=".adapter.") as scratch:
            written = write_adapter(Path(scratch) / "adapter.gguf", adapter)
            target = folder / f"adapter-{sha256_file(written)[:16]}.gguf"
            with replacing(target) as temp:
                shutil.move(written, temp)
        self.load_adapter(target, scale=float(self.adapter_value.get("scale", 1.0)) if self.adapter_value else 1.0)
        return target

    def adapter_weights(self) -> GGUFAdapter | None:
        """The current adapter's tensors (to continue training from), or ``None``."""
        path = self._verified_path()
        return read_adapter(path) if path is not None else None

    def _verified_path(self) -> Path | None:
        value = self.adapter_value
        if not value:
            return None
        path = Path(value["file"])
        if not path.is_file():
            raise ModelFileError(
                f"the student's adapter file {path} is missing; restore it, or reset the adapter with "
                "student.load_adapter(None)"
            )
        actual = sha256_file(path)
        if actual != value["sha256"]:
            raise ModelFileError(
                f"the adapter file {path} changed since it was recorded (sha256 {actual[:12]}..., expected "
                f"{value['sha256'][:12]}...); the state refers to other weights"
            )
        return path

    # -- the LLM side -----------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The name in cache keys and replies: the base model, plus the adapter's digest and scale."""
        value = self.adapter_value
        if not value:
            return self.label
        return f"{self.label}+lora-{str(value['sha256'])[:12]}@{float(value['scale']):g}"

    @model.setter
    def model(self, value: str) -> None:
        raise ConfigurationError("a Student's model name follows its base and adapter; it cannot be set")

    def engine(self) -> LocalModel:
        """The running llama.cpp engine for the current adapter (started or restarted as needed)."""
        value = self.adapter_value
        key = (str(value.get("sha256", "")), float(value.get("scale", 1.0)))
        with self._engine_lock:
            if self._engine is not None and self._engine_key == key and self._engine.running:
                return self._engine
            if self._engine is not None:
                self._engine.close()
                self._engine = None
            path = self._verified_path()
            lora = [(path, key[1])] if path is not None else []
            options = dict(self.engine_options)
            if self.base in MODELS:
                engine = LocalModel(self.base, lora=lora, cache=False, **options)
            else:
                engine = LocalModel(name=self.label, model_path=self.base, lora=lora, cache=False, **options)
            self._engine, self._engine_key = engine, key
            return engine

    @contextmanager
    def rollout(self, rollout: Rollout) -> Iterator[str]:
        """Within the block (and threads that copy its context), answer as ``rollout`` says.

        Yields the model name the replies carry, so traces made inside can be told apart.
        """
        if rollout.teacher is not None and not isinstance(rollout.teacher, LLM):
            raise InvalidInputError(f"teacher must be a feedprop LLM, got {type(rollout.teacher).__name__}")
        token = _ROLLOUT.set((id(self), rollout))
        try:
            yield self._reply_name(rollout)
        finally:
            _ROLLOUT.reset(token)

    def _reply_name(self, rollout: Rollout) -> str:
        return self.model if rollout.teacher is None else f"{self.model}<={rollout.teacher.model}"

    def _active_rollout(self) -> Rollout | None:
        current = _ROLLOUT.get()
        return current[1] if current is not None and current[0] == id(self) else None

    def complete(
        self, messages: Sequence[Mapping[str, Any]], *, cache: bool = True, cache_salt: Any = None, **params: Any
    ) -> Completion:
        rollout = self._active_rollout()
        if rollout is None:
            return super().complete(messages, cache=cache, cache_salt=cache_salt, **params)
        params = {**params, **(rollout.overrides or {})}
        salt = cache_salt if rollout.salt == 0 else [cache_salt, rollout.salt]
        if rollout.teacher is not None:
            reply = rollout.teacher.complete(messages, cache=cache, cache_salt=salt, **params)
            return replace(reply, model=self._reply_name(rollout))
        return super().complete(messages, cache=cache, cache_salt=salt, **params)

    async def acomplete(
        self, messages: Sequence[Mapping[str, Any]], *, cache: bool = True, cache_salt: Any = None, **params: Any
    ) -> Completion:
        rollout = self._active_rollout()
        if rollout is None:
            return await super().acomplete(messages, cache=cache, cache_salt=cache_salt, **params)
        params = {**params, **(rollout.overrides or {})}
        salt = cache_salt if rollout.salt == 0 else [cache_salt, rollout.salt]
        if rollout.teacher is not None:
            reply = await rollout.teacher.acomplete(messages, cache=cache, cache_salt=salt, **params)
            return replace(reply, model=self._reply_name(rollout))
        return await super().acomplete(messages, cache=cache, cache_salt=salt, **params)

    def _complete(self, messages: list[Message], **params: Any) -> Completion:
        # The engine's own call path is bypassed on purpose: this call is already cached,
        # metered and limited once, under this student's name.
        reply = self.engine()._complete(messages, **params)
        return replace(reply, model=self.model)

    def close(self) -> None:
        """Stop the engine (it restarts on the next call). Safe to call twice."""
        with self._engine_lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None
                self._engine_key = None

    def __repr__(self) -> str:
        state = "running" if self._engine is not None else "idle"
        return f"Student({self.model!r}, {state})"
