"""The prepared GPU check (issue 19, deliverable 4): one command for one CUDA GPU, under 8 minutes
on an H100, needing beyond the tracked source tree only a float16 copy of the TF-FID Inception
weights (43.7 MB; the float32 file is 87 MB, over the 64 MiB a GPU run may carry).

    python -m bench.tools.gpu_check --prepare DIR     # on any machine: DIR/inception-2015-12-05-fp16.safetensors
                                                      # + .sha256 + agreement of its features with float32 (CPU)
    python -m bench.tools.gpu_check --weights DIR     # on the GPU: the measurements below -> JSON + table
    python -m bench.tools.gpu_check --dry-run         # tiny sizes on the CPU, the same code path (CI)
    make gpu-check [DRY=1] [GPU_WEIGHTS=DIR]

The float16 file is used as float32 weights (each value rounded to float16 once, computed in
float32): `--prepare` measures what that rounding does to the features and to FID on CPU.
Measured on the GPU:
  1. Inception features on CUDA vs CPU (same images, same weights): max absolute difference;
  2. FID + KID of n vs n images: the project's extractor and metric code on CUDA vs
     torch_fidelity.calculate_metrics(fid=True, kid=True, cuda=True) with the same weights;
  3. the harness's sampling loop against a bare loop (the shipped pixel UNet, batch 64, fp32);
  4. sampling of the real-size DiT-XL/2 (256 px) and SD 1.5 UNet (512 px) shapes in bf16 with
     torch.compile, through the harness's diffusers adapter vs the diffusers pipeline directly
     (bench.tools.overhead_bench's models), with peak CUDA memory per side.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from bench.data.shapes import ShapesSource
from bench.manifest import file_sha256
from bench.metrics.frechet import GaussianAccumulator, frechet_distance
from bench.metrics.inception import InceptionExtractor, TorchFidelityInception
from bench.metrics.kid import kid_from_features
from bench.tools.overhead_bench import (Comparison, UInt8Images, bench_images, diffusers_comparison, harness_loop,
                                        interleave)
from bench.weights import load_state_dict, resolve
from bench.weights.formats import save_safetensors
from bench.weights.resolver import ResolvedWeights

FP16_NAME = "inception-2015-12-05-fp16.safetensors"
# The tolerance --prepare checks (and states). Measured on CPU, 300 + 300 shapes images: float16
# weights move pool3 features (values 0-8.4) by 2.4e-2 at most and FID by 8.3e-3 (20.4665 vs
# 20.4582, 4e-4 relative), far below FID's own sampling error.
FEATURE_TOLERANCE = 0.05
FID_TOLERANCE = 0.05


class GpuCheckError(RuntimeError):
    """A problem the person running the check can fix (no CUDA, missing weights)."""


# --------------------------------------------------------------------------- float16 weights
def sha256_of(path: Path) -> str:
    return file_sha256.__wrapped__(str(path))   # uncached: the file is rewritten by --prepare


def write_fp16(out_dir: Path) -> Path:
    """The project's TF-FID Inception (torch-fidelity layout, no fc) with every float tensor cast
    to float16, as safetensors, plus a sha256 file that `load_fp16` checks."""
    source = resolve("inception-2015-12-05-torch-fidelity")
    state = load_state_dict(source.path)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FP16_NAME
    save_safetensors(half, path)
    (out_dir / (FP16_NAME + ".sha256")).write_text(f"{sha256_of(path)}  {FP16_NAME}\n"
                                                   f"# from {source.path.name} sha256 {source.sha256}\n")
    return path


def load_fp16(weights_dir: Path) -> tuple[dict[str, torch.Tensor], ResolvedWeights]:
    path = weights_dir / FP16_NAME
    sums = weights_dir / (FP16_NAME + ".sha256")
    if not path.is_file() or not sums.is_file():
        raise GpuCheckError(f"--weights {weights_dir}: no {FP16_NAME} (+ .sha256) there; make it with "
                            f"`python -m bench.tools.gpu_check --prepare {weights_dir}` and carry the folder along")
    expected, actual = sums.read_text().split()[0], sha256_of(path)
    if expected != actual:
        raise GpuCheckError(f"{path}: sha256 {actual} differs from {sums.name} ({expected}); prepare it again")
    from safetensors.torch import load_file
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    return state, ResolvedWeights(FP16_NAME, path, actual, "explicit:fp16", "state_dict", verified=True)


def extractor_from(state: dict[str, torch.Tensor], weights: ResolvedWeights, device: str,
                   batch_size: int) -> InceptionExtractor:
    return InceptionExtractor(TorchFidelityInception(state), weights, "tf1", torch.device(device), batch_size)


def features_of(extractor: InceptionExtractor, images: torch.Tensor) -> torch.Tensor:
    return extractor(images)["2048"]


def reference_images(n: int, resolution: int) -> torch.Tensor:
    """The other side of an FID: shapes of the train split (bench_images are the test split)."""
    return torch.cat([b.images for b in ShapesSource(resolution, n, 0, "train").iter_batches(256)])


def fid_of(gen: torch.Tensor, ref: torch.Tensor) -> float:
    sides = []
    for features in (gen, ref):
        acc = GaussianAccumulator()
        acc.update(features)
        sides.append(acc.stats())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # n < 2048: singular covariances
        return frechet_distance(*sides[0], *sides[1]).value


def prepare(out_dir: Path, images: int, resolution: int, batch: int) -> dict:
    """Write the float16 file, then compare its features with the float32 weights' on CPU."""
    path = write_fp16(out_dir)
    full = resolve("inception-2015-12-05-torch-fidelity")
    fp32 = extractor_from(load_state_dict(full.path), full, "cpu", batch)
    fp16 = extractor_from(*load_fp16(out_dir), "cpu", batch)
    gen = bench_images(images, resolution)
    ref = reference_images(images, resolution)
    f32_gen, f16_gen = features_of(fp32, gen), features_of(fp16, gen)
    f32_ref, f16_ref = features_of(fp32, ref), features_of(fp16, ref)
    fid32, fid16 = fid_of(f32_gen, f32_ref), fid_of(f16_gen, f16_ref)
    result = {"file": str(path), "bytes": path.stat().st_size, "sha256": sha256_of(path), "images": images,
              "max_abs_feature_diff": float((f32_gen - f16_gen).abs().max().clamp_min((f32_ref - f16_ref).abs().max())),
              "max_abs_feature": float(f32_gen.abs().max()), "fid_fp32": fid32, "fid_fp16": fid16,
              "fid_abs_diff": abs(fid32 - fid16), "feature_tolerance": FEATURE_TOLERANCE,
              "fid_tolerance": FID_TOLERANCE}
    result["within_tolerance"] = (result["max_abs_feature_diff"] <= FEATURE_TOLERANCE
                                  and result["fid_abs_diff"] <= FID_TOLERANCE)
    (out_dir / "fp16_agreement.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# --------------------------------------------------------------------------- measurements
def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class PeakMemory:
    """Peak memory of each side's calls: CUDA allocator peak on a GPU; nothing on CPU (the process
    peak would mix both sides)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.peak_mib: dict[str, float] = {}

    def track(self, side: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def call(*args: Any) -> Any:
            if self.cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            out = fn(*args)
            if self.cuda:
                torch.cuda.synchronize()
                self.peak_mib[side] = max(self.peak_mib.get(side, 0.0), torch.cuda.max_memory_allocated() / 2 ** 20)
            return out
        return call


def cuda_vs_cpu(state: dict, weights: ResolvedWeights, device: str, images: torch.Tensor, batch: int) -> dict:
    cpu = features_of(extractor_from(state, weights, "cpu", batch), images)
    dev = features_of(extractor_from(state, weights, device, batch), images)
    return {"images": len(images), "device": device, "max_abs_diff": float((cpu - dev).abs().max()),
            "max_abs_feature": float(cpu.abs().max())}


def fid_kid_throughput(state: dict, weights: ResolvedWeights, device: str, n: int, resolution: int, batch: int,
                       kid_subsets: int, kid_subset_size: int, repeats: int, memory: PeakMemory,
                       fidelity_fid: bool = True) -> tuple[Comparison, dict]:
    """FID + KID of n generated vs n reference images, extraction included, both sides from uint8.
    fidelity_fid=False (the dry run): torch-fidelity computes KID only, since its FID at d = 2048
    (np.linalg.eigvals of S1 S2) costs ~30 CPU-s whatever n is; its extraction is unchanged."""
    import torch_fidelity
    gen, ref = bench_images(n, resolution), reference_images(n, resolution)
    extractor = extractor_from(state, weights, device, batch)
    values: dict[str, Any] = {}

    def ours(gen: torch.Tensor = gen, ref: torch.Tensor = ref, subset_size: int = kid_subset_size) -> dict:
        gen_f, ref_f = features_of(extractor, gen), features_of(extractor, ref)
        kid = kid_from_features(gen_f, ref_f, subsets=kid_subsets, subset_size=subset_size)[0]
        return {"fid": fid_of(gen_f, ref_f), "kid": kid}

    with tempfile.TemporaryDirectory() as tmp:
        fidelity = Path(tmp) / "weights-inception-2015-12-05-6726825d.pth"
        torch.save({**state, "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, fidelity)

        def theirs(gen: torch.Tensor = gen, ref: torch.Tensor = ref, subset_size: int = kid_subset_size) -> dict:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = torch_fidelity.calculate_metrics(
                    input1=UInt8Images(gen), input2=UInt8Images(ref), fid=fidelity_fid, kid=True, kid_subsets=kid_subsets,
                    kid_subset_size=subset_size, cuda=device.startswith("cuda"), cache=False, verbose=False,
                    batch_size=batch, save_cpu_ram=True, feature_extractor_weights_path=str(fidelity))
            return {"fid": out.get("frechet_inception_distance"), "kid": out["kernel_inception_distance_mean"]}

        comparison = Comparison("FID+KID (project vs torch-fidelity)",
                                f"{n} vs {n} shapes images {resolution} px, {device}, KID {kid_subsets} x {kid_subset_size}"
                                + ("" if fidelity_fid else "; torch-fidelity: KID only (dry run)"),
                                units=2 * n)
        # warm-up on two batches per side (CUDA context, cuDNN autotuning), not on all n
        warm = min(n, 2 * batch)
        warmup = (lambda: ours(gen[:warm], ref[:warm], min(kid_subset_size, warm)),
                  lambda: theirs(gen[:warm], ref[:warm], min(kid_subset_size, warm)))
        values["project"], values["torch_fidelity"] = interleave(
            comparison, memory.track("harness", ours), memory.track("direct", theirs), repeats, warmup)
    return comparison, values


def sampling(kind: str, size: str, device: str, dtype: torch.dtype, compile_options: dict | None, batch: int,
             steps: int, repeats: int) -> tuple[Comparison, dict]:
    memory = PeakMemory(device)
    guidance = {"dit": 4.0, "sd": 7.5}[kind]
    comparison = diffusers_comparison(kind, size, batch, steps, guidance, repeats, device=device, dtype=dtype,
                                      compile_options=compile_options, track=memory.track)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return comparison, memory.peak_mib


def row(c: Comparison, peak: dict | None = None) -> dict:
    return {"name": c.name, "work": c.work, "agreement": c.agreement, "units": c.units,
            "wall_s": c.wall, "cpu_s": c.cpu, "median_wall_s": {s: c.median("wall", s) for s in c.wall},
            "ratio_wall": c.wall_ratio, "images_per_s": {s: c.units / c.median("wall", s) for s in c.wall},
            "peak_mib": peak or {}}


def run(args: argparse.Namespace) -> dict:
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        raise GpuCheckError("CUDA is not available here (torch.cuda.is_available() is False): run this on a machine "
                            "with an NVIDIA GPU and a CUDA build of torch, or use --dry-run for the CPU dry mode")
    tiny = args.dry_run
    sizes = dict(images=4, n=8, kid_subsets=2, kid_subset_size=4, batch=4, steps=1, repeats=1, model="tiny",
                 sample_batch=1, loop_batch=2) if tiny else dict(images=args.images, n=args.n, kid_subsets=args.kid_subsets,
                                                   kid_subset_size=args.kid_subset_size, batch=args.feature_batch,
                                                   steps=args.steps, repeats=args.repeats, model="real",
                                                   sample_batch=args.sample_batch, loop_batch=64)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        weights_dir = Path(args.weights) if args.weights else None
        prepared = None
        if weights_dir is None or (tiny and not (weights_dir / FP16_NAME).exists()):
            if not tiny:
                raise GpuCheckError("--weights DIR is required (the folder --prepare wrote)")
            weights_dir = Path(tmp)                    # the dry run makes its own float16 file
            prepared = prepare(weights_dir, sizes["images"], args.resolution, sizes["batch"])
        state, weights = load_fp16(weights_dir)
        result: dict[str, Any] = {"device": device, "dry_run": tiny, "torch": torch.__version__,
                                  "cuda": torch.version.cuda, "python": platform.python_version(),
                                  "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
                                  "weights": weights.describe(), "fp16_prepare": prepared}
        images = bench_images(sizes["images"], args.resolution)
        result["inception_cuda_vs_cpu"] = cuda_vs_cpu(state, weights, device, images, sizes["batch"])
        memory = PeakMemory(device)
        fid_cmp, fid_values = fid_kid_throughput(state, weights, device, sizes["n"], args.resolution, sizes["batch"],
                                                 sizes["kid_subsets"], sizes["kid_subset_size"], sizes["repeats"], memory,
                                                 fidelity_fid=not tiny)
        result["fid_kid"] = {**row(fid_cmp, memory.peak_mib), "values": fid_values}
        memory = PeakMemory(device)
        loop = harness_loop(sizes["loop_batch"], sizes["steps"], sizes["repeats"], device=device, track=memory.track)
        result["harness_loop"] = row(loop, memory.peak_mib)
        dtype = torch.bfloat16
        compile_options = None if args.no_compile else ({"backend": "eager"} if tiny else {})
        result["sampling"] = []
        for kind in ("dit", "sd"):
            comparison, peak = sampling(kind, sizes["model"], device, dtype, compile_options, sizes["sample_batch"],
                                        sizes["steps"], sizes["repeats"])
            result["sampling"].append(row(comparison, peak))
    result["total_s"] = time.perf_counter() - started
    return result


def report(result: dict) -> str:
    lines = [f"GPU check on {result['gpu'] or result['device']} ({'dry run, tiny sizes' if result['dry_run'] else 'full'}); "
             f"torch {result['torch']}, CUDA {result['cuda']}; weights {result['weights']['path']}"]
    if result["fp16_prepare"]:
        p = result["fp16_prepare"]
        lines.append(f"  fp16 weights vs fp32 (CPU, {p['images']} images): max |feature diff| {p['max_abs_feature_diff']:.2e}, "
                     f"FID {p['fid_fp32']:.4f} vs {p['fid_fp16']:.4f}")
    c = result["inception_cuda_vs_cpu"]
    lines.append(f"  Inception {c['device']} vs cpu, {c['images']} images: max |feature diff| {c['max_abs_diff']:.2e} "
                 f"(features up to {c['max_abs_feature']:.2f})")
    lines.append(f"  {'measurement':40s} {'harness s':>10s} {'direct s':>9s} {'ratio':>6s} {'harness img/s':>13s} "
                 f"{'direct img/s':>12s} {'peak MiB h/d':>14s}")
    for r in [result["fid_kid"], result["harness_loop"], *result["sampling"]]:
        peak = r["peak_mib"]
        peaks = f"{peak['harness']:.0f}/{peak['direct']:.0f}" if peak else "-"
        lines.append(f"  {r['name'][:40]:40s} {r['median_wall_s']['harness']:10.3f} {r['median_wall_s']['direct']:9.3f} "
                     f"{r['ratio_wall']:6.3f} {r['images_per_s']['harness']:13.2f} {r['images_per_s']['direct']:12.2f} "
                     f"{peaks:>14s}")
        lines.append(f"      {r['work']}; {r['agreement']}")
    v = result["fid_kid"]["values"]
    theirs_fid = v["torch_fidelity"]["fid"]
    lines.append(f"  FID project {v['project']['fid']:.4f} vs torch-fidelity "
                 f"{'(not computed)' if theirs_fid is None else format(theirs_fid, '.4f')}; "
                 f"KID {v['project']['kid']:.6f} vs {v['torch_fidelity']['kid']:.6f}")
    lines.append(f"  total {result['total_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", metavar="DIR", help="write the float16 Inception weights into DIR and check them")
    parser.add_argument("--weights", metavar="DIR", help="the folder --prepare wrote")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, the same code path")
    parser.add_argument("--out", default="outputs/gpu_check.json", help="where the JSON goes")
    parser.add_argument("--images", type=int, default=256, help="CUDA vs CPU features; --prepare: fp16 check images")
    parser.add_argument("--n", type=int, default=5000, help="FID/KID: images per side")
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--feature-batch", type=int, default=200)
    parser.add_argument("--sample-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="bf16 sampling without torch.compile")
    args = parser.parse_args(argv)
    try:
        if args.prepare:
            result = prepare(Path(args.prepare), args.images, args.resolution, min(args.feature_batch, 64))
            print(f"wrote {result['file']} ({result['bytes'] / 2 ** 20:.1f} MiB, sha256 {result['sha256'][:16]}...); "
                  f"fp16 vs fp32 weights on CPU, {result['images']} + {result['images']} images: max |feature diff| "
                  f"{result['max_abs_feature_diff']:.2e} (features up to {result['max_abs_feature']:.2f}; tolerance "
                  f"{FEATURE_TOLERANCE}), FID {result['fid_fp32']:.4f} vs {result['fid_fp16']:.4f} "
                  f"(|diff| {result['fid_abs_diff']:.1e}; tolerance {FID_TOLERANCE})")
            if not result["within_tolerance"]:
                raise GpuCheckError("the float16 weights' features are outside the stated tolerance: do not use them")
            return result
        result = run(args)
    except GpuCheckError as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(report(result))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
