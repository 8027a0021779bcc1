"""LocalModel's argument checks and adapter naming (no model is loaded here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from feedprop.errors import ConfigurationError, ModelFileError
from feedprop.llm import LocalModel
from feedprop.llm.local import _adapter_tag


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n_parallel": 0}, "n_parallel"),
        ({"n_ctx": 16}, "n_ctx"),
        ({"port": -1}, "port"),
        ({"threads": 0}, "threads"),
        ({"n_parallel": True}, "n_parallel"),
    ],
)
def test_bad_settings_fail_before_loading(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        LocalModel("qwen2.5-coder-0.5b", **kwargs)


def test_unknown_model_names_list_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="choose one of"):
        LocalModel("llama-70b")
    monkeypatch.setenv("FEEDPROP_LOCAL_MODEL", "tiny-typo")
    with pytest.raises(ConfigurationError, match="tiny-typo"):
        LocalModel()


def test_missing_files_are_model_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no model file"):
        LocalModel(model_path=tmp_path / "absent.gguf")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(ModelFileError, match="no LoRA adapter file"):
        LocalModel(model_path=model, lora=[(tmp_path / "absent-adapter.gguf", 1.0)])


def test_adapter_tag_follows_content_and_scale(tmp_path: Path) -> None:
    adapter = tmp_path / "a.gguf"
    adapter.write_bytes(b"weights v1")
    first = _adapter_tag([(adapter, 1.0)])
    assert _adapter_tag([(adapter, 1.0)]) == first
    assert _adapter_tag([(adapter, 0.5)]) != first
    adapter.write_bytes(b"weights v2")
    assert _adapter_tag([(adapter, 1.0)]) != first
