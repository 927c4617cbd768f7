"""The 50,000-sample protocol at reduced size (issue 19, deliverable 3): N external samples in
an ADM-layout npz (arr_0 uint8 NHWC, written here deterministically from the bundled shapes
data, streamed to disk) evaluated against cached reference statistics through the harness's
own path: the `external` family's npz pipeline (`Pipeline.sample`, batch by batch) feeding a
`MetricSet` with the real TF-FID Inception. Each size runs in its own child process, so the
peak RSS of one (VmHWM, /proc/self/status) is not mixed with another's; the child also reports
its RSS after set-up (models loaded, reference read), its throughput and its CPU seconds.

Check: peak RSS at --n within 10% of the --compare run. The FID path keeps float64 moments only
(constant memory). KID and precision/recall keep the generated features they need (float32,
2048 x 4 B = 8 KiB per image, up to metrics.max_kept_features): that growth is by design and is
printed when those metrics are asked for (--metrics fid,kid).

    python -m bench.tools.protocol_bench --n 10000 --compare 5000 [--metrics fid] [--ref-n 1000]
        [--resolution 32] [--batch 64] [--work-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

MEMORY_TOLERANCE = 0.10    # issue 19: peak RSS at 10k within 10% of the 5k run
PROTOCOL_N = 50_000
RESULT_PREFIX = "PROTOCOL_RESULT "


# --------------------------------------------------------------------------- the sample file
def write_samples_npz(path: Path, n: int, resolution: int, seed: int = 1, chunk: int = 500) -> Path:
    """An ADM-layout npz (uncompressed, as np.savez writes it) of n shapes images (train split, so
    they differ from the test-split reference), written chunk by chunk: memory stays flat too."""
    from bench.data.shapes import ShapesSource
    shape = (n, resolution, resolution, 3)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("arr_0.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            for batch in ShapesSource(resolution, n, seed, "train").iter_batches(chunk):
                member.write(np.ascontiguousarray(batch.images.permute(0, 2, 3, 1).numpy()).tobytes())
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- one child run
def status_kib(field: str) -> int:
    """A /proc/self/status field in KiB (VmHWM: peak resident set; VmRSS, RssAnon, RssFile: now)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def run_child(npz: Path, n: int, metrics: list[str], ref_n: int, resolution: int, batch: int, cache: Path,
              threads: int) -> dict:
    """Evaluate the first n samples of npz (or, with n = 0, only build the reference cache)."""
    import torch

    from bench.config import MetricsConfig
    from bench.data.config import DataConfig
    from bench.metrics import build_metrics
    from models.core.interface import SampleRequest
    from models.core.registry import build_pipeline
    if threads:
        torch.set_num_threads(threads)
    cfg = MetricsConfig(names=metrics, feature_batch_size=batch, kid_subsets=10,
                        kid_subset_size=min(1000, max(2, min(n, ref_n) // 2)))
    data = DataConfig(name="shapes", resolution=resolution, n=ref_n)
    start_cpu, start = time.process_time(), time.perf_counter()
    metric_set = build_metrics(cfg, data, device="cpu", quiet=True, cache_dir=cache)
    setup_s = time.perf_counter() - start
    result: dict = {"n": n, "metrics": metrics, "setup_s": setup_s, "threads": torch.get_num_threads()}
    if n:
        pipe = build_pipeline("external", "protocol_npz", path=str(npz))
        result["setup_rss_mib"] = status_kib("VmRSS") / 1024
        result["setup_hwm_mib"] = status_kib("VmHWM") / 1024
        start_cpu, start = time.process_time(), time.perf_counter()
        for sample_batch in pipe.sample(SampleRequest(n=n, batch_size=batch)):
            metric_set.update(sample_batch)
        values = metric_set.compute()
        result["seconds"] = time.perf_counter() - start
        result["cpu_s"] = time.process_time() - start_cpu
        result["values"] = {v.metric: v.value for v in values}
    result["peak_rss_mib"] = status_kib("VmHWM") / 1024
    result["rss_anon_mib"], result["rss_file_mib"] = status_kib("RssAnon") / 1024, status_kib("RssFile") / 1024
    result["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def start(args: argparse.Namespace, npz: Path, n: int, cache: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench.tools.protocol_bench", "--child", "--npz", str(npz), "--n", str(n),
           "--metrics", args.metrics, "--ref-n", str(args.ref_n), "--resolution", str(args.resolution),
           "--batch", str(args.batch), "--cache", str(cache), "--threads", str(args.threads)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DIFFBENCH_QUIET": "1"})


def finish(proc: subprocess.Popen, n: int) -> dict:
    stdout, stderr = proc.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"protocol child for n={n} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def spawn(args: argparse.Namespace, npz: Path, n: int, cache: Path) -> dict:
    return finish(start(args, npz, n, cache), n)


# --------------------------------------------------------------------------- the report
def summarise(runs: dict[int, dict], n: int, compare: int) -> dict:
    big, small = runs[n], runs[compare]
    throughput = n / big["seconds"]
    return {"runs": runs, "rss_ratio": big["peak_rss_mib"] / small["peak_rss_mib"],
            "growth_mib": big["peak_rss_mib"] - small["peak_rss_mib"],
            "flat": big["peak_rss_mib"] <= (1 + MEMORY_TOLERANCE) * small["peak_rss_mib"],
            "throughput": throughput, "cpu_s_per_image": big["cpu_s"] / n,
            "protocol_hours": PROTOCOL_N / throughput / 3600}


def report(summary: dict, args: argparse.Namespace) -> str:
    runs = summary["runs"]
    lines = [f"{PROTOCOL_N:,}-sample protocol, measured at n = {args.compare:,} and {args.n:,}: external npz "
             f"({args.resolution} px shapes, ADM layout) -> Pipeline.sample -> MetricSet({args.metrics}) vs cached "
             f"reference of {args.ref_n} shapes images; TF-FID Inception on CPU, {runs[args.n]['threads']} "
             "torch thread(s), one child process per size",
             f"{'n':>7s} {'set-up RSS MiB':>14s} {'peak RSS MiB':>12s} {'anon MiB':>9s} {'file MiB':>9s} "
             f"{'seconds':>8s} {'CPU-s':>8s} {'img/s':>7s}  values"]
    for n in sorted(runs):
        r = runs[n]
        values = ", ".join(f"{k} {v:.4g}" for k, v in r["values"].items())
        lines.append(f"{n:7d} {r['setup_rss_mib']:14.0f} {r['peak_rss_mib']:12.0f} {r['rss_anon_mib']:9.0f} "
                     f"{r['rss_file_mib']:9.0f} {r['seconds']:8.1f} {r['cpu_s']:8.1f} {n / r['seconds']:7.2f}  {values}")
    lines.append(f"peak RSS n={args.n} / n={args.compare}: {summary['rss_ratio']:.3f} "
                 f"({summary['growth_mib']:+.0f} MiB; target <= {1 + MEMORY_TOLERANCE:.2f}: "
                 f"{'flat' if summary['flat'] else 'NOT FLAT'})")
    kept = [m for m in args.metrics.split(",") if m in ("kid", "precision_recall", "density_coverage")]
    if kept:
        lines.append(f"  {', '.join(kept)} keep the generated features (float32, 8 KiB per image, up to "
                     f"metrics.max_kept_features): {(args.n - args.compare) * 8 / 1024:.0f} MiB more at n={args.n}, by design")
    lines.append(f"throughput {summary['throughput']:.2f} img/s ({summary['cpu_s_per_image']:.3f} CPU-s per image): "
                 f"{PROTOCOL_N:,} samples ~ {summary['protocol_hours']:.2f} h at this throughput, or "
                 f"{PROTOCOL_N * summary['cpu_s_per_image'] / 3600:.2f} CPU-hours (extrapolated, linear in n; the wall "
                 "time depends on the other load on the machine, the CPU time much less)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="samples in the measured run")
    parser.add_argument("--compare", type=int, default=5_000, help="samples in the run it is compared with")
    parser.add_argument("--metrics", default="fid", help="comma-separated metric names (fid; fid,kid; ...)")
    parser.add_argument("--ref-n", type=int, default=1000, help="reference images (shapes, test split), cached")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="sampling and Inception batch size")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the children (0: torch's default)")
    parser.add_argument("--parallel", action="store_true", help="run the two sizes at the same time (each in "
                        "its own process: peaks stay separate, but throughput is then shared)")
    parser.add_argument("--work-dir", default=None, help="where the npz and the reference cache go (default: a "
                        "temporary directory, removed afterwards)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--npz", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = run_child(Path(args.npz), args.n, args.metrics.split(","), args.ref_n, args.resolution, args.batch,
                           Path(args.cache), args.threads)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return result
    if not 0 < args.compare < args.n:
        parser.error(f"--compare ({args.compare}) must be between 0 and --n ({args.n})")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        npz = work / f"shapes{args.resolution}_{args.n}.npz"
        if not npz.exists():
            write_samples_npz(npz, args.n, args.resolution)
        cache = work / "reference_cache"
        spawn(args, npz, 0, cache)                       # the reference statistics, computed once and cached
        sizes = (args.compare, args.n)
        if args.parallel:    # separate processes, so each peak is its own; their throughputs share the CPU
            procs = {n: start(args, npz, n, cache) for n in sizes}
            runs = {n: finish(proc, n) for n, proc in procs.items()}
        else:
            runs = {n: spawn(args, npz, n, cache) for n in sizes}
    summary = summarise(runs, args.n, args.compare)
    print(report(summary, args))
    return summary


if __name__ == "__main__":
    main()
