"""`folder` data: file discovery, the conversion rule, resizing, captions, bad files."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import BadImageError, DataError
from bench.data.folder import FolderSource

RNG = np.random.default_rng(0)


def _rgb(size=8):
    return RNG.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _write(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return array


def test_discovery_is_recursive_sorted_and_filtered(tmp_path):
    for rel in ["b.png", "a/z.jpg", "a/c.PNG", "d.webp", "e.bmp", ".hidden.png", ".cache/x.png"]:
        _write(tmp_path / rel, _rgb())
    (tmp_path / "notes.txt").write_text("not an image")
    src = FolderSource(tmp_path, resolution=8)
    assert src.files == ["a/c.PNG", "a/z.jpg", "b.png", "d.webp", "e.bmp"]
    assert FolderSource(tmp_path, resolution=8, n=2).files == ["a/c.PNG", "a/z.jpg"]


def test_rgb_at_resolution_passes_through_bit_exact(tmp_path):
    arrays = [_write(tmp_path / f"{i}.png", _rgb()) for i in range(3)]
    batch = next(FolderSource(tmp_path, resolution=8).iter_batches(3))
    assert torch.equal(batch.images, torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))
    assert batch.indices.tolist() == [0, 1, 2] and batch.labels is None and batch.captions is None


def test_conversion_rule(tmp_path):
    rgba = RNG.integers(0, 256, size=(8, 8, 4), dtype=np.uint8)
    gray = RNG.integers(0, 256, size=(8, 8), dtype=np.uint8)
    deep = RNG.integers(0, 65536, size=(8, 8), dtype=np.uint16)
    _write(tmp_path / "1_rgba.png", rgba)
    _write(tmp_path / "2_gray.png", gray)
    _write(tmp_path / "3_deep.png", deep)
    _write(tmp_path / "4_la.png", np.stack([gray, gray[::-1]], axis=2), mode="LA")
    palette = Image.fromarray(_rgb()).quantize(16)
    palette.save(tmp_path / "5_palette.png")
    with Image.open(tmp_path / "3_deep.png") as check:
        assert check.mode in ("I;16", "I")   # the file really is 16-bit
    images = FolderSource(tmp_path, resolution=8).dataset()
    assert np.array_equal(images[0]["image"].permute(1, 2, 0).numpy(), rgba[:, :, :3])   # alpha dropped
    assert np.array_equal(images[1]["image"].numpy(), np.stack([gray] * 3))             # L replicated
    assert np.array_equal(images[2]["image"].numpy(), np.stack([(deep >> 8).astype(np.uint8)] * 3))
    assert np.array_equal(images[3]["image"].numpy(), np.stack([gray] * 3))             # LA: alpha dropped
    assert np.array_equal(images[4]["image"].permute(1, 2, 0).numpy(), np.asarray(palette.convert("RGB")))


def test_other_sizes_center_crop_then_bicubic(tmp_path):
    wide = RNG.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    _write(tmp_path / "wide.png", wide)
    image = FolderSource(tmp_path, resolution=8).load_image(0)
    square = Image.fromarray(np.ascontiguousarray(wide[:, 5:25]))
    assert np.array_equal(image, np.asarray(square.resize((8, 8), Image.BICUBIC)))
    exact_crop = FolderSource(tmp_path, resolution=20).load_image(0)
    assert np.array_equal(exact_crop, wide[:, 5:25])   # crop only: no resampling


def test_captions_csv_and_txt(tmp_path):
    root = tmp_path / "imgs"
    for rel in ["x/b.png", "a.png"]:
        _write(root / rel, _rgb())
    csv_file = tmp_path / "caps.csv"
    csv_file.write_text('file,caption\nx/b.png,"a bee"\na.png,an apple\n', encoding="utf-8")
    src = FolderSource(root, resolution=8, captions=csv_file)
    assert next(src.iter_batches(2)).captions == ["an apple", "a bee"]
    bare = tmp_path / "bare.csv"
    bare.write_text("file,caption\nb.png,bee\na.png,apple\n", encoding="utf-8")
    assert FolderSource(root, resolution=8, captions=bare).captions == ["apple", "bee"]
    txt = tmp_path / "caps.txt"
    txt.write_text("first\nsecond\n", encoding="utf-8")
    assert FolderSource(root, resolution=8, captions=txt).dataset()[1]["caption"] == "second"
    txt.write_text("only one\n", encoding="utf-8")
    with pytest.raises(DataError, match="1 non-blank lines but the folder has 2 images"):
        FolderSource(root, resolution=8, captions=txt)
    partial = tmp_path / "partial.csv"
    partial.write_text("file,caption\na.png,apple\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no row for 1 image\(s\), e.g. \['x/b.png'\]"):
        FolderSource(root, resolution=8, captions=partial)


def _corrupt_folder(tmp_path):
    for i in range(5):
        _write(tmp_path / f"{i}.png", _rgb())
    good = (tmp_path / "2.png").read_bytes()
    (tmp_path / "2.png").write_bytes(good[: len(good) // 2])          # truncated PNG
    (tmp_path / "4.png").write_bytes(b"this is not an image at all")  # not an image
    return tmp_path


def test_corrupt_png_error_names_the_file(tmp_path):
    src = FolderSource(_corrupt_folder(tmp_path), resolution=8)
    with pytest.raises(BadImageError) as info:
        list(src.iter_batches(2))
    message = str(info.value)
    assert str(tmp_path / "2.png") in message and "data.on_bad_file=skip" in message
    assert isinstance(info.value, ValueError) and info.value.path == str(tmp_path / "2.png")


def test_corrupt_file_error_from_a_worker_names_the_file(tmp_path):
    src = FolderSource(_corrupt_folder(tmp_path), resolution=8)
    with pytest.raises(BadImageError, match="4.png"):
        list(src.iter_batches(2, start=3, num_workers=2))


def test_skip_mode_counts_and_matches_with_workers(tmp_path):
    root = _corrupt_folder(tmp_path)
    plain = FolderSource(root, resolution=8, on_bad_file="skip")
    batches = list(plain.iter_batches(2))
    assert [b.indices.tolist() for b in batches] == [[0, 1], [3]]   # item 4 was the last batch: dropped
    assert plain.skipped == [str(root / "2.png"), str(root / "4.png")]
    assert len(plain) == 5
    workers = FolderSource(root, resolution=8, on_bad_file="skip")
    other = list(workers.iter_batches(2, num_workers=2))
    assert [b.indices.tolist() for b in other] == [[0, 1], [3]]
    assert all(torch.equal(a.images, b.images) for a, b in zip(batches, other))
    assert workers.skipped == plain.skipped
    view = FolderSource(root, resolution=8, on_bad_file="skip").dataset()
    assert [view[k]["index"] for k in range(len(view))] == [0, 1, 3]


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FolderSource(tmp_path / "nowhere", resolution=8)
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=f"{tmp_path} contains no images"):
        FolderSource(tmp_path, resolution=8)


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    _write(tmp_path / "a.png", _rgb())
    _write(tmp_path / "b.png", _rgb())
    before = FolderSource(tmp_path, resolution=8).fingerprint()
    assert before == FolderSource(tmp_path, resolution=8).fingerprint()
    assert before != FolderSource(tmp_path, resolution=16).fingerprint()
    _write(tmp_path / "b.png", _rgb(9))
    os.utime(tmp_path / "b.png", ns=(1, 1))
    assert before != FolderSource(tmp_path, resolution=8).fingerprint()


def test_a_symlink_loop_and_linked_duplicates_count_each_image_once(tmp_path, caplog):
    """A directory link back to the folder made os.walk(followlinks=True) list 4 images 164 times;
    each folder is now listed once (by device and inode) and each file counted once (resolved path)."""
    from bench.data.folder import scan_images
    from models.core.registry import build_pipeline
    root = tmp_path / "samples"
    for rel in ["a.png", "b.png", "sub/c.png", "sub/d.png"]:
        _write(root / rel, _rgb())
    try:
        os.symlink(root, root / "sub" / "loop", target_is_directory=True)     # sub/loop -> the folder itself
        os.symlink(root / "sub", root / "again", target_is_directory=True)    # a second path to sub/
        os.symlink(root / "a.png", root / "sub" / "a_link.png")                # a second path to a.png
    except OSError as err:   # pragma: no cover - filesystems without links
        pytest.skip(f"symlinks unsupported here: {err}")
    listing = scan_images(root)
    assert listing.files == ["a.png", "b.png", "sub/c.png", "sub/d.png"]
    assert listing.repeated_folders == ["again", "sub/loop"] and listing.repeated_files == ["sub/a_link.png"]
    with caplog.at_level("WARNING", logger="bench.data.folder"):
        assert len(FolderSource(root, resolution=8)) == 4
        assert len(build_pipeline("external", "linked", path=str(root))) == 4
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and all("skipped 2 link(s) to folders already listed" in m and
                                  "1 file(s) already counted under another path" in m for m in said), said
