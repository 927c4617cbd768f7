"""The prepared GPU check (python -m bench.tools.gpu_check, `make gpu-check`): its CPU dry mode runs
the whole code path at tiny sizes; without CUDA the real mode stops with a clear error. The GPU
run itself is owed until a GPU is available (README, "Performance")."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.tools import gpu_check

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow   # 30 s: every measurement of the GPU check at tiny sizes
def test_dry_run_measures_everything_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "check" / "gpu_check.json"
    result = gpu_check.main(["--dry-run", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["dry_run"] and written["device"] == "cpu"
    prepared = written["fp16_prepare"]            # the dry run made and checked its own float16 file
    # float16 weights: features within the stated tolerance (FID's is stated for a few hundred images)
    assert prepared["max_abs_feature_diff"] <= gpu_check.FEATURE_TOLERANCE and prepared["bytes"] < 64 * 2 ** 20
    assert written["inception_cuda_vs_cpu"]["max_abs_diff"] == 0.0   # cpu vs cpu: the same computation
    values = written["fid_kid"]["values"]
    assert values["torch_fidelity"]["fid"] is None and values["project"]["fid"] > 0   # dry run: KID only there
    assert values["project"]["kid"] == pytest.approx(values["torch_fidelity"]["kid"], rel=1e-2, abs=1e-5)
    assert [r["name"] for r in written["sampling"]] == ["b: diffusers adapter, DiT (tiny)",
                                                         "b: diffusers adapter, SD UNet (tiny)"]
    assert written["harness_loop"]["agreement"].startswith("same noise")
    for r in written["sampling"]:
        assert "bfloat16" in r["work"] and "torch.compile" in r["work"]
        assert r["agreement"].endswith("= 0 uint8 level(s)")
    assert result["total_s"] > 0
    assert "fp16 weights vs fp32" in capsys.readouterr().out


def test_without_cuda_the_real_run_stops_with_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--weights", str(tmp_path), "--out", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_check: CUDA is not available") and "--dry-run" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


def test_missing_or_altered_fp16_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(gpu_check.GpuCheckError, match="--prepare"):
        gpu_check.load_fp16(tmp_path)
    (tmp_path / gpu_check.FP16_NAME).write_bytes(b"not the weights")
    (tmp_path / (gpu_check.FP16_NAME + ".sha256")).write_text("0" * 64 + "  x\n")
    with pytest.raises(gpu_check.GpuCheckError, match="sha256"):
        gpu_check.load_fp16(tmp_path)
