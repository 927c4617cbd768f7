"""Adapters through peft (models/networks/adapters.py) on the shipped text-conditioned pipeline:
parameter counts agree with peft's, scale 0 and a fresh adapter give the base images exactly,
merged and unmerged adapters give the same images, and the saved layout loads back; adapter
training through bench.train (adapter=...) on the `concept` set, and loading as pipeline params."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf
from peft import get_peft_model

from bench.config import ConfigError, DataConfig, HardwareConfig, PipelineConfig
from bench.data import build_source
from bench.data.prompts import KINDS
from bench.training.config import AdapterConfig, TrainingConfig, TrainRunConfig
from bench.training.trainer import train
from models.core.interface import SampleRequest
from models.core.registry import build_pipeline
from models.families.adapted import build_adapted_pipeline
from models.networks import adapters as A

pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tiny models: OpenMP spinning only slows them
PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def shipped():
    return build_pipeline("imagen", "imagen_shapes", "imagen_shapes16_32")


def fresh_copy(pipe, text: bool = False):
    """The same pipeline with its own copies of the networks (adapters inject in place); the
    22 M-parameter text encoder is shared unless `text` (targets without text never touch it)."""
    clone = copy.copy(pipe)
    clone.nets = copy.deepcopy(pipe.nets)
    if text:
        clone.text_encoder = copy.deepcopy(pipe.text_encoder)
    return clone


def images(pipe) -> torch.Tensor:
    request = SampleRequest(n=2, prompts=PROMPTS, steps=2, seed=3, guidance_scale=2.0, batch_size=2)
    return torch.cat([b.images for b in pipe.sample(request)])


def randomise(networks) -> None:
    """Give every adapter tensor non-zero values, so the adapter changes the output."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for net in networks.values():
            for name, p in net.named_parameters():
                if A.is_adapter_parameter(name) and "magnitude" not in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


@pytest.mark.parametrize("variant", A.VARIANTS)
@pytest.mark.parametrize("targets", A.TARGETS)
def test_trainable_parameters_equal_peft_count(shipped, variant, targets) -> None:
    spec = A.AdapterSpec(variant=variant, rank=4, targets=targets)
    # the 22 M-parameter text encoder is copied only where the targets adapt it (test speed)
    originals = {r: n for r, n in shipped.networks().items() if r != "text_encoder" or "text" in targets}
    nets = {r: copy.deepcopy(n) for r, n in originals.items()}
    configs = A.attach(nets, spec)
    ours = A.trainable_parameters(nets)
    theirs = 0
    for role, net in originals.items():
        modules = A.target_modules(net, targets, A.role_kind(role))
        if modules:
            theirs += get_peft_model(copy.deepcopy(net), spec.peft_config(modules)).get_nb_trainable_parameters()[0]
    assert ours == theirs > 0
    assert ("text_encoder" in configs) == A.adapts_text(targets)
    if variant == "lora":   # r (in + out) per adapted Linear (Hu et al. 2021), no other trainable tensor
        expected = sum(4 * (m.in_features + m.out_features) for r, n in shipped.networks().items()
                       for name, m in n.named_modules()
                       if name in A.target_modules(n, targets, A.role_kind(r)) and isinstance(m, nn.Linear))
        if targets != "all":
            assert ours == expected


def test_attention_targets_are_the_attention_projections(shipped) -> None:
    base = A.target_modules(shipped.nets["base"], "attention", "denoiser")
    assert base and all(name.rsplit(".", 1)[-1] in ("q", "kv", "out") and "attn" in name for name in base)
    text = A.target_modules(shipped.text_encoder, "attention+text", "text")
    assert len(text) == 4 * 6       # MiniLM: 6 layers x (query, key, value, output.dense)
    assert A.target_modules(shipped.text_encoder, "attention", "text") == []
    everything = A.target_modules(shipped.nets["base"], "all", "denoiser")
    assert set(base) < set(everything) and any("conv" in n for n in everything)
    # attention+embed: the attention projections plus the timestep / pooled-text embedding path
    embed = set(A.target_modules(shipped.nets["base"], "attention+embed", "denoiser")) - set(base)
    assert {"time_embed.0", "time_embed.2", "extra_embed.0", "extra_embed.2"} < embed
    assert embed - {"time_embed.0", "time_embed.2", "extra_embed.0", "extra_embed.2"} == {
        n for n in everything if n.endswith(".res.emb")}
    assert A.target_modules(shipped.text_encoder, "attention+embed", "text") == []
    assert len(A.target_modules(shipped.text_encoder, "attention+embed+text", "text")) == 4 * 6


@pytest.mark.parametrize("variant", A.VARIANTS)
def test_fresh_adapter_and_scale_zero_give_the_base_images(shipped, variant) -> None:
    reference = images(shipped)
    pipe = fresh_copy(shipped)
    A.attach(pipe.networks(), A.AdapterSpec(variant=variant, rank=2, targets="attention"))
    if variant != "dora":    # DoRA's renormalisation by ||W0|| rounds; LoRA/LoHa/LoKr add an exact zero
        assert torch.equal(images(pipe), reference)
    randomise(pipe.networks())
    assert not torch.equal(images(pipe), reference)
    A.set_scale(pipe.networks(), 0.0)
    assert torch.equal(images(pipe), reference)


@pytest.mark.parametrize("variant", A.VARIANTS)
def test_merge_and_unmerge_give_the_same_images(shipped, variant) -> None:
    pipe = fresh_copy(shipped)
    nets = pipe.networks()
    A.attach(nets, A.AdapterSpec(variant=variant, rank=2, targets="all"))
    randomise(nets)
    A.set_scale(nets, 0.5)
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([300.0, 700.0])
    cond = {"context": torch.randn(2, 20, 384), "extra": torch.randn(2, 384)}
    with torch.no_grad():
        unmerged_out, unmerged = nets["base"](x, t, **cond), images(pipe)
        A.merge(nets)
        assert A.is_merged(nets)
        merged_out, merged = nets["base"](x, t, **cond), images(pipe)
        A.unmerge(nets)
        assert not A.is_merged(nets)
        again = nets["base"](x, t, **cond)
    torch.testing.assert_close(merged_out, unmerged_out, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(again, unmerged_out, atol=1e-5, rtol=1e-5)
    assert (merged.int() - unmerged.int()).abs().max() <= 1     # uint8 rounding at most


def test_save_and_load_round_trip_in_peft_layout(shipped, tmp_path) -> None:
    pipe = fresh_copy(shipped, text=True)
    spec = A.AdapterSpec(variant="lora", rank=2, targets="attention+text")
    configs = A.attach(pipe.networks(), spec)
    randomise(pipe.networks())
    out = A.save_adapter(tmp_path / "ad", pipe.networks(), configs, spec, {"base": "imagen_shapes16_32"})
    for role in ("base", "sr1", "text_encoder"):
        assert (out / role / "adapter_model.safetensors").is_file()
        assert json.loads((out / role / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert A.adapter_size_bytes(out) > 0
    adapted = images(pipe)
    other = fresh_copy(shipped, text=True)
    record = A.load_adapter(out, other.networks(), scale=1.0)
    assert record["spec"]["rank"] == 2 and record["base"] == "imagen_shapes16_32"
    assert torch.equal(images(other), adapted)
    merged = fresh_copy(shipped, text=True)
    A.load_adapter(out, merged.networks(), scale=1.0, merged=True)
    assert (images(merged).int() - adapted.int()).abs().max() <= 1


def test_bad_adapter_inputs_say_what_to_do(shipped, tmp_path) -> None:
    with pytest.raises(ValueError, match="adapter.variant"):
        A.AdapterSpec(variant="ia3")
    with pytest.raises(ValueError, match="adapter.targets"):
        A.AdapterSpec(targets="mlp")
    with pytest.raises(FileNotFoundError, match="adapter 'nope' not found"):
        A.load_adapter("nope", shipped.networks())
    with pytest.raises(ValueError, match="scale"):
        A.set_scale({}, float("nan"))


# --------------------------------------------------------------------------- training and loading

RECIPE = Path(__file__).resolve().parent.parent / "conf" / "train" / "adapter_concept.yaml"


def concept_run(tmp_path, adapter: AdapterConfig, steps: int = 3, checkpoint_every: int = 2) -> TrainRunConfig:
    recipe = OmegaConf.merge(OmegaConf.structured(TrainingConfig), OmegaConf.load(RECIPE),
                             {"steps": steps, "batch_size": 4, "checkpoint_every": checkpoint_every, "log_every": 1,
                              "export": str(tmp_path / "export")})
    return TrainRunConfig(pipeline=PipelineConfig(name="imagen_shapes", family="imagen"),
                          data=DataConfig(name="concept", resolution=32, n=8), hardware=HardwareConfig(device="cpu"),
                          train=OmegaConf.to_object(recipe), adapter=adapter, quiet=True)


def test_adapter_training_exports_peft_layout_and_loads_as_a_pipeline_param(shipped, tmp_path) -> None:
    cfg = concept_run(tmp_path, AdapterConfig(variant="lora", rank=2, targets="attention"))
    summary = train(cfg, tmp_path / "run")
    nets = {r: copy.deepcopy(n) for r, n in shipped.nets.items()}
    A.attach(nets, A.AdapterSpec(variant="lora", rank=2, targets="attention"))
    assert summary["trainable_parameters"] == A.trainable_parameters(nets)
    out = Path(summary["export"])
    record = json.loads((out / "adapter.json").read_text())
    assert record["base"] == "imagen_shapes16_32" and record["training"]["steps"] == 3
    assert summary["export_bytes"] == A.adapter_size_bytes(out) < 100_000
    assert (tmp_path / "run" / "adapter_lora_r2_attention" / "checkpoints").is_dir()   # its own resumable dir
    # Loaded by name as pipeline params: scale 0 is the base model; the trained adapter changes the images
    base = images(shipped)
    off = build_adapted_pipeline("imagen", "x", "imagen_shapes16_32", adapter=str(out), adapter_scale=0.0)
    assert torch.equal(images(off), base)
    on = build_adapted_pipeline("imagen", "x", "imagen_shapes16_32", adapter=str(out))
    merged = build_adapted_pipeline("imagen", "x", "imagen_shapes16_32", adapter=str(out), adapter_merge=True)
    adapted = images(on)
    assert not torch.equal(adapted, base)
    assert (images(merged).int() - adapted.int()).abs().max() <= 1
    assert on.adapter["spec"]["rank"] == 2
    # Only the adapter trained: the frozen base weights in the run's checkpoint equal the shipped ones
    for role in ("base", "sr1"):
        for name, p in shipped.nets[role].named_parameters():
            wrapped = dict(on.nets[role].named_parameters())
            key = name if name in wrapped else name.rsplit(".", 1)[0] + ".base_layer." + name.rsplit(".", 1)[1]
            assert torch.equal(wrapped[key], p), name


def test_text_encoder_adapter_gets_gradients_and_frozen_encoder_builds_no_graph(shipped) -> None:
    encoder = copy.deepcopy(shipped.text_encoder)
    assert not encoder.encode(PROMPTS).sequence.requires_grad          # frozen: no graph
    A.attach({"text_encoder": encoder}, A.AdapterSpec(variant="lora", rank=2, targets="attention+text"))
    out = encoder.encode(PROMPTS)
    (out.sequence.square().mean() + out.pooled.square().mean()).backward()
    grads = {n: p.grad for n, p in encoder.named_parameters() if p.requires_grad}
    assert len(grads) == 2 * 24 and all("lora_" in n for n in grads)
    # B starts at zero, so A's gradient is zero at step 0 and B's is not (Hu et al. 2021)
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
    with torch.no_grad():                                               # sampling: no graph either way
        assert not encoder.encode(PROMPTS).sequence.requires_grad


def test_text_encoder_adapter_trains_through_bench_train(tmp_path) -> None:
    # one resumable state at the end: it holds the (frozen) 22 M-parameter encoder too
    cfg = concept_run(tmp_path, AdapterConfig(variant="lora", rank=2, targets="attention+text"), checkpoint_every=3)
    summary = train(cfg, tmp_path / "run")
    out = Path(summary["export"])
    from safetensors.torch import load_file
    text = load_file(str(out / "text_encoder" / "adapter_model.safetensors"))
    assert len(text) == 2 * 24
    # trained: the text encoder's B matrices moved off their zero start
    assert all(v.abs().sum() > 0 for k, v in text.items() if "lora_B" in k)
    assert json.loads((out / "adapter.json").read_text())["roles"]["text_encoder"]["layers"] == 24


def test_dora_on_convolutions_trains_with_channels_last(tmp_path) -> None:
    """peft's DoRA reads its conv factors with .view(): the trainer converts to channels_last before
    injecting the adapter, so the adapter's own tensors stay contiguous (this crashed before)."""
    cfg = concept_run(tmp_path, AdapterConfig(variant="dora", rank=2, targets="all"), steps=2, checkpoint_every=2)
    assert cfg.train.channels_last
    summary = train(cfg, tmp_path / "run")
    assert summary["steps"] == 2 and summary["final_loss"] == summary["final_loss"]


def test_adapter_training_refuses_what_it_cannot_do(tmp_path) -> None:
    cfg = concept_run(tmp_path, AdapterConfig(variant="dora"))
    cfg.train.init_from = None
    with pytest.raises(ValueError, match="train.init_from"):
        train(cfg, tmp_path / "b")
    with pytest.raises(ValueError, match="adapter_scale"):
        build_adapted_pipeline("imagen", "x", "imagen_shapes16_32", adapter_scale=0.5)
    with pytest.raises(ConfigError, match="adapter.variant"):
        AdapterConfig(variant="ia3")


def test_concept_set_is_new_and_leaves_shapes_unchanged() -> None:
    concept = build_source(DataConfig(name="concept", resolution=32, n=6), split="test")
    shapes = build_source(DataConfig(name="shapes", resolution=32, n=6), split="test")
    assert "heart" not in KINDS
    c, s = next(concept.iter_batches(6)), next(shapes.iter_batches(6))
    assert all(" heart " in caption for caption in c.captions) and c.labels is None
    # item i keeps shapes item i's attributes but the kind: same caption with the kind swapped
    for cc, sc in zip(c.captions, s.captions):
        words_c, words_s = cc.split(), sc.split()
        assert [w for w in words_c if w != "heart"] == [w for w in words_s if w not in KINDS]
    assert not torch.equal(c.images, s.images)
    assert concept.fingerprint_fields() != shapes.fingerprint_fields()
