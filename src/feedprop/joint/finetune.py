"""LoRA fine-tuning of a local model with peft, resumable, with a progress bar and a time budget.

:func:`finetune_lora` adds LoRA layers to a :class:`~feedprop.joint.torch_model.TorchBase`,
trains them on :class:`~feedprop.joint.sft.SFTExample` replies with AdamW, and returns the
trained weights as a :class:`~feedprop.joint.gguf_adapter.GGUFAdapter` ready for llama.cpp.
The base model is left exactly as it was (the LoRA layers are removed again), so one loaded
base serves every weight phase of a run.

With ``checkpoint=<dir>`` the LoRA weights, the AdamW state and the step are saved every
``checkpoint_every`` steps (safetensors and JSON, never pickle); ``resume=True`` continues from
there, and refuses a checkpoint made with other examples or options. Batches are a pure
function of ``(seed, step)``, so a resumed run trains on exactly the batches the uninterrupted
one would have.

Example:
    >>> config = FinetuneConfig(steps=20, lora=LoRAConfig(r=8, alpha=16))
    >>> config.lora.scaling, config.to_dict()["lora"]["targets"]
    (2.0, ['q_proj', 'v_proj'])
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from tqdm.auto import tqdm

from feedprop._files import replacing
from feedprop.errors import CheckpointError, ConfigurationError, InvalidInputError
from feedprop.joint._deps import require
from feedprop.joint.gguf_adapter import PROJECTIONS, SUPPORTED_ARCHITECTURES, GGUFAdapter, state_from_peft
from feedprop.joint.sft import SFTExample, TokenizedExample, collate, fingerprint_examples, response_loss, tokenize
from feedprop.joint.torch_model import TorchBase
from feedprop.training.checkpoint import check_fingerprint, write_json_atomic

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "LoRAConfig",
    "attach_lora",
    "export_adapter",
    "finetune_lora",
    "load_lora_state",
    "lora_state",
    "torch_threads",
]

_STATE_FORMAT = "feedprop.finetune/1"


def _positive(name: str, value: Any, kind: type = int) -> None:
    allowed: tuple[type, ...] = (int, float) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise InvalidInputError(f"{name} must be a {kind.__name__}, got {value!r}")
    number = float(cast(float, value))
    if not number > 0 or not math.isfinite(number):
        raise ConfigurationError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class LoRAConfig:
    """The shape of a LoRA adapter: rank ``r``, ``alpha`` (the update is scaled by ``alpha / r``),
    the ``targets`` (transformers' names of the linear layers to adapt) and ``dropout``.

    Example:
        >>> LoRAConfig(r=4, alpha=8, targets=("q_proj", "k_proj", "v_proj")).scaling
        2.0
    """

    r: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _positive("LoRAConfig.r", self.r)
        _positive("LoRAConfig.alpha", self.alpha, float)
        if isinstance(self.targets, str) or not self.targets:
            raise InvalidInputError(
                f"LoRAConfig.targets must be a non-empty tuple of layer names, got {self.targets!r}"
            )
        unknown = [t for t in self.targets if t not in PROJECTIONS]
        if unknown:
            raise ConfigurationError(f"LoRAConfig.targets {unknown} unknown; choose from {sorted(PROJECTIONS)}")
        object.__setattr__(self, "targets", tuple(self.targets))
        if not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise ConfigurationError(f"LoRAConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def scaling(self) -> float:
        return float(self.alpha) / self.r

    def to_dict(self) -> dict[str, Any]:
        return {"r": self.r, "alpha": float(self.alpha), "targets": list(self.targets), "dropout": float(self.dropout)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoRAConfig:
        return cls(int(data["r"]), float(data["alpha"]), tuple(data["targets"]), float(data.get("dropout", 0.0)))


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune: the adapter's shape (``lora``), ``steps`` (default: ``epochs`` passes over
    the examples), ``batch_size``, learning rate ``lr``, ``max_length`` in tokens (longer examples
    are skipped), ``seed``, how often to checkpoint, and the CPU ``threads`` torch may use (default:
    torch's own choice; on a busy machine one thread can be much faster than two fighting for cores).

    Example:
        >>> FinetuneConfig(epochs=3, batch_size=2).total_steps(5)
        9
    """

    lora: LoRAConfig = field(default_factory=LoRAConfig)
    steps: int | None = None
    epochs: int = 2
    batch_size: int = 4
    lr: float = 2e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 1024
    seed: int = 0
    checkpoint_every: int = 5
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.lora, LoRAConfig):
            raise InvalidInputError(f"FinetuneConfig.lora must be a LoRAConfig, got {type(self.lora).__name__}")
        if self.steps is not None:
            _positive("FinetuneConfig.steps", self.steps)
        for name in ("epochs", "batch_size", "max_length", "checkpoint_every"):
            _positive(f"FinetuneConfig.{name}", getattr(self, name))
        _positive("FinetuneConfig.lr", self.lr, float)
        _positive("FinetuneConfig.max_grad_norm", self.max_grad_norm, float)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InvalidInputError(f"FinetuneConfig.seed must be an int, got {self.seed!r}")
        if self.threads is not None:
            _positive("FinetuneConfig.threads", self.threads)

    def total_steps(self, n_examples: int) -> int:
        """Optimizer steps for ``n_examples`` usable examples."""
        if self.steps is not None:
            return self.steps
        return self.epochs * math.ceil(n_examples / self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lora": self.lora.to_dict(),
            "steps": self.steps,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "max_grad_norm": self.max_grad_norm,
            "max_length": self.max_length,
            "seed": self.seed,
        }


@dataclass
class FinetuneResult:
    """What :func:`finetune_lora` did: the trained ``adapter``, per-step ``losses``, how many
    ``examples`` were used (``skipped``: too long), ``tokens`` seen and ``trained_tokens`` (reply
    tokens), ``seconds`` (all sessions of a resumed run) and why it stopped."""

    adapter: GGUFAdapter
    steps: int
    losses: list[float]
    examples: int
    skipped: int
    tokens: int
    trained_tokens: int
    seconds: float
    stop_reason: str

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (no tensors)."""
        return {
            "steps": self.steps,
            "first_loss": self.losses[0] if self.losses else None,
            "last_loss": self.losses[-1] if self.losses else None,
            "examples": self.examples,
            "skipped": self.skipped,
            "tokens": self.tokens,
            "trained_tokens": self.trained_tokens,
            "seconds": round(self.seconds, 3),
            "stop_reason": self.stop_reason,
        }


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch limited to ``threads`` CPU threads (``None``: leave it as it is)."""
    if threads is None:
        yield
        return
    torch = require("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The example indices of optimizer step ``step`` (0-based): epoch-wise shuffles seeded by (seed, epoch)."""
    per_epoch = math.ceil(n / batch_size)
    epoch, position = divmod(step, per_epoch)
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order[position * batch_size : (position + 1) * batch_size]


class _Checkpoint:
    """The files of a resumable fine-tuning run in one directory."""

    STATE = "finetune.json"
    LORA = "lora.safetensors"
    OPTIMIZER = "optimizer.safetensors"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory)
        if self.path.exists() and not self.path.is_dir():
            raise CheckpointError(f"checkpoint={str(self.path)!r} is a file; give a directory")
        self.path.mkdir(parents=True, exist_ok=True)

    def exists(self) -> bool:
        return (self.path / self.STATE).is_file()

    def save(self, state: dict[str, Any], lora: dict[str, Any], optimizer: Any) -> None:
        safetensors_torch = require("safetensors.torch")
        tensors, groups = _flatten_optimizer(optimizer.state_dict())
        # The tensors first, the JSON last: the JSON names the step the tensors belong to.
        for name, payload in ((self.LORA, lora), (self.OPTIMIZER, tensors)):
            with replacing(self.path / name) as temp:
                safetensors_torch.save_file({k: v.detach().contiguous() for k, v in payload.items()}, str(temp))
        write_json_atomic(self.path / self.STATE, {**state, "optimizer_groups": groups, "format": _STATE_FORMAT})

    def load(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        safetensors_torch = require("safetensors.torch")
        try:
            state = json.loads((self.path / self.STATE).read_text(encoding="utf-8"))
            if state.get("format") != _STATE_FORMAT:
                raise ValueError(f"format {state.get('format')!r}")
            lora = safetensors_torch.load_file(str(self.path / self.LORA))
            opt = safetensors_torch.load_file(str(self.path / self.OPTIMIZER))
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"the fine-tuning checkpoint in {self.path} cannot be read ({exc}); delete the directory to start over"
            ) from exc
        return state, lora, _unflatten_optimizer(opt, state["optimizer_groups"])


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    torch = require("torch")
    tensors: dict[str, Any] = {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            tensors[f"{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, json.loads(json.dumps(state_dict["param_groups"]))


def _unflatten_optimizer(tensors: dict[str, Any], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": groups}


def lora_state(peft_model: Any) -> dict[str, Any]:
    peft = require("peft")
    return {k: v.detach().clone() for k, v in peft.get_peft_model_state_dict(peft_model).items()}


def load_lora_state(peft_model: Any, state: dict[str, Any]) -> None:
    peft = require("peft")
    torch = require("torch")
    tensors = {k: v if torch.is_tensor(v) else torch.from_numpy(v) for k, v in state.items()}
    result = peft.set_peft_model_state_dict(peft_model, tensors)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if "lora_" in k]
    if unexpected or missing:
        raise ConfigurationError(
            f"the LoRA weights do not fit this adapter's layers (unexpected {unexpected[:3]}, missing {missing[:3]}); "
            "start from an adapter with the same rank and targets"
        )


def attach_lora(base: TorchBase, lora: LoRAConfig, init: GGUFAdapter | None) -> Any:
    """Wrap ``base.model`` in a peft LoRA model (optionally starting from ``init``'s weights)."""
    peft = require("peft")
    if base.architecture not in SUPPORTED_ARCHITECTURES:
        raise ConfigurationError(
            f"LoRA for the embedded engine supports {list(SUPPORTED_ARCHITECTURES)}, not {base.architecture!r}"
        )
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        target_modules=list(lora.targets),
        lora_dropout=lora.dropout,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft asks transformers a question transformers has renamed; the notice is not for our users.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = peft.get_peft_model(base.model, config)
    if init is not None:
        if init.rank != lora.r or init.targets != sorted(lora.targets):
            peft_model.unload()
            raise ConfigurationError(
                f"the starting adapter has rank {init.rank} on {init.targets}, but LoRAConfig asks for rank {lora.r} "
                f"on {sorted(lora.targets)}; use the same shape or start from the base weights"
            )
        try:
            load_lora_state(peft_model, init.peft_state())
        except BaseException:
            peft_model.unload()
            raise
    return peft_model


def export_adapter(peft_model: Any, base: TorchBase, lora: LoRAConfig, metadata: dict[str, Any]) -> GGUFAdapter:
    """The LoRA weights of ``peft_model`` as a :class:`GGUFAdapter` for ``base``."""
    tensors = state_from_peft(lora_state(peft_model))
    info = {"feedprop.base": base.name, "feedprop.base_sha256": base.sha256, **metadata}
    return GGUFAdapter(base.architecture, float(lora.alpha), tensors, info)


def finetune_lora(
    base: TorchBase,
    examples: Sequence[SFTExample],
    config: FinetuneConfig | None = None,
    *,
    init: GGUFAdapter | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    deadline: float | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> FinetuneResult:
    """Train a LoRA adapter on ``examples`` and return it (the base model is left unchanged).

    Args:
        base: the model, from :func:`~feedprop.joint.torch_model.load_base`.
        examples: the replies to learn.
        config: :class:`FinetuneConfig` (default: rank 8 on q/v, two epochs).
        init: an adapter to continue training from (same rank and targets).
        checkpoint, resume: a directory to save progress in, and whether to continue from it.
        deadline: a ``time.monotonic()`` value; training stops cleanly once it passes
            (the adapter trained so far is returned; ``stop_reason`` says so).
        progress: show a progress bar with the loss. on_step: called with ``(step, loss)``.

    Example:
        >>> from feedprop.joint.torch_model import load_base      # doctest: +SKIP
        >>> ex = [SFTExample.from_messages([{"role": "user", "content": "Name?"}], "Feedprop.")]
        >>> result = finetune_lora(load_base("qwen2.5-coder-0.5b"), ex, FinetuneConfig(steps=8))  # doctest: +SKIP
        >>> result.losses[-1] < result.losses[0]                   # doctest: +SKIP
        True
    """
    cfg = config if config is not None else FinetuneConfig()
    if not isinstance(cfg, FinetuneConfig):
        raise InvalidInputError(f"config must be a FinetuneConfig, got {type(cfg).__name__}")
    items = list(examples)
    if not items or not all(isinstance(e, SFTExample) for e in items):
        raise InvalidInputError("examples must be a non-empty sequence of SFTExample")
    if resume and checkpoint is None:
        raise ConfigurationError("resume=True needs checkpoint=<directory of the run to resume>")
    torch = require("torch")
    tokenizer = base.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokenized: list[TokenizedExample] = []
    for example in items:
        encoded = tokenize(tokenizer, example, cfg.max_length)
        if encoded is not None:
            tokenized.append(encoded)
    skipped = len(items) - len(tokenized)
    if not tokenized:
        raise ConfigurationError(
            f"every example is longer than max_length={cfg.max_length} tokens; raise FinetuneConfig.max_length"
        )
    total = cfg.total_steps(len(tokenized))
    fingerprint = {
        "config": cfg.to_dict(),
        "examples": [len(items), fingerprint_examples(items)],
        "base_sha256": base.sha256,
        "init": None if init is None else [*sorted(init.metadata.items()), ("rank", init.rank)],
    }
    store = _Checkpoint(checkpoint) if checkpoint is not None else None
    if store is not None and store.exists() and not resume:
        raise CheckpointError(
            f"{store.path} already holds a fine-tuning run; pass resume=True to continue it or use an empty directory"
        )

    with base.lock, torch_threads(cfg.threads):
        torch.manual_seed(cfg.seed)  # the LoRA layers' random initialisation depends only on the seed
        peft_model = attach_lora(base, cfg.lora, init)
        try:
            training = _Training(peft_model, base, cfg, tokenized, fingerprint, store, pad_id)
            if store is not None and resume and store.exists():
                training.resume()
            stop_reason = _train(training, total, deadline, progress, on_step)
            training.save()
            return training.result(skipped, stop_reason)
        finally:
            peft_model.unload()
            base.model.eval()


class _Training:
    """One fine-tuning run of a LoRA-wrapped model: its AdamW state, its progress and its checkpoint."""

    def __init__(
        self,
        peft_model: Any,
        base: TorchBase,
        cfg: FinetuneConfig,
        tokenized: list[TokenizedExample],
        fingerprint: dict[str, Any],
        store: _Checkpoint | None,
        pad_id: int,
    ) -> None:
        torch = require("torch")
        self.peft_model = peft_model
        self.causal_lm = peft_model.get_base_model()
        self.base = base
        self.cfg = cfg
        self.tokenized = tokenized
        self.fingerprint = fingerprint
        self.store = store
        self.pad_id = pad_id
        self.trainable = [p for p in peft_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        self.losses: list[float] = []
        self.tokens = 0
        self.trained = 0
        self.seconds_before = 0.0
        self.started = time.monotonic()

    def seconds(self) -> float:
        """Seconds of training over every session of the run."""
        return self.seconds_before + time.monotonic() - self.started

    def resume(self) -> None:
        """Continue from the checkpoint in the store (it must have been made with the same examples and options)."""
        assert self.store is not None
        state, lora, opt_state = self.store.load()
        check_fingerprint(state.get("fingerprint", {}), json.loads(json.dumps(self.fingerprint)), str(self.store.path))
        load_lora_state(self.peft_model, lora)
        self.optimizer.load_state_dict(opt_state)
        self.step, self.losses = int(state["step"]), [float(x) for x in state["losses"]]
        self.tokens, self.trained = int(state["tokens"]), int(state["trained_tokens"])
        self.seconds_before = float(state["seconds"])
        self.started = time.monotonic()

    def save(self) -> None:
        """Checkpoint the LoRA weights, the AdamW state and the progress (nothing without a store)."""
        if self.store is None:
            return
        state = {
            "fingerprint": self.fingerprint,
            "step": self.step,
            "losses": self.losses,
            "tokens": self.tokens,
            "trained_tokens": self.trained,
            "seconds": self.seconds(),
        }
        self.store.save(state, lora_state(self.peft_model), self.optimizer)

    def train_step(self) -> float:
        """One AdamW step on the step's batch (a pure function of seed and step); returns its loss."""
        torch = require("torch")
        cfg = self.cfg
        torch.manual_seed(cfg.seed * 1_000_003 + self.step)  # dropout masks depend only on the step
        items = [self.tokenized[i] for i in _batch_indices(len(self.tokenized), cfg.batch_size, cfg.seed, self.step)]
        batch = collate(items, self.pad_id)
        loss = response_loss(self.causal_lm, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigurationError(
                f"the fine-tuning loss became {value} at step {self.step + 1}; lower the learning rate"
            )
        self.step += 1
        self.losses.append(value)
        self.tokens += int(batch.attention_mask.sum())
        self.trained += sum(e.trained_tokens for e in items)
        return value

    def result(self, skipped: int, stop_reason: str) -> FinetuneResult:
        """The trained adapter and the run's figures."""
        metadata = {
            "feedprop.steps": self.step,
            "feedprop.examples": len(self.tokenized),
            "feedprop.rank": self.cfg.lora.r,
        }
        return FinetuneResult(
            adapter=export_adapter(self.peft_model, self.base, self.cfg.lora, metadata),
            steps=self.step,
            losses=self.losses,
            examples=len(self.tokenized),
            skipped=skipped,
            tokens=self.tokens,
            trained_tokens=self.trained,
            seconds=self.seconds(),
            stop_reason=stop_reason,
        )


def _train(
    training: _Training,
    total: int,
    deadline: float | None,
    progress: bool,
    on_step: Callable[[int, float], None] | None,
) -> str:
    """Step ``training`` up to ``total`` steps, checkpointing as configured; returns why it stopped."""
    stop_reason = f"completed {total} steps"
    training.peft_model.train()
    bar = tqdm(total=total, initial=training.step, desc="fine-tune", unit="step") if progress else None
    try:
        while training.step < total:
            if deadline is not None and time.monotonic() >= deadline:
                stop_reason = f"budget: seconds (stopped after {training.step} of {total} steps)"
                break
            loss = training.train_step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=True)
            if on_step is not None:
                on_step(training.step, loss)
            if training.step % training.cfg.checkpoint_every == 0 or training.step == total:
                training.save()
    finally:
        if bar is not None:
            bar.close()
        training.peft_model.eval()
    return stop_reason
