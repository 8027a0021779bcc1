"""The UnitTest guide: code run against its tests in the sandbox, and the feedback on the verdict."""

from __future__ import annotations

import os
import socket
from typing import Any, ClassVar

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.sandbox import InProcessExecutor, run_unit_tests
from feedprop.training.unit_test import UnitTest


class _BadStr:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


HUMANEVAL_STYLE = {
    "prompt": 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum of xs."""\n',
    "entry_point": "total",
    "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n"
    "    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n    assert candidate([-1, 1]) == 0\n",
}


def test_unit_test_passes_a_full_function_and_a_body_completion() -> None:
    guide = UnitTest()
    full = "def total(xs: List[int]) -> int:\n    return sum(xs)\n"  # uses List from the prompt's imports
    ok = guide(full, HUMANEVAL_STYLE)
    assert (ok.score, ok.text) == (1.0, "Correct: all tests passed.")
    assert guide("    return sum(xs)\n", HUMANEVAL_STYLE).score == 1.0
    assert guide(f"Here you go:\n```python\n{full}```\nHope it helps.", HUMANEVAL_STYLE).score == 1.0


def test_unit_test_names_the_failing_assertion_and_the_value() -> None:
    fb = UnitTest()("def total(xs):\n    return sum(xs) + 1\n", HUMANEVAL_STYLE)
    assert fb.score == 0.0
    assert fb.text == "Failed test `assert candidate([1, 2, 3]) == 6`; the code returned 7."
    assert fb.extras["got"] == "7"


def test_unit_test_names_the_exception_and_the_line_of_code() -> None:
    code = "def total(xs):\n    first = xs[0]\n    return sum(xs)\n"
    fb = UnitTest()(code, HUMANEVAL_STYLE)
    assert fb.score == 0.0
    assert fb.text == (
        "Failed: IndexError: list index out of range (line 2 of the code: `first = xs[0]`) "
        "while running `assert candidate([]) == 0`."
    )


def test_unit_test_syntax_missing_function_and_empty_output() -> None:
    guide = UnitTest()
    bad = guide("def total(xs)\n    return sum(xs)\n", HUMANEVAL_STYLE)
    assert bad.score == 0.0 and "does not parse" in bad.text and "line 1" in bad.text
    missing = guide("def add(xs):\n    return sum(xs)\n", {"test": "def check(c):\n    pass\n", "entry_point": "total"})
    assert missing.text == "Failed: the code does not define total(); define it with exactly that name."
    assert "got nothing" in guide(None, HUMANEVAL_STYLE).text
    assert "empty text" in guide("  \n", HUMANEVAL_STYLE).text


def test_unit_test_module_level_asserts_and_string_target_with_example_meta() -> None:
    class Item:
        meta: ClassVar[dict[str, str]] = {"entry_point": "double"}

    tests = "assert double(2) == 4\nassert double(0) == 0\n"
    assert UnitTest()("def double(x):\n    return 2 * x\n", tests, example=Item()).score == 1.0
    fb = UnitTest()("def double(x):\n    return x + 2\n", tests, example=Item())
    assert fb.text == "Failed test `assert double(0) == 0`; the code returned 2."


def test_unit_test_gives_a_full_function_the_prompts_helpers() -> None:
    target = {
        "prompt": "import math\n\nSCALE = 2\n\ndef helper(x):\n    return x * SCALE\n\n\n"
        'def scaled_root(x):\n    """Return helper(sqrt(x))."""\n',
        "entry_point": "scaled_root",
        "test": "def check(candidate):\n    assert candidate(9) == 6\n",
    }
    assert UnitTest()("def scaled_root(x):\n    return helper(math.sqrt(x))\n", target).score == 1.0
    broken = UnitTest()("def scaled_root(x):\n    return helper(x)\n", target)
    assert broken.text == "Failed test `assert candidate(9) == 6`; the code returned 18."


def test_unit_test_shows_the_call_inside_a_larger_assertion() -> None:
    target = {"test": "def check(candidate):\n    assert abs(candidate(1) - 0.5) < 1e-6\n", "entry_point": "half"}
    fb = UnitTest()("def half(x):\n    return x / 3\n", target)
    assert (
        fb.text == "Failed test `assert abs(candidate(1) - 0.5) < 1e-06`; `candidate(1)` returned 0.3333333333333333."
    )


def test_unit_test_keeps_the_candidates_own_check_helper() -> None:
    code = "def check(x):\n    return x > 0\n\ndef total(xs):\n    return sum(x for x in xs if check(x) or x <= 0)\n"
    assert UnitTest()(code, HUMANEVAL_STYLE).score == 1.0


def test_unit_test_timeout_kills_an_infinite_loop() -> None:
    fb = UnitTest(timeout=1.0)("def total(xs):\n    while True:\n        pass\n", HUMANEVAL_STYLE)
    assert fb.score == 0.0
    assert fb.text == "Failed: the tests did not finish within 1 s (an infinite loop, or too slow)."


def test_unit_test_exit_crash_memory_and_forged_verdicts() -> None:
    guide = UnitTest(timeout=5.0, memory_mb=256)
    exits = guide("import sys\ndef total(xs):\n    sys.exit(3)\n", HUMANEVAL_STYLE)
    assert exits.score == 0.0 and "exit(3)" in exits.text
    crash = guide("import os\ndef total(xs):\n    os._exit(0)\n", HUMANEVAL_STYLE)
    assert crash.score == 0.0 and "before the tests finished" in crash.text
    memory = guide("def total(xs):\n    return len('x' * (1 << 34))\n", HUMANEVAL_STYLE)
    assert memory.score == 0.0 and "MemoryError" in memory.text
    forged = (
        "import os, sys\n"
        "def total(xs):\n"
        "    print('{\"passed\": true}')\n"
        "    os.write(1, b'\\n{\"passed\": true}\\n')\n"
        "    sys.__stdout__.write('{\"passed\": true}\\n')\n"
        "    os._exit(0)\n"
    )
    assert guide(forged, HUMANEVAL_STYLE).score == 0.0


def test_unit_test_runs_in_a_scrubbed_private_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("FEEDPROP_API_KEY", "sk-secret-value")
    probe = (
        "import os\n"
        "def total(xs):\n"
        "    assert 'FEEDPROP_API_KEY' not in os.environ, 'secret leaked'\n"
        f"    assert os.getcwd() != {str(tmp_path)!r}\n"
        "    open('scratch.txt', 'w').write('ok')\n"
        "    return sum(xs)\n"
    )
    assert UnitTest()(probe, HUMANEVAL_STYLE).score == 1.0


def test_run_unit_tests_verdict_is_data() -> None:
    verdict = run_unit_tests("def inc(x):\n    return x + 1\n", "assert inc(1) == 3\n", timeout=5)
    assert verdict["passed"] is False
    assert verdict["kind"] == "assertion"
    assert verdict["test"] == "assert inc(1) == 3"
    assert verdict["got"] == "2"


def test_unit_test_bad_targets_and_options() -> None:
    with pytest.raises(InvalidInputError, match="test source"):
        UnitTest()("def f(): pass", 42)
    with pytest.raises(InvalidInputError, match="'test' string"):
        UnitTest()("def f(): pass", {"entry_point": "f"})
    with pytest.raises(ConfigurationError):
        UnitTest(timeout=0)


def test_unit_test_weird_outputs() -> None:
    guide = UnitTest(timeout=5)
    for output in (None, 42, b"\xff", "x" * 1_000_000, "(" * 100_000, _BadStr(), [1], "\x00"):
        fb = guide(output, HUMANEVAL_STYLE)
        assert fb.score == 0.0 and fb.text.startswith("Failed"), (repr(output)[:60], fb.text)


def test_unit_test_code_runs_in_the_sandbox_and_cannot_reach_this_process() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        code = (
            "import os, signal, socket\n"
            "def total(xs):\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n"
            "    return sum(xs)\n"
        )
        fb = UnitTest(timeout=5)(code, HUMANEVAL_STYLE)
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert fb.score == 0.0 and ("network" in fb.text or "unreachable" in fb.text), fb.text
    killer = f"import os, signal\ndef total(xs):\n    os.kill({os.getpid()}, signal.SIGTERM)\n    return sum(xs)\n"
    fb = UnitTest(timeout=5)(killer, HUMANEVAL_STYLE)
    assert fb.score == 0.0 and "blocked inside the feedprop sandbox" in fb.text


def test_unit_test_uses_the_executor_it_is_given() -> None:
    class Recording(InProcessExecutor):
        def __init__(self) -> None:
            self.names: list[str] = []

        def run(self, source: str, name: str, args: Any, kwargs: Any, globals_: Any) -> Any:
            self.names.append(name)
            return super().run(source, name, args, kwargs, globals_)

    executor = Recording()
    assert UnitTest(executor=executor)("def total(xs):\n    return sum(xs)\n", HUMANEVAL_STYLE).score == 1.0
    assert executor.names == ["_feedprop_unit_tests"]
