"""The latent families behind the one interface: stages, NFE, determinism, conditioning,
training plug-ins and checkpoints (tiny random autoencoders and denoisers)."""
from __future__ import annotations

import json

import pytest
import torch

from models.networks.autoencoder import save_autoencoder, build_autoencoder
from bench.training.families.autoencoder import calibrate
from models.core.checkpoint import save_checkpoint
from models.networks.conditioning import ClassConditioner, TextConditioner, drop_conditions
from models.core.interface import RequestError, SampleRequest
from models.families.latent import frozen_autoencoder
from models.core.registry import build_pipeline

TINY_AE = {"regularizer": "kl", "downsample_factor": 4, "latent_channels": 3, "base_channels": 8,
           "channel_mult": [1, 1, 1]}
TINY_UNET = {"base_channels": 16, "channel_mults": [1, 2], "attention_resolutions": [4], "norm_groups": 8}
TINY_DIT = {"hidden_size": 32, "depth": 2, "num_heads": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def latent_unet(**kw):
    params = dict(autoencoder=TINY_AE, resolution=16, num_classes=3, unet=TINY_UNET, num_timesteps=100)
    params.update(kw)
    return build_pipeline("latent_unet", "lu", **params)


def latent_dit(**kw):
    params = dict(autoencoder=TINY_AE, resolution=16, num_classes=3, dit=TINY_DIT, num_timesteps=100)
    params.update(kw)
    return build_pipeline("latent_dit", "ld", **params)


def perturb(pipeline, std: float = 0.05) -> None:
    """Fresh denoisers output zeros (zero-initialised output layers); give them some weights."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in pipeline.denoiser.parameters():
            p.add_(torch.randn_like(p) * std)


@pytest.mark.parametrize("make", [latent_unet, latent_dit])
def test_sampling_times_denoiser_and_decoder_separately_and_counts_nfe(make) -> None:
    pipe = make()
    assert pipe.info.stage_names == ("denoiser", "decoder")
    assert pipe.info.stages[0].resolution == 4 and pipe.info.stages[1].resolution == 16
    request = SampleRequest(n=3, labels=[0, 1, 2], steps=3, sampler="ddim", batch_size=3)
    (batch,) = list(pipe.sample(request))
    assert batch.images.shape == (3, 3, 16, 16) and batch.images.dtype == torch.uint8
    assert set(batch.stage_seconds) == {"denoiser", "decoder"}
    assert batch.stage_nfe == {"denoiser": 3.0}   # the decoder's single pass is not NFE (interface.NFE_CONVENTION)
    guided = next(pipe.sample(SampleRequest(n=3, labels=[0, 1, 2], steps=3, guidance_scale=2.0, batch_size=3)))
    assert guided.stage_nfe["denoiser"] == 6.0            # CFG's doubled batch, counted honestly


@pytest.mark.parametrize("make", [latent_unet, latent_dit])
def test_samples_do_not_depend_on_batch_size_and_labels_matter(make) -> None:
    pipe = make()
    perturb(pipe)
    request = SampleRequest(n=4, seed=7, labels=[0, 1, 2, 0], steps=2, sampler="ddpm", guidance_scale=1.5)
    whole = torch.cat([b.images for b in pipe.sample(request)])
    single = torch.cat([b.images for b in pipe.sample(SampleRequest(**{**request.__dict__, "batch_size": 1}))])
    assert (whole.int() - single.int()).abs().max() <= 1
    other = torch.cat([b.images for b in pipe.sample(SampleRequest(**{**request.__dict__, "labels": [2, 2, 1, 1]}))])
    assert not torch.equal(whole, other)


def test_latent_pipelines_expose_their_autoencoder_and_refuse_thresholding() -> None:
    pipe = latent_unet()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = pipe.autoencoder.encode(x)
        assert z.shape == (2, 3, 4, 4) and pipe.autoencoder.decode(z).shape == x.shape
    with pytest.raises(RequestError, match="thresholding"):
        next(pipe.sample(SampleRequest(n=1, labels=[0], steps=1, thresholding="static")))
    with pytest.raises(RequestError, match="labels"):
        next(pipe.sample(SampleRequest(n=1, steps=1)))


def test_dit_pipeline_reports_denoiser_gflops() -> None:
    pipe = latent_dit()
    assert pipe.gflops() > 0
    assert pipe.denoiser.config.learn_sigma


@pytest.mark.parametrize("make", [latent_unet, latent_dit])
def test_speed_metric_splits_denoiser_from_decoder_and_reports_dit_gflops(make) -> None:
    from bench.metrics.speed import measure_speed
    pipe = make()
    rows = {r.metric: r for r in measure_speed(pipe, SampleRequest(n=2, labels=[0, 1], steps=2, batch_size=2),
                                               repeats=1, warmup=0)}
    for stage in ("denoiser", "decoder"):
        assert rows[f"stage_s_per_image[{stage}]"].value > 0
    assert rows["nfe_per_image[denoiser]"].value == 2.0 and "nfe_per_image[decoder]" not in rows
    assert rows["nfe_per_image"].value == 2.0        # the decoder is timed, not counted (NFE_CONVENTION)
    shares = rows["stage_share[denoiser]"].value + rows["stage_share[decoder]"].value
    assert shares == pytest.approx(1.0)
    if make is latent_dit:                          # DiT paper's Gflops (multiply-adds) per forward
        assert rows["gflops_per_forward"].value == pytest.approx(pipe.gflops())
        assert rows["gflops_per_forward"].details["stage"] == "denoiser"
    else:
        assert "gflops_per_forward" not in rows


@pytest.mark.parametrize("family", ["latent_unet", "latent_dit"])
def test_training_plug_in_trains_the_second_stage_only(family: str) -> None:
    from bench.training.trainable import make_trainable
    arch = {"unet": TINY_UNET} if family == "latent_unet" else {"dit": TINY_DIT}
    trainable = make_trainable(family, "t", {"autoencoder": TINY_AE, "num_timesteps": 100, **arch},
                               resolution=16, num_classes=3, class_names=["a", "b", "c"])
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "label": torch.tensor([0, 1, -1, 2]), "caption": [""] * 4}
    loss = trainable.training_loss(batch, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    nets = trainable.networks
    assert all(p.grad is None for p in nets["autoencoder"].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in nets["denoiser"].parameters())
    if family == "latent_unet":
        assert nets["conditioner"].embedding.weight.grad is not None
    config = trainable.checkpoint_config()
    assert config["family"] == family and config["latent_shape"] == [3, 4, 4]


def test_autoencoder_stage_plugs_into_the_trainer_too() -> None:
    from bench.training.trainable import make_trainable
    trainable = make_trainable("latent_unet", "ae", {"stage": "autoencoder", "autoencoder": TINY_AE,
                                                     "loss": {"perceptual_weight": 0.0, "disc_start": 2}},
                               resolution=16, num_classes=None, class_names=None)
    assert set(trainable.networks) == {"autoencoder", "discriminator"}
    batch = {"image": torch.rand(2, 3, 16, 16) * 2 - 1, "label": torch.full((2,), -1), "caption": ["", ""]}
    for _ in range(3):
        trainable.training_loss(batch, torch.Generator().manual_seed(0)).backward()
    assert int(trainable.networks["discriminator"].steps) == 3 and "d_loss" in trainable.last_logs
    assert trainable.checkpoint_config()["kind"] == "autoencoder"
    with pytest.raises(ValueError, match="unknown"):
        make_trainable("latent_unet", "ae", {"stage": "autoencoder", "bogus": 1}, resolution=16,
                       num_classes=None, class_names=None)


def test_checkpoint_round_trip_and_untrained_keeps_the_autoencoder(tmp_path) -> None:
    pipe = latent_unet()
    perturb(pipe)
    save_checkpoint(tmp_path / "lu", pipe.networks(), pipe.config)
    loaded = build_pipeline("latent_unet", "lu", checkpoint=str(tmp_path / "lu"))
    request = SampleRequest(n=2, labels=[0, 1], steps=2)
    assert torch.equal(next(pipe.sample(request)).images, next(loaded.sample(request)).images)
    fresh = build_pipeline("latent_unet", "lu", checkpoint=str(tmp_path / "lu"), untrained=True)
    for a, b in zip(fresh.autoencoder.parameters(), pipe.autoencoder.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(next(fresh.sample(request)).images, next(pipe.sample(request)).images)
    with pytest.raises(ValueError, match="cannot be combined"):
        build_pipeline("latent_unet", "lu", checkpoint=str(tmp_path / "lu"), resolution=32)
    with pytest.raises(ValueError, match="family"):
        build_pipeline("latent_dit", "ld", checkpoint=str(tmp_path / "lu"))


@pytest.mark.parametrize("make", [latent_unet, latent_dit])
def test_reconstruction_suite_reads_the_autoencoder_of_a_latent_checkpoint(tmp_path, make) -> None:
    """suite=autoencoder_zoo suite.params.autoencoders=[<latent checkpoint>] measures the pipeline's own
    first stage: `load_autoencoder` finds it under the role "autoencoder", scale factor included."""
    from models.networks.autoencoder import load_autoencoder
    pipe = make()
    with torch.no_grad():
        for p in pipe.autoencoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    pipe.autoencoder.config.scale_factor = 0.5
    pipe.config["networks"]["autoencoder"]["config"]["scale_factor"] = 0.5
    save_checkpoint(tmp_path / "lp", pipe.networks(), pipe.config)
    ae = load_autoencoder(tmp_path / "lp")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ae.encode(x), pipe.autoencoder.encode(x))
        torch.testing.assert_close(ae.decode(ae.encode(x)), pipe.autoencoder.decode(pipe.autoencoder.encode(x)))
    assert ae.scale_factor == 0.5


def test_uncalibrated_autoencoder_is_refused_until_calibrated(tmp_path) -> None:
    save_autoencoder(build_autoencoder(TINY_AE), tmp_path / "ae", resolution=16, latent_scale=None)
    with pytest.raises(ValueError, match="calibrate"):
        frozen_autoencoder(str(tmp_path / "ae"))
    scale = calibrate(tmp_path / "ae", data="shapes", resolution=16, n=64, batch_size=32)
    ae, provenance = frozen_autoencoder(str(tmp_path / "ae"))
    assert ae.scale_factor == pytest.approx(scale) and provenance["latent_scale"]["n"] == 64
    config = json.loads((tmp_path / "ae" / "config.json").read_text())
    assert config["networks"]["autoencoder"]["config"]["scale_factor"] == pytest.approx(scale)
    from bench.config import DataConfig
    from bench.data import build_source
    images = torch.cat([b.images for b in build_source(DataConfig(name="shapes", resolution=16, n=64),
                                                       split="train").iter_batches(64)])
    with torch.no_grad():
        z = ae.encode(images.float() / 127.5 - 1)
    assert float(z.std()) == pytest.approx(1.0, abs=1e-3)


def test_class_conditioner_null_label_and_condition_dropout() -> None:
    cond = ClassConditioner(3, 8)
    labels = torch.tensor([0, 2, -1])
    out = cond(labels)
    assert out.shape == (3, 1, 8)
    torch.testing.assert_close(out[2, 0], cond.embedding.weight[3])
    with pytest.raises(ValueError, match="labels"):
        cond(torch.tensor([3]))
    dropped = drop_conditions(cond, torch.arange(3).repeat(100), 0.5, torch.Generator().manual_seed(0))
    assert 100 < int((dropped == -1).sum()) < 200


def test_text_conditioned_latent_unet_samples_from_prompts() -> None:
    spec = {"kind": "trainable", "tokenizer": {"kind": "byte"}, "width": 16, "layers": 1, "heads": 2, "max_length": 24}
    pipe = latent_unet(conditioning="text", num_classes=None, text_encoder=spec)
    assert pipe.info.conditioning == "text" and isinstance(pipe.conditioner, TextConditioner)
    cond, uncond = pipe.conditioner.pair(["a red circle", "a blue square on white"])
    assert cond.shape == uncond.shape and cond.shape[-1] == 16
    batch = next(pipe.sample(SampleRequest(n=2, prompts=["a red circle", "a star"], steps=2, guidance_scale=3.0)))
    assert batch.images.shape == (2, 3, 16, 16) and batch.stage_nfe["denoiser"] == 4.0


def test_shipped_autoencoders_are_calibrated_and_all_listed_by_the_reconstruction_suite() -> None:
    """suite=autoencoder_zoo measures every shipped autoencoder (autoencoders: null); each must carry
    its data-computed scale factor, and a shipped latent pipeline must embed a calibrated one."""
    from models.networks.autoencoder import load_autoencoder
    from models.core.registry import CHECKPOINT_DIR
    from suites.autoencoder_zoo import shipped_autoencoders
    listed = set(shipped_autoencoders())
    assert "ae_kl_f4_shapes32" in listed
    for path in sorted(CHECKPOINT_DIR.glob("*/config.json")):
        config = json.loads(path.read_text())
        name = path.parent.name
        if config.get("kind") == "autoencoder":
            assert name in listed
            scale = config["latent_scale"]["scale_factor"]
            assert load_autoencoder(name).scale_factor == pytest.approx(scale) and scale != 1.0
        elif config.get("family") in ("latent_unet", "latent_dit"):
            assert name not in listed
            source = config["autoencoder_source"]
            assert source["latent_scale"]["scale_factor"] == pytest.approx(load_autoencoder(name).scale_factor)
            assert (path.parent / "README.md").is_file()
