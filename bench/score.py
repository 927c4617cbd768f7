"""`python -m bench.score GEN REF`: score a set of samples against a reference, as
`fidelity --input1 GEN --input2 REF --fid --kid` (torch-fidelity) or clean-fid's `compute_fid`
would, on the project's machinery (issue 26).

GEN and REF are each an image folder, an ADM/EDM-style npz of images (`arr_0` uint8 NHWC) or a
statistics npz (`mu`, `sigma`: pytorch-fid --save-stats, EDM, ADM reference batches). Every file of
both sets is scored, each image at its own size (the feature extractor's resize to 299 is the
protocol's); nothing is capped or shrunk unless asked for. Options: `--metrics fid,kid` (default,
any of `metrics.names`), `--mode tf1|clean` (torch-fidelity's TF1 resize, or clean-fid's "clean"
PIL-bicubic one), `--out DIR` (default `outputs/score/<time>`), `--dry-run`; anything of the form
`key=value` after them is a Hydra override of the same run (e.g. `hardware=cpu`,
`data.resolution=64`, `pipeline.params.resolution=64`, `suite.n=100`).

It is `python -m bench suite=score pipeline=external_folder|external_npz pipeline.params.path=GEN
data=folder|npz data.root=REF metrics.names=[...]` (or `metrics.reference=REF` for statistics): the
same entry point (bench.app.main: checks, Hydra, session, sample store), the same run directory
(results.csv/.parquet, manifest.json, report.md/.html, samples/, .hydra/, app.log) and exit codes
(2 and one line for bad input). FID is symmetric, so statistics given as GEN are used as the
reference; KID needs features, which a statistics file does not hold (dropped from the default
metrics, refused when asked for).
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Sequence

DEFAULT_METRICS = ("fid", "kid")
MODES = ("tf1", "clean")
FEATURE_METRICS = ("kid", "precision_recall", "density_coverage")   # need reference features, not mu/sigma
PLAIN = re.compile(r"^[A-Za-z0-9_./~+-]+$")


class ScoreError(Exception):
    """Bad input to `bench.score` itself: one line, exit 2."""


def kind_of(path: Path, role: str) -> str:
    """"folder", "images" (npz with arr_0) or "statistics" (npz with mu and sigma)."""
    if not path.exists():
        raise ScoreError(f"{role} {path} does not exist; give an image folder, an .npz of images (arr_0) "
                         "or a statistics .npz (mu, sigma)")
    if path.is_dir():
        return "folder"
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy") for name in archive.namelist()}
    except (zipfile.BadZipFile, OSError) as err:
        raise ScoreError(f"{role} {path} is neither a folder nor an .npz archive ({err}); give an image folder, "
                         "an .npz of images (arr_0) or a statistics .npz (mu, sigma)") from None
    if "arr_0" in members:   # ADM reference batches hold arr_0 beside mu/sigma: the images win (KID works)
        return "images"
    if {"mu", "sigma"} <= members:
        return "statistics"
    raise ScoreError(f"{role} {path}: an .npz with arrays {sorted(members)}; it needs arr_0 (uint8 N x H x W x 3 "
                     "images) or mu and sigma (Inception statistics)")


def quote(value: str) -> str:
    """A value for a Hydra override: plain paths as they are, others single-quoted (escaped)."""
    if PLAIN.match(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides_for(gen: Path, ref: Path, metrics: Sequence[str], mode: str, out: Path,
                  metrics_given: bool) -> tuple[list[str], list[str]]:
    """The `python -m bench` overrides of this scoring job, and notes for the user."""
    notes: list[str] = []
    gen_kind, ref_kind = kind_of(gen, "GEN"), kind_of(ref, "REF")
    if gen_kind == "statistics" and ref_kind == "statistics":
        raise ScoreError(f"GEN {gen} and REF {ref} are both statistics files; at least one side must be images "
                         "(a folder or an .npz with arr_0)")
    if gen_kind == "statistics":   # FID is symmetric: the statistics are the reference side
        notes.append(f"GEN {gen} holds statistics, so it is used as the reference and REF {ref} as the samples "
                     "(FID is symmetric)")
        gen, ref, gen_kind, ref_kind = ref, gen, ref_kind, gen_kind
    metrics = list(metrics)
    if ref_kind == "statistics":
        needing = [m for m in metrics if m in FEATURE_METRICS]
        if needing and metrics_given:
            raise ScoreError(f"--metrics {','.join(needing)}: needs reference features, but {ref} holds only mu and "
                             "sigma; give the reference images (a folder or an .npz with arr_0) or drop them")
        if needing:
            notes.append(f"{', '.join(needing)} left out: the statistics file {ref} holds no features")
            metrics = [m for m in metrics if m not in needing]
    pipeline = "external_folder" if gen_kind == "folder" else "external_npz"
    args = ["suite=score", f"pipeline={pipeline}", f"pipeline.params.path={quote(str(gen))}",
            f"metrics.names=[{','.join(metrics)}]", f"metrics.resize_mode={mode}", f"hydra.run.dir={quote(str(out))}"]
    if ref_kind == "statistics":
        args.append(f"metrics.reference={quote(str(ref))}")
    else:
        args += [f"data={'folder' if ref_kind == 'folder' else 'npz'}", f"data.root={quote(str(ref))}"]
    return args, notes


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.score",
        description="Score samples (GEN) against a reference (REF), as torch-fidelity's "
                    "`fidelity --input1 GEN --input2 REF --fid --kid` or clean-fid (--mode clean) do: every file, "
                    "each image at its own size. Writes the run directory of `python -m bench`.")
    parser.add_argument("gen", help="samples: an image folder, an .npz of images (arr_0) or a statistics .npz")
    parser.add_argument("ref", help="reference: an image folder, an .npz of images or a statistics .npz (mu, sigma)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="further overrides of the run (e.g. hardware=cpu, data.resolution=64)")
    parser.add_argument("--metrics", default=None,
                        help=f"comma-separated metrics.names (default {','.join(DEFAULT_METRICS)})")
    parser.add_argument("--mode", default="tf1", choices=MODES,
                        help="tf1: torch-fidelity's TF1 bilinear resize (default); clean: clean-fid's PIL bicubic")
    parser.add_argument("--out", default=None, help="run directory (default outputs/score/<time>)")
    parser.add_argument("--dry-run", action="store_true", help="check everything, print the plan, write nothing")
    return parser.parse_intermixed_args(list(argv))   # options before, between or after the paths


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    metrics = [m.strip() for m in (args.metrics or ",".join(DEFAULT_METRICS)).split(",") if m.strip()]
    out = Path(args.out) if args.out else Path("outputs", "score", datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    bad = [item for item in args.overrides if "=" not in item]
    try:
        if bad:
            raise ScoreError(f"{bad[0]!r}: after GEN and REF only KEY=VALUE overrides are accepted "
                             "(e.g. hardware=cpu); options go before them (--metrics, --mode, --out)")
        overrides, notes = overrides_for(Path(args.gen).expanduser(), Path(args.ref).expanduser(), metrics,
                                         args.mode, out, args.metrics is not None)
    except ScoreError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    overrides += list(args.overrides) + (["dry_run=true"] if args.dry_run else [])
    # imported here, after the arguments are checked: the entry point loads torch and the metrics
    from bench.app import main as bench_main
    sys.argv = [sys.argv[0], *overrides]   # Hydra reads its overrides from sys.argv
    bench_main()
    summarize(out)


def summarize(run_dir: Path) -> None:
    """The numbers on stdout, one metric a line (as `fidelity` prints them), then where they are."""
    import pandas as pd   # after the run: the rows are what it wrote
    frame = pd.read_csv(run_dir / "results.csv")
    for row in frame.itertuples():
        print(f"{row.metric}: {row.value:.6g}")
    print(f"results in {run_dir}")


if __name__ == "__main__":
    main()
