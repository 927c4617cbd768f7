"""The two regularisers of LDM's autoencoders (Rombach et al. 2022, sec. 3): the KL-reg diagonal
Gaussian posterior and the VQ-reg codebook (van den Oord et al. 2017)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))), the KL-reg posterior."""

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)  # as LDM, for numerical safety
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, noise: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.randn_like(self.mean) if noise is None else noise
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over latent dimensions."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


@dataclass
class Quantized:
    latents: torch.Tensor       # quantised, with straight-through gradients to the encoder
    loss: torch.Tensor          # commitment (+ codebook loss without EMA)
    indices: torch.Tensor       # (N, H, W) code indices


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook lookup with straight-through gradients.

    `ema`: codebook vectors are exponential moving averages of their assigned encoder outputs
    (VQ-VAE appendix A.1, Laplace-smoothed counts), initialised from the first training batch,
    and codes unused for long are restarted at random encoder outputs (Dhariwal et al. 2020,
    Jukebox) so small codebooks do not collapse. `straight_through`: the codebook is learned
    by the codebook loss ||sg(z) - e||^2 instead.
    """

    def __init__(self, size: int, dim: int, beta: float, update: str, decay: float,
                 eps: float = 1e-5, dead_threshold: float = 0.03) -> None:
        super().__init__()
        self.size, self.dim, self.beta, self.update, self.decay, self.eps = size, dim, beta, update, decay, eps
        self.dead_threshold = dead_threshold
        init = torch.empty(size, dim).uniform_(-1.0 / size, 1.0 / size)
        if update == "ema":   # a buffer: set by the moving averages, never by the optimizer
            self.register_buffer("codebook", init)
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed_sum", init.clone())
        self.register_buffer("initialized", torch.tensor(False))

    def lookup(self, flat: torch.Tensor) -> torch.Tensor:
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
                     + self.codebook.pow(2).sum(1)[None])
        return distances.argmin(1)

    @staticmethod
    def _pick(flat: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
        return flat[torch.randint(0, flat.shape[0], (k,), generator=generator).to(flat.device)]

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor, generator: torch.Generator | None) -> None:
        if not bool(self.initialized):
            chosen = self._pick(flat, self.size, generator)
            self.codebook.data.copy_(chosen)
            self.embed_sum.copy_(chosen)
            self.cluster_size.fill_(1.0)
            self.initialized.fill_(True)
            indices = self.lookup(flat)
        onehot = F.one_hot(indices, self.size).type_as(flat)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        counts = (self.cluster_size + self.eps) / (total + self.size * self.eps) * total
        self.codebook.data.copy_(self.embed_sum / counts[:, None])
        dead = self.cluster_size < self.dead_threshold
        if dead.any():
            replacement = self._pick(flat, int(dead.sum()), generator)
            self.codebook.data[dead] = replacement
            self.embed_sum[dead] = replacement
            self.cluster_size[dead] = 1.0

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> Quantized:
        """Quantise (N, dim, H, W) latents. In training with EMA updates the codebook moves;
        its random (re)initialisations draw from `generator` (reproducible, resumable training)."""
        n, d, h, w = z.shape
        if d != self.dim:
            raise ValueError(f"vector quantiser expects {self.dim} latent channels, got {d}")
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        indices = self.lookup(flat.detach())
        if self.training and self.update == "ema":
            self._ema_update(flat.detach().float(), indices, generator)
            indices = self.lookup(flat.detach())
        quantized = self.codebook[indices].view(n, h, w, d).permute(0, 3, 1, 2)
        loss = self.beta * F.mse_loss(z, quantized.detach())
        if self.update == "straight_through":
            loss = loss + F.mse_loss(quantized, z.detach())
        quantized = z + (quantized - z).detach()  # straight-through estimator
        return Quantized(quantized, loss, indices.view(n, h, w))


def codebook_usage(indices: torch.Tensor, size: int) -> dict[str, float]:
    """Fraction of codes used and the perplexity of the code distribution in `indices`."""
    counts = torch.bincount(indices.flatten(), minlength=size).float()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return {"used_fraction": float((counts > 0).float().mean()), "perplexity": float(entropy.exp())}
