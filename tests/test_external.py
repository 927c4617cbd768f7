"""Family `external`: folders and ADM npz files of samples served as pipelines."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.families.external import ExternalSamples
from models.core.interface import RequestError, SampleRequest
from models.core.registry import build_pipeline


def images_nhwc(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture()
def folder(tmp_path):
    arrays = images_nhwc(5)
    root = tmp_path / "samples"
    root.mkdir()
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(root / f"{i:05d}.png")
    return root, arrays


def test_folder_serves_its_images_bit_exact_in_file_order(folder):
    root, arrays = folder
    pipe = build_pipeline("external", "made-elsewhere", path=str(root))
    assert isinstance(pipe, ExternalSamples)
    assert (pipe.info.family, pipe.info.resolution, pipe.info.conditioning) == ("external", 8, "none")
    assert pipe.info.stage_names == ("loader",)
    batches = list(pipe.sample(SampleRequest(n=5, batch_size=2)))
    assert [b.indices.tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    got = torch.cat([b.images for b in batches])
    assert got.dtype == torch.uint8 and torch.equal(got, torch.from_numpy(arrays).permute(0, 3, 1, 2))
    assert all(b.stage_seconds["loader"] >= 0 and b.stage_nfe == {} for b in batches)
    assert pipe.parameter_count() == 0
    assert pipe.provenance["path"] == str(root) and pipe.provenance["images"] == 5
    tail = next(pipe.sample(SampleRequest(n=2, start_index=3)))   # any index range, as a resume asks
    assert torch.equal(tail.images, got[3:])


def test_prompts_file_makes_it_text_conditioned(folder, tmp_path):
    root, _ = folder
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(5)))
    pipe = build_pipeline("external", "with-prompts", path=str(root), prompts=str(prompts))
    assert pipe.info.conditioning == "text"
    # the request's own prompts (say the shapes grammar) are replaced by the file's
    batch = next(pipe.sample(SampleRequest(n=3, start_index=1, prompts=["something else"])))
    assert batch.prompts == ["prompt number 1", "prompt number 2", "prompt number 3"]
    batch = next(pipe.sample(SampleRequest(n=1)))
    assert batch.prompts == ["prompt number 0"]
    prompts.write_text("only one\n")
    with pytest.raises(ValueError, match="1 prompts for 5 images"):
        build_pipeline("external", "short", path=str(root), prompts=str(prompts))


def test_npz_with_labels_and_resizing(tmp_path):
    arrays = images_nhwc(4, size=16)
    labels = np.array([3, 1, 4, 1])
    path = tmp_path / "adm.npz"
    np.savez(path, arrays, labels)
    pipe = build_pipeline("external", "adm", path=str(path))
    assert pipe.info.resolution == 16 and len(pipe) == 4
    assert pipe.provenance["path"] == str(path) and pipe.provenance["source"] == "npz"
    batch = next(pipe.sample(SampleRequest(n=4, batch_size=4)))
    assert torch.equal(batch.images, torch.from_numpy(arrays).permute(0, 3, 1, 2))
    assert batch.labels.tolist() == [3, 1, 4, 1]
    small = build_pipeline("external", "adm8", path=str(path), resolution=8)
    assert next(small.sample(SampleRequest(n=1))).images.shape == (1, 3, 8, 8)
    with pytest.raises(RequestError, match="holds 4 images"):
        next(pipe.sample(SampleRequest(n=5)))


def test_errors_name_the_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        build_pipeline("external", "x", path=str(tmp_path / "nope.npz"))
    with pytest.raises(ValueError, match="needs params.path"):
        build_pipeline("external", "x")
    with pytest.raises(ValueError, match="unknown params"):
        build_pipeline("external", "x", path=str(tmp_path), colour="red")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        build_pipeline("external", "x", path=str(tmp_path / "bad.npz"))


def test_pipeline_configs_compose_and_build(tmp_path):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from bench.config import register_schema, validate
    conf = Path(__file__).resolve().parent.parent / "conf"
    path = tmp_path / "adm.npz"
    np.savez(path, images_nhwc(2))
    register_schema()
    names = sorted(p.stem for p in (conf / "pipeline").glob("*.yaml") if p.stem.startswith(("external_", "diffusers_")))
    assert {"external_npz", "external_folder", "diffusers_sd", "diffusers_dit", "diffusers_if"} <= set(names)
    with initialize_config_dir(str(conf), version_base="1.3"):
        for name in names:
            extra = [f"pipeline.params.path={path if name == 'external_npz' else tmp_path}"] if name.startswith("external_") else []
            cfg = validate(compose("config", overrides=[f"pipeline={name}", *extra]))
            assert (cfg.pipeline.name, cfg.pipeline.family) == (name, "external")
            assert cfg.pipeline.params.get("source", "diffusers" if name.startswith("diffusers_") else None) == \
                ("diffusers" if name.startswith("diffusers_") else None)
        cfg = validate(compose("config", overrides=["pipeline=external_npz", f"pipeline.params.path={path}"]))
    spec = cfg.pipeline
    pipe = build_pipeline(spec.family, spec.name, spec.checkpoint, **spec.params)
    assert len(pipe) == 2 and pipe.info.name == "adm"   # the shipped option's name: the npz's stem instead
