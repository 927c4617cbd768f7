"""What the harness costs on top of the work it measures, in one run (issue 19, deliverable 2).
Every comparison runs both sides in the same process, alternating (A, B, A, B, ...) after one
warm-up call each, and reports medians of CPU seconds (time.process_time, all threads) and wall
seconds; the ratio is harness / direct on CPU time, the one less sensitive to other processes.

  (a) harness: the shipped pixel UNet (models/checkpoints/pixel_ddpm_shapes32) through
      `Pipeline.sample` with the harness's DDIM against the same network in a bare loop of the
      same steps and batch (DDIM, eta = 0, written minimally here in VP coordinates;
      Song et al. 2021 eq. 12). The two give the same images (checked, same noise).
  (b) diffusers: the adapter (`models.families.diffusers.wrap_diffusers`) against the same
      diffusers pipeline called directly with the same scheduler, steps, guidance and
      per-sample generators (the images are checked equal). `--diffusers-size real`: denoisers
      at full size from diffusers' own config classes with random weights: DiT-XL/2 at 256 px
      (DiTTransformer2DModel: 28 layers, hidden 1152, 16 heads, patch 2, 32x32x4 latent, 1000
      classes) and the SD 1.5 UNet at 512 px (UNet2DConditionModel: 320/640/1280/1280,
      cross-attention 768, 64x64x4 latent) with a full-size CLIP text encoder (ViT-L/14 text
      tower shape, 123 M parameters); the VAE keeps SD's factor 8 but has 8 channels per block
      (a real-size decoder would only add the same seconds to both sides). `tiny`: for tests.
  (c) extraction: the project's Inception extractor (bench/metrics/inception.py, as the
      MetricSet runs it) against torch-fidelity's `calculate_metrics(isc=True)` on the same
      uint8 images with the same TF-FID weights (the project's, with a zero fc layer, since
      torch-fidelity loads strictly; IS itself is a few microseconds of arithmetic on the
      logits): images/s and CPU seconds.

    python -m bench.tools.overhead_bench [--only harness,diffusers,extraction] [--batch 64]
        [--steps 10] [--repeats 3] [--diffusers-size real] [--diffusers-steps 2] [--images 1000]
"""
from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.data.shapes import ShapesSource
from bench.metrics.inception import build_inception
from bench.weights import load_state_dict, resolve
from models.core.interface import SampleRequest
from models.core.registry import build_pipeline
from models.core.seeding import NoiseSource, derive_seed

PARTS = ("harness", "diffusers", "extraction")
TARGET_OVERHEAD = 0.03          # issue 19: harness and adapter within 3% of the direct call
PIXEL_CHECKPOINT = "pixel_ddpm_shapes32"


@dataclass
class Comparison:
    """Interleaved timings of a harness side and a direct side doing the same work."""
    name: str
    work: str
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"harness": [], "direct": []})
    wall: dict[str, list[float]] = field(default_factory=lambda: {"harness": [], "direct": []})
    agreement: str = ""
    max_diff: int | None = None  # largest uint8 difference of the two sides' images, where compared
    units: int = 0               # images per call, for images/s

    def median(self, clock: str, side: str) -> float:
        return statistics.median(getattr(self, clock)[side])

    @property
    def ratio(self) -> float:
        return self.median("cpu", "harness") / self.median("cpu", "direct")

    @property
    def wall_ratio(self) -> float:
        return self.median("wall", "harness") / self.median("wall", "direct")


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def interleave(comparison: Comparison, harness: Callable[[], Any], direct: Callable[[], Any],
               repeats: int, warmup: tuple[Callable[[], Any], Callable[[], Any]] | None = None) -> tuple[Any, Any]:
    """One untimed warm-up each (the calls themselves, or the smaller `warmup` pair), then `repeats`
    alternating timed calls; returns the last outputs."""
    out_h, out_d = (harness(), direct()) if warmup is None else (warmup[0](), warmup[1]())
    for k in range(repeats):
        # alternate which side goes first, so a drift in machine load hits both alike
        order = (("harness", harness), ("direct", direct)) if k % 2 == 0 else (("direct", direct), ("harness", harness))
        for side, fn in order:
            out, cpu, wall = timed(fn)
            comparison.cpu[side].append(cpu)
            comparison.wall[side].append(wall)
            if side == "harness":
                out_h = out
            else:
                out_d = out
    return out_h, out_d


# --------------------------------------------------------------------------- (a) harness loop
def bare_ddim(unet: torch.nn.Module, alphas_cumprod: torch.Tensor, timesteps: list[int], x: torch.Tensor,
              labels: torch.Tensor | None, prediction: str) -> torch.Tensor:
    """DDIM, eta = 0 (Song et al. 2021 eq. 12) in VP coordinates, the network called directly."""
    y = {} if labels is None else {"y": labels}
    for i, t in enumerate(timesteps):
        abar = float(alphas_cumprod[t])
        abar_next = float(alphas_cumprod[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        a, b = abar ** 0.5, (1 - abar) ** 0.5
        out = unet(x, torch.full((x.shape[0],), float(t), device=x.device), **y).float()
        if prediction == "v":            # Salimans & Ho 2022: v = a eps - b x0
            x0, eps = a * x - b * out, b * x + a * out
        else:                            # eps prediction
            x0, eps = (x - b * out) / a, out
        x = abar_next ** 0.5 * x0 + (1 - abar_next) ** 0.5 * eps
    return x


def harness_loop(batch: int, steps: int, repeats: int, seed: int = 0, *, device: str = "cpu",
                 track: Callable[[str, Callable[[], Any]], Callable[[], Any]] | None = None) -> Comparison:
    pipe = build_pipeline("pixel", "pixel_ddpm", checkpoint=PIXEL_CHECKPOINT).to(device)
    unet, schedule = pipe.unet.eval(), pipe.schedule
    classes = pipe.num_classes or 0
    labels = list(range(classes)) if classes else None
    request = SampleRequest(n=batch, seed=seed, labels=labels, sampler="ddim", steps=steps, eta=0.0, batch_size=batch)
    timesteps = torch.linspace(schedule.num_timesteps - 1, 0, steps, dtype=torch.float64).round().long().tolist()
    y = torch.tensor([labels[i % classes] for i in range(batch)], device=device) if labels else None
    shape = (batch, unet.config.in_channels, pipe.info.resolution, pipe.info.resolution)
    generator = torch.Generator().manual_seed(seed)

    def harness() -> torch.Tensor:
        return torch.cat([b.images for b in pipe.sample(request)])

    @torch.inference_mode()
    def direct(x: torch.Tensor | None = None) -> torch.Tensor:
        x = (torch.randn(shape, generator=generator) if x is None else x).to(device)
        x = bare_ddim(unet, schedule.alphas_cumprod, timesteps, x, y, pipe.spec.prediction)
        return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()

    if track is not None:
        harness, direct = track("harness", harness), track("direct", direct)

    comparison = Comparison("a: harness sampling loop", f"pixel UNet ({PIXEL_CHECKPOINT}), DDIM {steps} steps, "
                            f"batch {batch}, {pipe.parameter_count() / 1e6:.2f} M parameters, {device}", units=batch)
    images, _ = interleave(comparison, harness, direct, repeats)
    # same maths: the bare loop from the harness's own noise gives the harness's images
    same_noise = NoiseSource(seed, range(batch), "base").randn(*shape[1:])
    bare = direct(same_noise)
    diff = (images.int() - bare.int()).abs()
    comparison.max_diff = int(diff.max())
    comparison.agreement = (f"same noise: max |harness - bare| = {int(diff.max())} uint8 level(s), "
                            f"{float((diff > 0).float().mean()) * 100:.3f}% of values differ")
    return comparison


# --------------------------------------------------------------------------- (b) diffusers adapter
def vae_f8(diffusers: Any) -> Any:
    """An AutoencoderKL with SD's downsampling factor 8 (4 blocks) and 8 channels per block."""
    return diffusers.AutoencoderKL(block_out_channels=[8, 8, 8, 8], in_channels=3, out_channels=3, latent_channels=4,
                                   down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                                   layers_per_block=1, norm_num_groups=4, sample_size=256)


def word_tokenizer(max_length: int) -> Any:
    """A word-level fast tokenizer built in memory: a CLIP BPE tokenizer needs hub files. The
    pipeline only tokenises and pads to max_length; the ids feed the (random) text encoder."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    words = "a an the red blue green photo of cat dog on at small large".split()
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "<s>", "</s>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                bos_token="<s>", eos_token="</s>", model_max_length=max_length)


def dit_pipeline(size: str) -> Any:
    import diffusers
    torch.manual_seed(0)
    if size == "real":      # DiT-XL/2 (Peebles & Xie 2023, Table 1): 28 layers, 1152 = 16 x 72, patch 2
        net = dict(sample_size=32, num_layers=28, attention_head_dim=72, num_attention_heads=16, patch_size=2)
    else:
        net = dict(sample_size=4, num_layers=2, attention_head_dim=8, num_attention_heads=2, patch_size=2)
    transformer = diffusers.DiTTransformer2DModel(
        in_channels=4, out_channels=8, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_zero", norm_elementwise_affine=False, **net)
    scheduler = diffusers.DDIMScheduler(beta_schedule="linear", num_train_timesteps=1000)
    return diffusers.DiTPipeline(transformer=transformer, vae=vae_f8(diffusers), scheduler=scheduler)


def sd_pipeline(size: str) -> Any:
    import diffusers
    import transformers
    torch.manual_seed(0)
    if size == "real":      # SD 1.5's unet/config.json and text_encoder/config.json (CLIP ViT-L/14 text)
        unet = diffusers.UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        text = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                    max_position_embeddings=77)
        max_length = 77
    else:
        unet = diffusers.UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4)
        text = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                    max_position_embeddings=16)
        max_length = 16
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=49408, bos_token_id=2, eos_token_id=3, pad_token_id=0, **text))
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    vae = vae_f8(diffusers)
    if size != "real":   # 8 px latent -> 64 px images
        vae.register_to_config(sample_size=64)
    return diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=word_tokenizer(max_length),
                                             unet=unet, scheduler=scheduler, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)


def diffusers_comparison(kind: str, size: str, batch: int, steps: int, guidance: float, repeats: int,
                         seed: int = 0, *, device: str = "cpu", dtype: torch.dtype | None = None,
                         compile_options: dict | None = None,
                         track: Callable[[str, Callable[[], Any]], Callable[[], Any]] | None = None) -> Comparison:
    """`device`, `dtype`, `compile_options` (torch.compile of the pipeline's networks, shared by both
    sides) and `track` (wraps each side's call, e.g. to record peak memory) serve bench.tools.gpu_check."""
    from models.families.diffusers import wrap_diffusers
    pipe = dit_pipeline(size) if kind == "dit" else sd_pipeline(size)
    pipe.set_progress_bar_config(disable=True)
    adapter = wrap_diffusers(pipe, f"{kind}-{size}")
    if device != "cpu" or dtype is not None:
        adapter.to(device, dtype)              # moves the one pipeline both sides call
    if compile_options is not None:
        adapter.compile_networks(**compile_options)
    denoiser = pipe.transformer if kind == "dit" else pipe.unet
    params = sum(p.numel() for p in denoiser.parameters()) / 1e6
    labels = [207, 360, 387, 974][:batch] if kind == "dit" else None
    prompts = ["a photo of a cat", "a red dog on the green"][:batch] if kind == "sd" else None
    request = SampleRequest(n=batch, seed=seed, labels=labels, prompts=prompts, sampler="ddim", steps=steps,
                            guidance_scale=guidance, batch_size=batch)

    def harness() -> torch.Tensor:
        return torch.cat([b.images for b in adapter.sample(request)])

    def direct() -> torch.Tensor:
        # the adapter's seeding, so both sides draw the same noise: one generator per sample
        generators = [torch.Generator().manual_seed(derive_seed(seed, i, "base")) for i in range(batch)]
        with torch.inference_mode():
            if kind == "dit":
                out = pipe(class_labels=labels, guidance_scale=guidance, num_inference_steps=steps,
                           generator=generators, output_type="np").images
            else:
                res = adapter.info.resolution
                out = pipe(prompt=prompts, guidance_scale=guidance, num_inference_steps=steps, height=res, width=res,
                           eta=0.0, generator=generators, output_type="np").images
        return (torch.from_numpy(out).permute(0, 3, 1, 2).float() * 255).round().clamp(0, 255).to(torch.uint8)

    if track is not None:
        harness, direct = track("harness", harness), track("direct", direct)
    title = {"dit": "DiT-XL/2" if size == "real" else "DiT (tiny)", "sd": "SD 1.5 UNet" if size == "real" else "SD UNet (tiny)"}
    comparison = Comparison(f"b: diffusers adapter, {title[kind]}",
                            f"{type(pipe).__name__}, {params:.1f} M-parameter denoiser, {adapter.info.resolution} px, "
                            f"DDIM {steps} steps, batch {batch}, guidance {guidance:g}"
                            + (f", {device} {str(dtype).replace('torch.', '')}" if dtype is not None else "")
                            + (", torch.compile" if compile_options is not None else ""), units=batch)
    images, direct_images = interleave(comparison, harness, direct, repeats)
    diff = (images.int() - direct_images.int()).abs()
    comparison.max_diff = int(diff.max())
    comparison.agreement = f"max |adapter - direct| = {int(diff.max())} uint8 level(s)"
    del pipe, adapter
    gc.collect()
    return comparison


# --------------------------------------------------------------------------- (c) extraction
class UInt8Images(torch.utils.data.Dataset):
    """uint8 CHW tensors, the input type torch-fidelity's calculate_metrics accepts from a Dataset."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def bench_images(n: int, resolution: int) -> torch.Tensor:
    """The bundled shapes data (deterministic), as one uint8 NCHW tensor."""
    return torch.cat([b.images for b in ShapesSource(resolution, n, 0, "test").iter_batches(256)])


def fidelity_weights(into: Path) -> Path:
    """The project's TF-FID Inception in torch-fidelity's layout, plus a zero fc layer: torch-fidelity
    loads its state dict strictly (as tests/test_metrics_fidelity.py does)."""
    state = load_state_dict(resolve("inception-2015-12-05-torch-fidelity").path)
    state.setdefault("fc.weight", torch.zeros(1008, 2048))
    state.setdefault("fc.bias", torch.zeros(1008))
    path = into / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path


def extraction_comparison(n: int, resolution: int, batch: int, repeats: int) -> Comparison:
    import torch_fidelity
    images = bench_images(n, resolution)
    extractor = build_inception(batch_size=batch)

    def extract(images: torch.Tensor) -> np.ndarray:
        # what MetricSet does per batch: features, then the float64 moments (bench.metrics.frechet)
        total = np.zeros(2048)
        for chunk in images.split(batch):
            total += extractor(chunk)["2048"].double().sum(0).numpy()
        return total

    def harness() -> np.ndarray:
        return extract(images)

    with tempfile.TemporaryDirectory() as tmp:
        weights = fidelity_weights(Path(tmp))
        dataset = UInt8Images(images)

        def fidelity(images: torch.utils.data.Dataset) -> dict:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch_fidelity.calculate_metrics(
                    input1=images, isc=True, cuda=False, cache=False, verbose=False, batch_size=batch,
                    save_cpu_ram=True, feature_extractor_weights_path=str(weights))

        def direct() -> dict:
            return fidelity(dataset)

        # warm-up on one batch: the extractors' first calls, without another pass over all images
        first = images[:min(batch, n)]
        warmup = (lambda: extract(first), lambda: fidelity(UInt8Images(first)))

        comparison = Comparison("c: Inception extraction", f"{n} shapes images {resolution} px -> 299, batch {batch}, "
                                f"project {extractor.name} vs torch_fidelity.calculate_metrics(isc=True)", units=n)
        interleave(comparison, harness, direct, repeats, warmup)
    comparison.agreement = "same weights (sha256 of the project's file); features equal: tests/test_metrics_inception.py"
    return comparison


# --------------------------------------------------------------------------- report
def report(comparisons: list[Comparison], threads: int) -> str:
    lines = [f"harness vs direct, {threads} torch thread(s), median of interleaved repeats; "
             "ratio = harness / direct CPU seconds (time.process_time); target overhead < "
             f"{TARGET_OVERHEAD:.0%} for (a) and (b)",
             f"{'comparison':42s} {'harness cpu-s':>13s} {'direct cpu-s':>12s} {'ratio':>7s} {'wall ratio':>10s} "
             f"{'harness img/s':>13s} {'direct img/s':>12s}"]
    for c in comparisons:
        lines.append(f"{c.name:42s} {c.median('cpu', 'harness'):13.3f} {c.median('cpu', 'direct'):12.3f} "
                     f"{c.ratio:7.3f} {c.wall_ratio:10.3f} {c.units / c.median('wall', 'harness'):13.2f} "
                     f"{c.units / c.median('wall', 'direct'):12.2f}")
        lines.append(f"    {c.work}; {len(c.cpu['harness'])} repeats; {c.agreement}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Comparison]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--batch", type=int, default=64, help="(a) batch size")
    parser.add_argument("--steps", type=int, default=10, help="(a) DDIM steps")
    parser.add_argument("--diffusers-size", choices=("real", "tiny"), default="real")
    parser.add_argument("--diffusers-models", default="dit,sd", help="(b) comma-separated subset of dit,sd")
    parser.add_argument("--diffusers-batch", type=int, default=1)
    parser.add_argument("--diffusers-steps", type=int, default=2)
    parser.add_argument("--images", type=int, default=1000, help="(c) images")
    parser.add_argument("--resolution", type=int, default=32, help="(c) image size before the resize to 299")
    parser.add_argument("--feature-batch", type=int, default=64, help="(c) batch size, both sides")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown part(s) {sorted(unknown)}; choose from {','.join(PARTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    comparisons: list[Comparison] = []
    if "harness" in parts:
        comparisons.append(harness_loop(args.batch, args.steps, args.repeats))
    if "diffusers" in parts:
        guidance = {"dit": 4.0, "sd": 7.5}
        for kind in [k.strip() for k in args.diffusers_models.split(",") if k.strip()]:
            if kind not in guidance:
                parser.error(f"--diffusers-models: {kind!r} is not dit or sd")
            comparisons.append(diffusers_comparison(kind, args.diffusers_size, args.diffusers_batch,
                                                    args.diffusers_steps, guidance[kind], args.repeats))
    if "extraction" in parts:
        comparisons.append(extraction_comparison(args.images, args.resolution, args.feature_batch, args.repeats))
    print(report(comparisons, torch.get_num_threads()))
    return comparisons


if __name__ == "__main__":
    main()
