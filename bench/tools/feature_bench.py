"""Speed of the feature spaces beside Inception (issue 27), in one run:

  python -m bench.tools.feature_bench --n 1000 [--spaces dinov2-vit-s-14 clip-vit-b-32] [--second-n N] [--out FILE.json]

1. Extraction, per space: diffbench's extractor (bench.metrics.vit_features) against torch-fidelity
   0.4.0's (`FeatureExtractorDinoV2` / `FeatureExtractorCLIP`) on the same n uint8 images, with the
   same weights: images/s, CPU-s per image (process time: every thread), the ratio, and the largest
   difference between the two feature sets (relative to the largest feature).
2. The cost of a second feature space in an Inception run: MetricSet.update over the same images
   for Inception alone (fid, kid), the space alone, and both (a SpaceMetricSet); the overhead is
   t(both) - t(Inception) - t(space), as a share of t(space) (goal: under 5 %), in wall and CPU time.

No pretrained DINOv2 / CLIP weights can be had offline, so both sides get the same random-initialised
genuine networks at their true sizes (bench.tools.random_vits: facebookresearch's DinoVisionTransformer
served to torch-fidelity through a local torch hub folder, an OpenAI-layout TorchScript for CLIP);
the forward cost does not depend on the weights' values. Inception is the real TF-FID network.
Each timing is the best of --repeats runs (other processes share the machine), after one warm-up
batch. The figures in the README came from this command. The machine's load average (1 min) is
recorded at the start and end of each part: on a shared machine the wall-clock rates depend on it, the
CPU time per image much less.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from bench.config import DataConfig, MetricsConfig
from bench.data.shapes import ShapesSource
from bench.metrics import build_metrics
from bench.metrics.inception import build_inception
from bench.metrics.vit_features import build_clip, build_dinov2
from bench.tools.random_vits import VITB32, VITS14, clip_openai_state, save_dinov2_hub, save_torchscript_state
from models.core.interface import SampleBatch

SPACES = ("dinov2-vit-s-14", "clip-vit-b-32")   # the true sizes bench.tools.random_vits builds


def _timed(function: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """(best wall s, CPU s of that run, the last result)."""
    best = (float("inf"), float("inf"))
    result = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best[0], best[1], result


@contextmanager
def _local_dinov2_hub(hub: Path) -> Iterator[None]:
    """torch-fidelity's `torch.hub.load("facebookresearch/dinov2", ...)` served from `hub`."""
    real = torch.hub.load
    torch.hub.load = lambda repo, model, *a, **k: real(str(hub), model, source="local", trust_repo=True)
    try:
        yield
    finally:
        torch.hub.load = real


def _extract_all(extractor: Callable[[torch.Tensor], Any], images: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.inference_mode():
        parts = []
        for chunk in images.split(batch):
            out = extractor(chunk)
            parts.append(out["embedding"] if isinstance(out, dict) else out[0])
        return torch.cat(parts)


def extractors(space: str, root: Path) -> tuple[Any, Any, str]:
    """(ours, torch-fidelity's, weights file) on the same random genuine network."""
    if space.startswith("dinov2"):
        from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2
        weights, hub, _ = save_dinov2_hub(root, VITS14, seed=0)
        ours = build_dinov2(space, weights_path=str(weights), batch_size=10 ** 9)
        with _local_dinov2_hub(hub):
            theirs = FeatureExtractorDinoV2(space, ["dinov2"]).eval()
        return ours, theirs, str(weights)
    from torch_fidelity.feature_extractor_clip import FeatureExtractorCLIP
    path = save_torchscript_state(clip_openai_state(VITB32, seed=0), root / "random_openai_clip_b32.pt")
    ours = build_clip(space, weights_path=str(path), batch_size=10 ** 9)
    theirs = FeatureExtractorCLIP(space, ["clip"], feature_extractor_weights_path=str(path)).eval()
    return ours, theirs, str(path)


def bench_extraction(space: str, images: torch.Tensor, batch: int, repeats: int, root: Path) -> dict[str, Any]:
    ours, theirs, weights = extractors(space, root)
    _extract_all(ours, images[:batch], batch)        # warm-up
    _extract_all(theirs, images[:batch], batch)
    ours_wall, ours_cpu, ours_features = _timed(lambda: _extract_all(ours, images, batch), repeats)
    tf_wall, tf_cpu, tf_features = _timed(lambda: _extract_all(theirs, images, batch), repeats)
    n = len(images)
    scale = float(tf_features.abs().max())
    return {"space": space, "n": n, "batch_size": batch, "weights": weights,
            "diffbench_img_per_s": n / ours_wall, "torch_fidelity_img_per_s": n / tf_wall,
            "diffbench_cpu_s_per_img": ours_cpu / n, "torch_fidelity_cpu_s_per_img": tf_cpu / n,
            "speed_ratio": tf_wall / ours_wall,
            "max_abs_feature_diff_rel": float((ours_features - tf_features).abs().max()) / scale}


def bench_second_space(space: str, weights: str, images: torch.Tensor, batch: int, repeats: int,
                       cache: Path) -> dict[str, Any]:
    """MetricSet.update over the images: Inception alone, the space alone, both in one SpaceMetricSet."""
    inception = build_inception(batch_size=batch)
    data = DataConfig(name="shapes", resolution=images.shape[-1], n=64)
    configs = {"inception": MetricsConfig(names=["fid", "kid"], feature_batch_size=batch),
               "space": MetricsConfig(names=["fid", "kid"], features=[space], feature_batch_size=batch,
                                      feature_weights={space: weights}),
               "both": MetricsConfig(names=["fid", "kid"], features=["inception", space], feature_batch_size=batch,
                                     feature_weights={space: weights})}
    batches = [SampleBatch(chunk, torch.arange(len(chunk)), None, None, {}, {}) for chunk in images.split(batch)]
    times = {}
    for label, cfg in configs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metrics = build_metrics(cfg, data, quiet=True, cache_dir=cache, extractor=inception)
        metrics.update(batches[0])   # warm-up

        def run(metrics=metrics) -> None:
            for item in batches:
                metrics.update(item)
        times[label] = _timed(run, repeats)[:2]
    overhead = times["both"][0] - times["inception"][0] - times["space"][0]
    overhead_cpu = times["both"][1] - times["inception"][1] - times["space"][1]   # steadier on a shared machine
    return {"space": space, "n": len(images), "inception_s": times["inception"][0], "space_s": times["space"][0],
            "both_s": times["both"][0], "overhead_s": overhead, "overhead_share_of_space": overhead / times["space"][0],
            "inception_cpu_s": times["inception"][1], "space_cpu_s": times["space"][1], "both_cpu_s": times["both"][1],
            "overhead_cpu_s": overhead_cpu, "overhead_cpu_share_of_space": overhead_cpu / times["space"][1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images (the issue's 1,000)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--spaces", nargs="*", default=list(SPACES), choices=SPACES,
                        help="spaces whose extraction is timed (none: only the second-space part)")
    parser.add_argument("--second-space", default="dinov2-vit-s-14", choices=(*SPACES, "none"))
    parser.add_argument("--second-n", type=int, default=0, help="images of the second-space part (0: --n)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = torch.cat([b.images for b in ShapesSource(args.resolution, args.n, 0, "train").iter_batches(100)])
    report: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "extraction": [], "second_space": None}
    load = lambda: round(os.getloadavg()[0], 2)   # noqa: E731  (shared machine: the context of each timing)
    with tempfile.TemporaryDirectory(prefix="feature-bench-") as tmp:
        weights = {}
        for space in args.spaces:
            before = load()
            row = bench_extraction(space, images, args.batch_size, args.repeats, Path(tmp) / space)
            row["load_average_1min"] = [before, load()]
            weights[space] = row["weights"]
            report["extraction"].append(row)
            print(f"{space}: diffbench {row['diffbench_img_per_s']:.1f} img/s, {row['diffbench_cpu_s_per_img']:.3f} "
                  f"CPU-s/img; torch-fidelity {row['torch_fidelity_img_per_s']:.1f} img/s, "
                  f"{row['torch_fidelity_cpu_s_per_img']:.3f} CPU-s/img; speed ratio {row['speed_ratio']:.2f}; "
                  f"features differ by {row['max_abs_feature_diff_rel']:.1e} (relative); load average "
                  f"{row['load_average_1min'][0]} -> {row['load_average_1min'][1]}", flush=True)
        if args.second_space != "none":
            if args.second_space not in weights:
                weights[args.second_space] = extractors(args.second_space, Path(tmp) / args.second_space)[2]
            before = load()
            row = bench_second_space(args.second_space, weights[args.second_space], images[:args.second_n or None],
                                     args.batch_size, args.repeats, Path(tmp) / "cache")
            row["load_average_1min"] = [before, load()]
            report["second_space"] = row
            print(f"second space {row['space']} in an Inception run (MetricSet.update, n={row['n']}): Inception "
                  f"{row['inception_s']:.1f} s, {row['space']} {row['space_s']:.1f} s, both {row['both_s']:.1f} s; "
                  f"overhead {row['overhead_s']:+.2f} s = {100 * row['overhead_share_of_space']:+.1f} % of the space's "
                  f"own time; CPU s {row['inception_cpu_s']:.1f} + {row['space_cpu_s']:.1f} vs {row['both_cpu_s']:.1f}, "
                  f"overhead {100 * row['overhead_cpu_share_of_space']:+.1f} %; load average {row['load_average_1min'][0]} -> {row['load_average_1min'][1]}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
