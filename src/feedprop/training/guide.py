"""Guides: the loss functions of feedprop.

A :class:`Guide` scores one output against the expected answer and says why, as a
:class:`~feedprop.node.Feedback` whose ``score`` lies in [0, 1] and whose ``text`` is written for
the optimizer that will read it ("Wrong: expected 42, got 41.").

Subclasses override one method, :meth:`Guide.forward`. ``__call__`` unwraps nodes, so a guide
accepts a traced output or a plain value alike. The built-in guides never raise on a strange
output (``None``, a huge string, a number where text was expected, an exception): they score it
0 and say what was wrong. A bad *target* is a bug in the data, so it raises
:class:`~feedprop.errors.InvalidInputError`.

Example:
    >>> from feedprop.training.guide import Numeric
    >>> Numeric()("The total is 41 apples.", "42").text
    'Wrong: expected 42, got 41.'
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import LLM, default
from feedprop.llm.base import Message, valid_unicode
from feedprop.node import Feedback, Node
from feedprop.sandbox import Executor, run_unit_tests

__all__ = [
    "JUDGE_SYSTEM",
    "JUDGE_TEMPLATE",
    "ExactMatch",
    "Guide",
    "LLMJudge",
    "MultipleChoice",
    "Numeric",
    "UnitTest",
    "extract_code",
    "final_answer",
    "last_choice",
    "last_number",
    "parse_judgement",
    "run_unit_tests",
]

#: How many characters of an output a feedback text quotes before eliding the middle.
SHOW_CHARS = 200


class Guide:
    """Base class of every guide. Subclasses override :meth:`forward`.

    Example:
        >>> class Shorter(Guide):
        ...     def forward(self, output, target, *, example=None):
        ...         ok = len(str(output)) <= target
        ...         return Feedback("Correct." if ok else f"Too long: keep it under {target} characters.", float(ok))
        >>> Shorter()("a short answer", 20).score
        1.0
    """

    def __call__(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        """Score ``output`` (a node or a plain value) against ``target``."""
        if isinstance(output, Node):
            output = output.data
        if isinstance(target, Node):
            target = target.data
        if isinstance(output, BaseException):
            # A workflow that raised produced no answer; say so rather than scoring the error's text.
            return Feedback(
                f"No answer: the workflow raised {type(output).__name__}: {_show(_as_text(output) or '')}",
                0.0,
                {"error": type(output).__name__},
            )
        return self.forward(output, target, example=example)

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        """Score a plain ``output`` against ``target``; ``example`` is the dataset item, if any."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(output, target, *, example=None)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# --------------------------------------------------------------------------------------------
# Reading answers out of free text (pure functions, shared by the guides and the task loaders)

_ANSWER_IS = re.compile(r"\b(?:the\s+(?:final\s+)?answer\s+is\s*:?|(?:final\s+)?answer\s*:)", re.IGNORECASE)
# Thousands separators only in groups of three, so "1,2,3" reads as three numbers, not 123.
# A minus counts as a sign only when it does not follow a word character ("10-3" is 10 and 3).
_NUMBER = re.compile(r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|(?<![\w.])[-−]?\.\d+")
_CHOICE = re.compile(r"\(([A-Za-z])\)")
_BARE_CHOICE = re.compile(r"^\W*([A-Za-z])\W*$")
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def final_answer(text: str) -> str:
    """The final answer in a chain-of-thought reply: what follows the last "the answer is".

    Without such a phrase the whole text (stripped) is the answer.

    Example:
        >>> final_answer("Let's think step by step. 2 + 2 = 4. So the answer is 4.")
        '4'
    """
    matches = list(_ANSWER_IS.finditer(text))
    answer = text[matches[-1].end() :] if matches else text
    if matches:
        answer = answer.strip().split("\n", 1)[0]
    previous = None
    while answer != previous:  # peel "**Yes**." layer by layer: markup, quotes, a final period
        previous = answer
        answer = answer.strip().strip("*_`\"'").removesuffix(".")
    return answer


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (commas as thousands separators allowed), or ``None``.

    Example:
        >>> last_number("She pays $1,250.50 in total, i.e. 1250.5")
        1250.5
    """
    for match in reversed(_NUMBER.findall(text)):
        try:
            return float(match.replace(",", "").replace("−", "-"))
        except ValueError:  # pragma: no cover - the pattern only matches valid literals
            continue
    return None


def last_choice(text: str) -> str | None:
    """The letter of the last ``(X)`` option in ``text``, upper-cased; a bare ``"B"`` also counts.

    Example:
        >>> last_choice("(A) is tempting, but the answer is (C).")
        'C'
    """
    found = _CHOICE.findall(text)
    if found:
        return str(found[-1]).upper()
    bare = _BARE_CHOICE.match(final_answer(text)) if len(text) < 1000 else None
    return bare.group(1).upper() if bare else None


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The code in a model's reply: the fenced block defining ``entry_point``, else the first block.

    A reply without fences is taken as code as it is; an unclosed fence (a reply cut off
    mid-block) still yields the code after it.

    Example:
        >>> extract_code("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
        'def f():\\n    return 1\\n'
    """
    blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in ("", "python", "py", "python3")]
    if not blocks:
        return text
    if entry_point:
        for body in blocks:
            if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", body, re.MULTILINE):
                return str(body)
    return str(blocks[0])


def _as_text(value: Any) -> str | None:
    """``value`` as text, or ``None`` when it has none (``None``, or a ``__str__`` that raises)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    try:
        return str(value)
    except Exception:
        return None


def _show(text: str, limit: int = SHOW_CHARS) -> str:
    """``text`` short enough to quote in feedback: the middle of a long text is elided."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}...[{len(text) - 2 * half:,} chars omitted]...{text[-half:]}"


def _fmt_number(x: float) -> str:
    return str(int(x)) if x.is_integer() and abs(x) < 1e16 else repr(x)


def _contains_token(text: str, needle: str) -> bool:
    """Whether ``needle`` appears in the longer ``text`` as a whole word (or as a bracketed token like ``(B)``)."""
    if not needle or len(text) <= len(needle):
        return False
    pattern = rf"(?<![\w.]){re.escape(needle)}(?![\w])" if needle[:1].isalnum() else re.escape(needle)
    return re.search(pattern, text) is not None


def _no_text(output: Any, expected: str) -> Feedback:
    kind = "nothing (None)" if output is None else f"a {type(output).__name__} that cannot be read as text"
    return Feedback(f"Wrong: expected {expected}, but the output was {kind}.", 0.0, {"expected": expected})


# --------------------------------------------------------------------------------------------
# Built-in guides


class ExactMatch(Guide):
    """Exact string match, after optional normalisation.

    ``normalize_whitespace`` collapses runs of whitespace and strips the ends; ``ignore_case``
    compares case-insensitively; ``extract=True`` first reads the final answer out of a
    chain-of-thought reply (see :func:`final_answer`).

    Example:
        >>> ExactMatch(ignore_case=True)("  Valid ", "valid").score
        1.0
    """

    def __init__(self, *, normalize_whitespace: bool = True, ignore_case: bool = False, extract: bool = False) -> None:
        self.normalize_whitespace = normalize_whitespace
        self.ignore_case = ignore_case
        self.extract = extract

    def normalize(self, text: str) -> str:
        if self.extract:
            text = final_answer(text)
        if self.normalize_whitespace:
            text = " ".join(text.split())
        if self.ignore_case:
            text = text.casefold()
        return text

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        expected = _as_text(target)
        if expected is None:
            raise InvalidInputError(f"ExactMatch needs a text target, got {type(target).__name__}; fix the dataset")
        text = _as_text(output)
        if text is None:
            return _no_text(output, repr(expected))
        got, want = self.normalize(text), self.normalize(expected)
        extras = {"expected": expected, "got": _show(got, 1000)}
        if got == want:
            return Feedback("Correct.", 1.0, extras)
        if not got:
            return Feedback(f"Wrong: expected {expected!r}, got an empty answer.", 0.0, extras)
        if _contains_token(got, want):
            # The most useful thing to say about a right answer wrapped in prose: the wrapping is the problem.
            return Feedback(
                f"Wrong: expected exactly {expected!r}, got {_show(got)!r}, which contains the answer but also "
                "other text; the output must be the answer alone.",
                0.0,
                extras,
            )
        return Feedback(f"Wrong: expected {expected!r}, got {_show(got)!r}.", 0.0, extras)

    def __repr__(self) -> str:
        return (
            f"ExactMatch(normalize_whitespace={self.normalize_whitespace}, "
            f"ignore_case={self.ignore_case}, extract={self.extract})"
        )


class Numeric(Guide):
    """Compares the last number in the output with the target, within a tolerance.

    Correct when ``|got - expected| <= max(abs_tol, rel_tol * |expected|)``.

    Example:
        >>> Numeric()("2 + 3 = 5, so the answer is 5.", 5).score
        1.0
    """

    def __init__(self, *, abs_tol: float = 1e-6, rel_tol: float = 0.0) -> None:
        if abs_tol < 0 or rel_tol < 0:
            raise ConfigurationError("Numeric tolerances must be >= 0")
        self.abs_tol = abs_tol
        self.rel_tol = rel_tol

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        expected = _target_number(target)
        shown = _fmt_number(expected)
        if isinstance(output, int | float) and not isinstance(output, bool):
            try:
                got: float | None = float(output)
            except OverflowError:  # an int too large for a float
                got = math.inf if output > 0 else -math.inf
        else:
            text = _as_text(output)
            if text is None:
                return _no_text(output, shown)
            got = last_number(text)
        if got is None:
            return Feedback(
                f"Wrong: expected {shown}, but the output contains no number. End the answer with the number.",
                0.0,
                {"expected": expected},
            )
        extras = {"expected": expected, "got": got if math.isfinite(got) else str(got)}  # JSON has no inf/nan
        if math.isfinite(got) and abs(got - expected) <= max(self.abs_tol, self.rel_tol * abs(expected)):
            return Feedback("Correct.", 1.0, extras)
        return Feedback(f"Wrong: expected {shown}, got {_fmt_number(got)}.", 0.0, extras)

    def __repr__(self) -> str:
        return f"Numeric(abs_tol={self.abs_tol}, rel_tol={self.rel_tol})"


def _target_number(target: Any) -> float:
    if isinstance(target, int | float) and not isinstance(target, bool):
        return float(target)
    text = _as_text(target)
    number = last_number(text) if text is not None else None
    if number is None:
        raise InvalidInputError(f"Numeric needs a number as target, got {target!r:.80}; fix the dataset")
    return number


class MultipleChoice(Guide):
    """Compares the last ``(X)`` option in the output with the target letter.

    The target is ``"(B)"`` or ``"B"``. A target that is not an option letter (a handful of
    published BBH items have the option's text instead) is compared as text with the final
    answer (see :func:`final_answer`), whitespace and case normalised.

    Example:
        >>> MultipleChoice()("It cannot be (A); the answer is (B).", "(B)").score
        1.0
    """

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        expected_text = _as_text(target)
        if expected_text is None:
            raise InvalidInputError(f"MultipleChoice needs a target like '(B)', got {type(target).__name__}")
        letter = _option_letter(expected_text)
        if letter is None:
            return ExactMatch(ignore_case=True, extract=True).forward(output, expected_text)
        expected = f"({letter})"
        text = _as_text(output)
        if text is None:
            return _no_text(output, expected)
        got = last_choice(text)
        if got is None:
            return Feedback(
                f"Wrong: expected {expected}, but the output names no option. End the answer with the option as (X).",
                0.0,
                {"expected": expected},
            )
        extras = {"expected": expected, "got": f"({got})"}
        if got == letter:
            return Feedback("Correct.", 1.0, extras)
        return Feedback(f"Wrong: expected {expected}, got ({got}).", 0.0, extras)


def _option_letter(target: str) -> str | None:
    match = re.fullmatch(r"\s*\(?([A-Za-z])\)?\s*", target)
    return match.group(1).upper() if match else None


# --------------------------------------------------------------------------------------------
# Unit tests in the sandbox


class UnitTest(Guide):
    """Runs candidate code against unit tests in the sandbox; pass@1.

    The output is code, or a reply containing a fenced code block (see :func:`extract_code`).
    The target is the tests: a mapping ``{"test": ..., "entry_point": ..., "prompt": ...}``
    (the HumanEval/MBPP row format; ``prompt`` lets a reply that is only a function body be
    completed, and supplies the prompt's imports and helper functions to a full function), or the test source as a
    string (``entry_point`` then comes from the guide or from ``example.meta``).

    The feedback names the failing test and what the code returned, or the exception with the
    line of the code that raised it; score 1 when every test passes, else 0.

    Example:
        >>> tests = {"test": "def check(f):\\n    assert f(2) == 4\\n", "entry_point": "square"}
        >>> UnitTest()("def square(x):\\n    return x * x\\n", tests).score
        1.0
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        memory_mb: int | None = 1024,
        entry_point: str | None = None,
        executor: Executor | None = None,
    ) -> None:
        if timeout <= 0:
            raise ConfigurationError("UnitTest timeout must be > 0 seconds")
        if memory_mb is not None and memory_mb <= 0:
            raise ConfigurationError("UnitTest memory_mb must be > 0 megabytes, or None for no limit")
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.entry_point = entry_point
        self.executor = executor

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        tests, entry_point, prompt = self._read_target(target, example)
        text = _as_text(output)
        if text is None or not text.strip():
            what = "nothing" if text is None else "empty text"
            return Feedback(f"Failed: expected Python code defining the solution, got {what}.", 0.0, {"passed": False})
        assembled = _assemble_program(extract_code(text, entry_point), prompt, entry_point)
        if isinstance(assembled, Feedback):
            return assembled
        program, offset = assembled
        verdict = run_unit_tests(
            program, tests, entry_point, timeout=self.timeout, memory_mb=self.memory_mb, executor=self.executor
        )
        if isinstance(verdict.get("code_lineno"), int):  # count lines in the code as the output wrote it
            verdict["code_lineno"] -= offset
            if verdict["code_lineno"] < 1:
                del verdict["code_lineno"]
        return _verdict_feedback(verdict, self.timeout)

    def _read_target(self, target: Any, example: Any) -> tuple[str, str | None, str]:
        entry_point = self.entry_point
        prompt = ""
        if isinstance(target, Mapping):
            if not isinstance(target.get("test"), str):
                raise InvalidInputError("UnitTest target mapping needs a 'test' string (the test source)")
            tests = target["test"]
            entry_point = target.get("entry_point") or entry_point
            prompt = target.get("prompt") or ""
        elif isinstance(target, str):
            tests = target
            meta = getattr(example, "meta", None)
            if isinstance(meta, Mapping):
                entry_point = entry_point or meta.get("entry_point")
                prompt = meta.get("prompt") or ""
        else:
            raise InvalidInputError(
                f"UnitTest target must be the test source (str) or a mapping with 'test' and 'entry_point', "
                f"got {type(target).__name__}"
            )
        return tests, entry_point, prompt

    def __repr__(self) -> str:
        return f"UnitTest(timeout={self.timeout:g}, memory_mb={self.memory_mb})"


def _defines(tree: ast.Module, name: str) -> bool:
    return any(
        (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name)
        or (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets))
        for node in tree.body
    )


def _parse(source: str) -> ast.Module | SyntaxError:
    try:
        return ast.parse(source)
    except SyntaxError as e:
        return e
    except (ValueError, RecursionError, MemoryError) as e:  # NUL bytes, absurd nesting
        return SyntaxError(f"{type(e).__name__}: {e}")


def _assemble_program(code: str, prompt: str, entry_point: str | None) -> tuple[str, int] | Feedback:
    """The program to test and how many lines precede ``code`` in it.

    ``code`` as is when it defines the entry point (after the prompt's imports, which a full
    function may rely on), else ``prompt + code`` (a reply that is only the function's body).
    """
    tree = _parse(code)
    if isinstance(tree, ast.Module) and (not entry_point or _defines(tree, entry_point) or not prompt):
        context = _prompt_context(prompt, entry_point)
        return (f"{context}\n{code}", context.count("\n") + 1) if context else (code, 0)
    if prompt:
        completed = prompt + code
        if isinstance(_parse(completed), ast.Module):
            return completed, prompt.count("\n")
    error = tree if isinstance(tree, SyntaxError) else _parse(prompt + code)
    assert isinstance(error, SyntaxError)
    where = f" at line {error.lineno}" if error.lineno else ""
    line = ""
    if error.lineno and isinstance(tree, SyntaxError):
        lines = code.splitlines()
        if 0 < error.lineno <= len(lines):
            line = f": `{_show(lines[error.lineno - 1].strip(), 120)}`"
    return Feedback(f"Failed: the code does not parse (SyntaxError{where}: {error.msg}){line}.", 0.0, {"passed": False})


def _prompt_context(prompt: str, entry_point: str | None) -> str:
    """What a full function may rely on from the prompt: its imports, helpers and constants."""
    tree = _parse(prompt)
    if not isinstance(tree, ast.Module):
        return ""
    keep = [
        node
        for node in tree.body
        if not (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point)
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))  # docstrings
    ]
    return "\n".join(ast.unparse(node) for node in keep)


def _verdict_feedback(verdict: dict[str, Any], timeout: float) -> Feedback:
    keys = ("passed", "kind", "test", "call", "got", "code_lineno")
    extras: dict[str, Any] = {k: verdict[k] for k in keys if k in verdict}
    if verdict.get("passed"):
        return Feedback("Correct: all tests passed.", 1.0, extras)
    kind = verdict.get("kind")
    test = f"`{_show(verdict['test'], 300)}`" if verdict.get("test") else ""
    if kind == "assertion":
        got = ""
        if "got" in verdict:
            call = f"`{_show(verdict['call'], 200)}`" if verdict.get("call") else "the code"
            got = f"; {call} returned {_show(verdict['got'])}"
        text = f"Failed test {test}{got}." if test else f"Failed: an assertion failed: {verdict.get('message')}."
    elif kind == "timeout":
        text = f"Failed: the tests did not finish within {timeout:g} s (an infinite loop, or too slow)."
    elif kind == "missing":
        text = f"Failed: {verdict.get('message')}; define it with exactly that name."
    elif kind == "syntax":
        text = f"Failed: the code does not compile (SyntaxError at line {verdict.get('code_lineno')}: "
        text += f"{verdict.get('message')})."
    elif kind in ("crash", "exit"):
        text = f"Failed: {verdict.get('message')}."
    else:
        text = f"Failed: {verdict.get('type', 'Error')}: {_show(str(verdict.get('message', '')))}"
        if verdict.get("code_lineno"):
            text += f" (line {verdict['code_lineno']} of the code: `{_show(verdict.get('code_line', ''), 120)}`)"
        if test:
            text += f" while running {test}"
        text += "."
    return Feedback(text, 0.0, extras)


# --------------------------------------------------------------------------------------------
# A language model as the judge

#: The judge's instructions (data, not code): a system message and a user-message template.
JUDGE_SYSTEM = (
    "You are a strict, fair grader. You grade one answer against a rubric and reply with JSON only: "
    '{"score": <integer from 0 to 10>, "feedback": "<one or two sentences: what is wrong and how to fix it, '
    'or why it is right>"}'
)
JUDGE_TEMPLATE = """Rubric:
{rubric}
{question}{reference}
Answer to grade:
{output}

Reply with the JSON object only."""

_SCORE_FIELD = re.compile(r"[\"']?score[\"']?\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_FEEDBACK_FIELD = re.compile(r"[\"']?(?:feedback|reason|explanation)[\"']?\s*[:=]\s*[\"']?(.+)", re.IGNORECASE)


class LLMJudge(Guide):
    """A language model grades the output against a rubric (and the reference answer, if any).

    The model replies ``{"score": 0..10, "feedback": "..."}``; the reply is read robustly
    (code fences, prose around the JSON, single quotes, a bare ``score: 7``). Scores are
    mapped to [0, 1]. A reply that cannot be read after ``retries`` extra attempts scores 0
    with a feedback saying so. ``llm=None`` uses :func:`feedprop.llm.default` at call time;
    ``**params`` (e.g. ``temperature``) go to every call.

    Example:
        >>> from feedprop.llm import MockLLM
        >>> judge = LLMJudge("Is it polite?", llm=MockLLM(lambda m, **p: '{"score": 9, "feedback": "Polite."}'))
        >>> judge("Thank you kindly.", None).score
        0.9
    """

    def __init__(self, rubric: str, llm: LLM | None = None, *, retries: int = 1, **params: Any) -> None:
        if not isinstance(rubric, str) or not rubric.strip():
            raise InvalidInputError("LLMJudge needs a rubric: a non-empty string saying what a good answer is")
        if llm is not None and not isinstance(llm, LLM):
            raise InvalidInputError(
                f"llm must be a feedprop.llm.LLM (e.g. OpenAICompatible or MockLLM), got {type(llm).__name__}"
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(f"retries must be an int >= 0 (extra tries at an unreadable grade): {retries!r}")
        self.rubric = rubric
        self.llm = llm
        self.retries = retries
        self.params: dict[str, Any] = {"temperature": 0.0, "max_tokens": 300, **params}

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        text = _as_text(output)
        if text is None or not text.strip():
            return Feedback("Wrong: the output is empty, so there is nothing to grade.", 0.0)
        question = _as_text(getattr(example, "input", None)) if example is not None else None
        reference = _as_text(target)
        messages: list[Message] = [
            {"role": "system", "content": JUDGE_SYSTEM},
            {
                "role": "user",
                "content": JUDGE_TEMPLATE.format(
                    rubric=self.rubric,
                    question=f"\nQuestion:\n{_show(question, 4000)}\n" if question else "",
                    reference=f"\nReference answer:\n{_show(reference, 2000)}\n" if reference else "",
                    output=_show(text, 8000),
                ),
            },
        ]
        llm = self.llm if self.llm is not None else default()
        reply = ""
        for attempt in range(self.retries + 1):
            params = self.params
            if attempt:  # the same request would get the same (cached, greedy) reply: vary it
                params = {**params, "temperature": max(0.7, params.get("temperature") or 0.0), "cache_salt": attempt}
            reply = llm.complete(messages, **params).text
            parsed = parse_judgement(reply)
            if parsed is not None:
                score, feedback = parsed
                return Feedback(feedback or f"Score {score:.2f}.", score, {"judge_reply": _show(reply, 1000)})
        return Feedback(
            "Ungraded: the judge's reply could not be read, so this output scores 0.",
            0.0,
            {"judge_reply": _show(reply, 1000), "judge_error": True},
        )

    def __repr__(self) -> str:
        return f"LLMJudge(rubric={_show(self.rubric, 60)!r})"


def parse_judgement(reply: str) -> tuple[float, str] | None:
    """Read ``(score in [0, 1], feedback)`` from a judge's reply, or ``None`` if it holds no score.

    Example:
        >>> parse_judgement('```json\\n{"score": 7, "feedback": "Mostly right."}\\n```')
        (0.7, 'Mostly right.')
    """
    raw_score: Any = None
    feedback = ""
    for candidate in _json_objects(reply):
        if isinstance(candidate, dict) and "score" in candidate:
            raw_score = candidate["score"]
            feedback = str(candidate.get("feedback") or candidate.get("reason") or candidate.get("explanation") or "")
            break
    if raw_score is None:
        match = _SCORE_FIELD.search(reply)
        if match is None:
            return None
        raw_score = match.group(1)
        fb = _FEEDBACK_FIELD.search(reply)
        feedback = fb.group(1).strip().rstrip("\"'}, ") if fb else ""
    try:
        value = float(raw_score)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int with hundreds of digits
        return None
    if not math.isfinite(value):
        return None
    # Asked for 0..10; a fractional value up to 1 is read as already on the [0, 1] scale.
    score = value if (0 <= value <= 1 and not value.is_integer()) else value / 10
    return min(1.0, max(0.0, score)), valid_unicode(feedback.strip())


def _json_objects(text: str) -> list[Any]:
    """Every JSON object that can be read from ``text``, outermost first."""
    found: list[Any] = []
    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(50):  # a bounded number of tries: a reply of ten thousand braces must stay cheap
        if start == -1 or len(found) >= 20:
            break
        try:
            obj, _ = decoder.raw_decode(text, start)
            found.append(obj)
        except (ValueError, RecursionError):
            end = text.find("}", start)
            if end != -1 and end - start < 10_000:
                # Small models write single-quoted pseudo-JSON. Any malformed literal is skipped,
                # e.g. "{{}}" (unhashable) or absurd nesting.
                with contextlib.suppress(Exception):
                    found.append(ast.literal_eval(text[start : end + 1]))
        start = text.find("{", start + 1)
    return found
