"""Several endpoints serving one model, used as one :class:`~feedprop.llm.LLM`.

:class:`EndpointPool` spreads calls over its endpoints (the least busy one first, ties in
turn) and fails over at once: a call that meets a transient failure at one endpoint goes to
the next. An endpoint that keeps failing (``max_failures`` transient failures in a row, a
refused connection at once) is taken out of rotation for ``cooldown`` seconds, then gets one
call to prove itself. A 429 moves the call on without counting against the endpoint.

The pool is one model to the rest of feedprop: it is cached, retried, metered and
concurrency-limited like any other :class:`~feedprop.llm.LLM`, and a call counts once however
many endpoints it tried. Only when every endpoint failed does the retry policy wait and retry.

Example:
    >>> from feedprop.llm import MockLLM
    >>> pool = EndpointPool([MockLLM("a"), MockLLM("b")], model="m")
    >>> [pool.complete([{"role": "user", "content": str(i)}]).text for i in range(3)]
    ['a', 'b', 'a']
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from feedprop.errors import ConfigurationError, EndpointUnreachableError, LLMError, RateLimitError, TransientLLMError
from feedprop.llm.base import LLM, Completion, Message
from feedprop.llm.cache import ResponseCache
from feedprop.llm.openai_compatible import OpenAICompatible
from feedprop.llm.openai_compatible import _is_connect_failure as _refused
from feedprop.llm.retry import RetryPolicy, retries_exhausted

__all__ = ["EndpointPool"]

logger = logging.getLogger("feedprop.llm")

#: Each endpoint of a pool answers without its own retries: the pool fails over instead.
_NO_RETRY = RetryPolicy(max_retries=0)


@dataclass
class _Endpoint:
    llm: LLM
    label: str
    in_flight: int = 0
    calls: int = 0
    failures: int = 0  # transient failures in a row
    down_until: float = 0.0

    def status(self, now: float) -> dict[str, Any]:
        return {
            "endpoint": self.label,
            "up": self.down_until <= now,
            "in_flight": self.in_flight,
            "calls": self.calls,
            "failures": self.failures,
        }


class EndpointPool(LLM):
    """One model served by several endpoints: load-balanced, with failover and resting of down endpoints.

    ``endpoints`` are base URLs of OpenAI-compatible servers (each becomes an
    :class:`~feedprop.llm.OpenAICompatible` for ``model`` with ``api_key``) or :class:`LLM`
    objects. ``model`` names the model (required with URLs: every endpoint must serve it).
    ``cooldown`` is how long an endpoint that went down stays out of rotation;
    ``max_failures`` how many transient failures in a row take it out (a refused connection
    always does). ``cache``, ``retry`` and ``max_concurrency`` are the pool's, as for any LLM.
    ``json_schema`` and ``constrain_tools`` are passed to the endpoints built from URLs; the pool
    supports JSON schemas (``supports_json_schema``), or constrains tool replies
    (``constrain_tools``), only when every endpoint does.

    Example:
        >>> pool = EndpointPool(["http://10.0.0.1:8080/v1", "http://10.0.0.2:8080/v1"], model="qwen")
        >>> [s["endpoint"] for s in pool.status()]
        ['http://10.0.0.1:8080/v1', 'http://10.0.0.2:8080/v1']
    """

    def __init__(
        self,
        endpoints: Sequence[str | LLM],
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        cooldown: float = 30.0,
        max_failures: int = 2,
        cache: ResponseCache | bool | None = True,
        retry: RetryPolicy | None = None,
        max_concurrency: int | Literal["default"] | None = "default",
        json_schema: bool = False,
        constrain_tools: bool = False,
    ) -> None:
        if isinstance(endpoints, str | LLM) or not isinstance(endpoints, Sequence) or not endpoints:
            raise ConfigurationError(
                "EndpointPool takes a non-empty list of base URLs or LLM objects, e.g. "
                "EndpointPool(['http://10.0.0.1:8080/v1', 'http://10.0.0.2:8080/v1'], model='qwen')"
            )
        if isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or cooldown < 0:
            raise ConfigurationError(f"cooldown must be a non-negative number of seconds, got {cooldown!r}")
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise ConfigurationError(f"max_failures must be an int >= 1, got {max_failures!r}")
        urls = [e for e in endpoints if isinstance(e, str)]
        if urls and not model:
            raise ConfigurationError(
                "EndpointPool needs model=... when given URLs: every endpoint must serve that model "
                "(set FEEDPROP_MODEL when the endpoints come from FEEDPROP_BASE_URL)"
            )
        if max_concurrency == "default":  # each endpoint's default, summed
            per_endpoint = OpenAICompatible.default_max_concurrency
            max_concurrency = None if per_endpoint is None else per_endpoint * len(endpoints)
        super().__init__(cache=cache, retry=retry, max_concurrency=max_concurrency)
        self._endpoints: list[_Endpoint] = []
        for i, e in enumerate(endpoints):
            if isinstance(e, str):
                llm: LLM = OpenAICompatible(
                    e,
                    model=model,
                    api_key=api_key,
                    timeout=timeout,
                    cache=False,
                    retry=_NO_RETRY,
                    max_concurrency=None,
                    json_schema=json_schema,
                    constrain_tools=constrain_tools,
                )
                self._endpoints.append(_Endpoint(llm, llm.base_url if isinstance(llm, OpenAICompatible) else e))
            elif isinstance(e, LLM):
                label = getattr(e, "base_url", None) or f"{type(e).__name__}({e.model}) #{i}"
                self._endpoints.append(_Endpoint(e, str(label)))
            else:
                raise ConfigurationError(f"an endpoint must be a base URL or an LLM, got {type(e).__name__}")
        self.model = model or self._endpoints[0].llm.model
        # A call may land on any endpoint: the pool enforces a schema only if every endpoint does.
        self.supports_json_schema = all(e.llm.supports_json_schema for e in self._endpoints)
        self.constrain_tools = all(e.llm.constrain_tools for e in self._endpoints)
        self.cooldown = float(cooldown)
        self.max_failures = max_failures
        self._lock = threading.Lock()
        self._turn = 0

    # -- choosing and marking endpoints -----------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Each endpoint's state: ``endpoint``, ``up``, ``in_flight``, ``calls`` and ``failures`` (in a row)."""
        now = time.monotonic()
        with self._lock:
            return [e.status(now) for e in self._endpoints]

    def _pick(self, tried: set[int]) -> _Endpoint | None:
        """The endpoint for the next attempt: an up one, least busy, in turn; else the one resting least."""
        now = time.monotonic()
        with self._lock:
            fresh = [(i, e) for i, e in enumerate(self._endpoints) if i not in tried]
            if not fresh:
                return None
            up = [(i, e) for i, e in fresh if e.down_until <= now]
            if up:
                n = len(self._endpoints)
                # Least busy first; among equals, the first at or after the turn pointer.
                i, chosen = min(up, key=lambda pair: (pair[1].in_flight, (pair[0] - self._turn) % n))
                self._turn = (i + 1) % n
            elif not tried:  # every endpoint rests: probe the one whose rest ends first
                i, chosen = min(fresh, key=lambda pair: pair[1].down_until)
            else:
                return None
            tried.add(i)
            chosen.in_flight += 1
            chosen.calls += 1
            return chosen

    def _answered(self, endpoint: _Endpoint) -> None:
        """The endpoint answered (an error that is not transient is an answer too)."""
        with self._lock:
            endpoint.in_flight -= 1
            if endpoint.down_until:
                logger.info("endpoint %s answers again; back in rotation", endpoint.label)
            endpoint.failures = 0
            endpoint.down_until = 0.0

    def _failed(self, endpoint: _Endpoint, exc: BaseException) -> None:
        with self._lock:
            endpoint.in_flight -= 1
            if isinstance(exc, RateLimitError):  # busy, not broken
                return
            endpoint.failures += 1
            if _refused(exc) or endpoint.failures >= self.max_failures:
                endpoint.down_until = time.monotonic() + self.cooldown
                logger.warning(
                    "endpoint %s taken out of rotation for %.0fs after %d failure(s): %s",
                    endpoint.label,
                    self.cooldown,
                    endpoint.failures,
                    exc,
                )

    # -- the backend hooks --------------------------------------------------------------------------

    def _complete(self, messages: list[Message], **params: Any) -> Completion:
        tried: set[int] = set()
        last: TransientLLMError | None = None
        while (endpoint := self._pick(tried)) is not None:
            try:
                # The endpoint's own backend call: the pool already holds the call's meter slot and limit.
                completion = endpoint.llm._complete(messages, **params)
            except TransientLLMError as exc:
                self._failed(endpoint, exc)
                last = exc
                continue
            except BaseException:
                self._answered(endpoint)  # a rejected request says nothing bad about the endpoint's health
                raise
            self._answered(endpoint)
            return completion
        assert last is not None  # _pick returns an endpoint on the first try
        raise last

    async def _acomplete(self, messages: list[Message], **params: Any) -> Completion:
        tried: set[int] = set()
        last: TransientLLMError | None = None
        while (endpoint := self._pick(tried)) is not None:
            try:
                completion = await endpoint.llm._acomplete(messages, **params)
            except TransientLLMError as exc:
                self._failed(endpoint, exc)
                last = exc
                continue
            except BaseException:
                self._answered(endpoint)
                raise
            self._answered(endpoint)
            return completion
        assert last is not None
        raise last

    def _give_up(self, errors: list[TransientLLMError]) -> LLMError:
        if all(_refused(e) for e in errors):
            labels = ", ".join(e.label for e in self._endpoints)
            return EndpointUnreachableError(
                f"no endpoint of the pool answers ({labels}); last error: {errors[-1]}. Check that the servers "
                "are running and the addresses are right"
            )
        return retries_exhausted(errors)

    def close(self) -> None:
        """Close every endpoint. Safe to call twice."""
        for e in self._endpoints:
            e.llm.close()

    def __repr__(self) -> str:
        return f"EndpointPool(model={self.model!r}, endpoints={[e.label for e in self._endpoints]!r})"
