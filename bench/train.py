"""Train a pipeline family: `python -m bench.train pipeline=pixel_ddpm data=shapes train=pixel_shapes32`.

Composes conf/train.yaml (the `pipeline`, `data` and `hardware` groups of the benchmark, plus
`train`), validates it (bad keys and values fail here, naming the key), then runs
`bench.training.trainer.train` in Hydra's run directory. The run directory is fixed per
pipeline and data (see conf/train.yaml), so rerunning a killed command resumes it.
Set train.export=DIR to also write the final EMA weights as a pipeline checkpoint.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bench.config import ConfigError, validate
from bench.training.config import TrainRunConfig, register_train_schema
from bench.training.trainer import train

log = logging.getLogger("bench.train")

register_train_schema()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(raw: DictConfig) -> None:
    try:
        cfg = validate(raw, TrainRunConfig)
        summary = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    log.info("done: %d steps, final loss %.5f, %.0f s in all; %s", summary["steps"], summary["final_loss"],
             summary["elapsed_seconds"], summary.get("export", summary["checkpoint"]))


if __name__ == "__main__":
    main()
