"""Game of 24: combine four numbers with + - * / into 24, using each exactly once.

The 1,362 puzzles come from the ``tree-of-thoughts-llm`` package's data file
``tot/data/24/24.csv`` (ranked from easy to hard by human solving time). That package pins old
versions of ``openai`` and ``numpy``, so install it without its dependencies — feedprop only
reads the CSV, never imports it::

    pip install --no-deps tree-of-thoughts-llm==0.1.0

The published test set is the 100 puzzles ranked 901-1000 (rows 900-999), as in the
Tree-of-Thoughts paper. There is no published train/val split; feedprop draws ``train_size``
train and ``val_size`` val puzzles from the remaining 1,262 with ``random.Random(0)``.

:class:`Game24` is the guide: it reads the expression out of the answer with :mod:`ast` (never
``eval``), checks the numbers used are exactly the puzzle's, and evaluates it with exact fractions.

Example:
    >>> Game24()("(10 - 4) * (6 - 5) * 4 = 24", "4 5 6 10").score
    0.0
    >>> Game24()("Answer: (10 - 6) * 5 + 4 = 24", "4 5 6 10").score
    1.0
"""

from __future__ import annotations

import ast
import operator
import random
import re
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from feedprop.errors import InvalidInputError
from feedprop.node import Feedback
from feedprop.tasks.data import package_data_file, read_csv
from feedprop.tasks.task import Example, Task
from feedprop.training.guide import Guide

__all__ = ["Game24", "load_game24", "solve24"]

TEST_ROWS = (900, 1000)

_OPS: dict[type[ast.operator], Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_SYMBOLS = {"×": "*", "x": "*", "X": "*", "÷": "/", "−": "-", "–": "-", "[": "(", "]": ")", "{": "(", "}": ")"}
_EXPRESSION = re.compile(r"[\d\s+\-*/().]+")
_MAX_LINE = 500


def load_game24(*, train_size: int = 50, val_size: int = 50, seed: int = 0) -> Task:
    """Load Game of 24: test = puzzles ranked 901-1000; train/val drawn from the rest with ``seed``."""
    path = package_data_file(
        "tree-of-thoughts-llm", "tot/data/24/24.csv", "tree-of-thoughts-llm==0.1.0", extra_pip_args="--no-deps"
    )
    examples = [Example(row[1], row[1], {"rank": int(row[0]), "solved_rate": row[3]}) for row in read_csv(path) if row]
    lo, hi = TEST_ROWS
    pool = examples[:lo] + examples[hi:]
    if train_size < 0 or val_size < 0 or train_size + val_size > len(pool):
        raise InvalidInputError(f"train_size + val_size must be between 0 and {len(pool)}")
    random.Random(seed).shuffle(pool)
    return Task(
        name="game24",
        train=tuple(pool[:train_size]),
        val=tuple(pool[train_size : train_size + val_size]),
        test=tuple(examples[lo:hi]),
        guide=Game24(),
        description="Use the four numbers and + - * / (each number exactly once) to obtain 24.",
    )


class Game24(Guide):
    """Scores a Game-of-24 answer: an expression using each puzzle number once that equals 24.

    The target is the puzzle, e.g. ``"4 5 6 10"``. The answer may be a bare expression or a
    line such as ``"Answer: (10 - 6) * 5 + 4 = 24"``; the last line holding an arithmetic
    expression is checked.
    """

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        numbers = _puzzle(target)
        shown = " ".join(str(n) for n in numbers)
        text = output if isinstance(output, str) else None
        if text is None:
            kind = "nothing (None)" if output is None else f"a {type(output).__name__}, not text"
            return Feedback(f"Wrong: expected an expression using {shown} that makes 24; got {kind}.", 0.0)
        expression = _find_expression(text)
        if expression is None:
            return Feedback(
                f"Wrong: no arithmetic expression found. Write one expression using {shown} "
                "each exactly once with + - * / and parentheses, e.g. 'Answer: (a + b) * c - d = 24'.",
                0.0,
            )
        source, tree = expression
        used = _numbers(tree)
        extras = {"expression": source}
        if used is None:
            return Feedback(f"Wrong: {source!r} may use only numbers, + - * / and parentheses.", 0.0, extras)
        if Counter(used) != Counter(numbers):
            return Feedback(
                f"Wrong: {source} uses {' '.join(map(str, sorted(used))) or 'no numbers'}; "
                f"it must use {shown}, each exactly once.",
                0.0,
                extras,
            )
        try:
            value = _evaluate(tree)
        except ZeroDivisionError:
            return Feedback(f"Wrong: {source} divides by zero.", 0.0, extras)
        if value == 24:
            return Feedback(f"Correct: {source} = 24.", 1.0, extras)
        return Feedback(f"Wrong: {source} = {_fraction(value)}, not 24.", 0.0, extras)


def _puzzle(target: Any) -> list[int]:
    parts = str(target).split() if isinstance(target, str) else list(target) if isinstance(target, list | tuple) else []
    try:
        numbers = [int(p) for p in parts]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 4:
        raise InvalidInputError(f"a Game-of-24 target is four numbers such as '4 5 6 10', got {target!r:.80}")
    return sorted(numbers)


def _find_expression(text: str) -> tuple[str, ast.Expression] | None:
    """The arithmetic expression on the last line that has one, parsed; ``None`` if there is none.

    Either side of an '=' may hold it ("(10 - 6) * 5 + 4 = 24" or "24 = ..."); a prefix ending
    in ':' ("Answer:") is ignored; a lone number is not an expression.
    """
    for line in reversed(text.strip().splitlines()[-200:]):
        line = line[:_MAX_LINE]
        for old, new in _SYMBOLS.items():
            line = line.replace(old, new)
        for side in line.split("="):
            side = side.rsplit(":", 1)[-1]
            for chunk in sorted(_EXPRESSION.findall(side), key=len, reverse=True):
                chunk = chunk.strip().rstrip(".").strip("*").strip()
                if not any(c.isdigit() for c in chunk) or not any(c in "+-*/" for c in chunk):
                    continue
                try:
                    tree = ast.parse(chunk, mode="eval")
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    continue
                return chunk, tree
    return None


def _numbers(tree: ast.Expression) -> list[int] | None:
    """The integer literals of ``tree``, or ``None`` if it holds anything but + - * / and integers."""
    found: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Expression) or type(node) in _OPS:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            continue
        if isinstance(node, ast.Constant) and type(node.value) is int:
            found.append(node.value)
            continue
        return None
    return found


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Fraction(node.value)
    assert isinstance(node, ast.BinOp)  # _numbers has checked the tree
    return _OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))


def _fraction(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value} (≈{float(value):.4g})"


def solve24(puzzle: str) -> str | None:
    """One solution of ``puzzle`` as an expression, or ``None`` if it has none (brute force).

    Example:
        >>> solve24("4 5 6 10") is not None
        True
    """
    items = [(Fraction(n), str(n)) for n in _puzzle(puzzle)]
    return _search(items)


def _search(items: list[tuple[Fraction, str]]) -> str | None:
    if len(items) == 1:
        return items[0][1] if items[0][0] == 24 else None
    for i in range(len(items)):
        for j in range(len(items)):
            if i == j:
                continue
            (a, ea), (b, eb) = items[i], items[j]
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            options = [(a + b, f"({ea} + {eb})"), (a - b, f"({ea} - {eb})"), (a * b, f"({ea} * {eb})")]
            if b != 0:
                options.append((a / b, f"({ea} / {eb})"))
            for value, expr in options:
                found = _search([*rest, (value, expr)])
                if found is not None:
                    return found
    return None
