"""Reading an optimizer model's reply: reasoning plus a suggestion of new values.

Two formats, chosen per optimizer with ``reply_format``:

* ``"json"`` — ``{"reasoning": "...", "suggestion": {"name": value, ...}}``. Found anywhere in
  the reply: bare, inside a markdown code fence, or surrounded by prose. Lenient where small
  models are sloppy: raw newlines inside strings, trailing commas, Python literals
  (single quotes, ``True``/``None``, triple-quoted strings), a flat object of names and values
  without the ``suggestion`` wrapper.
* ``"xml"`` — ``<reasoning>...</reasoning>`` and one ``<suggestion name="...">value</suggestion>``
  per variable. Values are raw text, so code needs no escaping at all.

Both parsers raise :class:`~feedprop.errors.ReplyParseError` — and nothing else — when they
cannot read a reply; its message is written to be shown to the model on a retry.

Example:
    >>> parse_reply('Sure!\\n```json\\n{"reasoning": "x is too small", "suggestion": {"x": 5}}\\n```').suggestion
    {'x': 5}
    >>> parse_reply('<reasoning>too small</reasoning><suggestion name="x">5</suggestion>', "xml").suggestion
    {'x': '5'}
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from feedprop.errors import ConfigurationError, ReplyParseError
from feedprop.llm.base import valid_unicode

__all__ = ["REPLY_FORMATS", "Reply", "arithmetic", "parse_json_reply", "parse_reply", "parse_xml_reply"]

REPLY_FORMATS = ("json", "xml")

#: Longest reply the parsers look at; anything longer is a runaway generation, not an answer.
MAX_REPLY_CHARS = 200_000
#: Most JSON object candidates tried in one reply (bounds the work on adversarial input).
MAX_CANDIDATES = 32

_SUGGESTION_KEYS = ("suggestion", "suggestions", "update", "updates", "new_values", "variables", "answer")
_REASONING_KEYS = ("reasoning", "reason", "explanation", "analysis", "thoughts", "thinking")
_FENCED = re.compile(r"```[a-zA-Z0-9_+-]*[ \t]*\n(.*?)```", re.DOTALL)


@dataclass
class Reply:
    """A parsed reply: the model's ``reasoning``, its ``suggestion`` (key → value as written) and
    any other top-level fields in ``extras`` (e.g. a running summary some optimizers ask for)."""

    reasoning: str = ""
    suggestion: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def parse_reply(text: str, reply_format: str = "json") -> Reply:
    """Parse ``text`` in ``reply_format`` (``"json"`` or ``"xml"``).

    Example:
        >>> parse_reply('{"reasoning": "r", "suggestion": {}}').reasoning
        'r'
    """
    if reply_format == "json":
        return parse_json_reply(text)
    if reply_format == "xml":
        return parse_xml_reply(text)
    raise ConfigurationError(f"reply_format must be one of {REPLY_FORMATS}, got {reply_format!r}")


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise ReplyParseError(f"the reply must be text, got {type(text).__name__}", reply=str(text)[:1000])
    if not text.strip():
        raise ReplyParseError("the reply was empty; answer in the requested format", reply=text)
    if len(text) > MAX_REPLY_CHARS:
        raise ReplyParseError(
            f"the reply is {len(text):,} characters long; answer briefly in the requested format", reply=text[:1000]
        )
    return valid_unicode(text)


def _valid_strings(reply: Reply) -> Reply:
    """``reply`` with lone surrogates (from JSON escapes such as ``"\\ud800"``) made valid Unicode."""
    fields = [reply.reasoning, reply.suggestion, reply.extras]
    try:
        dumped = json.dumps(fields, ensure_ascii=False)
        dumped.encode("utf-8")
    except UnicodeEncodeError:
        reasoning, suggestion, extras = json.loads(valid_unicode(dumped))
        return Reply(reasoning, suggestion, extras)
    except (TypeError, ValueError, RecursionError):  # not expected from parsed JSON; leave it as it is
        pass
    return reply


# ---------------------------------------------------------------------------------------------
# JSON


def _object_spans(text: str) -> tuple[list[tuple[int, int]], bool]:
    """Spans of balanced ``{...}`` in ``text`` (outermost first) and whether one was left open.

    One linear pass; braces inside double-quoted strings are ignored. Triple-quoted Python
    strings are skipped as a whole, since models write code in them.
    """
    spans: list[tuple[int, int]] = []
    stack: list[int] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_string = False
        elif stack and text.startswith('"""', i):
            end = text.find('"""', i + 3)
            if end < 0:
                return _ordered(spans), True
            i = end + 3
            continue
        elif c == '"' and stack:
            in_string = True
        elif c == "{":
            stack.append(i)
        elif c == "}" and stack:
            start = stack.pop()
            spans.append((start, i + 1))
        i += 1
    return _ordered(spans), bool(stack)


def _ordered(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    # Longest first: the whole reply object beats the suggestion object nested inside it.
    return sorted(spans, key=lambda s: (-(s[1] - s[0]), s[0]))


_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def _load_object(snippet: str) -> Any:
    """Parse one ``{...}`` snippet as JSON, leniently; ``None`` when it is not an object."""
    for attempt in (snippet, _TRAILING_COMMA.sub(r"\1", snippet)):
        try:
            return json.loads(attempt, strict=False)
        except (ValueError, RecursionError):
            pass
    try:
        with warnings.catch_warnings():  # a model's "\d" in a string is not worth a DeprecationWarning
            warnings.simplefilter("ignore")
            tree = ast.parse(snippet.strip(), mode="eval")
        return _literal(tree.body, 0)
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError, ArithmeticError):
        return None


_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_ARITHMETIC: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def arithmetic(text: str) -> float | int | None:
    """The value of ``text`` if it is a number or plain arithmetic on numbers (``+ - * /``), else ``None``.

    Example:
        >>> arithmetic("6.75 + 0.45"), arithmetic("-(2 * 3)"), arithmetic("2 ** 99999"), arithmetic("x + 1")
        (7.2, -6, None, None)
    """
    if len(text) > 200:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = _literal(ast.parse(text.strip(), mode="eval").body, 0)
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError, ArithmeticError):
        return None
    return value if _is_number(value) else None


def _literal(node: ast.expr, depth: int) -> Any:
    """A safe evaluator for Python/JSON literals (``ast.literal_eval`` rejects ``true``/``null``)."""
    if depth > 64:
        raise ValueError("nested too deeply")
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool | type(None)):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand, depth + 1)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("sign on a non-number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        # Small models write numbers as sums ("x": 6.75 + 0.45); plain arithmetic on numbers is safe.
        left, right = _literal(node.left, depth + 1), _literal(node.right, depth + 1)
        if not (_is_number(left) and _is_number(right)):
            raise ValueError("arithmetic on a non-number")
        result = _ARITHMETIC[type(node.op)](float(left), float(right))
        if not math.isfinite(result):
            raise ValueError("arithmetic gave no finite number")
        return int(result) if isinstance(left, int) and isinstance(right, int) and result.is_integer() else result
    if isinstance(node, ast.Dict):
        out: dict[str, Any] = {}
        for k, v in zip(node.keys, node.values, strict=True):
            if k is None:
                raise ValueError("** in a literal")
            key = _literal(k, depth + 1)
            if not isinstance(key, str | int | float):
                raise ValueError("unsupported key")
            out[str(key)] = _literal(v, depth + 1)
        return out
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e, depth + 1) for e in node.elts]
    raise ValueError(f"not a literal: {type(node).__name__}")


def _as_reply(obj: dict[str, Any], allow_flat: bool = True) -> Reply | None:
    lowered = {str(k).lower(): k for k in obj}
    reasoning = ""
    for key in _REASONING_KEYS:
        if key in lowered:
            value = obj[lowered[key]]
            reasoning = value if isinstance(value, str) else json.dumps(value)
            break
    for key in _SUGGESTION_KEYS:
        if key in lowered:
            suggestion = obj[lowered[key]]
            if isinstance(suggestion, dict):
                extras = {k: v for k, v in obj.items() if k not in (lowered[key],) and k.lower() not in _REASONING_KEYS}
                return Reply(reasoning, {str(k): v for k, v in suggestion.items()}, extras)
            if isinstance(suggestion, list) and all(
                isinstance(s, dict) and "name" in s and "value" in s for s in suggestion
            ):  # [{"name": ..., "value": ...}, ...]
                return Reply(reasoning, {str(s["name"]): s["value"] for s in suggestion}, {})
            return None
    if not allow_flat:
        return None
    # No wrapper: a flat object of names and values, possibly next to a reasoning field.
    flat = {str(k): v for k, v in obj.items() if str(k).lower() not in _REASONING_KEYS}
    return Reply(reasoning, flat, {}) if flat or reasoning else None


def parse_json_reply(text: str) -> Reply:
    """Find and read the JSON object in a reply (bare, fenced, or inside prose).

    Example:
        >>> parse_json_reply('I think x should be bigger. {"reasoning": "bigger", "suggestion": {"x": 3}} Done.')
        Reply(reasoning='bigger', suggestion={'x': 3}, extras={})
    """
    text = _check_text(text)
    sources = [m.group(1) for m in _FENCED.finditer(text)]
    sources.append(text)
    open_seen = False
    tried = 0
    for source in sources:
        spans, left_open = _object_spans(source)
        open_seen = open_seen or left_open
        for start, end in spans:
            if tried >= MAX_CANDIDATES:
                break
            tried += 1
            obj = _load_object(source[start:end])
            if isinstance(obj, dict):
                # In a cut-off reply an inner object may be a value, not the suggestion: insist on the wrapper.
                reply = _as_reply(obj, allow_flat=not left_open)
                if reply is not None:
                    return _valid_strings(reply)
    if open_seen:
        raise ReplyParseError(
            "the reply was cut off before its JSON object closed; answer again, more briefly, "
            'with one complete object {"reasoning": ..., "suggestion": {...}}',
            reply=text,
        )
    if "{" not in text:
        raise ReplyParseError(
            'the reply has no JSON object; answer with {"reasoning": "...", "suggestion": {"<name>": <new value>}}',
            reply=text,
        )
    raise ReplyParseError(
        "the reply's JSON could not be read (check quotes and escapes); answer with one valid object "
        '{"reasoning": "...", "suggestion": {"<name>": <new value>}}',
        reply=text,
    )


# ---------------------------------------------------------------------------------------------
# XML tags

_REASONING_TAG = re.compile(r"<reasoning>(.*?)</reasoning>", re.DOTALL | re.IGNORECASE)
_SUGGESTION_TAG = re.compile(
    r"<suggestion\s+name\s*=\s*(?:\"([^\"<>]*)\"|'([^'<>]*)')\s*>(.*?)</suggestion>", re.DOTALL | re.IGNORECASE
)
_NESTED_TAG = re.compile(
    r"<suggestion>\s*<name>(.*?)</name>\s*<value>(.*?)</value>\s*</suggestion>", re.DOTALL | re.IGNORECASE
)
_OPEN_SUGGESTION = re.compile(r"<suggestion\b", re.IGNORECASE)
_CLOSE_SUGGESTION = re.compile(r"</suggestion>", re.IGNORECASE)
_NO_CHANGE = re.compile(r"<no_change\s*/?>", re.IGNORECASE)
#: Other single-value tags some optimizers ask for; they land in ``Reply.extras``.
EXTRA_TAGS = ("verdict", "lessons", "summary")
_EXTRA_TAG = {tag: re.compile(rf"<{tag}>(.*?)</{tag}>", re.DOTALL | re.IGNORECASE) for tag in EXTRA_TAGS}


def _trim_value(value: str) -> str:
    # Drop the line breaks that follow an opening tag and precede a closing one, nothing more.
    if value.startswith("\r\n"):
        value = value[2:]
    elif value.startswith("\n"):
        value = value[1:]
    return value[:-1] if value.endswith("\n") else value


def parse_xml_reply(text: str) -> Reply:
    """Read ``<reasoning>`` and ``<suggestion name="...">`` tags. ``<no_change/>`` means no update.

    Example:
        >>> parse_xml_reply('<reasoning>ok</reasoning><no_change/>').suggestion
        {}
    """
    text = _check_text(text)
    found = _REASONING_TAG.search(text)
    reasoning = found.group(1).strip() if found else ""
    suggestion: dict[str, Any] = {}
    for m in _SUGGESTION_TAG.finditer(text):
        suggestion[(m.group(1) if m.group(1) is not None else m.group(2)).strip()] = _trim_value(m.group(3))
    for m in _NESTED_TAG.finditer(text):
        suggestion[m.group(1).strip()] = _trim_value(m.group(2))
    opened = len(_OPEN_SUGGESTION.findall(text))
    closed = len(_CLOSE_SUGGESTION.findall(text))
    if opened > closed:
        raise ReplyParseError(
            "the reply was cut off inside a <suggestion> tag; answer again, more briefly, closing every tag",
            reply=text,
        )
    if suggestion or (_NO_CHANGE.search(text) and opened == 0):
        extras = {tag: hit.group(1).strip() for tag, rx in _EXTRA_TAG.items() if (hit := rx.search(text))}
        return Reply(reasoning, suggestion, extras)
    if opened:
        raise ReplyParseError(
            'the <suggestion> tags could not be read; write each as <suggestion name="NAME">new value</suggestion>',
            reply=text,
        )
    raise ReplyParseError(
        'the reply has no <suggestion> tag; write <reasoning>...</reasoning> then <suggestion name="NAME">new value'
        "</suggestion> for each variable to change (or <no_change/>)",
        reply=text,
    )
