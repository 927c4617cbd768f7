"""Image folders for the feature-space agreement tests (the networks: bench.tools.random_vits)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.shapes import ShapesSource


def write_image_folders(root: Path, n: int, size: int = 32) -> tuple[Path, Path]:
    """Reference: shapes (test split). Generated: other shapes (train split), noised and tinted."""
    ref_dir, gen_dir = root / "reference", root / "generated"
    rng = np.random.default_rng(0)
    for folder, split, perturb in ((ref_dir, "test", False), (gen_dir, "train", True)):
        folder.mkdir(parents=True, exist_ok=True)
        for batch in ShapesSource(size, n, 0, split).iter_batches(64):
            for index, image in zip(batch.indices.tolist(), batch.images.permute(0, 2, 3, 1).numpy()):
                if perturb:
                    noisy = image.astype(np.float32) * np.array([0.9, 1.0, 1.1]) + rng.normal(0, 12, image.shape)
                    image = noisy.clip(0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"img_{index:05d}.png")
    return ref_dir, gen_dir
