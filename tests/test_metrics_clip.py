"""CLIP score: the formula, the open_clip embedder (on a randomly initialised, architecture-
identical ViT-B-32: no CLIP weights exist offline), and the offline default `shapes-clip`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from bench.config import DataConfig, MetricsConfig
from bench.metrics import build_metrics
from bench.metrics.clip_score import ClipScore, ClipUnavailableError, OpenClipEmbedder, build_embedder
from bench.weights import WeightsNotFoundError
from models.core.interface import SampleBatch


class FixedEmbedder:
    """Embeddings chosen by hand: image i and prompt i at a known angle."""
    name = "fixed"

    def __init__(self, cosines: list[float]) -> None:
        self.cosines = cosines

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[1.0, 0.0]]).repeat(len(images), 1) * 3.0      # not normalised on purpose

    def encode_texts(self, prompts: list[str]) -> torch.Tensor:
        c = torch.tensor([self.cosines[int(p)] for p in prompts])
        return torch.stack([c, (1 - c ** 2).sqrt()], dim=1)

    def describe(self) -> dict:
        return {"clip_model": "fixed"}


def test_score_is_100_times_clamped_cosine_with_a_ci() -> None:
    cosines = [0.3, -0.2, 0.25, 0.31]
    score = ClipScore(FixedEmbedder(cosines))
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    score.update(images[:2], ["0", "1"])
    score.update(images[2:], ["2", "3"])
    row = score.compute()
    expected = torch.tensor([30.0, 0.0, 25.0, 31.0])       # negative cosine counts as 0
    assert row.value == pytest.approx(float(expected.mean()), abs=1e-4)
    half = 1.959964 * float(expected.std()) / 2
    assert (row.ci_low, row.ci_high) == pytest.approx((row.value - half, row.value + half), abs=1e-4)
    assert row.n == 4 and row.metric == "clip_score[fixed]"


def test_ci_never_goes_below_zero() -> None:
    """Mostly unaligned pairs (cosine <= 0 scores 0): the normal CI of the mean would dip below 0,
    which no mean of non-negative scores can."""
    score = ClipScore(FixedEmbedder([0.4, -0.5, -0.1, -0.3]))
    score.update(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), ["0", "1", "2", "3"])
    row = score.compute()
    assert row.value == pytest.approx(10.0, abs=1e-4)
    half = 1.959964 * float(torch.tensor([40.0, 0.0, 0.0, 0.0]).std()) / 2
    assert row.ci_low == 0.0 and row.ci_high == pytest.approx(10.0 + half, abs=1e-4) and 10.0 - half < 0


def test_prompts_are_required() -> None:
    with pytest.raises(ValueError, match="needs a prompt per image"):
        ClipScore(FixedEmbedder([0.1])).update(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), None)


@pytest.fixture(scope="module")
def random_vit_b32() -> OpenClipEmbedder:
    import open_clip
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    return OpenClipEmbedder(model, "ViT-B-32", None)


def test_open_clip_embedder_preprocesses_like_open_clip(random_vit_b32: OpenClipEmbedder) -> None:
    import open_clip
    from PIL import Image
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 48, 64), generator=g, dtype=torch.uint8)
    ours = random_vit_b32.preprocess(images)
    pil_transform = open_clip.image_transform(224, is_train=False)
    theirs = torch.stack([pil_transform(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images])
    assert ours.shape == theirs.shape == (2, 3, 224, 224)
    # torchvision's uint8 antialiased bicubic follows PIL's up to rounding (1/255 / std ~ 0.015)
    assert (ours - theirs).abs().mean() < 0.01 and (ours - theirs).abs().max() < 0.1


def test_open_clip_embedder_scores_image_prompt_pairs(random_vit_b32: OpenClipEmbedder) -> None:
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (3, 3, 32, 32), generator=g, dtype=torch.uint8)
    prompts = ["a red circle", "a blue square", "a green triangle"]
    score = ClipScore(random_vit_b32)
    score.update(images, prompts)
    row = score.compute()
    model = random_vit_b32.model
    with torch.no_grad():
        img = model.encode_image(random_vit_b32.preprocess(images), normalize=True)
        txt = model.encode_text(random_vit_b32.tokenizer(prompts), normalize=True)
    expected = (100 * (img * txt).sum(-1).clamp(min=0)).mean()
    assert row.value == pytest.approx(float(expected), abs=1e-3)
    assert row.metric == "clip_score[ViT-B-32/random-init]"
    assert row.details["clip_model"] == "ViT-B-32"


def test_open_clip_model_without_pretrained_weights_is_refused() -> None:
    with pytest.raises(ClipUnavailableError, match="needs metrics.clip_pretrained"):
        build_embedder("ViT-B-32", None)


def test_open_clip_tag_offline_names_the_places_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFFBENCH_WEIGHTS", raising=False)
    monkeypatch.setenv("DIFFBENCH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFoundError, match="(?s)open_clip:ViT-B-32:laion2b_s34b_b79k.*cache:huggingface.*clip_pretrained"):
        build_embedder("ViT-B-32", "laion2b_s34b_b79k")


def test_missing_reference_clip_module_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "models.networks.reference_clip", None)     # as if the module did not exist
    with pytest.raises(ClipUnavailableError, match=r"models/networks/reference_clip.py.*clip_pretrained"):
        build_embedder("shapes-clip", None)


def test_reference_clip_runs_under_its_own_metric_name() -> None:
    try:
        embedder = build_embedder("shapes-clip", None)
    except FileNotFoundError as err:          # not trained yet in this checkout: the message says how
        assert "train_reference_clip" in str(err)
        pytest.skip(f"shapes-clip checkpoint not present: {err}")
    metrics = build_metrics(MetricsConfig(names=["clip_score"]), DataConfig(), clip_embedder=embedder)
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    metrics.update(SampleBatch(images, torch.arange(2), ["a red circle", "a blue square"], None, {}, {}))
    row = metrics.compute()[0]
    assert row.metric == "clip_score[shapes-clip]" and "not OpenAI/LAION" in row.details.get("clip_note", "")
    assert row.details["weights"]["sha256"]
