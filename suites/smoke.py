"""smoke: every listed reference pipeline on bundled data, small n, all applicable metrics; then
the reconstruction quality (PSNR, SSIM, LPIPS, rFID) of every shipped autoencoder on held-out
images of each dataset in `suite.params.reconstruction.data`. The default of `python -m bench` /
`make run`."""
from __future__ import annotations

from dataclasses import replace

from suites.autoencoder_zoo import reconstruction_rows, shipped_autoencoders
from suites.common import quality_and_speed


def run(session) -> None:
    for name in session.pipeline_names():
        quality_and_speed(session, session.load_pipeline(name))
    recon = session.cfg.suite.params.get("reconstruction")
    if recon:
        n = int(recon["n"])
        for data_name in recon["data"]:
            data = replace(session.cfg.data, name=data_name, resolution=int(recon["resolution"]), n=n, root=None)
            reconstruction_rows(session, shipped_autoencoders(), data, n, rfid=bool(recon.get("rfid", True)))
