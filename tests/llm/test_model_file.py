"""Assembling the model file from part packages: atomic, locked, verified, repaired when corrupt."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from feedprop.errors import ConfigurationError, ModelFileError
from feedprop.llm import ensure_model_file
from feedprop.llm import model_file as mf

PART_SIZES = (300_000, 250_000, 123_457)


def make_parts(root: Path, package: str, seed: int = 0) -> bytes:
    """Write installable part packages ``{package}1..3`` under ``root``; return their concatenation."""
    whole = b""
    for i, size in enumerate(PART_SIZES, start=1):
        data = hashlib.sha256(f"{seed}-{i}".encode()).digest() * (size // 32 + 1)
        data = data[:size]
        pkg = root / f"{package}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        whole += data
    return whole


@pytest.fixture
def tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, bytes]:
    """A registered three-part model whose parts are importable from a temp directory."""
    parts_root = tmp_path / "site"
    package = f"feedprop_test_tiny_part_{os.getpid()}_"
    whole = make_parts(parts_root, package)
    monkeypatch.syspath_prepend(str(parts_root))
    spec = mf.ModelSpec("tiny", "tiny.gguf", package, len(PART_SIZES), len(whole), hashlib.sha256(whole).hexdigest())
    monkeypatch.setitem(mf.MODELS, "tiny", spec)
    return "tiny", whole


def test_assembles_the_exact_bytes_into_the_home(tiny_model: tuple[str, bytes], isolated_home: Path) -> None:
    name, whole = tiny_model
    path = ensure_model_file(name)
    assert path == isolated_home / "models" / "tiny.gguf"
    assert path.read_bytes() == whole
    leftovers = [p.name for p in path.parent.iterdir() if p.name not in ("tiny.gguf", "tiny.gguf.lock")]
    assert leftovers == []  # no temp files stay behind


def test_a_good_file_is_not_rebuilt(tiny_model: tuple[str, bytes]) -> None:
    path = ensure_model_file(tiny_model[0])
    stamp = path.stat().st_mtime_ns
    assert ensure_model_file(tiny_model[0]) == path
    assert path.stat().st_mtime_ns == stamp


def test_a_corrupt_file_is_detected_and_rebuilt(tiny_model: tuple[str, bytes]) -> None:
    name, whole = tiny_model
    path = ensure_model_file(name)
    with open(path, "r+b") as f:  # flip some bytes in the middle, keeping the size
        f.seek(len(whole) // 2)
        f.write(b"\x00\xff" * 8)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        ensure_model_file(name)
    assert path.read_bytes() == whole


def test_a_partial_file_is_detected_and_rebuilt(tiny_model: tuple[str, bytes]) -> None:
    name, whole = tiny_model
    path = mf.model_path(name)
    path.parent.mkdir(parents=True)
    path.write_bytes(whole[:1000])
    with pytest.warns(RuntimeWarning, match="partial"):
        ensure_model_file(name)
    assert path.read_bytes() == whole


def test_missing_parts_say_how_to_install_them(tiny_model: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    spec = mf.MODELS["tiny"]
    monkeypatch.setitem(mf.MODELS, "tiny", mf.ModelSpec("tiny", "tiny.gguf", spec.package, 5, spec.size, spec.sha256))
    with pytest.raises(ModelFileError, match=r"pip install 'feedprop\[local\]'"):
        ensure_model_file("tiny")
    assert not mf.model_path("tiny").exists()


def test_parts_that_do_not_add_up_are_refused(tiny_model: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    spec = mf.MODELS["tiny"]
    wrong = mf.ModelSpec("tiny", "tiny.gguf", spec.package, spec.parts, spec.size, "0" * 64)
    monkeypatch.setitem(mf.MODELS, "tiny", wrong)
    with pytest.raises(ModelFileError, match="force-reinstall"):
        ensure_model_file("tiny")
    assert not mf.model_path("tiny").exists()  # a bad assembly never replaces the target


def test_unknown_model_names_list_the_choices() -> None:
    with pytest.raises(ConfigurationError, match=r"qwen2\.5-coder-0\.5b"):
        ensure_model_file("gpt-5")


CONCURRENT = textwrap.dedent(
    """
    import hashlib, json, sys
    from feedprop.llm import model_file as mf
    root, package, size, sha = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    sys.path.insert(0, root)
    mf.MODELS["tiny"] = mf.ModelSpec("tiny", "tiny.gguf", package, 3, size, sha)
    path = mf.ensure_model_file("tiny")
    print(json.dumps({"path": str(path), "sha": mf.sha256_file(path)}))
    """
)


def test_concurrent_processes_build_one_good_file(tiny_model: tuple[str, bytes], tmp_path: Path) -> None:
    spec = mf.MODELS["tiny"]
    argv = [sys.executable, "-c", CONCURRENT, str(tmp_path / "site"), spec.package, str(spec.size), spec.sha256]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert {r["sha"] for r in results} == {spec.sha256}
    assert len({r["path"] for r in results}) == 1


@pytest.mark.parametrize("name", sorted(mf.MODELS))
def test_the_real_parts_are_found_through_the_import_system(name: str) -> None:
    spec = mf.MODELS[name]
    try:
        paths = mf.part_paths(spec)
    except ModelFileError:
        pytest.skip("the model part packages are not installed (pip install 'feedprop[local]')")
    assert len(paths) == spec.parts
    assert [p.name for p in paths] == [f"part{i:02d}.bin" for i in range(1, spec.parts + 1)]
    assert sum(p.stat().st_size for p in paths) == spec.size
