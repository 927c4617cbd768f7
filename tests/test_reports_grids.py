"""Sample grids (reports/grids.py): drawn from a run's sample store with no model, one per
pipeline and sweep point, captioned, deterministic; `python -m reports` and the end-of-run
report both write them; an external npz scored without a store gets its grid from its path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.results import MetricValue, RunContext, make_row, write_results
from bench.store import SampleStore
from models.core.interface import SampleBatch
from reports.__main__ import main as reports_main
from reports.grids import caption, first_samples, write_grids
from reports.run_report import write_run_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def store(run: Path, pipeline: str, point: str, n: int, *, prompts: bool = False, seed: int = 0) -> Path:
    root = run / "samples" / pipeline / point
    s = SampleStore(root, {"pipeline": pipeline, "point": {}, "request": {"seed": seed}}, shard_size=8)
    for start in range(0, n, 5):   # batches that straddle the shards
        idx = list(range(start, min(start + 5, n)))
        texts = [f"a shape number {i} on a plain background" for i in idx] if prompts else None
        labels = None if prompts else torch.tensor([i % 3 for i in idx])
        s.write(SampleBatch(images(len(idx), seed + start), torch.tensor(idx), texts, labels, {}, {}))
    s.finalize()
    return root


def make_run(run: Path) -> Path:
    store(run, "pixel", "default", 20)
    store(run, "text_model", "guidance_scale=1.5", 12, prompts=True)
    store(run, "text_model", "guidance_scale=4", 12, prompts=True, seed=1)
    rows = [make_row(RunContext("r", "smoke", p, "pixel"), MetricValue("fid", v, 20))
            for p, v in (("pixel", 3.0), ("text_model", 4.0))]
    write_results(run, rows)
    (run / "manifest.json").write_text(json.dumps({"status": "complete"}))
    return run


def test_first_k_samples_in_index_order_with_captions(tmp_path: Path) -> None:
    root = store(tmp_path, "pixel", "default", 20)
    samples = first_samples(root, 10)   # crosses the first shard (8 samples) into the second
    assert list(samples["indices"]) == list(range(10))
    assert np.array_equal(samples["images"][9], images(5, 5)[4].numpy())
    assert caption(samples, 4, 30) == "class 1"
    text = first_samples(store(tmp_path, "t", "default", 6, prompts=True), 16)
    assert len(text["images"]) == 6 and caption(text, 2, 30) == "a shape number 2 on a plain\nbackground"


def test_a_damaged_shard_is_not_drawn(tmp_path: Path, caplog) -> None:
    root = store(tmp_path, "pixel", "default", 20)
    second = sorted((root / "shards").glob("shard-*.npz"))[1]
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0xFF   # one flipped byte: its sha256 no longer matches
    second.write_bytes(bytes(data))
    samples = first_samples(root, 16)
    assert list(samples["indices"]) == list(range(8)) and "damaged" in caplog.text


def test_one_grid_per_pipeline_and_point_deterministic(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    first = write_grids([run], tmp_path / "a", k=16)
    assert [p.name for p in first] == ["pixel.png", "text_model__guidance_scale=1.5.png",
                                       "text_model__guidance_scale=4.png"]
    again = write_grids([run], tmp_path / "b", k=16)
    for a, b in zip(first, again):
        assert a.read_bytes().startswith(PNG_MAGIC) and a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="k must be >= 1"):
        write_grids([run], tmp_path / "c", k=0)


def test_reports_cli_and_run_report_embed_the_grids(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    out = tmp_path / "out"
    assert reports_main([str(run), "--out", str(out), "--quiet", "--grid-k", "4"]) == 0
    assert sorted(p.name for p in (out / "grids").iterdir()) == [
        "pixel.png", "text_model__guidance_scale=1.5.png", "text_model__guidance_scale=4.png"]
    assert "![pixel](grids/pixel.png)" in (out / "report.md").read_text()
    report = write_run_report(run, pd.read_csv(run / "results.csv"), quiet=True)
    assert "## Samples" in report.read_text() and (run / "grids" / "pixel.png").is_file()


def test_two_runs_with_the_same_pipeline_get_distinct_grids(tmp_path: Path) -> None:
    runs = [make_run(tmp_path / "a"), make_run(tmp_path / "b")]
    names = [p.name for p in write_grids(runs, tmp_path / "out", k=4)]
    assert "a__pixel.png" in names and "b__pixel.png" in names and len(names) == 6


def test_external_npz_without_a_store_is_read_from_its_path(tmp_path: Path) -> None:
    npz = tmp_path / "samples.npz"
    np.savez(npz, np.zeros((5, 8, 8, 3), np.uint8) + np.arange(5, dtype=np.uint8)[:, None, None, None],
             np.arange(5))
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"status": "complete", "config": {
        "store_samples": False, "pipeline": {"name": "theirs", "family": "external", "params": {"path": str(npz)}}}}))
    (grid,) = write_grids([run], tmp_path / "out", k=3)
    assert grid.name == "theirs.png" and grid.read_bytes().startswith(PNG_MAGIC)
    assert write_grids([tmp_path / "nothing"], tmp_path / "none") == []


# ---- issue 28: grids read at a glance ------------------------------------------------------------

@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib figure the grids save, to read its captions and title."""
    from matplotlib.figure import Figure
    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), save(self, *a, **k))[1])
    return figures


def captions(figure) -> list[str]:
    return [ax.get_xlabel() for ax in figure.axes]


def test_class_labels_are_captioned_with_the_class_names(tmp_path: Path, drawn: list) -> None:
    run = make_run(tmp_path / "run")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"class_names": ["circle", "square", "triangle"]}))
    (run / "manifest.json").write_text(json.dumps({"status": "complete", "checkpoints": {
        "pixel": {"label": "pixel", "checkpoint": str(checkpoint)}}}))
    write_grids([run], tmp_path / "out", k=4)
    assert captions(drawn[0]) == ["circle", "square", "triangle", "circle"]   # labels i % 3
    # no checkpoint record: a run on the bundled shapes data names its classes (bench.data.shapes.KINDS)
    (run / "manifest.json").write_text(json.dumps({"status": "complete", "config": {"data": {"name": "shapes"}}}))
    drawn.clear()
    write_grids([run], tmp_path / "out2", k=3)
    assert captions(drawn[0]) == ["circle", "square", "triangle"]


def test_every_grid_of_a_report_has_one_size(tmp_path: Path) -> None:
    from PIL import Image
    run = make_run(tmp_path / "run")   # 20 labelled samples, and two stores of 12 prompted ones
    sizes = {Image.open(p).size for p in write_grids([run], tmp_path / "out", k=16)}
    assert len(sizes) == 1, sizes


def test_the_grid_title_names_the_adapter_and_its_scale(tmp_path: Path, drawn: list) -> None:
    run = make_run(tmp_path / "run")
    params = json.dumps({"adapter": "heart_lora_r4", "adapter_scale": 0.5})
    rows = [make_row(RunContext("r", "smoke", "pixel", "pixel", {"pipeline_params": params}),
                     MetricValue("fid", 3.0, 20))]
    write_results(run, rows)
    write_grids([run], tmp_path / "out", k=4)
    titles = [fig._suptitle.get_text() for fig in drawn]
    assert "pixel + adapter heart_lora_r4 (scale 0.5): first 4 samples, seed 0" in titles
    assert not any("adapter" in t for t in titles if t.startswith("text_model"))


def test_image_to_image_grids_label_their_rows_and_show_masks_on_any_background(tmp_path: Path) -> None:
    from PIL import Image
    from suites.image_to_image import hatch_masked, write_grid
    gray = torch.full((2, 3, 8, 8), 128, dtype=torch.uint8)   # the shapes data's gray background
    masks = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    masks[:, :, 2:6, 2:6] = 1
    shown = hatch_masked(gray, masks, scale=4)
    hole = shown[:, :, 8:24, 8:24]
    assert shown.shape == (2, 3, 32, 32) and set(hole.unique().tolist()) == {0, 255}   # black and white
    assert (shown[:, :, :8] == 128).all()                                               # the rest untouched
    plain = Image.open(write_grid(tmp_path / "a.png", [gray, gray, gray], k=2))
    labelled = write_grid(tmp_path / "b.png", [gray, gray, gray], k=2, labels=["input", "output: x", "ground truth"],
                          title="super-resolution x2: x")
    image = np.asarray(Image.open(labelled))
    assert image.shape[1] > plain.size[0] and image.shape[0] > plain.size[1]
    label_column = image[26:, :150]
    assert (label_column < 100).any()   # the row names are drawn there (dark text on white)
