"""LLM specs: a model described as JSON data, so it can be rebuilt in another process.

An LLM object holds connections, locks and threads, so it cannot travel to a worker process or
another machine; a spec can. :func:`from_spec` builds the model a spec describes, and
:func:`spec_of` describes a model where that is possible. The kinds:

``{"kind": "openai", "base_url": url or [url, ...], "model": name, ...}``
    an OpenAI-compatible endpoint; several URLs make an :class:`~feedprop.llm.EndpointPool`.
    Optional: ``api_key`` (else the worker's ``FEEDPROP_API_KEY``), ``timeout``, ``cache``,
    ``max_concurrency``, ``cooldown``, ``max_failures``, ``json_schema`` (the server enforces
    JSON schemas in ``response_format``), ``constrain_tools`` (a reply to a request offering
    tools is constrained to one call or a final answer; needs ``json_schema``).
``{"kind": "env"}``
    whatever the environment of the process building it configures: ``FEEDPROP_BASE_URL``
    (a comma-separated list makes a pool, with ``FEEDPROP_MODEL``), else the process's
    :func:`~feedprop.llm.default` model. Use it to configure endpoints per machine.
``{"kind": "mock", "handler": "package.module:function"}`` or ``{"kind": "mock", "reply": text}``
    a :class:`~feedprop.llm.MockLLM` (optional ``model``, ``latency``) for tests.
``{"kind": "factory", "factory": "package.module:function", "kwargs": {...}}``
    anything else: the function is imported and called with ``kwargs`` and must return an LLM.

Example:
    >>> llm = from_spec({"kind": "mock", "reply": "4"})
    >>> llm.complete([{"role": "user", "content": "2+2?"}]).text
    '4'
    >>> spec_of(from_spec({"kind": "openai", "base_url": "http://127.0.0.1:8080/v1", "model": "m"}))["base_url"]
    'http://127.0.0.1:8080/v1'
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from typing import Any

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm.base import LLM
from feedprop.llm.default_llm import default
from feedprop.llm.mock import MockLLM
from feedprop.llm.openai_compatible import OpenAICompatible
from feedprop.llm.pool import EndpointPool

__all__ = ["KINDS", "check_spec", "from_spec", "import_object", "spec_of"]

#: The spec kinds :func:`from_spec` understands.
KINDS = ("openai", "env", "mock", "factory")

_OPENAI_OPTIONS = {
    "api_key",
    "timeout",
    "cache",
    "max_concurrency",
    "cooldown",
    "max_failures",
    "json_schema",
    "constrain_tools",
}
_MOCK_OPTIONS = {"model", "latency"}


def import_object(path: str, what: str) -> Any:
    """The object at ``"package.module:attribute"`` (dots after the colon walk attributes).

    Example:
        >>> import_object("json:dumps", "function")([1])
        '[1]'
    """
    if not isinstance(path, str) or path.count(":") != 1:
        raise ConfigurationError(f"{what} must be an import path 'package.module:name', got {path!r}")
    module_name, _, attribute = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import {module_name!r} for the {what} {path!r} ({exc}); it must be importable in every "
            "process that builds it (install it, or put its directory on PYTHONPATH)"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r} (the {what} {path!r})") from None
    return obj


def check_spec(spec: Any) -> dict[str, Any]:
    """``spec`` as a dict, checked without building the model: plain JSON with a known kind.

    Example:
        >>> check_spec({"kind": "env"})
        {'kind': 'env'}
    """
    if not isinstance(spec, Mapping):
        raise InvalidInputError(
            "an LLM spec is a dict such as {'kind': 'openai', 'base_url': ..., 'model': ...}, "
            f"got {type(spec).__name__}"
        )
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ConfigurationError(f"LLM spec kind must be one of {KINDS}, got {kind!r}")
    try:
        json.dumps(spec, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"an LLM spec must be plain JSON data so it can travel: {exc}") from None
    return dict(spec)


def _unknown(spec: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(spec) - allowed - {"kind"})
    if extra:
        raise ConfigurationError(f"unknown key(s) {extra} in a {spec['kind']!r} LLM spec; allowed: {sorted(allowed)}")


def _openai(urls: list[str], model: str | None, options: Mapping[str, Any]) -> LLM:
    if len(urls) == 1:
        single = {k: v for k, v in options.items() if k not in ("cooldown", "max_failures")}
        return OpenAICompatible(urls[0], model=model, **single)
    return EndpointPool(urls, model=model, **options)


def from_spec(spec: Mapping[str, Any]) -> LLM:
    """Build the LLM ``spec`` describes (see the module docs for the kinds).

    Example:
        >>> from_spec({"kind": "mock", "reply": "ok", "model": "scripted"}).model
        'scripted'
    """
    spec = check_spec(spec)
    kind = spec["kind"]
    if kind == "openai":
        _unknown(spec, {"base_url", "model", *_OPENAI_OPTIONS})
        raw = spec.get("base_url")
        urls = [raw] if isinstance(raw, str) else raw
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise ConfigurationError(f"an 'openai' LLM spec needs base_url: a URL or a list of URLs, got {raw!r}")
        return _openai(urls, spec.get("model"), {k: v for k, v in spec.items() if k in _OPENAI_OPTIONS})
    if kind == "env":
        _unknown(spec, set())
        configured = os.environ.get("FEEDPROP_BASE_URL", "")
        urls = [u.strip() for u in configured.split(",") if u.strip()]
        if not urls:
            return default()
        options = {"api_key": os.environ.get("FEEDPROP_API_KEY")}
        return _openai(urls, os.environ.get("FEEDPROP_MODEL") or None, options)
    if kind == "mock":
        _unknown(spec, {"handler", "reply", *_MOCK_OPTIONS})
        if ("handler" in spec) == ("reply" in spec):
            raise ConfigurationError("a 'mock' LLM spec needs exactly one of handler='module:function' or reply=text")
        handler = import_object(spec["handler"], "mock handler") if "handler" in spec else spec["reply"]
        if "handler" in spec and not callable(handler):
            raise ConfigurationError(f"the mock handler {spec['handler']!r} is not callable")
        if "reply" in spec and not isinstance(handler, str):
            raise ConfigurationError(f"a 'mock' LLM spec's reply must be a str, got {handler!r:.80}")
        return MockLLM(handler, **{k: v for k, v in spec.items() if k in _MOCK_OPTIONS})
    _unknown(spec, {"factory", "kwargs"})
    factory = import_object(str(spec.get("factory")), "LLM factory")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ConfigurationError(f"a 'factory' LLM spec's kwargs must be a dict, got {kwargs!r:.80}")
    llm = factory(**kwargs)
    if not isinstance(llm, LLM):
        raise ConfigurationError(f"the LLM factory {spec['factory']!r} returned {type(llm).__name__}, not an LLM")
    return llm


def spec_of(llm: LLM) -> dict[str, Any]:
    """A spec that rebuilds ``llm`` elsewhere: OpenAI-compatible endpoints and pools of them.

    API keys are left out (each process reads its own ``FEEDPROP_API_KEY``). Other models
    cannot be described from the object: write their spec yourself ("mock" with an importable
    handler, or "factory").

    Example:
        >>> spec_of(OpenAICompatible("http://127.0.0.1:8080/v1", model="m"))
        {'kind': 'openai', 'base_url': 'http://127.0.0.1:8080/v1', 'model': 'm'}
    """
    schema = {"json_schema": True} if llm.supports_json_schema else {}
    if llm.constrain_tools:
        schema["constrain_tools"] = True
    if isinstance(llm, OpenAICompatible):
        return {"kind": "openai", "base_url": llm.base_url, "model": llm.model, **schema}
    if isinstance(llm, EndpointPool):
        urls = [s["endpoint"] for s in llm.status()]
        if all(u.startswith(("http://", "https://")) for u in urls):
            return {"kind": "openai", "base_url": urls, "model": llm.model, "cooldown": llm.cooldown, **schema}
    raise ConfigurationError(
        f"{llm!r} cannot be described as a spec automatically; pass one yourself, e.g. "
        "{'kind': 'mock', 'handler': 'my_module:handler'} or {'kind': 'factory', 'factory': 'my_module:make_llm'}"
    )
