"""Language models: one protocol, several backends, and the machinery every call goes through.

Every :class:`LLM` — :class:`OpenAICompatible` endpoints, the embedded :class:`LocalModel`,
and :class:`MockLLM` for tests — answers ``complete(messages, **params) -> Completion`` (and
``acomplete``; ``tools=[...]`` in the OpenAI format offers functions, and the reply's
``tool_calls`` are :class:`ToolCall` objects), and every call is cached, retried, metered,
budgeted and concurrency-limited in the same way; inside ``with replay(records):`` recorded
requests are answered from the record. :func:`default` is the model used when none is given.

Example:
    >>> from feedprop.llm import MockLLM, track_usage
    >>> llm = MockLLM(lambda messages, **params: "42")
    >>> with track_usage() as usage:
    ...     llm.complete([{"role": "user", "content": "6*7?"}], temperature=0).text
    '42'
    >>> usage.calls
    1
"""

from feedprop.llm.base import LLM, Completion, Message, Usage, check_messages
from feedprop.llm.cache import ResponseCache, cache_enabled, cache_key, set_cache_enabled
from feedprop.llm.default_llm import default, set_default
from feedprop.llm.limit import ConcurrencyLimit
from feedprop.llm.local import LocalModel
from feedprop.llm.mock import MockCall, MockLLM, estimate_tokens
from feedprop.llm.model_file import ensure_model_file
from feedprop.llm.openai_compatible import OpenAICompatible
from feedprop.llm.pool import EndpointPool
from feedprop.llm.replay import RecordedCall, Replay, replay
from feedprop.llm.retry import RetryPolicy
from feedprop.llm.spec import from_spec, spec_of
from feedprop.llm.tool_calls import ToolCall
from feedprop.llm.usage import (
    ContextThreadPoolExecutor,
    UsageCounts,
    UsageMeter,
    active_meters,
    thread_map,
    track_usage,
)

__all__ = [
    "LLM",
    "Completion",
    "ConcurrencyLimit",
    "ContextThreadPoolExecutor",
    "EndpointPool",
    "LocalModel",
    "Message",
    "MockCall",
    "MockLLM",
    "OpenAICompatible",
    "RecordedCall",
    "Replay",
    "ResponseCache",
    "RetryPolicy",
    "ToolCall",
    "Usage",
    "UsageCounts",
    "UsageMeter",
    "active_meters",
    "cache_enabled",
    "cache_key",
    "check_messages",
    "default",
    "ensure_model_file",
    "estimate_tokens",
    "from_spec",
    "replay",
    "set_cache_enabled",
    "set_default",
    "spec_of",
    "thread_map",
    "track_usage",
]
