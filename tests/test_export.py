"""Export stored samples to ADM npz, and back in through the external family, bit-exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.export import export_npz, main, prompts_path
from bench.store import SampleStore
from models.core.interface import BatchContext, Pipeline, PipelineInfo, SampleRequest, StageInfo
from models.core.registry import build_pipeline


class ClassNoise(Pipeline):
    def __init__(self) -> None:
        self.info = PipelineInfo("class-noise", "pixel", 8, "class", (StageInfo("base", "denoiser", 8),),
                                 num_classes=3)

    def networks(self):
        return {}

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        with ctx.stage("base"):
            return ctx.noise("base").randn(3, 8, 8).tanh() + ctx.labels.view(-1, 1, 1, 1) * 0.1


def sampled_store(root, n=11, prompts=None) -> tuple[SampleStore, torch.Tensor]:
    store = SampleStore(root, {"pipeline": "class-noise"}, shard_size=4)
    request = SampleRequest(n=n, labels=[0, 1, 2], prompts=prompts, batch_size=3)
    images = []
    for batch in ClassNoise().sample(request):
        store.write(batch)
        images.append(batch.images)
    store.finalize()
    return store, torch.cat(images)


def test_export_round_trips_bit_exactly_through_the_external_family(tmp_path):
    prompts = ["a red\ncircle", "a blue  square"]
    store, images = sampled_store(tmp_path / "run" / "samples" / "class-noise" / "default", prompts=prompts)
    out = export_npz(tmp_path / "run", tmp_path / "samples.npz", batch_size=5)
    with np.load(out) as data:               # the ADM layout, readable by plain numpy
        assert sorted(data.files) == ["arr_0", "arr_1"]
        assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (11, 8, 8, 3)
        assert np.array_equal(data["arr_0"], images.permute(0, 2, 3, 1).numpy())
        assert data["arr_1"].tolist() == [i % 3 for i in range(11)]
    assert prompts_path(out).read_text().splitlines()[:2] == ["a red circle", "a blue square"]

    pipe = build_pipeline("external", "exported", path=str(out), prompts=str(prompts_path(out)))
    back = list(pipe.sample(SampleRequest(n=11, batch_size=4)))
    assert torch.equal(torch.cat([b.images for b in back]), images)
    assert torch.cat([b.labels for b in back]).tolist() == [i % 3 for i in range(11)]
    assert back[0].prompts == ["a red circle", "a blue square", "a red circle", "a blue square"]

    again = export_npz(store, tmp_path / "again.npz", batch_size=2)   # deterministic bytes
    assert again.read_bytes() == out.read_bytes()


def test_cli_and_its_errors(tmp_path, capsys):
    sampled_store(tmp_path / "run" / "samples" / "a" / "x", n=3)
    assert main([str(tmp_path / "run"), str(tmp_path / "out.npz")]) == 0
    assert np.load(tmp_path / "out.npz")["arr_0"].shape == (3, 8, 8, 3)
    assert not prompts_path(tmp_path / "out.npz").exists()
    sampled_store(tmp_path / "run" / "samples" / "a" / "y", n=3)
    assert main([str(tmp_path / "run"), str(tmp_path / "out2.npz")]) == 2
    assert "holds 2 sample stores" in capsys.readouterr().err
    assert main([str(tmp_path / "empty"), str(tmp_path / "out3.npz")]) == 2
    with pytest.raises(ValueError, match="no samples"):
        export_npz(SampleStore(tmp_path / "nothing", {}), tmp_path / "out4.npz")


@pytest.mark.slow   # a run, an export and a second run
def test_fid_of_the_exported_adm_npz_equals_the_run(tmp_path, tmp_path_factory):
    """The project's own run, exported to ADM npz and evaluated as `pipeline=external_npz`,
    gives the same FID (and KID, precision, recall) as the run itself."""
    from bench_runs import TINY, bench, quality, single_run
    run = single_run(tmp_path_factory.getbasetemp())
    npz = export_npz(run, tmp_path / "samples.npz")
    with np.load(npz) as data:
        assert data["arr_0"].shape == (10, 32, 32, 3) and data["arr_1"].tolist() == [i % 8 for i in range(10)]
    external = tmp_path / "external"
    bench(external, *[o for o in TINY if not o.startswith("pipeline=")], "pipeline=external_npz",
          f"pipeline.params.path={npz}")
    direct, exported = quality(run), quality(external)
    assert list(exported.index) == list(direct.index) and (exported.n == 10).all()
    assert exported.at["fid", "value"] == pytest.approx(direct.at["fid", "value"], rel=1e-9)
    for metric in ("kid", "precision", "recall"):
        assert exported.at[metric, "value"] == pytest.approx(direct.at[metric, "value"], rel=1e-9, abs=1e-12)
