"""The run page in a real browser: headless Chromium opens the page of MockLLM runs and shows what it should.

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``; ``make browser``
installs them when run as root) and ``selenium`` (the ``dev`` extra). Without them these tests are
skipped, saying so.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from run_toys import HOSTILE, joint_run, train_run

from feedprop.graph_svg import ROLE_STYLES
from feedprop.run_page import serve_run_page, write_run_page

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip(
        "headless Chromium is not installed (need 'chromium' and 'chromedriver' on PATH: "
        "'apt-get install chromium chromium-driver' on Debian, or 'make browser')",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (it comes with matplotlib, in the dev extra)")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # as root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--force-device-scale-factor=1",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("browser")
    train_run(base / "train")
    joint_run(base / "joint")
    return {"train": base / "train", "joint": base / "joint"}


def severe(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_console_errors_are_seen_by_this_check(browser: Any, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><script>console.error('boom')</script>", encoding="utf-8")
    browser.get(page.as_uri())
    assert any("boom" in entry["message"] for entry in severe(browser))


def test_a_training_runs_page_shows_curve_diffs_items_and_graph_without_console_errors(
    browser: Any, runs: dict[str, Path]
) -> None:
    server = serve_run_page(runs["train"])
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        assert browser.title == "Training run: Shout with OptoPrime"
        charts = browser.find_elements(By.CSS_SELECTOR, "#curve svg.chart")
        assert len(charts) == 2
        for chart in charts:
            lines = chart.find_elements(By.CSS_SELECTOR, "polyline")
            assert lines and all(line.rect["width"] > 50 for line in lines)  # drawn across the plot
        added = browser.find_elements(By.CSS_SELECTOR, "#steps details.step .candidate pre.diff span.add")
        assert any(a.is_displayed() and a.text == "+Answer in upper case." for a in added)
        removed = browser.find_elements(By.CSS_SELECTOR, "#steps details.step .candidate pre.diff span.del")
        assert any(r.is_displayed() and r.text == "-Repeat the word." for r in removed)
        rows = browser.find_elements(By.CSS_SELECTOR, "#items table.items tr")
        assert len(rows) == 6 and rows[-1].get_attribute("class") == "lost"
        assert HOSTILE in rows[4].text  # the markup is shown as text, not run
        nodes = browser.find_elements(By.CSS_SELECTOR, "#graph svg.graph g.node")
        assert {n.get_attribute("data-name") for n in nodes} >= {"instruction", "finish"}
        assert all(n.rect["width"] > 40 and n.rect["height"] > 20 for n in nodes)
        assert browser.execute_script("return document.scripts.length") == 0
        with pytest.raises(NoAlertPresentException):
            _ = browser.switch_to.alert.text
        assert severe(browser) == []
    finally:
        server.shutdown()
        server.server_close()


def pixel_near(image: Any, x: float, y: float, color: str, tolerance: int = 12) -> bool:
    want = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
    got = image.convert("RGB").getpixel((round(x), round(y)))
    return all(abs(a - b) <= tolerance for a, b in zip(got, want, strict=True))


def test_the_graph_is_drawn_as_laid_out(browser: Any, runs: dict[str, Path]) -> None:
    browser.get(write_run_page(runs["train"]).as_uri())
    svg = browser.find_element(By.CSS_SELECTOR, "#graph svg.graph")
    browser.execute_script("arguments[0].scrollIntoView()", svg)
    boxes = browser.execute_script(
        """
        const svg = arguments[0], origin = svg.getBoundingClientRect();
        return [...svg.querySelectorAll('g.node')].map(g => {
          const r = g.querySelector('rect').getBoundingClientRect();
          const texts = [...g.querySelectorAll('text')].map(t => t.getBoundingClientRect())
            .map(t => [t.left - origin.left, t.top - origin.top, t.right - origin.left, t.bottom - origin.top]);
          return {name: g.dataset.name, role: g.getAttribute('class').split('role-')[1],
                  box: [r.left - origin.left, r.top - origin.top, r.right - origin.left, r.bottom - origin.top],
                  texts: texts};
        });
        """,
        svg,
    )
    assert len(boxes) == 5
    for node in boxes:
        left, top, right, bottom = node["box"]
        for t in node["texts"]:  # every label fits inside its box, as rendered by the browser's fonts
            assert left <= t[0] and t[2] <= right and top <= t[1] and t[3] <= bottom, node
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            apart = a["box"][2] <= b["box"][0] or b["box"][2] <= a["box"][0]
            apart = apart or a["box"][3] <= b["box"][1] or b["box"][3] <= a["box"][1]
            assert apart, (a["name"], b["name"])
    edges = browser.execute_script(
        "return [...arguments[0].querySelectorAll('g.edge path')].map(p => p.getBBox().height)", svg
    )
    assert len(edges) == 4 and all(h > 10 for h in edges)
    image = Image.open(io.BytesIO(svg.screenshot_as_png))
    for node in boxes:  # the image shows each box in its role's colour (parameters: the highlight)
        left, top, _right, bottom = node["box"]
        fill = ROLE_STYLES[node["role"]][0]
        assert pixel_near(image, left + 6, (top + bottom) / 2, fill), node
    assert {n["role"] for n in boxes} == {"parameter", "llm_call", "op", "input"}
    assert severe(browser) == []


def test_a_joint_runs_page_opens_from_disk_without_console_errors(browser: Any, runs: dict[str, Path]) -> None:
    browser.get(write_run_page(runs["joint"]).as_uri())
    phases = browser.find_elements(By.CSS_SELECTOR, "#phases tr")
    assert [r.text.split()[0] for r in phases[1:]] == ["start", "1:p", "2:p"]
    marks = browser.find_elements(By.CSS_SELECTOR, "#curve svg.chart line.mark")
    assert len(marks) == 4  # two phase boundaries on each chart
    assert browser.find_elements(By.CSS_SELECTOR, "#graph svg.graph g.node.role-parameter")
    assert severe(browser) == []
