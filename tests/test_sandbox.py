"""The sandbox executor: data across the boundary, failures with line numbers, limits, workers, defaults."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from math import sqrt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedprop import sandbox
from feedprop.errors import ConfigurationError, InvalidInputError, SandboxError
from feedprop.sandbox import (
    CODE_FILENAME,
    CodeFailure,
    Executor,
    InProcessExecutor,
    SandboxExecutor,
    default_executor,
    set_default_executor,
)
from feedprop.sandbox import default as sandbox_default
from feedprop.sandbox import pool as sandbox_pool
from feedprop.sandbox import worker as _sandbox_worker
from feedprop.sandbox.worker import DICT_TAG, TUPLE_TAG, NotPlainData, decode, encode

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the sandbox needs a POSIX system")

SCALE = 10  # a module-level constant read by HELPER below
GREETING = "hello"


def helper(x: int) -> int:
    """A plain module-level function: crosses by source, with the globals it reads."""
    return x * SCALE + len(GREETING)


def closure_maker() -> Any:
    y = 3

    def inner(x: int) -> int:
        return x + y

    return inner


class Local:
    """A class of the test module: the worker cannot import it."""

    def __init__(self) -> None:
        self.k = 7
        self.words = ["a", "b"]
        self.blob = {1, 2}

    def method(self) -> int:
        return 1


@pytest.fixture(scope="module")
def ex() -> Iterator[SandboxExecutor]:
    executor = SandboxExecutor(timeout=2.0, memory_mb=256)
    yield executor
    executor.close()


def run(executor: Executor, source: str, *args: Any, globals_: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    name = re.search(r"def (\w+)", source)
    assert name is not None
    return executor.run(source, name.group(1), args, kwargs, globals_ or {})


# ---------------------------------------------------------------------------- the codec


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=20) | st.sampled_from([TUPLE_TAG, DICT_TAG]), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(plain)
def test_codec_round_trips_plain_data_through_json(value: Any) -> None:
    back = decode(json.loads(json.dumps(encode(value))))
    assert back == value
    assert type(back) is type(value)


def test_codec_rejects_other_objects_and_says_where() -> None:
    with pytest.raises(NotPlainData, match=r"value\['a'\]\[1\] is a set"):
        encode({"a": [1, {2}]})
    with pytest.raises(NotPlainData, match="keys must be str"):
        encode({1: "x"})
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(NotPlainData, match="contains itself"):
        encode(loop)


# ---------------------------------------------------------------------------- results and arguments


def test_results_cross_as_data(ex: SandboxExecutor) -> None:
    src = "def f(a, b, *, c):\n    return {'sum': a + b, 'pair': (a, b), 'c': c, 'none': None, 'ok': True, 'pi': 3.5}\n"
    out = run(ex, src, 2, 3, c=["x", "é"])
    assert out == {"sum": 5, "pair": (2, 3), "c": ["x", "é"], "none": None, "ok": True, "pi": 3.5}
    assert isinstance(out["pair"], tuple)


def test_arguments_that_are_not_plain_data_are_refused_before_running(ex: SandboxExecutor) -> None:
    with pytest.raises(InvalidInputError, match=r"args\[0\] is a set.*InProcessExecutor"):
        run(ex, "def f(x):\n    return x\n", {1, 2})
    with pytest.raises(InvalidInputError, match=r"kwargs\['x'\] key 1 is a int dict key"):
        run(ex, "def f(x):\n    return x\n", x={1: 2})


def test_a_result_that_is_not_plain_data_is_a_code_failure(ex: SandboxExecutor) -> None:
    with pytest.raises(CodeFailure) as info:
        run(ex, "def f():\n    return {1, 2}\n")
    assert info.value.type_name == "TypeError"
    assert "the return value is a set" in info.value.message and "return plain data" in info.value.message
    assert run(ex, "def f():\n    return [1, 2]\n") == [1, 2]


def test_arguments_changed_by_the_code_stay_in_the_sandbox(ex: SandboxExecutor) -> None:
    items = [1, 2]
    assert run(ex, "def f(xs):\n    xs.append(3)\n    return len(xs)\n", items) == 3
    assert items == [1, 2]


# ---------------------------------------------------------------------------- failures


def test_exceptions_come_back_with_line_numbers_and_a_traceback_of_the_code(ex: SandboxExecutor) -> None:
    src = "def f(x):\n    y = x + 1\n    return inner(y)\n\ndef inner(z):\n    return z / 0\n"
    with pytest.raises(CodeFailure) as info:
        run(ex, src, 1)
    failure = info.value
    assert (failure.type_name, failure.message, failure.lineno) == ("ZeroDivisionError", "division by zero", 6)
    assert str(failure) == "ZeroDivisionError: division by zero (line 6)"
    assert f'File "{CODE_FILENAME}", line 3, in f\n    return inner(y)' in failure.traceback
    assert f'File "{CODE_FILENAME}", line 6, in inner\n    return z / 0' in failure.traceback
    assert "worker.py" not in failure.traceback  # the machinery's frames are not the code's
    assert isinstance(failure.original, ZeroDivisionError)


def test_syntax_errors_are_reported_without_running_anything(ex: SandboxExecutor) -> None:
    with pytest.raises(CodeFailure) as info:
        run(ex, "def f(x):\n    return (x\n")
    assert info.value.type_name == "SyntaxError" and info.value.lineno == 2


def test_code_that_does_not_define_the_function_says_so(ex: SandboxExecutor) -> None:
    with pytest.raises(CodeFailure, match="does not define a function named 'g'"):
        ex.run("def f():\n    return 1\n", "g", (), {}, {})


def test_annotations_are_not_evaluated(ex: SandboxExecutor) -> None:
    assert run(ex, "def f(x: Unknown) -> Missing:\n    return x\n", 4) == 4


def test_print_output_reaches_this_process(ex: SandboxExecutor, capsys: pytest.CaptureFixture[str]) -> None:
    run(ex, "import sys\ndef f():\n    print('to stdout')\n    print('to stderr', file=sys.stderr)\n")
    captured = capsys.readouterr()
    assert captured.out == "to stdout\n" and captured.err == "to stderr\n"


def test_timeout_is_wall_clock_and_the_next_call_is_served(ex: SandboxExecutor) -> None:
    fast = SandboxExecutor(timeout=0.5, max_workers=1)
    try:
        start = time.monotonic()
        with pytest.raises(CodeFailure) as info:
            run(fast, "import time\ndef f():\n    time.sleep(30)\n")
        assert str(info.value) == "TimeoutError: exceeded 0.5 s wall clock"
        assert isinstance(info.value.original, TimeoutError)
        assert time.monotonic() - start < 5
        assert run(fast, "def f():\n    return 'next'\n") == "next"
    finally:
        fast.close()


def test_cpu_time_is_limited_separately() -> None:
    with SandboxExecutor(timeout=20.0, cpu_seconds=1, max_workers=1) as cpu:
        with pytest.raises(CodeFailure) as info:
            run(cpu, "def f():\n    while True:\n        pass\n")
        assert str(info.value) == "TimeoutError: exceeded 1 s of CPU time"


def test_state_does_not_leak_from_one_call_to_the_next(ex: SandboxExecutor) -> None:
    run(ex, "import math\ndef f():\n    math.pi = 3\n    open('left-over.txt', 'w').write('x')\n")
    src = "import math, os\ndef f():\n    return math.pi, os.listdir('.')\n"
    assert run(ex, src) == (math.pi, [])


# ---------------------------------------------------------------------------- workers


def _idle_workers(executor: SandboxExecutor) -> list[Any]:
    return list(executor._pool.idle)


def test_a_worker_that_died_while_idle_is_replaced_transparently(ex: SandboxExecutor) -> None:
    run(ex, "def f():\n    return 0\n")
    for worker in _idle_workers(ex):
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait(5)
    assert run(ex, "def f():\n    return 'fresh'\n") == "fresh"


def test_a_worker_that_dies_during_a_call_is_reported_and_replaced() -> None:
    with SandboxExecutor(timeout=10.0, max_workers=1) as one:
        run(one, "def f():\n    return 0\n")
        (worker,) = _idle_workers(one)
        threading.Timer(0.5, os.killpg, (worker.process.pid, signal.SIGKILL)).start()
        with pytest.raises(CodeFailure) as info:
            run(one, "import time\ndef f():\n    time.sleep(5)\n")
        assert info.value.type_name == "WorkerDied" and "fresh one serves the next call" in info.value.message
        assert run(one, "def f():\n    return 'after'\n") == "after"


def test_threads_can_call_concurrently() -> None:
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    with SandboxExecutor(timeout=10.0, max_workers=2) as pool:

        def work(i: int) -> None:
            try:
                for j in range(3):
                    results[i * 10 + j] = run(pool, "def f(a, b):\n    return a * b\n", i, j)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert results == {i * 10 + j: i * j for i in range(6) for j in range(3)}
        assert pool._pool.count <= 2


def test_warm_calls_take_milliseconds(ex: SandboxExecutor) -> None:
    run(ex, "def f(x):\n    return x\n", 0)
    start = time.perf_counter()
    n = 30
    for i in range(n):
        assert run(ex, "def f(x):\n    return x + 1\n", i) == i + 1
    mean = (time.perf_counter() - start) / n
    print(f"warm sandbox call: {mean * 1000:.1f} ms mean over {n} calls")
    assert mean < 0.1  # generous: a few ms on an idle machine, more when the CPUs are shared


def test_working_directory_is_private_and_removed_afterwards() -> None:
    with SandboxExecutor(isolation="basic", max_workers=1) as basic:
        src = (
            "import os\n"
            "def f():\n"
            "    open('note.txt', 'w').write('kept?')\n"
            "    return os.getcwd(), open('note.txt').read()\n"
        )
        cwd, text = run(basic, src)
        assert text == "kept?"
        assert not Path(cwd).exists()
        import wave  # noqa: F401  (a module the caller has imported is available to the code)

        assert run(basic, "def f():\n    import wave\n    return wave.__name__\n") == "wave"
        assert "pid_namespace" not in basic.protections()


def test_closed_executor_refuses_calls() -> None:
    executor = SandboxExecutor()
    executor.close()
    with pytest.raises(SandboxError, match="closed"):
        run(executor, "def f():\n    return 1\n")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"memory_mb": 1.5}, "memory_mb must be a positive whole number"),
        ({"cpu_seconds": -1}, "cpu_seconds"),
        ({"isolation": "vm"}, "isolation must be"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SandboxExecutor(**kwargs)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0, reason="namespaces and a separate uid need root"
)
def test_as_root_on_linux_every_protection_is_in_force(ex: SandboxExecutor) -> None:
    assert ex.protections() >= {
        "audit_hooks", "env_scrubbed", "rlimits", "private_workdir", "separate_uid", "pid_namespace",
        "net_namespace", "mount_namespace", "private_tmp", "no_new_privs",
    }  # fmt: skip
    with SandboxExecutor(isolation="strict", max_workers=1) as strict:
        assert run(strict, "def f():\n    return 'strict'\n") == "strict"


# ---------------------------------------------------------------------------- environment


def test_the_environment_holds_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDPROP_API_KEY", "sk-feedprop-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "token-secret")
    with SandboxExecutor(max_workers=1) as fresh:  # started after the secrets were set
        env = run(fresh, "import os\ndef f():\n    return dict(os.environ)\n")
    assert not [k for k in env if any(s in k for s in ("KEY", "TOKEN", "SECRET"))]
    assert "secret" not in json.dumps(env)
    allowed = {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED", "HOME", "TMPDIR", "PWD",
               "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "FEEDPROP_SANDBOX_NAMESPACES"}  # fmt: skip
    assert set(env) <= allowed


# ---------------------------------------------------------------------------- globals and self


def test_globals_cross_by_kind(ex: SandboxExecutor) -> None:
    g = {"re": re, "math": math, "json": json, "SCALE": SCALE, "helper": helper, "sqrt": sqrt, "Counter": Counter}
    src = (
        "def f(text):\n"
        "    words = re.findall(r'\\w+', text)\n"
        "    return (helper(len(words)), sqrt(16), math.floor(2.5), json.dumps(Counter(words).most_common(1)))\n"
    )
    assert run(ex, src, "a b a", globals_=g) == (3 * SCALE + len(GREETING), 4.0, 2, '[["a", 2]]')


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (Local, "class Local"),
        (Local(), "object of type Local, not plain data"),
        (lambda x: x, "it is a lambda"),
        (closure_maker(), "closes over local variables"),
    ],
)
def test_globals_that_cannot_cross_fail_only_when_used_and_name_themselves(
    ex: SandboxExecutor, value: Any, reason: str
) -> None:
    with pytest.raises(CodeFailure) as info:
        run(ex, "def f():\n    x = 1\n    return thing(x)\n", globals_={"thing": value})
    assert info.value.type_name == "NameError" and info.value.lineno == 3
    assert "global 'thing' is not available inside the sandbox" in info.value.message
    assert reason in info.value.message and "InProcessExecutor" in info.value.message
    assert run(ex, "def f():\n    return 'unused is fine'\n", globals_={"thing": value}) == "unused is fine"


def test_self_crosses_as_a_snapshot_of_the_plain_attributes_read(ex: SandboxExecutor) -> None:
    obj = Local()
    assert run(ex, "def m(self, x):\n    return self.k * x, self.words\n", obj, 3) == (21, ["a", "b"])
    assert run(ex, "def m(self, x):\n    return x\n", obj, 5) == 5  # self unused
    for src, expected in [
        ("def m(self):\n    return self.method()\n", "self.method is not available inside the sandbox: it is a method"),
        ("def m(self):\n    return self.blob\n", "self.blob is not available inside the sandbox: it is a set"),
        ("def m(self):\n    self.k = 1\n", "cannot set self.k inside the sandbox"),
    ]:
        with pytest.raises(CodeFailure) as info:
            run(ex, src, obj)
        assert info.value.type_name == "AttributeError" and expected in info.value.message
        assert info.value.lineno == 2


# ---------------------------------------------------------------------------- defaults and the in-process executor


@pytest.fixture
def restore_default() -> Iterator[None]:
    saved = sandbox_default._default
    yield
    set_default_executor(saved)


@pytest.mark.usefixtures("restore_default")
def test_default_executor_is_one_lazily_created_sandbox_shared_by_threads() -> None:
    set_default_executor(None)
    seen: list[Executor] = []
    threads = [threading.Thread(target=lambda: seen.append(default_executor())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(e) for e in seen}) == 1 and isinstance(seen[0], SandboxExecutor)
    assert default_executor() is seen[0]


@pytest.mark.usefixtures("restore_default")
def test_set_default_executor_accepts_executors_only() -> None:
    trusted = InProcessExecutor()
    set_default_executor(trusted)
    assert default_executor() is trusted
    with pytest.raises(InvalidInputError, match="expects an Executor"):
        set_default_executor("in-process")  # type: ignore[arg-type]


def test_in_process_executor_passes_any_object_and_restricts_its_traceback() -> None:
    ex = InProcessExecutor()
    assert ex.run("def f(xs):\n    return xs | {3}\n", "f", ({1},), {}, {}) == {1, 3}
    with pytest.raises(CodeFailure) as info:
        ex.run("def f(x):\n    return helper(x) / 0\n", "f", (1,), {}, {"helper": helper})
    assert info.value.lineno == 2 and isinstance(info.value.original, ZeroDivisionError)
    assert info.value.traceback.startswith('Traceback (most recent call last):\n  File "<feedprop-code>", line 2')


def _raised_in_code(source: str, name: str) -> BaseException:
    namespace: dict[str, Any] = {}
    exec(compile(source, _sandbox_worker.CODE_FILENAME, "exec"), namespace)
    try:
        namespace[name]()
    except BaseException as e:
        return e
    raise AssertionError("the code did not raise")


def test_failure_keeps_the_innermost_frames_of_a_deep_traceback() -> None:
    source = "def f(n=300):\n    if n == 0:\n        raise ValueError('bottom')\n    return f(n - 1)\n"
    exc = _raised_in_code(source, "f")
    report = _sandbox_worker._failure(exc, {"memory_mb": 64})
    assert report["type"] == "ValueError" and report["message"] == "bottom" and report["lineno"] == 3
    assert len(report["frames"]) == _sandbox_worker.KEPT_FRAMES and report["frames"][-2:] == [[4, "f"], [3, "f"]]


def test_failure_without_memory_for_its_frames_still_reports_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(tb: Any) -> Any:
        raise MemoryError

    exc = _raised_in_code("def f():\n    raise MemoryError\n", "f")
    monkeypatch.setattr(_sandbox_worker, "code_frames", no_memory)
    report = _sandbox_worker._failure(exc, {"memory_mb": 64})
    assert report["type"] == "MemoryError" and report["message"] == "exceeded the 64 MB memory limit"
    assert report["frames"] == [] and report["lineno"] is None
    assert exc.__traceback__ is None  # dropped, so that the code's frames give their memory back


def test_falling_back_to_the_basic_mode_warns_once_and_says_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no unshare, setpriv or mount to be found
    monkeypatch.setattr(sandbox_pool, "_warned_basic", False)
    with pytest.warns(sandbox.SandboxWeakWarning) as caught:
        with SandboxExecutor(timeout=2.0, max_workers=1) as first:
            assert "pid_namespace" not in first.protections()
        with SandboxExecutor(timeout=2.0, max_workers=1) as second:
            second.protections()
    assert len(caught) == 1  # once per process
    text = str(caught[0].message)
    assert "WITHOUT operating-system isolation" in text and "unshare" in text
    assert "unprivileged user namespaces" in text and "isolation='strict'" in text
    monkeypatch.setattr(sandbox_pool, "_warned_basic", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit choice of the basic mode is not warned about
        with SandboxExecutor(timeout=2.0, max_workers=1, isolation="basic") as chosen:
            assert run(chosen, "def f(x):\n    return x + 1\n", 1) == 2
    strict = SandboxExecutor(timeout=2.0, max_workers=1, isolation="strict")
    with pytest.raises(SandboxError, match="isolation='strict'"):
        strict.protections()
    strict.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="user namespaces are a Linux feature")
def test_the_user_namespace_plan_makes_everything_read_only_and_hides_home() -> None:
    from feedprop.sandbox.namespaces import user_namespace_script

    plan = user_namespace_script(64)
    assert plan is not None
    script, private = plan
    assert "mount -o remount,bind,ro / " in script + " " and "/tmp" in private
    assert "user_namespace" in script and "read_only_fs" in script
