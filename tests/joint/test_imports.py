"""The weights side costs nothing until it is used: importing feedprop never imports torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from feedprop.errors import ConfigurationError
from feedprop.joint import _deps

HEAVY = ("torch", "transformers", "peft", "gguf", "safetensors")


def test_importing_feedprop_and_its_joint_package_does_not_import_torch() -> None:
    code = (
        "import sys, feedprop, feedprop.joint\n"
        "from feedprop.joint import Student, alternate, LoRAConfig, WeightOptions\n"
        "Student('qwen2.5-coder-0.5b'); LoRAConfig(); WeightOptions()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.strip() == "[]"


def test_a_missing_package_says_how_to_install_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(_deps.importlib, "import_module", missing)
    with pytest.raises(ConfigurationError, match=r"pip install 'feedprop\[joint\]'"):
        _deps.require("torch")


def test_available_reports_the_extra() -> None:
    installed = all(_deps.importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "peft", "gguf"))
    assert _deps.available() is installed
