"""Rewritten code sees only the globals and ``self`` attributes the original code used: secrets stay behind.

Every test runs in every isolation mode: in this process, in the sandbox with namespaces (where
the machine allows them), and in the sandbox's basic mode.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from feedprop.bundle import bundle
from feedprop.errors import ExecutionError
from feedprop.sandbox import Executor, InProcessExecutor, SandboxExecutor, Withheld, WithheldSelf, withhold

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the sandbox needs a POSIX system")

API_KEY = "sk-secret-0123456789"
SCALE = 3
_SECRET_OFFSET = "sk-offset-secret"


def offset(x: int) -> int:
    """A helper of the user's code that needs a value the user's trainable code never names."""
    return x + len(_SECRET_OFFSET)


class Client:
    def __init__(self) -> None:
        self.api_key = "sk-attr-secret-42"
        self.factor = 2


MODES = ["in_process", "sandbox_auto", "sandbox_basic"]


@pytest.fixture(scope="module")
def executors() -> Iterator[dict[str, Executor]]:
    made: dict[str, Executor] = {
        "in_process": InProcessExecutor(),
        "sandbox_auto": SandboxExecutor(timeout=5.0, memory_mb=256, max_workers=1),
        "sandbox_basic": SandboxExecutor(timeout=5.0, memory_mb=256, max_workers=1, isolation="basic"),
    }
    yield made
    for executor in made.values():
        executor.close()


def failure_text(error: ExecutionError) -> str:
    node = error.node
    return "\n".join([str(error), str(node.data), str(getattr(node, "traceback", ""))])


def secrets_in(text: str) -> list[str]:
    return [s for s in (API_KEY, _SECRET_OFFSET, "sk-attr-secret-42") if s in text]


@pytest.mark.parametrize("mode", MODES)
def test_a_module_global_the_original_never_used_is_withheld(executors: dict[str, Executor], mode: str) -> None:
    @bundle(trainable=True, executor=executors[mode])
    def scale(x: int) -> int:
        return x * SCALE

    assert scale(2).data == 6
    assert scale.parameter is not None
    scale.parameter.data = "def scale(x):\n    return API_KEY\n"
    with pytest.raises(ExecutionError) as caught:
        scale(2)
    text = failure_text(caught.value)
    assert "NameError" in text and "'API_KEY' is withheld from rewritten code" in text
    assert "only the globals that the original code of 'scale' used (SCALE)" in text
    assert secrets_in(text) == []


@pytest.mark.parametrize("mode", MODES)
def test_globals_listing_and_lookup_tricks_find_no_secret(executors: dict[str, Executor], mode: str) -> None:
    @bundle(trainable=True, executor=executors[mode])
    def scale(x: int) -> int:
        return x * SCALE

    assert scale.parameter is not None
    scale.parameter.data = (
        "def scale(x):\n"
        "    seen = {k: repr(v) for k, v in globals().items() if not k.startswith('__')}\n"
        "    return [seen, repr(API_KEY) if 'API_KEY' in globals() else None, x * SCALE]\n"
    )
    seen, direct, scaled = scale(2).data
    assert "API_KEY" not in seen and direct is None and scaled == 6
    assert secrets_in(repr(seen)) == []
    assert seen["SCALE"] == "3"


@pytest.mark.parametrize("mode", MODES)
def test_a_self_attribute_the_original_never_read_is_withheld(executors: dict[str, Executor], mode: str) -> None:
    class Scaler(Client):
        @bundle(trainable=True, executor=executors[mode])
        def scale(self, x: int) -> int:
            return x * self.factor

    obj = Scaler()
    assert obj.scale(5).data == 10
    code = obj.scale.parameter
    assert code is not None
    code.data = "def scale(self, x):\n    return self.api_key\n"
    with pytest.raises(ExecutionError) as caught:
        obj.scale(5)
    text = failure_text(caught.value)
    assert "AttributeError" in text and "'api_key' is withheld from rewritten code" in text
    assert "attributes of self that the original code of 'scale' used (factor)" in text
    assert secrets_in(text) == []
    code.data = "def scale(self, x):\n    return [getattr(self, 'api_' + 'key', None), repr(vars(self))]\n"
    try:
        shown = repr(obj.scale(5).data)  # in the sandbox: the snapshot holds no such attribute
    except ExecutionError as e:  # in this process: the view refuses it
        shown = failure_text(e)
    assert secrets_in(shown) == []
    code.data = "def scale(self, x):\n    return x * self.factor + 1\n"  # what the original read still works
    assert obj.scale(5).data == 11


@pytest.mark.parametrize("mode", MODES)
def test_helpers_of_the_original_still_run_but_their_globals_stay_theirs(
    executors: dict[str, Executor], mode: str
) -> None:
    @bundle(trainable=True, executor=executors[mode])
    def shifted(x: int) -> int:
        return offset(x)

    assert shifted(1).data == 1 + len(_SECRET_OFFSET)
    assert shifted.parameter is not None
    shifted.parameter.data = "def shifted(x):\n    return [offset(x) * 2, _SECRET_OFFSET]\n"
    with pytest.raises(ExecutionError) as caught:
        shifted(1)
    text = failure_text(caught.value)
    assert "'_SECRET_OFFSET' is withheld" in text and secrets_in(text) == []
    shifted.parameter.data = "def shifted(x):\n    return offset(x) * 2\n"
    assert shifted(1).data == 2 * (1 + len(_SECRET_OFFSET))


@pytest.mark.parametrize("mode", MODES)
def test_rewritten_code_may_import_modules_and_use_builtins(executors: dict[str, Executor], mode: str) -> None:
    @bundle(trainable=True, executor=executors[mode])
    def scale(x: int) -> int:
        return x * SCALE

    assert scale.parameter is not None
    scale.parameter.data = "def scale(x):\n    import math\n    return [math.floor(x * SCALE / 2), len(str(x))]\n"
    assert scale(3).data == [4, 1]


def test_the_users_own_code_runs_as_written() -> None:
    seen, args = withhold("def f(x):\n    return x\n", "def f(x):\n    return x\n", "f", {"API_KEY": "k"}, (1,))
    assert seen == {"API_KEY": "k"} and args == (1,)


def test_withhold_never_puts_a_value_in_its_markers() -> None:
    original = "def f(self, x):\n    return x * self.factor * SCALE\n"
    rewritten = "def f(self, x):\n    return API_KEY + self.api_key\n"
    client = Client()
    seen, args = withhold(original, rewritten, "f", {"SCALE": 3, "API_KEY": API_KEY, "os": os}, (client, 1))
    assert set(seen) == {"SCALE", "API_KEY"}  # os: not mentioned by either, so not sent at all
    marker = seen["API_KEY"]
    assert isinstance(marker, Withheld) and API_KEY not in repr(marker) + marker.reason
    view: Any = args[0]
    assert isinstance(view, WithheldSelf) and view.factor == 2
    with pytest.raises(AttributeError, match="withheld") as caught:
        _ = view.api_key
    with pytest.raises(AttributeError, match="withheld"):
        _ = view._feedprop_target
    assert "sk-attr" not in str(caught.value) + repr(view)


def test_unparsable_rewrites_keep_only_the_originals_globals() -> None:
    seen, _ = withhold(
        "def f(x):\n    return SCALE\n", "def f(x):\n    return (\n", "f", {"SCALE": 3, "API_KEY": 1}, ()
    )
    assert seen == {"SCALE": 3}
