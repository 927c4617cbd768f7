"""External diffusers models run as saved (issue 17): their own scheduler class and config by
default, bit-exactly what calling the pipeline does with the same generators; the harness's
sampler only when asked (`params.scheduler=request`); rows, the sample store and the manifest
name the scheduler that ran, and the manifest the model's files, classes, versions and sha256.

Tiny components are built with diffusers' own classes and saved with `save_pretrained`; the
"direct" side loads the saved folder again with `DiffusionPipeline.from_pretrained` and calls it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

import models.families.diffusers as adapters  # noqa: E402
from models.core.interface import RequestError, SampleRequest  # noqa: E402
from models.core.registry import build_pipeline  # noqa: E402
from models.core.seeding import derive_seed  # noqa: E402
from test_diffusers import (PROMPTS, assert_same_samples, smoke_run, tiny_pixel_unet,  # noqa: E402
                            tiny_stable_diffusion)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_ddim_clipped():
    """A DDIMPipeline whose scheduler clips x0 to [-1, 1] (clip_sample=True, diffusers' default)."""
    torch.manual_seed(0)
    unet = tiny_pixel_unet()
    return diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler(clip_sample=True))


def tiny_sd_euler():
    pipe = tiny_stable_diffusion()
    pipe.register_modules(scheduler=diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config))
    return pipe


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Both tiny pipelines saved with save_pretrained, under folders that name them."""
    root = tmp_path_factory.mktemp("saved")
    tiny_ddim_clipped().save_pretrained(root / "my-ddim")
    tiny_sd_euler().save_pretrained(root / "my-sd-euler")
    return root


def generators(seed: int, n: int, stage: str = "base") -> list[torch.Generator]:
    """The harness's per-sample generators (models.families.diffusers_common.sample_generators)."""
    return [torch.Generator().manual_seed(derive_seed(seed, i, stage)) for i in range(n)]


def harness_images(pipe, request: SampleRequest, monkeypatch) -> tuple[np.ndarray, torch.Tensor]:
    """The adapter's images: the float [0, 1] array diffusers returned to it, and the uint8 batch."""
    floats = []
    convert = adapters.images_01_to_uint8

    def keep(images):
        floats.append(np.array(images))
        return convert(images)
    monkeypatch.setattr(adapters, "images_01_to_uint8", keep)
    uint8 = torch.cat([b.images for b in pipe.sample(request)])
    return np.concatenate(floats), uint8


def as_uint8(images: np.ndarray) -> torch.Tensor:
    """diffusers' own numpy_to_pil rounding, NHWC -> NCHW."""
    return torch.from_numpy((images * 255).round().astype("uint8")).permute(0, 3, 1, 2)


def test_ddim_with_clip_sample_runs_as_saved_bit_exactly(saved, monkeypatch):
    folder = saved / "my-ddim"
    pipe = build_pipeline("external", "diffusers_ddpm", source="diffusers", model=str(folder))
    assert pipe.info.name == "my-ddim"                     # named after the model, not the config option
    request = SampleRequest(n=3, steps=4, seed=7, batch_size=3)
    floats, uint8 = harness_images(pipe, request, monkeypatch)

    direct = diffusers.DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    assert type(direct.scheduler).__name__ == "DDIMScheduler" and direct.scheduler.config.clip_sample
    expected = direct(batch_size=3, generator=generators(7, 3), num_inference_steps=4, output_type="np").images
    assert np.array_equal(floats, expected)                # |delta| = 0 in float
    assert torch.equal(uint8, as_uint8(expected))          # and in uint8

    details = pipe.sampling_details(request)
    assert details["sampler"] == "DDIMScheduler" and details["scheduler_mode"] == "saved"
    assert details["thresholding"] == "static"             # what clip_sample=True does, in the rows' terms
    assert details["schedulers"]["base"]["config"]["clip_sample"] is True
    ran = pipe.provenance["schedulers_ran"]["base"]
    assert [r["class"] for r in ran] == ["DDIMScheduler"] and ran[0]["config"]["clip_sample"] is True
    # sample i is the same image whatever its batch
    assert_same_samples(torch.cat([b.images for b in pipe.sample(SampleRequest(n=3, steps=4, seed=7, batch_size=1))]),
                        uint8)

    # the harness's sampler, asked for: DDIM rebuilt without clipping, which is not the saved model
    mapped = build_pipeline("external", "mapped", source="diffusers", model=str(folder), scheduler="request")
    assert mapped.info.name == "mapped"                    # an explicit name is kept
    asked = torch.cat([b.images for b in mapped.sample(request)])
    assert (asked.int() - uint8.int()).abs().max() > 0
    details = mapped.sampling_details(request)
    assert "sampler" not in details                        # the request's sampler ran: its name stays
    assert details["schedulers"]["base"]["class"] == "DDIMScheduler"
    assert details["schedulers"]["base"]["config"]["clip_sample"] is False
    assert mapped.sampling_details(SampleRequest(n=1, sampler="dpmpp_2m"))["schedulers"]["base"]["class"] == \
        "DPMSolverMultistepScheduler"


def test_stable_diffusion_with_euler_runs_as_saved_bit_exactly(saved, monkeypatch):
    folder = saved / "my-sd-euler"
    pipe = build_pipeline("external", "diffusers_sd", source="diffusers", model=str(folder))
    assert pipe.info.name == "my-sd-euler"
    request = SampleRequest(n=3, prompts=PROMPTS, steps=3, guidance_scale=3.0, seed=5, batch_size=3)
    floats, uint8 = harness_images(pipe, request, monkeypatch)

    direct = diffusers.DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    assert type(direct.scheduler).__name__ == "EulerDiscreteScheduler"
    expected = direct(prompt=PROMPTS, generator=generators(5, 3), num_inference_steps=3, guidance_scale=3.0,
                      output_type="np").images
    assert np.array_equal(floats, expected)
    assert torch.equal(uint8, as_uint8(expected))
    assert pipe.sampling_details()["sampler"] == "EulerDiscreteScheduler"
    assert pipe.provenance["pipeline_class"] == "StableDiffusionPipeline"
    assert pipe.provenance["components"]["scheduler"] == "EulerDiscreteScheduler"
    assert pipe.provenance["components"]["unet"] == "UNet2DConditionModel"
    assert pipe.provenance["folder"] == str(folder.resolve())
    assert set(pipe.provenance["versions"]) >= {"diffusers", "transformers", "torch"}


def test_saved_mode_says_what_it_cannot_apply(saved, caplog):
    pipe = build_pipeline("external", "diffusers_ddpm", source="diffusers", model=str(saved / "my-ddim"),
                          scheduler="native")                  # the earlier name of "saved"
    assert pipe.scheduler_mode == "saved"
    with caplog.at_level("WARNING", logger="models.families.diffusers"):
        next(pipe.sample(SampleRequest(n=1, steps=1, sampler="heun")))
    assert "runs as saved with DDIMScheduler; the requested sampler heun is not used" in caplog.text
    with pytest.raises(RequestError, match="params.scheduler=request"):
        next(pipe.sample(SampleRequest(n=1, steps=1, thresholding="static")))
    with pytest.raises(ValueError, match="choose one of"):
        build_pipeline("external", "x", source="diffusers", model=str(saved / "my-ddim"), scheduler="euler")


def test_the_option_names_are_the_shipped_configs():
    shipped = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "pipeline").glob("diffusers_*.yaml"))
    assert sorted(adapters.OPTION_NAMES) == shipped
    assert adapters.model_label("google/ddpm-cifar10-32", None) == "ddpm-cifar10-32"
    assert adapters.model_label("/x/my-ddim/", None) == "my-ddim"
    assert adapters.model_label(None, ["DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-II-L-v1.0"]) == \
        "IF-I-XL-v1.0+IF-II-L-v1.0"


def test_rows_store_and_manifest_name_what_ran(saved, tmp_path):
    """Through `bench.app.run`: the rows' sampler column and details, the store key and the
    manifest name the saved Euler scheduler; the manifest hashes every weight file."""
    folder = saved / "my-sd-euler"
    frame, _ = smoke_run(tmp_path / "run", "diffusers_sd", str(folder))
    assert set(frame.pipeline) == {"my-sd-euler"}
    assert set(frame["sampler"]) == {"EulerDiscreteScheduler"}        # not the config's ddim
    assert set(frame["thresholding"]) == {"none"}
    for details in frame.details.map(json.loads):
        assert details["sampling"]["schedulers"]["base"]["class"] == "EulerDiscreteScheduler"

    store = json.loads((tmp_path / "run" / "samples" / "my-sd-euler" / "default" / "store.json").read_text())
    assert store["key"]["sampling"]["schedulers"]["base"]["class"] == "EulerDiscreteScheduler"

    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    entry = manifest["checkpoints"]["diffusers_sd"]
    assert entry["label"] == "my-sd-euler" and entry["model"] == str(folder)
    assert entry["pipeline_class"] == "StableDiffusionPipeline" and entry["versions"]["diffusers"] == diffusers.__version__
    assert [r["class"] for r in entry["schedulers_ran"]["base"]] == ["EulerDiscreteScheduler"]
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin"))
    assert len(files) >= 3                                             # unet, vae, text encoder
    assert entry["weight_files"] == {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                                     for p in files}
