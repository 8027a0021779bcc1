"""The :class:`UnitTest` guide: candidate code scored by running its unit tests in the sandbox.

The program under test is assembled from the output (and the prompt, for a reply that is only a
function's body) and run with :func:`feedprop.sandbox.run_unit_tests`; the verdict becomes the
feedback: the failing test and what the code returned, or the exception and the line that raised it.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from feedprop._text import truncate_middle
from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.node import Feedback
from feedprop.sandbox import Executor, run_unit_tests
from feedprop.training.answers import as_text, extract_code
from feedprop.training.guide import SHOW_CHARS, Guide

__all__ = ["UnitTest"]


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
        text = as_text(output)
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
            line = f": `{truncate_middle(lines[error.lineno - 1].strip(), 120)}`"
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
    test = f"`{truncate_middle(verdict['test'], 300)}`" if verdict.get("test") else ""
    if kind == "assertion":
        got = ""
        if "got" in verdict:
            call = f"`{truncate_middle(verdict['call'], 200)}`" if verdict.get("call") else "the code"
            got = f"; {call} returned {truncate_middle(verdict['got'], SHOW_CHARS)}"
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
        text = f"Failed: {verdict.get('type', 'Error')}: {truncate_middle(str(verdict.get('message', '')), SHOW_CHARS)}"
        if verdict.get("code_lineno"):
            text += (
                f" (line {verdict['code_lineno']} of the code: `{truncate_middle(verdict.get('code_line', ''), 120)}`)"
            )
        if test:
            text += f" while running {test}"
        text += "."
    return Feedback(text, 0.0, extras)
