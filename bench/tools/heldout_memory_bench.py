"""Memory of the image-to-image suites' ground truth (issue 21): the held-out set spooled to a
temporary file and read back by range (`suites.image_to_image.held_out`) vs every batch
concatenated in memory (what the suites did before). Each mode runs in its own child process;
the figure is its peak RSS over its RSS after imports (ru_maxrss), with a checksum over all
images read so both modes provably read the same pixels.

    python -m bench.tools.heldout_memory_bench --n 8000 16000 --resolution 64
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from types import SimpleNamespace

MODES = ("spooled", "in_memory")


def child(mode: str, n: int, resolution: int, batch: int) -> dict:
    import torch

    from bench.data import build_source
    from bench.data.config import DataConfig
    from suites.image_to_image import held_out

    torch.set_num_threads(1)
    data = DataConfig(name="shapes", resolution=resolution, n=n)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    if mode == "spooled":
        session = SimpleNamespace(cfg=SimpleNamespace(hardware=SimpleNamespace(batch_size=batch, num_workers=0)))
        truth, _ = held_out(session, data, n)
    else:
        truth = torch.cat([b.images for b in build_source(data, split="test").iter_batches(batch)])
    checksum = sum(int(truth[s:s + batch].sum()) for s in range(0, len(truth), batch))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "n": len(truth), "image_mib": truth.shape[1] * resolution ** 2 * len(truth) / 2 ** 20,
            "peak_over_start_mib": (peak - start) / 1024, "seconds": time.perf_counter() - began,
            "checksum": checksum}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[8000, 16000])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.n[0], args.resolution, args.batch)))
        return 0
    print("| mode | n | images MiB | peak RSS over start MiB | s | checksum |\n|---|---|---|---|---|---|")
    for n in args.n:
        for mode in MODES:
            out = subprocess.run([sys.executable, "-m", "bench.tools.heldout_memory_bench", "--child", mode,
                                  "--n", str(n), "--resolution", str(args.resolution), "--batch", str(args.batch)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"| {r['mode']} | {r['n']} | {r['image_mib']:.0f} | {r['peak_over_start_mib']:.0f} | "
                  f"{r['seconds']:.1f} | {r['checksum']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
