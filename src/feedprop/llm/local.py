"""The embedded model: llama.cpp running inside this process, spoken to over its OpenAI-compatible API.

:class:`LocalModel` assembles and verifies the GGUF file (see :mod:`feedprop.llm.model_file`),
starts ``xllamacpp.Server`` on a free loopback port with ``n_parallel`` slots (continuous
batching), and then is an :class:`~feedprop.llm.OpenAICompatible` client of that server, so the
embedded and remote paths share every line of client code. The server stops on :meth:`close`,
at the end of a ``with`` block, or at interpreter exit.

Example:
    >>> with LocalModel("qwen2.5-coder-0.5b") as llm:                    # doctest: +SKIP
    ...     llm.complete([{"role": "user", "content": "Say hi"}], max_tokens=5).text
    'Hi!'
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feedprop.errors import ConfigurationError, LLMError, ModelFileError
from feedprop.llm.base import Completion, Message
from feedprop.llm.cache import ResponseCache
from feedprop.llm.model_file import ensure_model_file, spec_for
from feedprop.llm.openai_compatible import OpenAICompatible
from feedprop.llm.retry import RetryPolicy

__all__ = ["DEFAULT_LOCAL_MODEL", "LocalModel"]

logger = logging.getLogger("feedprop.llm")

#: The embedded model used when nothing else is configured.
DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _adapter_tag(lora: Sequence[tuple[str | os.PathLike[str], float]]) -> str:
    """A short digest of the adapters' bytes and scales: part of the model name, hence of cache keys."""
    digest = hashlib.sha256()
    for path, scale in lora:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        digest.update(f"|{float(scale)!r};".encode())
    return digest.hexdigest()[:12]


def _close_server(holder: dict[str, Any]) -> None:
    # Dropping the last reference to xllamacpp.Server stops its HTTP thread and frees the model.
    if holder.pop("server", None) is not None:
        gc.collect()


class LocalModel(OpenAICompatible):
    """The embedded llama.cpp model, served in-process on a loopback port.

    ``name`` is ``"qwen2.5-coder-1.5b"`` (default) or ``"qwen2.5-coder-0.5b"``; ``model_path``
    loads another GGUF file instead (its name is then the file's stem unless ``name`` is given;
    the name is part of every cache key, so give distinct files distinct names).
    ``n_parallel`` slots decode concurrently (continuous batching) and also set the concurrency
    limit; ``n_ctx`` is the context of *each* slot (the server holds ``n_ctx * n_parallel``
    tokens of cache). ``lora`` is a list of ``(adapter.gguf, scale)`` pairs applied on top of the
    weights; their content is part of the model name, so cached replies never cross adapters.
    ``base_url`` is where the server listens (``http://127.0.0.1:<port>/v1``). The server
    enforces JSON schemas in ``response_format`` (``supports_json_schema`` is true), and serves
    ``tools=[...]`` in the OpenAI format through the model's own chat template, which lists the
    tools and renders the transcript's calls and results. The embedded models seldom write a call
    in their template's ``<tool_call>`` form (they fence it as JSON, or wrap it in other tags), so
    llama.cpp would not read it; with ``constrain_tools=True`` (default) a JSON schema the server
    enforces makes each reply one call of an offered tool, or a final answer, and the call comes
    back as :attr:`~feedprop.llm.Completion.tool_calls` (see :mod:`feedprop.llm.tool_reply`);
    ``False`` leaves the reply to the template's own parsing. An engine built without Jinja
    templates has ``supports_tools`` false, and a call offering tools then raises
    :class:`~feedprop.errors.ConfigurationError`.

    Example:
        >>> llm = LocalModel("qwen2.5-coder-1.5b", n_parallel=4)                       # doctest: +SKIP
        >>> llm.complete([{"role": "user", "content": "2+2=? Answer with a number."}]).text  # doctest: +SKIP
        '4'
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_parallel: int = 4,
        n_ctx: int = 8192,
        threads: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        lora: Sequence[tuple[str | os.PathLike[str], float]] = (),
        timeout: float = 900.0,
        cache: ResponseCache | bool | None = True,
        retry: RetryPolicy | None = None,
        constrain_tools: bool = True,
    ) -> None:
        for label, value, low in (("n_parallel", n_parallel, 1), ("n_ctx", n_ctx, 256), ("port", port, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(f"{label} must be an int >= {low}, got {value!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigurationError(f"threads must be a positive int or None (all CPUs), got {threads!r}")
        if model_path is not None:
            path = Path(model_path)
            if not path.is_file():
                raise ModelFileError(f"no model file at {path}; pass the path of a GGUF file")
            label = name or path.stem
        else:
            label = name or os.environ.get("FEEDPROP_LOCAL_MODEL") or DEFAULT_LOCAL_MODEL
            spec_for(label)  # unknown names fail before any work
            path = ensure_model_file(label)
        adapters = [(Path(p), float(s)) for p, s in lora]
        for adapter, _ in adapters:
            if not adapter.is_file():
                raise ModelFileError(f"no LoRA adapter file at {adapter}; pass the path of a GGUF adapter")
        if adapters:
            label = f"{label}+lora-{_adapter_tag(adapters)}"
        self.name = label
        self.path = path
        self.n_parallel = n_parallel
        self.n_ctx = n_ctx
        self.threads = threads or _cpu_count()
        self.lora = adapters
        self._holder: dict[str, Any] = {}
        self._close_lock = threading.Lock()
        address = self._start(host, port)
        super().__init__(
            f"{address}/v1",
            model=label,
            timeout=timeout,
            cache=cache,
            retry=retry,
            max_concurrency=n_parallel,
            json_schema=True,  # llama.cpp's server turns a response_format schema into a grammar
            constrain_tools=constrain_tools,
        )
        # Stops the server when the model is collected, and at interpreter exit (finalize registers
        # with atexit) even if close() is never called.
        self._finalizer = weakref.finalize(self, _close_server, self._holder)

    def _start(self, host: str, port: int) -> str:
        try:
            import xllamacpp  # the engine is optional: only the embedded model needs it
        except ImportError as exc:
            raise ModelFileError(
                "the embedded model needs the llama.cpp engine (xllamacpp): pip install 'feedprop[local]'"
            ) from exc
        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.model_alias = {self.name}
        params.n_parallel = self.n_parallel
        params.n_ctx = self.n_ctx * self.n_parallel
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.hostnames = [host]
        params.port = port
        params.warmup = False
        params.ui = False
        params.verbosity = 0
        # Tool calls need the model's Jinja chat template (llama.cpp refuses `tools` without it).
        self.supports_tools = hasattr(params, "use_jinja")
        if self.supports_tools:
            params.use_jinja = True
        else:
            self._without_tools = (
                "this xllamacpp build has no Jinja chat templates, which the embedded engine needs to serve tools; "
                "upgrade it (pip install -U 'feedprop[local]') or serve the model elsewhere (FEEDPROP_BASE_URL)"
            )
        if self.lora:
            params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(p), s) for p, s in self.lora]
        started = time.perf_counter()
        try:
            server = xllamacpp.Server(params)
        except Exception as exc:
            raise ModelFileError(f"llama.cpp could not load {self.path}: {exc}") from exc
        self._holder["server"] = server
        address = str(server.listening_address).rstrip("/")
        self._wait_healthy(address)
        logger.info("%s serving %s at %s (%.1fs)", self.name, self.path.name, address, time.perf_counter() - started)
        return address

    def _wait_healthy(self, address: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{address}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = exc
            time.sleep(0.1)
        _close_server(self._holder)
        raise LLMError(f"the embedded server at {address} did not become healthy within {timeout:.0f}s ({last})")

    @property
    def running(self) -> bool:
        """Whether the embedded server is up."""
        return "server" in self._holder

    def _complete(self, messages: list[Message], **params: Any) -> Completion:
        if not self.running:
            raise ConfigurationError(f"{self.name} was closed; create a new LocalModel to make calls")
        return super()._complete(messages, **params)

    async def _acomplete(self, messages: list[Message], **params: Any) -> Completion:
        if not self.running:
            raise ConfigurationError(f"{self.name} was closed; create a new LocalModel to make calls")
        return await super()._acomplete(messages, **params)

    def close(self) -> None:
        """Stop the server and free the model. Safe to call twice."""
        with self._close_lock:
            super().close()
            self._finalizer()

    def __repr__(self) -> str:
        state = self.base_url if self.running else "closed"
        return f"LocalModel({self.name!r}, n_parallel={self.n_parallel}, {state})"
