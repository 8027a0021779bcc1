"""Any OpenAI-compatible chat endpoint: llama.cpp, vLLM, Ollama, or OpenAI itself.

Built on the official ``openai`` SDK, with the SDK's own retries switched off
(``max_retries=0``): feedprop's retry loop owns retries, so behaviour is the same for every
backend and testable. The SDK's exceptions become feedprop's typed errors:

==========================================  ============================================
what the endpoint did                       error raised
==========================================  ============================================
401 / 403                                   ``AuthenticationError``
400 saying the prompt is too long           ``ContextLengthExceededError``
other 400, 404, 422                         ``BadRequestError``
429                                         ``RateLimitError`` (with Retry-After), retried
5xx, 408, timeout, dropped connection       ``TransientLLMError``, retried
still failing after every retry             ``RetriesExhaustedError``
connection refused on every try             ``EndpointUnreachableError``
==========================================  ============================================

Example:
    >>> llm = OpenAICompatible("http://127.0.0.1:8080/v1", model="qwen2.5-coder-1.5b")
    >>> llm.base_url
    'http://127.0.0.1:8080/v1'
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import inspect
import json
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from feedprop.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContextLengthExceededError,
    EndpointUnreachableError,
    InvalidInputError,
    LLMError,
    RateLimitError,
    TransientLLMError,
)
from feedprop.llm.base import LLM, Completion, Message, Usage
from feedprop.llm.cache import ResponseCache
from feedprop.llm.retry import RetryPolicy, retries_exhausted
from feedprop.llm.tool_calls import ToolCall
from feedprop.llm.tool_reply import ToolReplyFormat

if TYPE_CHECKING:
    import openai

__all__ = ["OpenAICompatible", "error_from_openai"]

#: Phrases servers use when a prompt does not fit (OpenAI, vLLM, llama.cpp, Ollama).
_CONTEXT_PHRASES = (
    "context length",
    "context_length",
    "context window",
    "maximum context",
    "exceed_context_size",
    "exceeds the available context",
    "too many tokens",
    "prompt is too long",
    "input is too long",
)

# The openai SDK takes about a second to import, and a process that only uses MockLLM (tests,
# sandbox workers importing feedprop) never needs it: functions import it on first use.


@functools.cache
def _sdk_params() -> frozenset[str]:
    """The SDK's named arguments of chat.completions.create. Any other sampling parameter
    (llama.cpp's top_k, repeat_penalty, ...) travels in extra_body instead of failing as an
    unexpected keyword."""
    import openai

    create = openai.resources.chat.completions.Completions.create
    return frozenset(inspect.signature(create).parameters) - {"self", "messages", "model"}


def _parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_connect_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a refused or impossible connection, not a dropped one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or type(seen).__name__ == "ConnectError":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _count(value: Any) -> int:
    """A token count from a reply's usage block; anything that is not a count is 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return 0
    try:
        return int(value)
    except (OverflowError, ValueError):
        return 0


def _status_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(exc.message)


def error_from_openai(exc: openai.OpenAIError, base_url: str, timeout: float | None = None) -> LLMError:
    """Translate an ``openai`` SDK exception into feedprop's error tree, with a message saying what to do."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return TransientLLMError(
            f"no reply from {base_url} within {timeout}s; the server may be overloaded. "
            "Raise timeout=..., lower max_tokens, or reduce concurrency"
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
        if _is_connect_failure(exc):
            return TransientLLMError(f"could not connect to {base_url} ({detail})")
        return TransientLLMError(f"the connection to {base_url} failed mid-request ({detail})")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        text = _status_message(exc)
        where = f"{base_url} answered HTTP {status}: {text}"
        if status in (401, 403):
            return AuthenticationError(
                f"{where}. The API key was refused: set FEEDPROP_API_KEY (or pass api_key=...) to a valid key"
            )
        if status == 429:
            retry_after = _parse_retry_after(exc.response.headers)
            return RateLimitError(f"rate limited: {where}. Lower max_concurrency or wait", retry_after=retry_after)
        if status >= 500 or status == 408:
            return TransientLLMError(f"server error: {where}")
        lowered = text.lower()
        if status in (400, 413) and any(p in lowered for p in _CONTEXT_PHRASES):
            return ContextLengthExceededError(
                f"{where}. The prompt plus max_tokens does not fit the model's context window: shorten the "
                "prompt, lower max_tokens, or serve the model with a larger context (e.g. LocalModel(n_ctx=...))"
            )
        if status == 404:
            return BadRequestError(f"{where}. Check the model name (model=...) and that base_url ends with /v1")
        return BadRequestError(f"{where}. The request was rejected as malformed: check the sampling parameters")
    return LLMError(f"the openai client failed talking to {base_url}: {exc}")


class OpenAICompatible(LLM):
    """A model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    ``base_url`` is the endpoint root including ``/v1`` (default: OpenAI's). ``model`` is the
    name the server knows; if omitted, the server's model list is asked and its single entry
    used. ``api_key`` falls back to ``FEEDPROP_API_KEY``, then ``OPENAI_API_KEY``; local servers
    usually need none. Sampling parameters the SDK does not name (``top_k``...) are sent in the
    request body as they are.

    The response cache is on by default (see :mod:`feedprop.llm.cache`); at most
    ``max_concurrency`` calls run at once (default :attr:`default_max_concurrency`).
    ``json_schema=True`` declares that the server enforces ``response_format`` JSON schemas
    (llama.cpp, vLLM and OpenAI do; say so only for a server you know does), which optimizers then
    use to get replies that always parse. ``constrain_tools=True`` (needs ``json_schema``) makes
    a request that offers tools constrain the reply to one call of an offered tool, arguments
    matching its schema, or a final answer (see :mod:`feedprop.llm.tool_reply`): for small
    models that write calls the server does not read, such as the embedded ones.

    Example:
        >>> llm = OpenAICompatible("http://127.0.0.1:8080/v1", model="m", max_concurrency=2)
        >>> llm.limit.limit, llm.supports_json_schema
        (2, False)
        >>> OpenAICompatible("http://127.0.0.1:8080/v1", model="m", json_schema=True).supports_json_schema
        True
    """

    #: Concurrency limit for endpoints created without ``max_concurrency``; set it to change the default.
    default_max_concurrency: ClassVar[int | None] = 8

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 600.0,
        cache: ResponseCache | bool | None = True,
        retry: RetryPolicy | None = None,
        max_concurrency: int | Literal["default"] | None = "default",
        json_schema: bool = False,
        constrain_tools: bool = False,
    ) -> None:
        for label, flag in (("json_schema", json_schema), ("constrain_tools", constrain_tools)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{label} must be True or False, got {flag!r}")
        if constrain_tools and not json_schema:
            raise ConfigurationError(
                "constrain_tools=True needs a server that enforces JSON schemas: pass json_schema=True too "
                "(llama.cpp, vLLM and OpenAI enforce them)"
            )
        self.supports_json_schema = json_schema
        self.constrain_tools = constrain_tools
        super().__init__(
            cache=cache,
            retry=retry,
            max_concurrency=type(self).default_max_concurrency if max_concurrency == "default" else max_concurrency,
        )
        if base_url is not None and not (isinstance(base_url, str) and base_url.startswith(("http://", "https://"))):
            raise ConfigurationError(
                f"base_url must be an http(s) URL such as http://127.0.0.1:8080/v1, got {base_url!r}"
            )
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if api_key is not None and not isinstance(api_key, str):
            raise InvalidInputError(
                f"api_key must be a str, got {type(api_key).__name__}; pass the key as text or set FEEDPROP_API_KEY"
            )
        self.base_url = (base_url or "https://api.openai.com/v1").rstrip("/")
        self.timeout = float(timeout)
        # The SDK insists on a key; local servers ignore it.
        self._api_key = api_key or os.environ.get("FEEDPROP_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"
        import openai

        self._client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key, timeout=self.timeout, max_retries=0)
        # One async client per event loop: an async HTTP pool cannot be shared between loops.
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )
        self._async_lock = threading.Lock()
        if model is None:
            model = self._ask_model_name()
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"model must be a non-empty string, got {model!r}")
        self.model = model

    def _ask_model_name(self) -> str:
        import openai

        try:
            names = [m.id for m in self._client.models.list()]
        except openai.OpenAIError as exc:
            error = error_from_openai(exc, self.base_url, self.timeout)
            if isinstance(error, TransientLLMError) and _is_connect_failure(exc):
                raise EndpointUnreachableError(
                    f"nothing answers at {self.base_url} ({error}). Check that the server is running and the "
                    "address is right (base_url=... or FEEDPROP_BASE_URL), or pass model=... explicitly"
                ) from exc
            raise type(error)(
                f"could not list the models at {self.base_url} to pick one: {error}. Pass model=... explicitly"
            ) from exc
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as exc:
            raise LLMError(
                f"{self.base_url} answered the model list with a garbled reply ({type(exc).__name__}: {exc}); "
                "pass model=... explicitly"
            ) from exc
        if len(names) != 1:
            raise ConfigurationError(
                f"{self.base_url} serves {len(names)} models ({', '.join(names[:10]) or 'none'}); "
                "choose one with model=... (or FEEDPROP_MODEL)"
            )
        return names[0]

    def _request(self, messages: list[Message], params: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages]}
        known = _sdk_params()
        extra = {k: v for k, v in params.items() if k not in known}
        kwargs.update({k: v for k, v in params.items() if k in known})
        if extra:
            kwargs["extra_body"] = {**kwargs.get("extra_body", {}), **extra}
        return kwargs

    def _completion(self, response: Any) -> Completion:
        choices = getattr(response, "choices", None)
        if not choices:
            raise TransientLLMError(f"{self.base_url} returned a reply without choices: {str(response)[:200]}")
        # The SDK does not validate replies: a garbled one may hold anything where a message belongs.
        try:
            choice = choices[0]
            text = choice.message.content
        except (AttributeError, IndexError, KeyError, TypeError):
            text = choice = None
        if choice is None or not (text is None or isinstance(text, str)):
            raise TransientLLMError(
                f"{self.base_url} returned a malformed reply (no message text in its first choice): "
                f"{str(response)[:200]}"
            )
        usage = getattr(response, "usage", None)
        model = getattr(response, "model", None)
        finish = getattr(choice, "finish_reason", None)
        return Completion(
            text=text or "",
            model=model if isinstance(model, str) and model else self.model,
            usage=Usage(
                prompt_tokens=_count(getattr(usage, "prompt_tokens", 0)),
                completion_tokens=_count(getattr(usage, "completion_tokens", 0)),
            ),
            finish_reason=finish if isinstance(finish, str) and finish else "stop",
            tool_calls=self._tool_calls(getattr(choice.message, "tool_calls", None), response),
        )

    def _tool_calls(self, calls: Any, response: Any) -> tuple[ToolCall, ...]:
        """The SDK's ``message.tool_calls`` as :class:`ToolCall` objects (a call without an id gets ``call_<i>``)."""
        if not calls:
            return ()
        out = []
        try:
            for i, call in enumerate(calls):
                function = call.function
                name, arguments = function.name, function.arguments
                if not isinstance(arguments, str):  # some servers send the object itself
                    arguments = json.dumps(arguments, ensure_ascii=False)
                out.append(ToolCall(getattr(call, "id", None) or f"call_{i}", name, arguments))
        except (AttributeError, TypeError, ValueError) as e:  # InvalidInputError is a TypeError
            raise TransientLLMError(
                f"{self.base_url} returned a malformed tool call ({e}): {str(response)[:200]}"
            ) from e
        return tuple(out)

    def _reply_format(self, params: dict[str, Any]) -> ToolReplyFormat | None:
        return ToolReplyFormat.for_request(params) if self.constrain_tools else None

    def _complete(self, messages: list[Message], **params: Any) -> Completion:
        reply = self._reply_format(params)
        completion = self._send(messages, reply.request(params) if reply else params)
        return reply.read(completion, messages) if reply else completion

    def _send(self, messages: list[Message], params: dict[str, Any]) -> Completion:
        import openai

        try:
            response = self._client.chat.completions.create(**self._request(messages, params))
        except openai.OpenAIError as exc:
            raise error_from_openai(exc, self.base_url, params.get("timeout", self.timeout)) from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a body cut short, or not JSON at all
            raise TransientLLMError(
                f"{self.base_url} answered with a body that is not valid JSON ({exc}); the reply was cut short or "
                "garbled on the way (a proxy or an overloaded server)"
            ) from exc
        except TypeError as exc:  # an argument the SDK rejects
            raise InvalidInputError(f"invalid sampling parameter for {self.base_url}: {exc}") from exc
        return self._completion(response)

    def _async_client(self) -> openai.AsyncOpenAI:
        import openai

        loop = asyncio.get_running_loop()
        with self._async_lock:
            client = self._async_clients.get(loop)
            if client is None:
                client = openai.AsyncOpenAI(
                    base_url=self.base_url, api_key=self._api_key, timeout=self.timeout, max_retries=0
                )
                self._async_clients[loop] = client
            return client

    async def _acomplete(self, messages: list[Message], **params: Any) -> Completion:
        reply = self._reply_format(params)
        completion = await self._asend(messages, reply.request(params) if reply else params)
        return reply.read(completion, messages) if reply else completion

    async def _asend(self, messages: list[Message], params: dict[str, Any]) -> Completion:
        import openai

        try:
            response = await self._async_client().chat.completions.create(**self._request(messages, params))
        except openai.OpenAIError as exc:
            raise error_from_openai(exc, self.base_url, params.get("timeout", self.timeout)) from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a body cut short, or not JSON at all
            raise TransientLLMError(
                f"{self.base_url} answered with a body that is not valid JSON ({exc}); the reply was cut short or "
                "garbled on the way (a proxy or an overloaded server)"
            ) from exc
        except TypeError as exc:
            raise InvalidInputError(f"invalid sampling parameter for {self.base_url}: {exc}") from exc
        return self._completion(response)

    def _give_up(self, errors: list[TransientLLMError]) -> LLMError:
        if all(_is_connect_failure(e) for e in errors):
            return EndpointUnreachableError(
                f"nothing answers at {self.base_url}: {len(errors)} connection attempt(s) refused or failed "
                f"(last: {errors[-1]}). Check that the server is running and the address and port are right "
                "(base_url=... or FEEDPROP_BASE_URL; unset FEEDPROP_BASE_URL to use the embedded model)"
            )
        return retries_exhausted(errors)

    async def aclose(self) -> None:
        """Close the async client of the running event loop (the sync one stays until :meth:`close`)."""
        loop = asyncio.get_running_loop()
        with self._async_lock:
            client = self._async_clients.pop(loop, None)
        if client is not None:
            await client.close()

    def close(self) -> None:
        """Close the HTTP connections. Safe to call twice."""
        self._client.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"
