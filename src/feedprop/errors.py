"""Every error feedprop raises, in one tree.

Each class names the situation; each message raised with it says what to do next.
Errors caused by a bad argument also subclass the matching built-in (``TypeError``,
``ValueError``, ``KeyError``) so that ordinary ``except`` clauses keep working.

::

    FeedpropError
    ├── ConfigurationError (ValueError)        a bad argument, option or environment setting
    │   └── InvalidInputError (TypeError)      a value of the wrong type or shape
    ├── LLMError                               anything that went wrong talking to a model
    │   ├── AuthenticationError                the endpoint refused the API key
    │   ├── BadRequestError                    the endpoint rejected the request as malformed
    │   │   └── ContextLengthExceededError     the prompt does not fit the model's context
    │   ├── TransientLLMError                  worth retrying: timeout, 429, 5xx, dropped connection
    │   │   └── RateLimitError                 429, with the server's Retry-After when it sent one
    │   ├── RetriesExhaustedError              a transient error outlived every retry
    │   └── EndpointUnreachableError           nothing answers at the configured address
    ├── ModelFileError                         the embedded model's file is missing or corrupt
    ├── GraphError                             misuse of the traced graph
    │   └── HiddenDependencyError              a bundled function read a node it was not given
    ├── ExecutionError                         user or trainable code raised inside a traced op
    ├── SandboxError                           the sandbox itself failed (not the code inside it)
    ├── DistributedError                       a Ray task was lost for good, or the cluster cannot be reached
    ├── ReplyParseError                        an optimizer could not read the model's reply
    ├── SuggestionError (ValueError)           a proposed value is invalid for its parameter
    ├── StateDictError (KeyError)              load_state_dict met missing or unexpected keys
    ├── CheckpointError                        a checkpoint cannot be written or read
    ├── BudgetExhausted                        a training budget ran out (the trainer stops cleanly)
    └── UnattributedCallError (RuntimeError)   an LLM call no usage meter can be charged with

    FeedbackWarning (UserWarning)              a parameter the forward used got no feedback
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the node module sits below this one; only the type is needed here
    from feedprop.node import ExceptionNode

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BudgetExhausted",
    "CheckpointError",
    "ConfigurationError",
    "ContextLengthExceededError",
    "DistributedError",
    "EndpointUnreachableError",
    "ExecutionError",
    "FeedbackWarning",
    "FeedpropError",
    "GraphError",
    "HiddenDependencyError",
    "InvalidInputError",
    "LLMError",
    "ModelFileError",
    "RateLimitError",
    "ReplyParseError",
    "RetriesExhaustedError",
    "SandboxError",
    "StateDictError",
    "SuggestionError",
    "TransientLLMError",
    "UnattributedCallError",
]


class FeedpropError(Exception):
    """Base class of every error raised by feedprop."""


class ConfigurationError(FeedpropError, ValueError):
    """A bad argument, option or environment setting."""


class InvalidInputError(ConfigurationError, TypeError):
    """A value of the wrong type or shape was passed to the public API."""


class LLMError(FeedpropError):
    """Something went wrong talking to a language model."""


class AuthenticationError(LLMError):
    """The endpoint refused the API key. Set ``FEEDPROP_API_KEY`` (or pass ``api_key=``)."""


class BadRequestError(LLMError):
    """The endpoint rejected the request as malformed; retrying the same request will not help."""


class ContextLengthExceededError(BadRequestError):
    """The prompt does not fit the model's context window."""


class TransientLLMError(LLMError):
    """A failure worth retrying: timeout, rate limit, server error or dropped connection."""


class RateLimitError(TransientLLMError):
    """HTTP 429. ``retry_after`` holds the server's Retry-After in seconds, when it sent one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RetriesExhaustedError(LLMError):
    """A transient error persisted through every retry. ``last_error`` is the final failure."""

    def __init__(self, message: str, last_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.last_error = last_error


class EndpointUnreachableError(LLMError):
    """Nothing answers at the configured address."""


class ModelFileError(FeedpropError):
    """The embedded model's file is missing, partial or fails its checksum."""


class GraphError(FeedpropError):
    """Misuse of the traced graph."""


class HiddenDependencyError(GraphError):
    """A bundled function read a node that was not passed to it as an argument."""


class ExecutionError(FeedpropError):
    """Code inside a traced op raised. ``node`` is the :class:`ExceptionNode` recording it.

    Call ``e.node.backward(str(e))`` to turn the error into feedback for the code that raised it.
    """

    def __init__(self, node: ExceptionNode, message: str | None = None) -> None:
        super().__init__(message if message is not None else str(getattr(node, "data", node)))
        self.node = node


class SandboxError(FeedpropError):
    """The sandbox itself failed to start or to answer (not the code running inside it)."""


class DistributedError(FeedpropError):
    """Running items on a cluster failed: a task was lost for good (its worker died more often than it is
    retried), the cluster cannot be reached, or a worker's error could not be rebuilt as its own type."""


class ReplyParseError(FeedpropError):
    """An optimizer could not read the model's reply. ``reply`` holds the raw text."""

    def __init__(self, message: str, reply: str = "") -> None:
        super().__init__(message)
        self.reply = reply


class SuggestionError(FeedpropError, ValueError):
    """A proposed value is invalid for its parameter (bad code, out-of-bounds number, wrong shape)."""

    def __init__(self, message: str, parameter: str = "", value: Any = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value


class StateDictError(FeedpropError, KeyError):
    """``load_state_dict(strict=True)`` met missing or unexpected keys."""

    def __init__(self, message: str, missing: list[str] | None = None, unexpected: list[str] | None = None):
        super().__init__(message)
        self.missing = missing or []
        self.unexpected = unexpected or []

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0])


class CheckpointError(FeedpropError):
    """A checkpoint cannot be written or read."""


class BudgetExhausted(FeedpropError):
    """A training budget (calls, tokens or seconds) ran out."""


class UnattributedCallError(FeedpropError, RuntimeError):
    """An LLM call was made where no usage meter can be charged with it (a thread that
    :mod:`threading` did not start) while a meter or budget is active; the message says how to
    carry the meters over."""


class FeedbackWarning(UserWarning):
    """Backward gave no feedback to a trainable parameter that the forward call used.

    Its value was read where feedprop could not record the read (in a thread that did not inherit
    the forward's context, under ``no_trace()``, after the forward returned), or the result of the
    op it fed was dropped. The message names the parameters.
    """
