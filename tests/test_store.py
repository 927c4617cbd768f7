"""The sample store: round trips, keys, shards, crash leftovers, and SIGKILL-and-resume."""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.store import SampleStore, StoreMismatchError, read_npz
from models.core.interface import BatchContext, Pipeline, PipelineInfo, SampleBatch, SampleRequest, StageInfo

KEY = {"pipeline": "noise", "seed": 3, "request": {"steps": 2, "prompts": ["a", "bb"]}}


class NoisePipeline(Pipeline):
    """Images straight from per-sample noise: deterministic in (seed, i), no network."""

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause
        self.info = PipelineInfo("noise", "external", 8, "text",
                                 (StageInfo("base", "denoiser", 4), StageInfo("up", "super_resolution", 8)))

    def networks(self):
        return {}

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        with ctx.stage("base"):
            small = ctx.noise("base").randn(3, 4, 4).tanh()
            ctx.stage_nfe["base"] = 2.0
            ctx.keep("base", small)
        with ctx.stage("up"):
            time.sleep(self.pause)
            return torch.nn.functional.interpolate(small, scale_factor=2) * 0.9


def request(n: int, batch_size: int, start: int = 0) -> SampleRequest:
    return SampleRequest(n=n, seed=3, start_index=start, prompts=["a", "bb", "a longer prompt"],
                         batch_size=batch_size)


def fill(root: Path, n: int, batch_size: int, shard_size: int, pause: float = 0.0,
         progress=None) -> SampleStore:
    """What a runner does: sample what the store lacks, batch by batch, then finalize."""
    store = SampleStore(root, KEY, shard_size=shard_size)
    pipe = NoisePipeline(pause)
    for start in range(0, n, batch_size):
        chunk = list(range(start, min(start + batch_size, n)))
        if not store.has(chunk):
            store.write(next(pipe.sample(request(len(chunk), batch_size, start))))
            if progress is not None:
                progress.send(start)
    store.finalize()
    return store


def tree_bytes(root: Path, folder: str = "shards") -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / folder).iterdir())}


def test_round_trip_in_any_order(tmp_path):
    pipe = NoisePipeline()
    batches = list(pipe.sample(request(10, 4)))
    store = SampleStore(tmp_path, KEY, shard_size=4)
    for batch in batches:
        store.write(batch)
    everything = SampleBatch(torch.cat([b.images for b in batches]), torch.arange(10), None, None, {}, {})
    assert store.completed() == list(range(10)) and len(store) == 10
    assert store.has([0, 9]) and not store.has([9, 10])
    got = store.read([7, 2, 9, 0])
    assert got.indices.tolist() == [7, 2, 9, 0]
    assert torch.equal(got.images, everything.images[[7, 2, 9, 0]])
    assert got.images.dtype == torch.uint8 and got.images.shape == (4, 3, 8, 8)
    assert got.prompts == ["bb", "a longer prompt", "a", "a"]
    assert got.labels is None
    assert torch.equal(got.stage_outputs["base"], torch.cat([b.stage_outputs["base"] for b in batches])[[7, 2, 9, 0]])
    assert got.stage_nfe == {"base": 2.0}
    batch_times = sum(b.stage_seconds["up"] for b in batches)
    assert sum(store.read(list(range(10))).stage_seconds["up"] for _ in [0]) == pytest.approx(batch_times)
    streamed = list(store.iter_batches(3))
    assert [len(b) for b in streamed] == [3, 3, 3, 1]
    assert torch.equal(torch.cat([b.images for b in streamed]), everything.images)
    with pytest.raises(KeyError, match="10"):
        store.read([3, 10])


def test_labels_are_stored(tmp_path):
    store = SampleStore(tmp_path, KEY)
    images = torch.randint(0, 255, (3, 3, 8, 8), dtype=torch.uint8)
    store.write(SampleBatch(images, torch.tensor([5, 6, 7]), None, torch.tensor([2, 0, 1]), {}, {}))
    assert store.read([6, 7]).labels.tolist() == [0, 1]


def test_a_different_key_is_refused_naming_both(tmp_path):
    SampleStore(tmp_path, KEY)
    SampleStore(tmp_path, dict(KEY))                       # the same key opens again
    other = dict(KEY, seed=4)
    with pytest.raises(StoreMismatchError) as err:
        SampleStore(tmp_path, other)
    message = str(err.value)
    assert message == (f"sample store {tmp_path} holds other samples than asked for (key.seed: 3 stored, 4 asked); "
                       "sample into a new run directory (hydra.run.dir), or add overwrite=true to replace the run there")
    with pytest.raises(StoreMismatchError, match="shard_size"):
        SampleStore(tmp_path, KEY, shard_size=8)
    assert SampleStore.open(tmp_path).key["seed"] == 3


def test_writes_are_idempotent_and_first_write_wins(tmp_path):
    pipe = NoisePipeline()
    store = SampleStore(tmp_path, KEY, shard_size=4)
    first = next(pipe.sample(request(3, 3)))
    store.write(first)
    store.write(first)
    overlapping = next(pipe.sample(request(4, 4, start=1)))
    overlapping.images[:] = 0                              # indices 1, 2 are already stored
    store.write(overlapping)
    assert store.completed() == [0, 1, 2, 3, 4]
    assert torch.equal(store.read([1, 2]).images, first.images[1:3])
    assert int(store.read([3]).images.max()) == 0
    assert len(list((tmp_path / "shards").glob("*.npz"))) == 1   # shard 0 = {0..3} finished


def test_shards_do_not_depend_on_batching_and_are_plain_npz(tmp_path):
    a = fill(tmp_path / "a", n=13, batch_size=5, shard_size=4)
    b = fill(tmp_path / "b", n=13, batch_size=3, shard_size=4)
    c_root = tmp_path / "c"                      # reversed order, one index at a time
    store = SampleStore(c_root, KEY, shard_size=4)
    pipe = NoisePipeline()
    for i in reversed(range(13)):
        store.write(next(pipe.sample(request(1, 1, start=i))))
    store.finalize()
    # each shard with its sha256 beside it (bytes compared too: the sums are as deterministic as the shards)
    assert list(tree_bytes(a.root)) == [f"shard-{k:06d}.npz{end}" for k in range(4) for end in ("", ".sha256")]
    assert tree_bytes(a.root) == tree_bytes(b.root) == tree_bytes(c_root)
    assert not (a.root / "parts").exists()
    shard = np.load(a.root / "shards" / "shard-000003.npz")   # plain numpy can read it
    assert shard["indices"].tolist() == [12] and shard["images"].shape == (1, 3, 8, 8)
    assert sorted(shard.files) == ["images", "indices", "prompts", "stage_output.base"]
    # a finished tail shard grows again when the run is extended
    store = fill(tmp_path / "a", n=15, batch_size=5, shard_size=4)
    assert read_npz(store.root / "shards" / "shard-000003.npz")["indices"].tolist() == [12, 13, 14]


def test_leftovers_of_a_kill_are_recovered(tmp_path):
    done = fill(tmp_path / "done", n=8, batch_size=3, shard_size=4)
    root = tmp_path / "crashed"
    fill(root, n=8, batch_size=3, shard_size=4)
    # kill while finishing shard 1: its shard file is written, its parts are still there
    store = SampleStore(root, KEY, shard_size=4)
    pipe = NoisePipeline()
    part = next(pipe.sample(request(2, 2, start=4)))
    from bench.store_files import batch_arrays, write_npz
    write_npz(root / "parts" / "shard-000001" / "p000000000004.npz", batch_arrays(part))
    # kill inside atomic writes: orphaned temporary files
    (root / "parts" / "shard-000001" / ".p000000000006.npz.abc.tmp").write_bytes(b"half")
    (root / "shards" / ".shard-000001.npz.xyz.tmp").write_bytes(b"half")
    store = SampleStore(root, KEY, shard_size=4)
    assert store.completed() == list(range(8))
    assert not (root / "parts").exists() or not any((root / "parts").iterdir())
    assert tree_bytes(root) == tree_bytes(done.root)


def _child_run(root: str, n: int, batch_size: int, shard_size: int, pause: float, conn) -> None:
    torch.set_num_threads(1)          # a forked child must not reuse the parent's thread pool
    fill(Path(root), n, batch_size, shard_size, pause, progress=conn)
    conn.send("done")


def test_sigkill_three_times_then_resume_gives_identical_shards(tmp_path):
    """Real processes, really killed (SIGKILL: no cleanup runs) at random points."""
    # 20 batches; each killed run writes at most 4 before its kill, so every kill is mid-run
    n, batch_size, shard_size, pause = 60, 3, 8, 0.01
    reference = fill(tmp_path / "reference", n, batch_size, shard_size)
    fork = multiprocessing.get_context("fork")
    root = tmp_path / "resumed"
    rng = random.Random(0)
    kills = 0
    for attempt in range(8):
        receive, send = fork.Pipe(duplex=False)
        child = fork.Process(target=_child_run, args=(str(root), n, batch_size, shard_size, pause, send))
        child.start()
        send.close()
        if kills < 3:
            # wait for a random number of batches, then kill at a random moment inside the next
            for _ in range(rng.randrange(1, 5)):
                if receive.poll(10) and receive.recv() == "done":
                    break
            time.sleep(rng.uniform(0.0, 0.015))
            os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        if child.exitcode == -signal.SIGKILL:
            kills += 1
        else:
            assert child.exitcode == 0
            if kills >= 3:
                break
    assert kills == 3
    assert SampleStore(root, KEY, shard_size).completed() == list(range(n))
    assert tree_bytes(root) == tree_bytes(reference.root)
    assert sorted(p.name for p in root.rglob("*") if p.is_file() and "timings" not in p.parts) == \
        sorted([".lock", *[f"shard-{k:06d}.npz{end}" for k in range(8) for end in ("", ".sha256")], "store.json"])


def _child_rank(root: str, indices: list[int], shard_size: int) -> None:
    torch.set_num_threads(1)
    store = SampleStore(Path(root), KEY, shard_size=shard_size)
    pipe = NoisePipeline()
    for start in range(indices[0], indices[-1] + 1, 2):
        store.write(next(pipe.sample(request(min(2, indices[-1] + 1 - start), 2, start))))
    store.finalize()


def test_concurrent_writers_with_disjoint_ranges(tmp_path):
    """Two processes (as torch.distributed ranks would) fill halves that split shard 1."""
    reference = fill(tmp_path / "reference", 14, 2, 4)
    fork = multiprocessing.get_context("fork")
    root = tmp_path / "ranks"
    ranks = [fork.Process(target=_child_rank, args=(str(root), list(r), 4)) for r in (range(0, 6), range(6, 14))]
    for rank in ranks:
        rank.start()
    for rank in ranks:
        rank.join(30)
        assert rank.exitcode == 0
    SampleStore(root, KEY, 4).finalize()
    assert tree_bytes(root) == tree_bytes(reference.root)


def test_a_part_folder_vanishing_while_listed_is_looked_at_again(tmp_path, monkeypatch):
    """Another rank finishing a shard removes its part folder; glob's scandir of it can then fail
    (seen under load in test_concurrent_writers_with_disjoint_ranges): the store lists again."""
    store = fill(tmp_path / "s", 6, 2, 4)
    real_glob, failures = Path.glob, []

    def flaky_glob(self, pattern):
        if pattern == "shard-*/p*.npz" and not failures:
            failures.append(pattern)
            raise FileNotFoundError(2, "No such file or directory", str(self / "shard-000000"))
        return real_glob(self, pattern)

    monkeypatch.setattr(Path, "glob", flaky_glob)
    assert store.has(list(range(6))) and failures


# -- the same through the runner: Session.sample_stream over a real pipeline ------------------
def compose_config(*overrides: str):
    from hydra import compose, initialize_config_dir

    from bench.config import register_schema, validate
    register_schema()
    with initialize_config_dir(str(Path(__file__).resolve().parent.parent / "conf"), version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


def _child_session(session, conn) -> None:
    """Sample the session's request through its store in lockstep with the parent: after each
    batch the pipeline really sampled (not read back from the store), report its start index
    and wait for the parent's go, so the parent knows how far the child got when it kills."""
    torch.set_num_threads(1)
    pipe = session.load_pipeline()
    sample, calls = pipe.sample, []
    pipe.sample = lambda request: calls.append(request.start_index) or sample(request)
    request = session.request(pipe)
    stored = session._store(pipe, request, {}).completed()     # what a previous run left
    reported = 0
    for _ in session.sample_stream(pipe, request, {}):
        if len(calls) > reported:
            reported = len(calls)
            conn.send(calls[-1])
            conn.recv()
    conn.send(("done", stored, calls))


def test_a_session_killed_three_times_resumes_to_byte_identical_shards(tmp_path, monkeypatch):
    """Session.sample_stream (the runner's path) over the pixel DDPM in forked processes,
    SIGKILLed at seeded random points three times, then completed: the same shard bytes as
    one uninterrupted run, each batch sampled exactly once after the kills, no parts left."""
    import functools

    import bench.session
    from bench.session import Session
    monkeypatch.setattr(bench.session, "SampleStore", functools.partial(SampleStore, shard_size=4))
    n, batch_size = 30, 2        # 15 batches; each killed run samples at most 4: every kill is mid-run
    cfg = compose_config("pipeline=pixel_untrained", "sampler.steps=3", f"suite.n={n}", "hardware=cpu",
                         f"hardware.batch_size={batch_size}", "quiet=true")
    reference = Session(cfg, tmp_path / "reference", "reference")
    pipe = reference.load_pipeline()
    started = time.perf_counter()
    list(reference.sample_stream(pipe, reference.request(pipe), {}))
    per_batch = (time.perf_counter() - started) / (n // batch_size)
    store_dir = Path("samples") / pipe.info.name / "default"

    fork = multiprocessing.get_context("fork")
    rng = random.Random(8)
    killed_store = tmp_path / "killed" / store_dir
    for attempt in range(4):
        parent, child_end = fork.Pipe()
        child = fork.Process(target=_child_session, args=(Session(cfg, tmp_path / "killed", "killed"), child_end))
        child.start()
        child_end.close()
        if attempt < 3:
            for _ in range(rng.randrange(1, 4)):         # 1-3 newly sampled batches ...
                assert parent.poll(60), "the child sampled nothing"
                assert not isinstance(parent.recv(), tuple), "the child finished before it was killed"
                parent.send("go")
            time.sleep(rng.uniform(0.0, 1.5 * per_batch))  # ... then a random moment in the next one
            os.kill(child.pid, signal.SIGKILL)
            child.join(30)
            assert child.exitcode == -signal.SIGKILL
            continue
        while True:
            assert parent.poll(60), "the resumed child stalled"
            message = parent.recv()
            if isinstance(message, tuple):
                _, before, done = message
                break
            parent.send("go")
        child.join(30)
        assert child.exitcode == 0
    assert 0 < len(before) < n                               # killed mid-run, resumed from there
    assert sorted(done) == [s for s in range(0, n, batch_size) if s not in before]   # each once
    assert tree_bytes(killed_store) == tree_bytes(tmp_path / "reference" / store_dir)
    assert list(tree_bytes(tmp_path / "reference" / store_dir)) == \
        [f"shard-{k:06d}.npz{end}" for k in range(8) for end in ("", ".sha256")]
    assert not (killed_store / "parts").exists()


# -- damage: checksums written with every file, damaged files set aside and made again (issue 29) ----
def fill_with_warnings(root: Path, n: int, shard_size: int) -> tuple[SampleStore, list[str]]:
    """`fill` through a store that may regenerate (as the session opens one for a pipeline that samples)."""
    said: list[str] = []
    store = SampleStore(root, KEY, shard_size=shard_size, on_damaged=said.append)
    pipe = NoisePipeline()
    for start in range(0, n, 3):
        chunk = list(range(start, min(start + 3, n)))
        if not store.has(chunk):
            store.write(next(pipe.sample(request(len(chunk), 3, start))))
    store.finalize()
    return store, said


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_file_has_its_sha256_beside_it_in_sha256sum_format(tmp_path):
    import hashlib
    store, said = fill_with_warnings(tmp_path, n=10, shard_size=4)
    files = sorted(tmp_path.glob("shards/*.npz")) + sorted(tmp_path.glob("timings/*.npz"))
    assert len(files) == 6 and said == []
    for path in files:
        digest, name = path.with_name(path.name + ".sha256").read_text().split()
        assert name == path.name and digest == hashlib.sha256(path.read_bytes()).hexdigest()
    # parts of an unfinished shard carry one too
    store.write(next(NoisePipeline().sample(request(2, 2, start=12))))
    (part,) = tmp_path.glob("parts/shard-000003/p*.npz")
    assert part.with_name(part.name + ".sha256").exists()


@pytest.mark.parametrize("where", ["images", "zip header", "timings"])
def test_a_flipped_byte_is_found_set_aside_and_sampled_again(tmp_path, where):
    clean, _ = fill_with_warnings(tmp_path / "clean", n=10, shard_size=4)
    root = tmp_path / "damaged_run"
    fill_with_warnings(root, n=10, shard_size=4)
    target = root / ("timings" if where == "timings" else "shards") / "shard-000001.npz"
    # a byte in the middle of the last member (image data for a shard), or in the first local header's name
    flip_byte(target, 20 if where == "zip header" else target.stat().st_size // 2)

    store, said = fill_with_warnings(root, n=10, shard_size=4)          # the resume
    assert len(said) == 1 and "shard-000001.npz" in said[0] and "damaged" in said[0], said
    assert "sha256" in said[0]
    assert sorted(p.name for p in (root / "damaged").rglob("*.npz")) == \
        (["shard-000001.npz"] * 2)                                       # the shard and its timings, kept
    assert tree_bytes(root) == tree_bytes(clean.root)                    # made again, byte for byte
    assert torch.equal(store.read(list(range(10))).images, clean.read(list(range(10))).images)
    assert fill_with_warnings(root, n=10, shard_size=4)[1] == []         # and now clean: no second warning


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_truncated_or_garbage_shard_of_an_old_store_without_sums_is_found_by_opening_it(tmp_path, damage):
    """Stores written before checksums still load (each file checked by opening it); a damaged
    one is set aside all the same."""
    clean, _ = fill_with_warnings(tmp_path / "clean", n=10, shard_size=4)
    root = tmp_path / "old"
    fill_with_warnings(root, n=10, shard_size=4)
    for sidecar in root.rglob("*.sha256"):
        sidecar.unlink()                                                 # as an old store has none
    assert SampleStore(root, KEY, shard_size=4).completed() == list(range(10))   # an undamaged old store loads
    target = root / "shards" / "shard-000002.npz"
    data = target.read_bytes()
    bad = {"truncated": data[:len(data) // 2], "garbage": b"not a zip file at all" * 50, "empty": b""}[damage]
    target.write_bytes(bad)
    store, said = fill_with_warnings(root, n=10, shard_size=4)
    assert len(said) == 1 and "shards/shard-000002.npz" in said[0], said
    assert (root / "damaged" / "shards" / "shard-000002.npz").read_bytes() == bad   # kept as found
    assert torch.equal(store.read(list(range(10))).images, clean.read(list(range(10))).images)
    assert read_npz(target)["indices"].tolist() == [8, 9]


def test_a_damaged_part_is_set_aside_and_its_batch_sampled_again(tmp_path):
    said: list[str] = []
    store = SampleStore(tmp_path, KEY, shard_size=8, on_damaged=said.append)
    store.write(next(NoisePipeline().sample(request(3, 3))))
    (part,) = tmp_path.glob("parts/shard-000000/p*.npz")
    flip_byte(part, part.stat().st_size - 200)
    store = SampleStore(tmp_path, KEY, shard_size=8, on_damaged=said.append)
    assert store.missing([0, 1, 2]) == [0, 1, 2] and len(said) == 1 and part.name in said[0]
    assert (tmp_path / "damaged" / "parts" / "shard-000000" / part.name).exists()


def test_without_a_way_to_make_them_again_a_damaged_file_is_refused_naming_it(tmp_path):
    from bench.store import StoreError
    fill_with_warnings(tmp_path, n=8, shard_size=4)
    target = tmp_path / "shards" / "shard-000001.npz"
    flip_byte(target, target.stat().st_size // 2)
    with pytest.raises(StoreError) as err:
        SampleStore.open(tmp_path).read([5])    # as an export or a report opens a store
    assert str(target) in str(err.value) and "damaged" in str(err.value) and "rerun" in str(err.value)
    assert target.exists() and not (tmp_path / "damaged").exists()   # nothing moved without a way back


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage", b"[]", b'{"format": "x"}',
                                     b'{"format": "diffbench-samples/1", "key": {}, "shard_size": "4"}'])
def test_a_damaged_store_json_is_refused_naming_it(tmp_path, content):
    from bench.store import StoreError
    fill_with_warnings(tmp_path, n=4, shard_size=4)
    (tmp_path / "store.json").write_bytes(content)
    with pytest.raises(StoreError) as err:
        SampleStore(tmp_path, KEY, shard_size=4)
    assert str(tmp_path / "store.json") in str(err.value) and "damaged" in str(err.value)


def test_samples_without_a_store_json_are_not_adopted(tmp_path):
    from bench.store import StoreError
    fill_with_warnings(tmp_path, n=4, shard_size=4)
    (tmp_path / "store.json").unlink()
    with pytest.raises(StoreError, match="store.json is missing"):
        SampleStore(tmp_path, KEY, shard_size=4)


def test_opening_a_store_sweeps_the_temporary_files_a_kill_left(tmp_path):
    fill_with_warnings(tmp_path, n=6, shard_size=4)
    leftovers = [tmp_path / ".store.json.abcd1234.tmp", tmp_path / "shards" / ".shard-000001.npz.x_y_z123.tmp",
                 tmp_path / "parts" / "shard-000001" / ".p000000000004.npz.q1w2e3r4.tmp"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    kept = tmp_path / "shards" / "notes.tmp"      # not the project's temporary-file pattern: not ours to delete
    kept.write_text("user's")
    SampleStore(tmp_path, KEY, shard_size=4)
    assert [p for p in leftovers if p.exists()] == [] and kept.exists()


def test_exporting_a_damaged_store_is_one_line_naming_the_file(tmp_path, capsys):
    from bench.export import main
    fill_with_warnings(tmp_path / "store", n=8, shard_size=4)
    target = tmp_path / "store" / "shards" / "shard-000001.npz"
    flip_byte(target, target.stat().st_size // 2)
    assert main([str(tmp_path / "store"), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1 and str(target) in errors[0] and "damaged" in errors[0], err
    assert not (tmp_path / "out.npz").exists()
