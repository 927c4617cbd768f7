"""DiT (Peebles & Xie 2023): adaLN-Zero identity at initialisation, the paper's presets and Gflops."""
from __future__ import annotations

import pytest
import torch

from models.networks.dit import (BLOCKS, DIT_PRESETS, DiT, DiTBlock, count_parameters, dit_config, forward_flops, gflops,
                        sincos_pos_embed)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**kw) -> DiT:
    torch.manual_seed(0)
    return DiT(dit_config("tiny", input_size=8, in_channels=4, num_classes=5, **kw))


def test_fresh_adaln_zero_block_is_the_identity() -> None:
    torch.manual_seed(0)
    block = DiTBlock(64, 4, 4.0, "adaln_zero")
    x, cond = torch.randn(3, 16, 64), torch.randn(3, 64)
    torch.testing.assert_close(block(x, cond), x, rtol=0, atol=0)
    model = tiny()                                       # and every block of a fresh model
    tokens = torch.randn(2, model.config.num_patches, model.config.hidden_size)
    for inner in model.blocks:
        torch.testing.assert_close(inner(tokens, torch.randn(2, model.config.hidden_size)), tokens, rtol=0, atol=0)
    # ...and stops being one once its modulation is trained away from zero.
    torch.nn.init.normal_(block.modulation[-1].weight, std=0.1)
    assert not torch.allclose(block(x, cond), x)


@pytest.mark.parametrize("block", ["adaln", "cross_attention", "in_context"])
def test_other_block_designs_are_not_the_identity(block: str) -> None:
    torch.manual_seed(0)
    layer = DiTBlock(64, 4, 4.0, block)
    x, cond, tokens = torch.randn(2, 16, 64), torch.randn(2, 64), torch.randn(2, 2, 64)
    assert not torch.allclose(layer(x, cond, tokens), x)


@pytest.mark.parametrize("block", BLOCKS)
def test_fresh_model_outputs_zeros_with_learned_sigma_channels(block: str) -> None:
    model = tiny(block=block)
    x = torch.randn(3, 4, 8, 8)
    out = model(x, torch.tensor([0.0, 10.0, 999.0]), torch.tensor([0, 4, -1]))
    assert out.shape == (3, 8, 8, 8)                     # learned diagonal covariance: 2C channels
    assert torch.count_nonzero(out) == 0


def test_patchify_then_unpatchify_is_lossless() -> None:
    model = tiny(learn_sigma=False, patch_size=4)
    p, g = 4, 2
    x = torch.randn(2, 4, 8, 8)
    tokens = x.reshape(2, 4, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(2, g * g, p * p * 4)
    torch.testing.assert_close(model.unpatchify(tokens), x)


def test_null_label_is_the_label_minus_one_and_labels_matter_after_training() -> None:
    model = tiny()
    for p in model.parameters():                         # leave the zero init: any non-zero weights
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([5.0, 5.0])
    torch.testing.assert_close(model(x, t, torch.tensor([-1, -1])), model(x, t, None))
    assert not torch.allclose(model(x, t, torch.tensor([0, 1])), model(x, t, torch.tensor([2, 3])))


def test_unconditional_model_refuses_labels_and_bad_shapes_are_explained() -> None:
    model = DiT(dit_config("tiny", input_size=8, num_classes=None))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, 4, 8, 8), torch.zeros(1), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="expects inputs"):
        model(torch.randn(1, 4, 16, 16), torch.zeros(1))
    with pytest.raises(ValueError, match="patch_size"):
        dit_config("tiny", patch_size=3)
    with pytest.raises(ValueError, match="unknown"):
        dit_config("DiT-XXL/2")


def test_sincos_position_embedding_is_distinct_per_position() -> None:
    pos = sincos_pos_embed(32, 4)
    assert pos.shape == (16, 32)
    assert torch.cdist(pos, pos).add(torch.eye(16) * 10).min() > 0.1


# Peebles & Xie 2023 for 256x256 images = 32x32x4 latents: parameters (counting, as the official
# code does, the fixed sin-cos position embedding) and Gflops (multiply-adds) of Table 4.
PAPER_PARAMS = {"DiT-S/2": 33.0e6, "DiT-B/2": 130.5e6, "DiT-L/2": 458.1e6, "DiT-XL/2": 675.1e6}
PAPER_GFLOPS = {"DiT-S/2": 6.06, "DiT-B/2": 23.01, "DiT-L/2": 80.71, "DiT-XL/2": 118.64,
                "DiT-XL/4": 29.05, "DiT-XL/8": 7.39}


@pytest.mark.parametrize("name", sorted(PAPER_GFLOPS))
def test_presets_match_the_paper_in_parameters_and_gflops(name: str) -> None:
    with torch.device("meta"):
        model = DiT(dit_config(name, input_size=32, in_channels=4, num_classes=1000))
    if name in PAPER_PARAMS:
        counted = count_parameters(model) + model.pos_embed.numel()
        assert counted == pytest.approx(PAPER_PARAMS[name], rel=2e-3)
    assert gflops(model, (4, 32, 32)) == pytest.approx(PAPER_GFLOPS[name], rel=5e-3)


def test_forward_flops_count_two_per_multiply_add_and_the_registry_is_complete() -> None:
    model = tiny()
    assert forward_flops(model, (4, 8, 8)) == pytest.approx(2e9 * gflops(model, (4, 8, 8)))
    assert set(DIT_PRESETS) >= {f"DiT-{s}/{p}" for s in ("S", "B", "L", "XL") for p in (2, 4, 8)} | {"tiny"}


def test_one_training_step_moves_every_block_design() -> None:
    for block in BLOCKS:
        model = tiny(block=block)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        x, t, y = torch.randn(4, 4, 8, 8), torch.full((4,), 100.0), torch.tensor([0, 1, 2, 3])
        for _ in range(3):   # zero output layer, then zero gates: gradients reach attention at step 3
            loss = (model(x, t, y)[:, :4] - x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert model.blocks[0].attn.q.weight.grad.abs().sum() > 0, block
