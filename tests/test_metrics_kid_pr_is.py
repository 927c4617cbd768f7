"""KID, precision/recall and IS from features, against torch-fidelity's own functions."""
from __future__ import annotations

import pytest
import torch

from bench.metrics.inception import FeatureBank
from bench.metrics.inception_score import inception_score
from bench.metrics.kid import kid_from_features, kid_value
from bench.metrics.precision_recall import precision_recall, precision_recall_values


def features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g) + shift).float()   # non-negative, like pool3 features


def test_kid_matches_torch_fidelity_with_same_subsets() -> None:
    from torch_fidelity.metric_kid import kid_features_to_metric
    gen, ref = features(150, 64, 0, 0.05), features(120, 64, 1)
    mean, std, m = kid_from_features(gen, ref, subsets=20, subset_size=50, seed=2020)
    theirs = kid_features_to_metric(gen, ref, kid_subsets=20, kid_subset_size=50, rng_seed=2020, verbose=False)
    assert m == 50
    assert mean == pytest.approx(theirs["kernel_inception_distance_mean"], abs=1e-6)
    assert std == pytest.approx(theirs["kernel_inception_distance_std"], abs=1e-6)


def test_kid_is_unbiased_near_zero_for_one_distribution() -> None:
    same_a, same_b = features(400, 32, 3), features(400, 32, 4)
    shifted = features(400, 32, 5, shift=0.3)
    near, _, _ = kid_from_features(same_a, same_b, subsets=20, subset_size=200)
    far, _, _ = kid_from_features(same_a, shifted, subsets=20, subset_size=200)
    assert abs(near) < 0.1 * far


def test_kid_caps_the_subset_size_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="using 30"):
        value = kid_value(features(30, 8, 0), features(40, 8, 1), subsets=5, subset_size=1000, n=30)
    assert value.details["kid_subset_size"] == 30
    assert value.ci_low <= value.value <= value.ci_high


def test_precision_recall_match_torch_fidelity() -> None:
    from torch_fidelity.metric_prc import calculate_precision_recall_full
    gen, ref = features(200, 16, 6, shift=0.15), features(180, 16, 7)
    ours = precision_recall(gen, ref, k=3)
    theirs = calculate_precision_recall_full(gen, ref, neighborhood=3, batch_size=10000)
    assert ours == pytest.approx(theirs, abs=1e-6)   # theirs: a float32 mean
    assert 0.0 < ours[0] < 1.0 and 0.0 < ours[1] < 1.0


def test_precision_recall_rows_carry_wilson_intervals() -> None:
    rows = precision_recall_values(features(100, 8, 8), features(100, 8, 9), k=3, n=100)
    assert [r.metric for r in rows] == ["precision", "recall"]
    for row in rows:
        assert 0.0 <= row.ci_low <= row.value <= row.ci_high <= 1.0 and row.details["pr_k"] == 3


def test_inception_score_matches_torch_fidelity() -> None:
    from torch_fidelity.metric_isc import isc_features_to_metric
    logits = torch.randn(250, 1008, generator=torch.Generator().manual_seed(10)) * 3
    mean, std = inception_score(logits, splits=10)
    theirs = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    assert mean == pytest.approx(theirs["inception_score_mean"], rel=1e-12)
    assert std == pytest.approx(theirs["inception_score_std"], rel=1e-9)


def test_inception_score_needs_enough_images() -> None:
    with pytest.raises(ValueError, match="at least 10 images"):
        inception_score(torch.randn(5, 1008))


def test_feature_bank_keeps_only_up_to_its_cap() -> None:
    bank = FeatureBank(cap=25)
    for i in range(4):
        bank.update(torch.full((10, 3), float(i)))
    kept = bank.tensor()
    assert kept.shape == (25, 3) and bank.seen == 40 and bank.capped
    assert torch.equal(kept[20:], torch.full((5, 3), 2.0))   # the first 25 seen, in order
