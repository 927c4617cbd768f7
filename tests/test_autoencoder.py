"""First-stage autoencoders: shapes for every f, the KL posterior, the VQ codebook, the latent
scale, checkpoints and the training loss."""
from __future__ import annotations

import math

import pytest
import torch

from models.networks.autoencoder import (Autoencoder, AutoencoderConfig, compute_scale_factor, load_autoencoder,
                                save_autoencoder)
from bench.training.families.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig
from models.networks.discriminator import PatchDiscriminator
from models.networks.autoencoder_regularizers import DiagonalGaussian, VectorQuantizer, codebook_usage


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(regularizer: str = "kl", f: int = 4, c: int = 3, **kw) -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder(AutoencoderConfig(regularizer=regularizer, downsample_factor=f, latent_channels=c,
                                         base_channels=8, **kw))


@pytest.mark.parametrize("regularizer", ["kl", "vq"])
@pytest.mark.parametrize("m", range(6))
def test_round_trip_shapes_for_every_downsampling_factor(regularizer: str, m: int) -> None:
    f, c = 2 ** m, 3
    ae = tiny(regularizer, f, c, channel_mult=(1,) * (m + 1)).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = ae.encode(x)
        assert z.shape == (2, c, 32 // f, 32 // f)
        assert ae.latent_shape(32) == (c, 32 // f, 32 // f)
        assert ae.decode(z).shape == x.shape


def test_bad_factor_and_bad_image_size_are_explained() -> None:
    with pytest.raises(ValueError, match="2\\^m"):
        AutoencoderConfig(downsample_factor=3)
    with pytest.raises(ValueError, match="2\\^m"):
        AutoencoderConfig(downsample_factor=64)
    with pytest.raises(ValueError, match="channel_mult"):
        AutoencoderConfig(downsample_factor=4, channel_mult=(1, 2))
    with pytest.raises(ValueError, match="not divisible by the autoencoder's f=8"):
        tiny(f=8).encode(torch.zeros(1, 3, 20, 20))


def test_diagonal_gaussian_matches_torch_distributions() -> None:
    torch.manual_seed(1)
    moments = torch.randn(4, 6, 5, 5)
    post = DiagonalGaussian(moments)
    mean, logvar = moments.chunk(2, dim=1)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(post.kl(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(post.mode(), mean)
    noise = torch.randn_like(mean)
    torch.testing.assert_close(post.sample(noise), mean + (0.5 * logvar).exp() * noise)


def test_kl_autoencoder_encode_is_posterior_mode_times_scale() -> None:
    ae = tiny("kl").eval()
    ae.config.scale_factor = 2.5
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        mode = ae.posterior(x).mode()
        torch.testing.assert_close(ae.encode(x), 2.5 * mode)
        torch.testing.assert_close(ae.decode(ae.encode(x)), ae.decode_unscaled(mode))
        out = ae(x)
    assert out.regularization.ndim == 0 and float(out.regularization) > 0


def test_logvar_init_starts_the_kl_posterior_narrow() -> None:
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        wide = tiny("kl").posterior(x)
        narrow = tiny("kl", logvar_init=-6.0).posterior(x)
    torch.testing.assert_close(narrow.mean, wide.mean)           # same weights; only the log-variance bias moves
    torch.testing.assert_close(narrow.logvar, wide.logvar - 6.0 - tiny("kl").quant_conv.bias[3:].view(1, 3, 1, 1))
    assert float(narrow.std.max()) < 0.1 < float(wide.std.min())


def clustered(n: int, centres: torch.Tensor, spread: float = 0.01) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, len(centres), (n,), generator=g)
    return centres[idx] + spread * torch.randn(n, centres.shape[1], generator=g)


def test_ema_codebook_tracks_the_data_and_uses_its_codes() -> None:
    torch.manual_seed(2)
    centres = torch.randn(8, 4) * 3
    vq = VectorQuantizer(size=16, dim=4, beta=0.25, update="ema", decay=0.8).train()
    z = clustered(512, centres).T.reshape(4, 32, 16)[None]
    before = F_mse(vq.eval()(z).latents, z)                       # the untrained (tiny uniform) codebook
    vq.train()
    for _ in range(60):
        vq(clustered(256, centres).T.reshape(4, 16, 16)[None])
    q = vq.eval()(z)
    after = F_mse(q.latents, z)
    assert after < 0.03 * z.var() and after < 0.03 * before        # codes sit on the data
    usage = codebook_usage(q.indices, 16)
    assert usage["used_fraction"] >= 0.75 and usage["perplexity"] > 6.0   # no collapse onto a few codes
    torch.testing.assert_close(q.loss, 0.25 * after, rtol=1e-4, atol=1e-7)


def test_dead_codes_are_restarted_at_encoder_outputs() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(size=8, dim=2, beta=0.25, update="ema", decay=0.5).train()
    vq(torch.randn(1, 2, 8, 8))                                    # initialises from data
    vq.codebook.data[3] = 100.0                                    # a code no input will ever pick
    vq.embed_sum[3] = 100.0
    for _ in range(10):
        vq(torch.randn(1, 2, 8, 8))
    assert vq.codebook.abs().max() < 10.0


def F_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).mean()


def test_straight_through_codebook_gets_gradients_and_encoder_gets_straight_through() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(size=8, dim=2, beta=0.25, update="straight_through", decay=0.99)
    z = torch.randn(1, 2, 4, 4, requires_grad=True)
    q = vq(z)
    (q.latents.sum() + q.loss).backward()
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0
    # d(latents)/dz is the identity (straight-through), plus the commitment term's gradient.
    expected = torch.ones_like(z) + 2 * 0.25 * (z - vq.codebook[q.indices].permute(0, 3, 1, 2)).detach() / z.numel()
    torch.testing.assert_close(z.grad, expected)


def test_vq_decode_quantises_first() -> None:
    ae = tiny("vq", codebook_size=16).eval()
    z = torch.randn(2, 3, 4, 4)
    codes = ae.quantizer.codebook[ae.quantizer(z).indices].permute(0, 3, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(ae.decode(z), ae.decoder(ae.post_quant_conv(codes)))


def test_scale_factor_gives_unit_variance_latents() -> None:
    ae = tiny("kl").eval()
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(8, 3, 16, 16, generator=g) * 2 - 1 for _ in range(3)]
    ae.config.scale_factor = compute_scale_factor(ae, batches)
    with torch.no_grad():
        z = torch.cat([ae.encode(b) for b in batches])
    assert abs(float(z.std()) - 1.0) < 1e-3


@pytest.mark.parametrize("regularizer", ["kl", "vq"])
def test_checkpoint_round_trip_keeps_weights_and_scale(tmp_path, regularizer: str) -> None:
    ae = tiny(regularizer, codebook_size=16).eval()
    ae.config.scale_factor = 0.37
    save_autoencoder(ae, tmp_path / "ae", training={"steps": 1})
    loaded = load_autoencoder(tmp_path / "ae")
    assert loaded.scale_factor == pytest.approx(0.37)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.encode(x)), ae.decode(ae.encode(x)))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_autoencoder(tmp_path / "missing")


def test_discriminator_is_trained_only_by_its_own_loss() -> None:
    """One optimizer step for both networks: the generator's adversarial term must not push the
    discriminator, and the discriminator's term must not reach the autoencoder."""
    ae = tiny("kl").train()
    loss_fn = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0.0, disc_start=0, disc_weight=0.5))
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    torch.manual_seed(5)
    out = loss_fn(ae, x, step=10)
    out.loss.backward()
    disc_grads = [p.grad.clone() for p in loss_fn.discriminator.parameters()]
    assert {"g_loss", "d_loss", "d_weight"} <= set(out.logs)

    # the discriminator's gradient is exactly that of the hinge loss on detached reconstructions
    loss_fn.zero_grad()
    torch.manual_seed(5)
    recon = ae(x).reconstruction.detach()
    real, fake = loss_fn.discriminator(x), loss_fn.discriminator(recon)
    (0.5 * (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())).backward()
    for got, want in zip(disc_grads, (p.grad for p in loss_fn.discriminator.parameters())):
        torch.testing.assert_close(got, want)


def test_discriminator_waits_for_warm_up() -> None:
    ae = tiny("kl").train()
    loss_fn = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0.0, disc_start=100))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert "d_loss" not in loss_fn(ae, x, step=99).logs
    assert "d_loss" in loss_fn(ae, x, step=100).logs
    patch = PatchDiscriminator(3, 8, 2)(x)
    assert patch.shape[:2] == (2, 1) and patch.shape[-1] > 1      # one logit per patch


def test_lpips_vgg_term_uses_the_offline_weights() -> None:
    loss_fn = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=1.0))
    assert "vgg16_imagenet_features" in loss_fn.perceptual.weights_source
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    noise = torch.randn(2, 3, 32, 32, generator=g)
    same, _ = loss_fn.reconstruction_terms(x, x)
    _, small = loss_fn.reconstruction_terms(x, x + 0.05 * noise)
    _, large = loss_fn.reconstruction_terms(x, x + 0.5 * noise)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    assert 0 < small["lpips"] < large["lpips"]


def squares(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """A coloured square on a coloured background per image."""
    x = (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1).expand(n, 3, size, size).clone()
    for i in range(n):
        r, c = torch.randint(0, size // 2, (2,), generator=g).tolist()
        x[i, :, r:r + size // 2, c:c + size // 2] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return x


@pytest.mark.parametrize("regularizer", ["kl", "vq"])
def test_a_few_steps_of_training_reduce_the_reconstruction_error(regularizer: str) -> None:
    ae = tiny(regularizer, f=2, codebook_size=32).train()
    loss_fn = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0.0))
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    x = squares(4, 16, torch.Generator().manual_seed(0))
    logs = []
    for step in range(40):
        out = loss_fn(ae, x, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        logs.append(out.logs)
    assert logs[-1]["pixel_l1"] < 0.75 * logs[0]["pixel_l1"]
    assert all(math.isfinite(log["loss"]) for log in logs)
