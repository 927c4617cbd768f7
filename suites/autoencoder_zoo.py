"""autoencoder_zoo: reconstruction quality of each autoencoder (f = 1..32, KL and VQ, any |Z|
and c): PSNR, SSIM, LPIPS, rFID on a chosen dataset. The report regenerates the shape of LDM's
autoencoder table (Rombach et al. 2022, Tab. 8): rows f / |Z| / c, columns metrics +- CI."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import List, Optional

import torch

from bench.data import build_source
from bench.data.config import BUNDLED_DATASETS, require
from bench.metrics.inception import POOL_FEATURES
from bench.metrics.reconstruction import ReconstructionMetrics, load_lpips
from bench.progress import progress
from models.core.interface import to_uint8
from models.core.registry import CHECKPOINT_DIR, resolve_checkpoint
from models.networks.autoencoder import load_autoencoder
from suites.params import SuiteParams, check_autoencoder


@dataclass
class Params(SuiteParams):
    autoencoders: Optional[List[str]] = None   # checkpoint names or directories; None = every shipped one
    rfid: bool = True
    resolution: Optional[int] = None           # None = data.resolution

    def __post_init__(self) -> None:
        require(self.resolution is None or self.resolution >= 8, "suite.params.resolution",
                f"must be >= 8, got {self.resolution}")
        for i, name in enumerate(self.autoencoders or []):   # a checkpoint holding one, checked at start
            check_autoencoder(name, f"suite.params.autoencoders[{i}]", mapping_allowed=False)


def shipped_autoencoders() -> list[str]:
    """Shipped checkpoints whose config says they are autoencoders."""
    names = []
    for path in sorted(CHECKPOINT_DIR.glob("*/config.json")):
        if json.loads(path.read_text()).get("kind") == "autoencoder":
            names.append(path.parent.name)
    return names


def reconstruction_rows(session, names: list[str], data, n: int, rfid: bool = True) -> None:
    """One result row per autoencoder: PSNR, SSIM, LPIPS (and rFID) over n held-out (test-split)
    images of `data` (a DataConfig), streamed batch by batch. One pass over the data serves every
    autoencoder: the images are decoded, and their Inception features extracted, once."""
    extractor = session.inception() if rfid else None
    lpips = load_lpips("alex", session.device)
    autoencoders = {name: load_autoencoder(resolve_checkpoint(name)).to(session.device).eval() for name in names}
    metrics = {name: ReconstructionMetrics(device=session.device, extractor=extractor, shared_lpips=lpips) for name in names}
    source = build_source(replace(data, n=min(data.n, n)), split="test")
    bar = progress(total=len(source), desc=f"reconstruct {len(names)} autoencoders ({data.name})",
                   disable=session.quiet, unit="img")
    with torch.inference_mode():
        for batch in source.iter_batches(session.cfg.hardware.batch_size,
                                         num_workers=session.cfg.hardware.num_workers):
            x = batch.images.to(session.device).float() / 127.5 - 1.0
            features = extractor(batch.images)[POOL_FEATURES] if extractor is not None else None
            for name, autoencoder in autoencoders.items():
                metrics[name].update(batch.images, to_uint8(autoencoder.decode(autoencoder.encode(x))), features)
            bar.update(len(batch.images))
    bar.close()
    for name, autoencoder in autoencoders.items():
        cfg = autoencoder.config
        point = {"f": cfg.downsample_factor, "c": cfg.latent_channels, "regularizer": cfg.regularizer,
                 "codebook_size": cfg.codebook_size if cfg.regularizer == "vq" else None,
                 "data": data.name, "resolution": data.resolution, "data_n": len(source)}
        if data.name in BUNDLED_DATASETS:
            point["data_seed"] = data.seed
        session.record(None, metrics[name].compute(), point, pipeline_name=name, family="autoencoder")


def run(session, params: Params) -> None:
    names = list(params.autoencoders or shipped_autoencoders())
    if not names:
        raise ValueError("suite autoencoder_zoo: no autoencoders; set suite.params.autoencoders=[CHECKPOINT,...]")
    data = session.cfg.data
    if params.resolution is not None:
        data = replace(data, resolution=params.resolution)
    reconstruction_rows(session, names, data, session.cfg.suite.n, rfid=params.rfid)
