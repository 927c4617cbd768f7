"""report.html: self-contained (images as data URIs, nothing fetched), sortable section tables,
grids and plots embedded, the manifest's provenance; rendered in a real headless Chromium
(screenshot not blank, table rows in the rendered DOM, no console or script errors, sorting
works). Only the browser test skips, with the reason, where no Chromium can be had; CI installs
Debian's chromium (.ci/run). DIFFBENCH_SCREENSHOT_DIR: keep the screenshot there."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.results import write_results
from reports.__main__ import main as reports_main
from reports.run_report import write_run_report
from test_reports_sections import LONG, autoencoder_rows, generation_rows

SHA = "ab" * 32
MANIFEST = {"status": "complete", "run_id": "outputs/run1", "seed": 0,
            "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
            "packages": {"torch": "2.4.0", "numpy": "1.26.4", "pandas": "2.2.2"}, "python": "3.11.9",
            "platform": "Linux-x86_64", "device": {"type": "cpu", "dtype": "float32", "world_size": 1},
            "weights": {"pt_inception-2015-12-05": SHA},
            "checkpoints": {"pixel_ddpm": {"checkpoint": "models/checkpoints/pixel_shapes16", "sha256": "cd" * 32,
                                           "parameters": 123456}},
            "config": {"suite": {"name": "smoke"}}}
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def png(color: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[...] = color
    image[size[1] // 4: size[1] // 2, size[0] // 4: size[0] // 2] = (255, 255, 255)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    """`python -m reports RUN --out OUT` over a run with every section, a grid and a plot in OUT."""
    run = tmp_path / "run1"
    write_results(run, generation_rows("outputs/run1") + autoencoder_rows("outputs/run1"))
    (run / "manifest.json").write_text(json.dumps(MANIFEST))
    out = tmp_path / "out"
    (out / "grids").mkdir(parents=True)
    (out / "grids" / "zz_test_grid.png").write_bytes(png((200, 30, 30)))   # as reports.grids leaves them
    assert reports_main([str(run), "--out", str(out), "--quiet", "--no-plots"]) == 0
    (out / "plots").mkdir()
    (out / "plots" / "zz_test_plot.png").write_bytes(png((30, 30, 200)))
    assert reports_main([str(run), "--out", str(out), "--quiet", "--no-plots"]) == 0   # picks both up
    return out


def table_rows(page: str) -> list[list[str]]:
    """Rows (cell texts) of every results table, in document order."""
    out = []
    for table in re.findall(r'<table class="results sortable">(.*?)</table>', page, re.S):
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table.split("<tbody>")[1], re.S):   # rows may carry a class (role, rule)
            out.append([re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)])
    return out


def test_report_html_is_self_contained_with_sections_images_and_provenance(report_dir: Path):
    page = (report_dir / "report.html").read_text()
    assert [h for h in re.findall(r"<h2>(.*?)</h2>", page)] == [
        "Generation quality", "Text alignment", "Reconstruction", "Speed", "Samples", "Plots", "Provenance"]
    rows = table_rows(page)
    assert len(rows) == 3 + 1 + 4 + 3   # pipelines, the text model, autoencoders x datasets, pipelines
    assert re.findall(r'src="(?!data:image/png;base64,)', page) == [] and "http" not in page.split("<h2>Provenance")[0]
    assert page.count("data:image/png;base64,") == 2 and 'alt="zz_test_grid"' in page and 'alt="zz_test_plot"' in page
    for text in (MANIFEST["git"]["commit"], SHA, "cd" * 32, "pt_inception-2015-12-05", "models/checkpoints/pixel_shapes16",
                 "torch", "2.4.0", "3.11.9"):
        assert text in page, text
    assert 'data-v="298.0"' in page   # raw numbers for sorting


def test_run_report_writes_report_html_with_the_runners_manifest(tmp_path: Path):
    import pandas as pd
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({**MANIFEST, "status": "running", "weights": {}, "checkpoints": {}}))
    write_run_report(run, pd.DataFrame(generation_rows("outputs/run1")), quiet=True,
                     manifest={"weights": MANIFEST["weights"], "checkpoints": MANIFEST["checkpoints"]})
    page = (run / "report.html").read_text()
    assert SHA in page and "pixel_shapes16" in page and MANIFEST["git"]["commit"] in page


# ---- the browser --------------------------------------------------------------------------

def browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def run_browser(exe: str, page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                           *extra, page.as_uri()], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(profile)})


def console_lines(stderr: str) -> list[str]:
    """What the page wrote to the console (errors, uncaught exceptions): Chromium logs them as
    ':CONSOLE' lines with --enable-logging=stderr."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


ERROR_HOOK = ("<script>window.onerror = function (msg) { document.documentElement.setAttribute("
              "'data-js-errors', (document.documentElement.getAttribute('data-js-errors') || '') + msg + ';'); };"
              "</script>")
# After the page's own script: click the first FID header twice (ascending, then descending) and
# write the pipelines' order, as the browser sorted them, into the DOM for --dump-dom.
SORT_PROBE = """<script>
var table = document.querySelector("table.sortable"), th = table.querySelectorAll("th")[1];
function order() { return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[0].textContent; }).join(","); }
th.click(); var up = order(); th.click(); var down = order();
var probe = document.createElement("pre"); probe.id = "sort-probe"; probe.textContent = up + "|" + down;
document.body.appendChild(probe);
</script>"""


@pytest.mark.skipif(browser() is None, reason="no Chromium/Chrome on PATH (CI installs Debian's chromium: .ci/run)")
def test_report_html_renders_in_headless_chromium(report_dir: Path, tmp_path: Path):
    exe = browser()
    page = report_dir / "report.html"
    # 1. the page as written: a screenshot that is not blank, and nothing on the console
    shot = tmp_path / "report.png"
    done = run_browser(exe, page, tmp_path / "profile1", f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1280) and pixels.std() > 10, pixels.std()   # text, tables and images drawn
    assert (pixels < 100).mean() > 0.005   # dark text / images, not just a white page
    assert console_lines(done.stderr) == [], console_lines(done.stderr)
    if os.environ.get("DIFFBENCH_SCREENSHOT_DIR"):
        keep = Path(os.environ["DIFFBENCH_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / "report_html_chromium.png")
    # 2. the rendered DOM: every table row present, no script error, sorting by a click works
    probe = tmp_path / "probe.html"
    text = page.read_text()
    probe.write_text(text.replace("<head>", "<head>\n" + ERROR_HOOK, 1).replace("</body>", SORT_PROBE + "\n</body>", 1))
    done = run_browser(exe, probe, tmp_path / "profile2", "--dump-dom")
    dom = done.stdout
    assert re.search(r"<html[^>]*data-js-errors", dom) is None, re.search(r"<html[^>]*>", dom).group(0)
    assert console_lines(done.stderr) == [], console_lines(done.stderr)
    assert sorted(table_rows(dom)) == sorted(table_rows(text)) and len(table_rows(dom)) == 11   # (one table re-sorted)
    up, down = re.search(r'<pre id="sort-probe">(.*?)</pre>', dom).group(1).split("|")
    assert up.split(",") == [LONG, "cascaded_ddpm", "pixel_ddpm"]   # FID 258 < 278 < 298
    assert down.split(",") == ["pixel_ddpm", "cascaded_ddpm", LONG]


@pytest.mark.skipif(browser() is None, reason="no Chromium/Chrome on PATH (CI installs Debian's chromium: .ci/run)")
def test_console_check_catches_a_script_error(tmp_path: Path):
    """The check above can fail: a page that throws shows up as a :CONSOLE line."""
    page = tmp_path / "bad.html"
    page.write_text("<html><head>" + ERROR_HOOK + "</head><body><p>x</p><script>undefinedFunction();</script>"
                    "</body></html>")
    done = run_browser(browser(), page, tmp_path / "profile", "--dump-dom")
    assert any("undefinedFunction" in line for line in console_lines(done.stderr)), done.stderr[-2000:]
    assert re.search(r"<html[^>]*data-js-errors=\"[^\"]*undefinedFunction", done.stdout), done.stdout[:500]
