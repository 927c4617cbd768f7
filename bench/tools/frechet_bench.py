"""CPU time of one Fréchet distance, measured in one run: one thread, repeats interleaved,
time.process_time. Same statistics (n synthetic feature vectors per side, d = 2048 by default)
for all four:
  (a) this project against a reference whose covariance factor is cached (the usual FID),
  (b) this project without the cache (the factor computed inside the evaluation),
  (c) pytorch-fid's calculate_frechet_distance formula: scipy.linalg.sqrtm of S1 S2,
  (d) torch-fidelity's own fid_statistics_to_metric (np.linalg.eigvals of S1 S2).
Prints the median times, their ratios to (a) and the largest relative difference of the values.

    python -m bench.tools.frechet_bench [--dims 2048] [--samples 6000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Callable

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits
from torch_fidelity.metric_fid import fid_statistics_to_metric

from bench.metrics.frechet import CovarianceFactor, frechet_distance

TARGETS = {"cached_cpu_s": 1.0, "scipy_ratio": 10.0, "torch_fidelity_ratio": 2.5}   # issue 19


def synthetic_statistics(dims: int, samples: int, seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(mu, sigma) of two different Gaussian feature sets: the generated and the reference side."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((samples, dims))
    mix = np.eye(dims) + 0.3 * rng.standard_normal((dims, dims)) / np.sqrt(dims)
    b = rng.standard_normal((samples, dims)) @ mix + 0.1 * rng.standard_normal(dims)
    return (a.mean(axis=0), np.cov(a, rowvar=False)), (b.mean(axis=0), np.cov(b, rowvar=False))


def scipy_sqrtm_fd(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                   eps: float = 1e-6) -> float:
    """pytorch-fid's calculate_frechet_distance (pytorch_fid/fid_score.py), restated: pytorch-fid
    is not a dependency of this project."""
    diff = mu1 - mu2
    with warnings.catch_warnings():   # sqrtm's disp/blocksize deprecations in recent scipy
        warnings.simplefilter("ignore", DeprecationWarning)
        covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def measure(dims: int, samples: int, repeats: int, seed: int = 0) -> dict:
    (mu1, sigma1), (mu2, sigma2) = synthetic_statistics(dims, samples, seed)
    start = time.process_time()
    factor = CovarianceFactor.of(sigma2)   # once per reference (stored in its cache file)
    factor_s = time.process_time() - start
    methods: dict[str, Callable[[], float]] = {
        "a: project, cached reference factor":
            lambda: frechet_distance(mu1, sigma1, mu2, sigma2, reference_factor=factor).value,
        "b: project, no cache": lambda: frechet_distance(mu1, sigma1, mu2, sigma2).value,
        "c: scipy sqrtm (pytorch-fid formula)": lambda: scipy_sqrtm_fd(mu1, sigma1, mu2, sigma2),
        "d: torch-fidelity fid_statistics_to_metric":
            lambda: fid_statistics_to_metric({"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2},
                                             verbose=False)["frechet_inception_distance"],
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    values: dict[str, float] = {}
    for _ in range(repeats):   # interleaved: a slow phase of the machine hits every method alike
        for name, method in methods.items():
            start = time.process_time()
            values[name] = float(method())
            times[name].append(time.process_time() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    cached = next(iter(methods))
    reference_value = values[cached]
    rel_diff = {name: abs(values[name] - reference_value) / abs(reference_value) for name in methods}
    return {"dims": dims, "samples": samples, "repeats": repeats, "factor_s": factor_s, "times": times,
            "median": median, "ratio": {name: median[name] / median[cached] for name in methods},
            "values": values, "rel_diff": rel_diff, "max_rel_diff": max(rel_diff.values())}


def report(result: dict) -> str:
    names = list(result["median"])
    lines = [f"Fréchet distance, d = {result['dims']}, n = {result['samples']} per side, 1 thread, "
             f"{result['repeats']} interleaved repeats, CPU seconds (time.process_time)",
             f"  reference factor, once per reference: {result['factor_s']:.3f} s"]
    for name in names:
        lines.append(f"  {name:45s} median {result['median'][name]:7.3f} s  (min {min(result['times'][name]):.3f})"
                     f"  x{result['ratio'][name]:6.2f} of (a)  value {result['values'][name]:.10g}"
                     f"  rel. diff {result['rel_diff'][name]:.1e}")
    cached, _, scipy_name, tf_name = names
    lines.append(f"  max relative difference of the values: {result['max_rel_diff']:.1e}")
    lines.append(f"  targets: (a) < {TARGETS['cached_cpu_s']} s: {result['median'][cached]:.3f} s; "
                 f"(c)/(a) >= {TARGETS['scipy_ratio']}: {result['ratio'][scipy_name]:.1f}; "
                 f"(d)/(a) >= {TARGETS['torch_fidelity_ratio']}: {result['ratio'][tf_name]:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=6000, help="feature vectors per side")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):   # numpy/scipy's BLAS and torch's MKL/OpenMP
            result = measure(args.dims, args.samples, args.repeats, args.seed)
    finally:
        torch.set_num_threads(threads)
    print(report(result))
    return result


if __name__ == "__main__":
    main()
