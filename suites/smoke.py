"""smoke: every listed reference pipeline on bundled data, small n, all applicable metrics; then
the reconstruction quality (PSNR, SSIM, LPIPS, rFID) of every shipped autoencoder on held-out
images of each dataset in `suite.params.reconstruction.data`. The default of `python -m bench` /
`make run`."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, List, Optional

from bench.data.config import BUNDLED_DATASETS, choice, require
from suites.common import quality_and_speed
from suites.params import QualityParams


@dataclass
class Reconstruction:
    """Held-out reconstruction of every shipped autoencoder, once per dataset in `data`."""
    data: List[str] = field(default_factory=lambda: list(BUNDLED_DATASETS))
    n: int = 64                        # held-out images per dataset
    resolution: int = 32               # the size the shipped autoencoders were trained at
    rfid: bool = True

    def __post_init__(self) -> None:
        for name in self.data:   # rendered or shipped sources: the rows need no data.root
            choice(name, "suite.params.reconstruction.data", BUNDLED_DATASETS)
        require(self.n >= 1, "suite.params.reconstruction.n", f"must be >= 1, got {self.n}")
        require(self.resolution >= 8, "suite.params.reconstruction.resolution", f"must be >= 8, got {self.resolution}")


@dataclass
class Params(QualityParams):
    BEYOND_PIPELINES: ClassVar[tuple[str, ...]] = ("reconstruction",)
    reconstruction: Optional[Reconstruction] = None   # None = no autoencoder rows


def run(session, params: Params) -> None:
    for name in session.pipeline_names():
        quality_and_speed(session, session.load_pipeline(name), speed_n=params.speed_n)
    recon = params.reconstruction
    if recon is not None:
        # here, not at the top: reconstruction loads torchmetrics (torchvision, transformers) and lpips,
        # seconds of every start-up of a run that has no autoencoder rows (`pipeline=X` drops them)
        from suites.autoencoder_zoo import reconstruction_rows, shipped_autoencoders
        for data_name in recon.data:
            data = replace(session.cfg.data, name=data_name, resolution=recon.resolution, n=recon.n, root=None)
            reconstruction_rows(session, shipped_autoencoders(), data, recon.n, rfid=recon.rfid)
