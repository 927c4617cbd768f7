"""The lora_sweep table and plot, from a run's stored results (never by recomputing):

    python -m reports.lora_sweep RUN_DIR      -> RUN_DIR/lora_sweep.md, lora_sweep.csv,
                                                 RUN_DIR/plots/lora_fidelity_vs_forgetting.png

The table is the `lora_sweep` preset (reports/presets/lora_sweep.yaml), made and formatted like
every other table (reports.table_spec; the same table heads the sectioned report of a lora_sweep
run): one row per point (variant, targets, rank; base and full fine-tuning set apart in italics),
trainable parameters, concept fidelity (CLIP-I, CLIP-T), prior FID / CLIP score and their drift from
the base model (forgetting); printed to fit 120 columns. lora_sweep.csv: the same rows as numbers,
with adapter bytes, training cost and s/image unmerged and merged (`lora_table`). The plot puts
concept fidelity (CLIP-I) against forgetting (FID drift), marker area proportional to trainable
parameters.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")   # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.results import read_results  # noqa: E402
from bench.atomic import atomic_write_text  # noqa: E402
from reports.load import ReportError, normalise  # noqa: E402
from reports.sections import fit_table  # noqa: E402
from reports.table_spec import build_spec_table, load_spec, render  # noqa: E402

POINT = ["variant", "rank", "targets"]
COLUMNS = ["trainable_parameters", "adapter_bytes", "train_s_per_step", "train_state_mib", "train_peak_memory_mib",
           "concept_clip_i", "concept_clip_t", "fid", "fid_drift", "clip_score", "clip_score_drift",
           "s_per_image_unmerged", "s_per_image_merged", "merge_max_abs_diff"]


def lora_table(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[frame["suite"] == "lora_sweep"].copy()
    if frame.empty:
        raise ValueError("no lora_sweep rows in these results; run `python -m bench suite=lora_sweep` first")
    frame["metric"] = frame["metric"].str.replace(r"\[.*\]$", "", regex=True)   # clip_score[shapes-clip]
    speed = frame["metric"] == "s_per_image"
    merged = frame.get("merged", pd.Series(index=frame.index, dtype=object)).astype(str).str.lower()
    frame.loc[speed, "metric"] = np.where(merged[speed] == "true", "s_per_image_merged", "s_per_image_unmerged")
    table = frame.pivot_table(index=POINT, columns="metric", values="value", aggfunc="first")
    table = table[[c for c in COLUMNS if c in table.columns]].reset_index()
    order = {"base": 0, "full": 1}
    return table.sort_values(by=["variant", "targets", "rank"],
                             key=lambda c: c.map(lambda v: (order.get(v, 2), str(v)) if c.name == "variant" else v)
                             if c.name == "variant" else c).reset_index(drop=True)


def plot_fidelity_vs_forgetting(table: pd.DataFrame, path: Path) -> Path:
    """x: FID drift on the base prompts (forgetting; base = 0), y: CLIP-I to held-out concept images;
    marker area ~ trainable parameters (the base model: a small black marker)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    rows = table.dropna(subset=["concept_clip_i"])
    params = rows.get("trainable_parameters", pd.Series(np.nan, index=rows.index)).fillna(0.0)
    top = max(float(params.max()), 1.0)
    for (variant, targets), sub in rows.groupby(["variant", "targets"], sort=False):
        x = sub["fid_drift"].fillna(0.0) if "fid_drift" in sub else np.zeros(len(sub))
        size = 20 + 600 * np.sqrt(params.loc[sub.index] / top)
        label = variant if variant in ("base", "full") else f"{variant} ({targets})"
        ax.scatter(x, sub["concept_clip_i"], s=size, alpha=0.6, label=label,
                   color="black" if variant == "base" else None)
        for xi, yi, r in zip(x, sub["concept_clip_i"], sub["rank"]):
            if r:
                ax.annotate(f"r{int(r)}", (xi, yi), fontsize=7, ha="center", va="center")
    ax.axvline(0.0, color="gray", lw=0.5)
    ax.set_xlabel("forgetting: FID drift on base prompts (lower is better)")
    ax.set_ylabel("concept fidelity: CLIP-I to held-out concept images")
    ax.set_title("LoRA and variants: fidelity vs forgetting (marker area ~ trainable parameters)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(run_dir: Path, quiet: bool = False) -> dict[str, Path]:
    """lora_sweep.md (the preset's table, as the reports write tables), lora_sweep.csv (every
    metric per point, numbers) and the plot; prints the table (fitted to 120 columns) unless quiet."""
    run_dir = Path(run_dir)
    frame = read_results(run_dir)
    table = lora_table(frame)
    spec = load_spec("lora_sweep")
    pivot = build_spec_table(normalise(frame), spec)
    md, csv = run_dir / "lora_sweep.md", run_dir / "lora_sweep.csv"
    atomic_write_text(md, render(pivot, "md", spec.title))
    atomic_write_text(csv, table.to_csv(index=False, lineterminator="\n"))
    plot = plot_fidelity_vs_forgetting(table, run_dir / "plots" / "lora_fidelity_vs_forgetting.png")
    if not quiet:
        print(f"== {spec.title} ==\n" + fit_table(pivot), end="")
    return {"table": md, "csv": csv, "plot": plot}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m reports.lora_sweep RUN_DIR (a lora_sweep run directory)", file=sys.stderr)
        return 2
    try:
        out = write(Path(args[0]))
    except (ValueError, FileNotFoundError, ReportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for kind, path in out.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
