"""Issue 28: every report table fits the page. report.html of real small smoke, superres, inpainting
and lora_sweep runs (their results.csv and manifest.json, stored under tests/data/reports_issue28/)
is rendered by headless Chromium at 1280 px; a script in the page measures every table, its box and
the document through the browser's layout, and no table may be wider than the page body (today the
image-to-image tables were 1457-1765 px in a 1200 px body). DIFFBENCH_SCREENSHOT_DIR: keep the
screenshots there (reports/docs/*_report_html.png are these)."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reports.__main__ import main as reports_main
from test_reports_html import browser, console_lines, run_browser

DATA = Path(__file__).parent / "data" / "reports_issue28"
RUNS = ("smoke", "superres", "inpainting", "lora_sweep")
WIDTH = 1280
# Writes the layout of the page, as Chromium laid it out, into the DOM for --dump-dom.
MEASURE = """<script>
(function () {
  var rect = document.body.getBoundingClientRect(), style = getComputedStyle(document.body);
  var body = {left: rect.left + parseFloat(style.paddingLeft), right: rect.right - parseFloat(style.paddingRight)};
  var tables = Array.prototype.map.call(document.querySelectorAll("table"), function (t) {
    var r = t.getBoundingClientRect(), box = t.parentElement.getBoundingClientRect();
    return {cls: t.className, left: r.left, right: r.right, width: r.width, box_right: box.right,
            heading: (t.closest("div.table-box") || t).previousElementSibling ? 1 : 0};
  });
  var probe = document.createElement("pre");
  probe.id = "width-probe";
  probe.textContent = JSON.stringify({page: document.documentElement.clientWidth, body_left: body.left,
                                      body_right: body.right, scroll: document.documentElement.scrollWidth,
                                      tables: tables});
  document.body.appendChild(probe);
})();
</script>"""


def report_html(run: str, out: Path, plots: bool = False) -> Path:
    args = [str(DATA / run), "--out", str(out), "--quiet"] + ([] if plots else ["--no-plots"])
    assert reports_main(args) == 0
    return out / "report.html"


def measure(exe: str, page: Path, tmp: Path) -> dict:
    probe = tmp / f"{page.parent.name}_probe.html"
    probe.write_text(page.read_text().replace("</body>", MEASURE + "\n</body>", 1))
    done = run_browser(exe, probe, tmp / f"profile_{page.parent.name}", f"--window-size={WIDTH},2000", "--dump-dom")
    found = re.search(r'<pre id="width-probe">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def widest_problems(layout: dict) -> list[str]:
    """Tables (results and provenance) that end right of the body or are wider than it, and a page
    that scrolls sideways."""
    problems = []
    for t in layout["tables"]:
        if t["width"] and (t["right"] > layout["body_right"] + 0.5 or t["width"] > layout["body_right"] - layout["body_left"] + 0.5):
            problems.append(f"{t['cls']}: {t['width']:.0f} px wide, right edge {t['right']:.0f} > body {layout['body_right']:.0f}")
    if layout["scroll"] > layout["page"]:
        problems.append(f"the page scrolls sideways: {layout['scroll']} > {layout['page']} px")
    return problems


@pytest.mark.skipif(browser() is None, reason="no Chromium/Chrome on PATH (CI installs Debian's chromium: .ci/run)")
@pytest.mark.parametrize("run", RUNS)
def test_no_report_table_is_wider_than_the_page_at_1280_px(run: str, tmp_path: Path):
    exe = browser()
    page = report_html(run, tmp_path / run)
    layout = measure(exe, page, tmp_path)
    results = [t for t in layout["tables"] if "results" in t["cls"]]
    assert results and all(t["width"] > 200 for t in results), layout   # the tables were laid out
    assert WIDTH - 20 <= layout["page"] <= WIDTH   # less a vertical scrollbar where the page is long
    assert layout["body_right"] - layout["body_left"] <= 1200   # the body's max-width
    assert widest_problems(layout) == [], widest_problems(layout)
    shot = tmp_path / f"{run}.png"
    done = run_browser(exe, page, tmp_path / f"profile_shot_{run}", f"--screenshot={shot}", f"--window-size={WIDTH},2400")
    assert shot.is_file() and console_lines(done.stderr) == [], done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape[1] == WIDTH and pixels.std() > 10
    if os.environ.get("DIFFBENCH_SCREENSHOT_DIR"):
        keep = Path(os.environ["DIFFBENCH_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / f"{run}_report_html.png")


@pytest.mark.skipif(browser() is None, reason="no Chromium/Chrome on PATH (CI installs Debian's chromium: .ci/run)")
def test_the_width_check_catches_a_table_wider_than_the_page(tmp_path: Path):
    """The measurement can fail: a 3000 px table outside any box overflows the body and the page."""
    page = tmp_path / "wide" / "report.html"
    page.parent.mkdir()
    page.write_text('<html><body style="max-width:1200px;margin:auto"><table class="results">'
                    '<tr><td style="min-width:3000px">x</td></tr></table></body></html>')
    problems = widest_problems(measure(browser(), page, tmp_path))
    assert any("3000 px wide" in p or "30" in p for p in problems) and any("scrolls sideways" in p for p in problems)
