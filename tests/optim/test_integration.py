"""Optimizers with the real embedded model: fixing code from unit tests, moving a number to a target.

Slow (the model runs on this CPU); run with ``pytest -m integration tests/optim``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from feedprop.bundle import bundle
from feedprop.errors import ExecutionError
from feedprop.llm import LLM, default, set_cache_enabled
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import Hindsight, OptoPrime, recommended

# Generous: the machine running them may be shared; each test makes at most a handful of short calls.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def llm() -> Iterator[LLM]:
    set_cache_enabled(False)  # a cached reply would not show the model doing the work
    try:
        yield default()
    finally:
        set_cache_enabled(None)


@bundle(trainable=True)
def is_even(n: int) -> bool:
    return n % 2 == 1


CASES = [(0, True), (1, False), (2, True), (7, False), (10, True)]


def unit_tests() -> tuple[list[str], list[tuple[int, Node[bool]]]]:
    failures, outputs = [], []
    for n, expected in CASES:
        out = is_even(Node(n, name="n"))
        outputs.append((n, out))
        if out.data != expected:
            failures.append(f"is_even({n}) returned {out.data}, expected {expected}")
    return failures, outputs


def test_optoprime_fixes_a_buggy_function_from_unit_test_feedback(llm: LLM) -> None:
    code = is_even.parameter
    assert code is not None
    opt = OptoPrime([code], llm=llm, max_tokens=400)
    for _ in range(3):
        opt.zero_feedback()
        failures, outputs = unit_tests()
        if not failures:
            break
        # Feedback on one failing output, listing every failure (as a test runner would).
        out = next(o for n, o in outputs if o.data != dict(CASES)[n])
        out.backward(Feedback("Unit tests failed:\n" + "\n".join(failures), score=-len(failures)))
        opt.step()
    failures, _ = unit_tests()
    assert failures == [], f"still failing after 3 steps: {failures}\ncode:\n{code.data}"


@pytest.mark.parametrize("optimizer", [OptoPrime, Hindsight])
def test_moves_a_number_toward_its_target(llm: LLM, optimizer: type[OptoPrime]) -> None:
    x = Parameter(1.0, name="x", description="the number to tune")
    target = 31.0  # reached at x = 10
    first_error = None
    errors = []
    opt = optimizer([x], llm=llm, max_tokens=300)
    for _ in range(3):
        opt.zero_feedback()
        y = x * Node(3.0, name="scale") + Node(1.0, name="offset")
        error = target - y.data
        errors.append(abs(error))
        if first_error is None:
            first_error = abs(error)
        if abs(error) < 1e-9:
            break
        y.backward(
            Feedback(
                f"The output should be {'larger' if error > 0 else 'smaller'} by {abs(error):g}.", score=-abs(error)
            )
        )
        opt.step()
    final = abs(target - (3.0 * x.data + 1.0))
    assert first_error is not None
    assert final < first_error / 2, f"errors by step: {errors}, final {final}"


@bundle(trainable=True)
def longest_increasing_subsequence(nums: list[int]) -> int:
    return len(nums)


LIS_TESTS = [([10, 9, 2, 5, 3, 7, 101, 18], 4), ([0, 1, 0, 3, 2, 3], 4), ([7, 7, 7, 7], 1)]


def lis_passed(backward: bool) -> int:
    """How many LIS tests pass; with ``backward``, each result (or error) gets its test's feedback."""
    passed = 0
    for nums, expected in LIS_TESTS:
        try:
            out = longest_increasing_subsequence(Node(nums, name="nums"))
        except ExecutionError as e:
            if backward:
                e.node.backward(Feedback(f"longest_increasing_subsequence({nums}) raised: {e}", score=0.0))
            continue
        ok = out.data == expected
        passed += ok
        if backward:
            text = "passed" if ok else f"expected {expected}, got {out.data!r}"
            out.backward(Feedback(f"longest_increasing_subsequence({nums}): {text}", score=float(ok)))
    return passed


def test_recommended_fixes_the_lis_stub_within_two_steps(llm: LLM) -> None:
    code = longest_increasing_subsequence.parameter
    assert code is not None
    start = code.data
    opt = recommended([code], llm=llm, n_candidates=4, max_tokens=400)
    scores = []
    try:
        for _ in range(2):
            opt.zero_feedback()
            scores.append(lis_passed(backward=True))
            if scores[-1] == len(LIS_TESTS):
                break
            parent = code.data
            best, best_passed = parent, scores[-1]
            for candidate in opt.propose().candidates:  # the tests are the gate: keep the candidate passing most
                opt.apply(candidate)
                passed = lis_passed(backward=False)
                if passed > best_passed:
                    best, best_passed = code.data, passed
                code.set(parent)
            code.set(best)
        final = lis_passed(backward=False)
        assert final == len(LIS_TESTS), f"passed by step: {scores}, final {final}/3\ncode:\n{code.data}"
    finally:
        code.set(start)
