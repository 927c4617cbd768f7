"""The denoiser UNet: shapes, conditioning paths, presets, config errors."""
from __future__ import annotations

import pytest
import torch

from models.networks.unet import UNET_PRESETS, UNet, UNetConfig, count_parameters, timestep_embedding, unet_config

TINY = dict(resolution=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
            num_heads=2, norm_groups=4)


def randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give zero-initialised output layers weights so every input path shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net


def test_output_shape_and_zero_initialised_output() -> None:
    net = UNet(UNetConfig(**TINY))
    x = torch.randn(3, 3, 8, 8)
    out = net(x, torch.tensor([0.0, 10.0, 999.0]))
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0        # zero-init last conv: a fresh model predicts 0


def test_class_labels_with_null_label() -> None:
    net = randomise(UNet(UNetConfig(**TINY, num_classes=3)).eval())
    x, t = torch.randn(4, 3, 8, 8), torch.full((4,), 50.0)
    a = net(x, t, y=torch.tensor([0, 1, 2, 0]))
    assert not torch.allclose(a[0], a[1], atol=1e-5)                      # labels matter
    null_a = net(x, t, y=torch.tensor([-1, -1, -1, -1]))
    null_b = net(x, t, y=None)
    assert torch.allclose(null_a, null_b)                                 # -1 and None are the null label
    assert net.label_embed.num_embeddings == 4
    with pytest.raises(ValueError, match="no class conditioning"):
        UNet(UNetConfig(**TINY))(x, t, y=torch.zeros(4, dtype=torch.long))


def test_cross_attention_context_and_extra_embedding_reach_the_output() -> None:
    cfg = UNetConfig(**TINY, context_dim=6, extra_embed_dim=5)
    net = randomise(UNet(cfg).eval())
    x, t = torch.randn(2, 3, 8, 8), torch.full((2,), 10.0)
    ctx, extra = torch.randn(2, 7, 6), torch.randn(2, 5)
    base = net(x, t, context=ctx, extra=extra)
    assert not torch.allclose(base, net(x, t, context=ctx + 1, extra=extra), atol=1e-5)
    assert not torch.allclose(base, net(x, t, context=ctx, extra=extra + 1), atol=1e-5)
    # Cross-attention takes any sequence length.
    assert net(x, t, context=torch.randn(2, 3, 6), extra=extra).shape == x.shape
    with pytest.raises(ValueError, match="extra embedding"):
        net(x, t, context=ctx)


def test_conditioning_image_patch_stem_and_learned_sigma() -> None:
    cfg = UNetConfig(**{**TINY, "resolution": 16}, cond_channels=3, patch_size=2, learn_sigma=True)
    net = randomise(UNet(cfg).eval())
    x, t = torch.randn(2, 3, 16, 16), torch.full((2,), 10.0)
    low = torch.randn(2, 3, 16, 16)
    out = net(x, t, cond_image=low)
    assert out.shape == (2, 6, 16, 16)
    assert not torch.allclose(out, net(x, t, cond_image=low * 0), atol=1e-5)
    with pytest.raises(ValueError, match="cond_image"):
        net(x, t)


def test_batch_rows_are_independent() -> None:
    """GroupNorm, attention and embeddings act per sample: a row's output ignores its batch-mates."""
    net = randomise(UNet(UNetConfig(**TINY, num_classes=3)).eval())
    x, t, y = torch.randn(5, 3, 8, 8), torch.rand(5) * 999, torch.tensor([0, 1, 2, -1, 1])
    full = net(x, t, y=y)
    assert torch.allclose(full[2:3], net(x[2:3], t[2:3], y=y[2:3]), atol=1e-5)


def test_timestep_embedding_is_sinusoidal() -> None:
    emb = timestep_embedding(torch.tensor([0.0, 1.0]), 6)
    assert emb.shape == (2, 6)
    assert torch.allclose(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    assert emb[1, 0].item() == pytest.approx(torch.cos(torch.tensor(1.0)).item())


def test_presets_build_with_their_published_sizes() -> None:
    with torch.device("meta"):
        cifar = count_parameters(UNet(unet_config("ddpm_cifar10")))
        tiny = count_parameters(UNet(unet_config("tiny")))
    assert 33e6 < cifar < 40e6            # Ho et al.: 35.7M (this block adds ADM's scale-shift)
    assert tiny < 1.5e6
    assert set(UNET_PRESETS) >= {"tiny", "ddpm_cifar10", "adm_imagenet64", "ldm_txt2img"}


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(resolution=12, channel_mults=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="norm_groups"):
        UNetConfig(base_channels=12, norm_groups=8)
    with pytest.raises(ValueError, match="unknown UNet config keys"):
        UNetConfig.from_dict({"channels": 3})
    with pytest.raises(ValueError, match="preset"):
        unet_config("huge")
    assert UNetConfig.from_dict(UNetConfig(**TINY).to_dict()) == UNetConfig(**TINY)
