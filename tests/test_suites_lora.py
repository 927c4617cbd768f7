"""suite=lora_sweep end to end at toy size: base, full fine-tuning and adapter rows with cost, concept
fidelity, forgetting and merged/unmerged latency; a rerun reuses the trained adapters; the report
module turns the stored rows into the table and the fidelity-vs-forgetting plot."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reports.lora_sweep import lora_table, main as report_main
from suite_helpers import run_suite

pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tiny models: OpenMP spinning only slows them
TINY = ("suite=lora_sweep", "suite.n=2", "data.n=8", "sampler.steps=1", "metrics.speed_repeats=1", "suite.params.steps=2",
        "suite.params.concept_n=2", "suite.params.speed_n=1", "suite.params.train_data_n=16",
        "suite.params.ranks=[1,2]", "suite.params.variants=[lora]", "suite.params.targets=[attention]")


def test_lora_sweep_rows_table_and_plot(tmp_path: Path) -> None:
    run = tmp_path / "ls"
    frame = run_suite(run, *TINY)
    table = lora_table(frame)
    assert list(table["variant"]) == ["base", "full", "lora", "lora"]
    lora = table[table.variant == "lora"].set_index("rank")
    # rank 2 has twice rank 1's LoRA parameters (r (in + out) per layer), far fewer than full fine-tuning
    assert lora.loc[2, "trainable_parameters"] == 2 * lora.loc[1, "trainable_parameters"]
    full = table[table.variant == "full"].iloc[0]
    assert full["trainable_parameters"] > 20 * lora.loc[2, "trainable_parameters"]
    assert full["adapter_bytes"] > 20 * lora.loc[2, "adapter_bytes"]
    adapters = table[~table.variant.isin(["base", "full"])]
    for column in ("concept_clip_i", "concept_clip_t", "fid_drift", "clip_score_drift", "train_s_per_step",
                   "s_per_image_unmerged", "s_per_image_merged"):
        assert adapters[column].notna().all(), column
    assert (adapters["merge_max_abs_diff"] <= 1).all()       # merged = unmerged up to uint8 rounding
    base = table[table.variant == "base"].iloc[0]
    assert base["concept_clip_i"] == pytest.approx(base["concept_clip_i"]) and 0 < base["concept_clip_i"] <= 1
    for point in ("variantlora_rank1_targetsattention", "variantfull_rank0_targetsall_weights"):
        trained = json.loads((run / "lora_sweep" / point / "trained.json").read_text())
        assert trained["summary"]["steps"] == 2
    assert (run / "lora_sweep" / "variantlora_rank1_targetsattention" / "export" / "base"
            / "adapter_model.safetensors").is_file()
    assert report_main([str(run)]) == 0
    assert (run / "plots" / "lora_fidelity_vs_forgetting.png").stat().st_size > 0
    assert "CLIP-I" in (run / "lora_sweep.md").read_text()   # the preset table, headers as labels


def test_lora_sweep_rejects_unknown_targets(tmp_path: Path) -> None:
    from bench.config import ConfigError
    with pytest.raises(ConfigError, match="suite.params.targets"):
        run_suite(tmp_path / "bad", *TINY[:-1], "suite.params.targets=[attention+ffn]")
