"""Emptying the sandbox's private /tmp between calls never touches the host's files.

When the interpreter or the package itself lives under /tmp (a checkout cloned there, a venv made
there), the sandbox binds that directory back into its private /tmp. Wiping the scratch space
must stop at that mount point: the checkout has to survive every call.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import feedprop

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the private /tmp is Linux-only")

PACKAGE = Path(feedprop.__file__).resolve().parent


def file_count(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def test_a_package_under_tmp_survives_the_scratch_wipe(tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "feedprop", ignore=shutil.ignore_patterns("__pycache__"))
    marker = tmp_path / "keep-me.txt"
    marker.write_text("user data beside the checkout")
    before = file_count(site)
    code = (
        "from feedprop.sandbox import SandboxExecutor\n"
        "import feedprop, sys\n"
        "assert feedprop.__file__.startswith(sys.argv[1]), feedprop.__file__\n"
        "ex = SandboxExecutor(timeout=30)\n"
        'src = \'def f(x):\\n    open("scratch.txt", "w").write("x")\\n    return x + 1\\n\'\n'
        "print([ex.run(src, 'f', (i,), {}, {}) for i in range(3)])\n"
        "ex.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", code, str(site)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("[1, 2, 3]")
    assert file_count(site) == before
    assert marker.read_text() == "user data beside the checkout"
