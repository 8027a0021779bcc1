"""The run page as HTML: self-contained, escaped, notes for what a run lacks; written, served, `feedprop view`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from html import escape
from pathlib import Path

import pytest
from run_toys import HOSTILE, joint_run, train_run

from feedprop.cli import main
from feedprop.errors import ConfigurationError
from feedprop.run_page import PAGE_FILE, render_run_page, serve_run_page, write_run_page

SECTIONS = ("summary", "curve", "steps", "items", "usage", "graph", "parameters")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pages")
    train_run(base / "train")
    joint_run(base / "joint")
    return {"train": base / "train", "joint": base / "joint"}


def test_the_page_is_self_contained_with_every_section(runs: dict[str, Path]) -> None:
    html = render_run_page(runs["train"])
    assert all(f'<section id="{s}">' in html for s in SECTIONS)
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page must load nothing from a network"
    assert html.count('<svg class="chart"') == 2 and html.count('<svg class="graph"') == 1
    assert html.count('<pre class="diff">') >= 4  # three candidates and the parameters' diffs
    assert html.count("<tr class=") == 5  # one row per test item


def test_text_from_the_run_is_escaped(runs: dict[str, Path]) -> None:
    html = render_run_page(runs["train"])
    assert HOSTILE not in html and HOSTILE.upper() not in html
    assert escape(HOSTILE) in html and escape(HOSTILE.upper() + "!") in html


def test_a_joint_run_shows_its_phases(runs: dict[str, Path]) -> None:
    html = render_run_page(runs["joint"])
    assert '<section id="phases">' in html and "1:p (prompts)" in html and "phase 2:p, step 1" in html
    assert "the kept program (after phase 2)" in html


def test_missing_parts_are_explained_on_the_page(runs: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(runs["train"], old)
    (old / "graph.json").unlink()
    (old / "best.json").unlink()
    html = render_run_page(old)
    assert "This run has no graph.json" in html
    assert "The kept parameters were not recorded" in html


def _by_model_rows(html: str) -> list[list[str]]:
    """The cells of each row of the page's usage-by-model table."""
    table = re.search(r'<table class="by-model">(.*?)</table>', html, re.S)
    assert table, "no usage-by-model table"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]


def test_usage_by_model_is_a_table_next_to_usage_by_phase(runs: dict[str, Path]) -> None:
    html = render_run_page(runs["train"])
    usage = html[html.index('<section id="usage">') :]
    assert usage.index("<h3>By phase</h3>") < usage.index('<h3 id="usage-by-model">By model</h3>')
    rows = {cells[0]: cells for cells in _by_model_rows(html)}
    assert set(rows) == {"student-mock", "optimizer-mock"}
    assert rows["optimizer-mock"][1:3] == ["optimizer 3", "3"]
    assert rows["student-mock"][1].startswith("evaluation ") and ", test " in rows["student-mock"][1]
    assert "Usage by model was not recorded" not in html
    joint = {cells[0] for cells in _by_model_rows(render_run_page(runs["joint"]))}
    assert joint == {"student-mock", "optimizer-mock"}


def test_an_older_run_without_usage_by_model_says_so(runs: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(runs["train"], old)
    checkpoint = json.loads((old / "checkpoint.json").read_text(encoding="utf-8"))
    del checkpoint["usage"]["by_model"]
    (old / "checkpoint.json").write_text(json.dumps(checkpoint), encoding="utf-8")
    html = render_run_page(old)
    assert '<table class="by-model">' not in html
    assert "Usage by model was not recorded: this run was written before" in html
    assert "<td>workflow</td><td>student-mock</td>" in html and "<td>optimizer</td><td>OptoPrime</td>" in html


def test_write_run_page_writes_into_the_run_or_where_asked(runs: dict[str, Path], tmp_path: Path) -> None:
    page = write_run_page(runs["train"])
    assert page == runs["train"] / PAGE_FILE and page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    elsewhere = write_run_page(runs["train"], tmp_path / "pages" / "train.html")
    assert elsewhere.read_text(encoding="utf-8") == render_run_page(runs["train"])


def test_the_server_listens_on_loopback_and_renders_each_request_afresh(runs: dict[str, Path], tmp_path: Path) -> None:
    live = tmp_path / "live"
    shutil.copytree(runs["train"], live)
    server = serve_run_page(live)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        first = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30)
        assert first.headers["Content-Type"] == "text/html; charset=utf-8"
        assert '<svg class="graph"' in first.read().decode("utf-8")
        (live / "graph.json").unlink()
        second = urllib.request.urlopen(f"http://127.0.0.1:{port}/{PAGE_FILE}", timeout=30).read().decode("utf-8")
        assert "This run has no graph.json" in second
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/checkpoint.json", timeout=30)
        assert info.value.code == 404  # only the page: the run's other files are not served
    finally:
        server.shutdown()
        server.server_close()


def test_serving_a_directory_without_a_run_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not a feedprop run directory"):
        serve_run_page(tmp_path)


def test_the_view_command_writes_the_page_and_prints_its_path(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "page.html"
    assert main(["view", str(runs["joint"]), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text(encoding="utf-8") == render_run_page(runs["joint"])


def test_the_view_command_explains_a_bad_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["view", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("feedprop view: ") and "does not exist; pass a run directory" in err


def test_view_serve_runs_until_interrupted(runs: dict[str, Path]) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedprop", "view", str(runs["train"]), "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().strip() == str(runs["train"] / PAGE_FILE)
        line = proc.stderr.readline()
        match = re.search(r"serving (http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        assert "<!DOCTYPE html>" in urllib.request.urlopen(match.group(1), timeout=30).read().decode("utf-8")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
