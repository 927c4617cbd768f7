"""Reference statistics: the Inception mean/covariance (and, for KID and precision/recall, a
capped set of features) of a reference dataset, computed once and cached as .npz.

Cache files live in `<cache_dir>/refstats/` (cache_dir: `$DIFFBENCH_CACHE`, default
`~/.cache/diffbench`), named by a hash of the key = data fingerprint + extractor + weights
sha256 + resize mode + n. The key is also stored inside the file and checked on load, so a
file that does not belong to the request (renamed, hand-edited, written by an older version)
is detected as stale and recomputed. Fields: `mu`, `sigma` (float64) as in pytorch-fid / EDM /
ADM files, plus `n`, `key`, optionally `features`, and the covariance factor every FID against
the reference reuses (bench.metrics.frechet.CovarianceFactor): `sigma_factor` (float64 d x r,
lower trapezoidal), `sigma_factor_order` (its pivot order; empty for the eigh factor of an
indefinite sigma), `sigma_factor_negative` and `sigma_factor_fingerprint` (sha256 of the factor
method and of the sigma it factors). A factor whose fingerprint or structure does not match
sigma is never used: it is recomputed, and the file rewritten (atomically), as is a file
written before factors were stored.

`load_reference_npz(path)` accepts those external files (`mu`, `sigma`; ADM's reference batches
store them too, next to `arr_0`): FID works against them; KID and precision/recall need
features, which they do not have. Their factor is computed on first use and kept in memory
(the user's file is not rewritten); one stored with a matching fingerprint is used.
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.atomic import atomic_write, shared_folder_write, sweep_shared_folder
from bench.data.npz import check_statistics, load_npz_arrays, npz_headers
from bench.paths import default_cache_dir
from bench.metrics.frechet import CovarianceFactor, GaussianAccumulator
from bench.metrics.inception import POOL_FEATURES, FeatureBank
from bench.progress import progress

log = logging.getLogger(__name__)
FORMAT_VERSION = 1   # the factor fields are optional, so adding them kept version 1 (no Inception re-run)
FACTOR_FIELDS = ("sigma_factor", "sigma_factor_order", "sigma_factor_negative", "sigma_factor_fingerprint")


class ReferenceError(ValueError):
    """A reference file or dataset that cannot serve the requested metrics."""


class StaleCacheWarning(UserWarning):
    """A cached reference file did not match its key and was recomputed."""


@dataclass
class ReferenceStats:
    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: torch.Tensor | None = None     # float32 (k, D), the first k reference images
    description: dict[str, Any] = field(default_factory=dict)
    factor: CovarianceFactor | None = None   # of sigma: see covariance_factor()

    def covariance_factor(self) -> CovarianceFactor:
        """The factor of sigma every FID against this reference reuses: read with the statistics
        (fingerprint checked) or computed on first use, then kept. frechet_distance checks its
        fingerprint again, so a sigma changed afterwards cannot be paired with a stale factor."""
        if self.factor is None:
            self.factor = CovarianceFactor.of(self.sigma)
        return self.factor

    def require_features(self, metric: str) -> torch.Tensor:
        if self.features is None or len(self.features) == 0:
            raise ReferenceError(
                f"{metric} needs reference features, but the reference {self.description.get('path', '')} "
                "holds only mu/sigma (e.g. a pytorch-fid/EDM/ADM npz). Use a dataset as reference "
                "(unset metrics.reference) or drop the metric")
        return self.features


def load_reference_npz(path: str | Path) -> ReferenceStats:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ReferenceError(f"metrics.reference={path}: no such file; give an .npz with 'mu' and 'sigma' "
                             "(pytorch-fid --save-stats, EDM, ADM reference batches)")
    # the guarded reader samples and reference data go through too (bench.data.npz): not a zip,
    # pickled (object) arrays and damaged headers are refused naming the file, before anything loads
    hint = "give an .npz with 'mu' and 'sigma' (pytorch-fid --save-stats, EDM, ADM reference batches)"
    headers = npz_headers(path, "metrics.reference", hint)
    if "mu" not in headers or "sigma" not in headers:
        raise ReferenceError(f"metrics.reference={path}: the file has arrays {sorted(headers)} but needs "
                             "'mu' and 'sigma' (Inception pool3 mean and covariance)")
    data = _Arrays(load_npz_arrays(path, ["mu", "sigma", "n", "features", *FACTOR_FIELDS], "metrics.reference", hint))
    check_statistics(path, data, "metrics.reference")   # layout and dtype; finite values: metric_set
    mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    # an ADM reference batch counts its images in arr_0: read from the header, not loaded (GBs)
    n = int(data["n"]) if "n" in data else (headers["arr_0"][0][0] if "arr_0" in headers and headers["arr_0"][0] else 0)
    features = torch.from_numpy(data["features"]).float() if "features" in data else None
    factor = _stored_factor(data, sigma, path)
    return ReferenceStats(mu, sigma, n, features, {"kind": "npz", "path": str(path)}, factor)


class _Arrays(dict):
    """Arrays read by the guarded reader, with NpzFile's `files` (what `_stored_factor` reads)."""

    @property
    def files(self) -> list[str]:
        return list(self)


def reference_key(fingerprint: str, extractor_key: dict[str, Any], n: int) -> dict[str, Any]:
    return {"data": fingerprint, **extractor_key, "n": int(n), "format": FORMAT_VERSION}


def cache_path(cache_dir: Path, source_name: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / "refstats" / f"{source_name}-{digest}.npz"


def compute_reference(source: Any, extractor: Any, *, n: int, keep_features: int = 0, batch_size: int = 64,
                      num_workers: int = 0, quiet: bool = True) -> ReferenceStats:
    """Stream the first n images of an ImageSource through the extractor."""
    gaussian, bank = GaussianAccumulator(), FeatureBank(keep_features)
    bar = progress(total=n, desc=f"reference {source.name}", unit="img", disable=quiet)
    for batch in source.iter_batches(batch_size, 0, n, num_workers=num_workers):
        features = extractor(batch.images)[getattr(extractor, "pool_key", POOL_FEATURES)]   # a ViT space: its embedding
        gaussian.update(features)
        bank.update(features)
        bar.update(len(batch))
    bar.close()
    if gaussian.n < 2:
        raise ReferenceError(f"reference data {source.name!r} gave {gaussian.n} image(s); FID needs at least 2")
    mu, sigma = gaussian.stats()
    return ReferenceStats(mu, sigma, gaussian.n, bank.tensor() if keep_features else None,
                          {"kind": "data", "source": source.name, "fingerprint": source.fingerprint()})


def reference_stats(source: Any, extractor: Any, *, n: int, keep_features: int = 0,
                    cache_dir: str | Path | None = None, batch_size: int = 64, num_workers: int = 0,
                    quiet: bool = True) -> ReferenceStats:
    """Cached `compute_reference`: reused when the key matches and enough features are stored."""
    n = min(int(n), len(source))
    key = reference_key(source.fingerprint(), extractor.cache_key(), n)
    path = cache_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), source.name, key)
    wanted_features = min(keep_features, n)
    sweep_shared_folder(path.parent)   # what killed writers left, when no run is writing there (issue 29)
    cached = _read_cache(path, key, wanted_features)
    if cached is not None:
        log.info("reference statistics from cache %s", path)
        if cached.factor is None:   # a file from before factors were stored, or a stale factor
            cached.covariance_factor()
            _write_cache(path, key, cached)
        return cached
    stats = compute_reference(source, extractor, n=n, keep_features=keep_features, batch_size=batch_size,
                              num_workers=num_workers, quiet=quiet)
    stats.covariance_factor()
    _write_cache(path, key, stats)
    stats.description.update(cache=str(path), cached=False)
    return stats


def _write_cache(path: Path, key: dict[str, Any], stats: ReferenceStats) -> None:
    factor = stats.covariance_factor()
    arrays: dict[str, Any] = {"mu": stats.mu, "sigma": stats.sigma, "n": np.int64(stats.n),
                              "key": np.array(json.dumps(key, sort_keys=True)), "sigma_factor": factor.lower,
                              "sigma_factor_order": np.zeros(0, np.int64) if factor.order is None else factor.order,
                              "sigma_factor_negative": np.float64(factor.negative),
                              "sigma_factor_fingerprint": np.array(factor.fingerprint)}
    if stats.features is not None:
        arrays["features"] = stats.features.numpy()
    with shared_folder_write(path.parent), atomic_write(path, "wb") as handle:   # see sweep_shared_folder
        np.savez(handle, **arrays)


def _stored_factor(data: Any, sigma: np.ndarray, path: Path) -> CovarianceFactor | None:
    """The factor stored next to sigma, if its fingerprint says it was made from this sigma."""
    if not set(FACTOR_FIELDS) <= set(data.files):
        return None
    lower, order = data["sigma_factor"], data["sigma_factor_order"]
    negative = data["sigma_factor_negative"]
    if _well_formed(lower, order) and negative.shape == ():
        factor = CovarianceFactor(lower.astype(np.float64), order.astype(np.int64) if order.size else None,
                                  float(negative), str(data["sigma_factor_fingerprint"]))
        if factor.matches(sigma):
            return factor
    warnings.warn(f"reference {path}: the stored covariance factor does not match sigma (fingerprint or shape); "
                  "recomputing it",
                  StaleCacheWarning, stacklevel=4)
    return None


def _well_formed(lower: np.ndarray, order: np.ndarray) -> bool:
    """A finite d x r (r <= d) factor; with a pivot order, a permutation of d and a lower-trapezoidal
    factor (the fast route skips its upper triangle, so it must be zero)."""
    if lower.dtype.kind != "f" or lower.ndim != 2 or lower.shape[1] > lower.shape[0] or not np.isfinite(lower).all():
        return False
    if order.size == 0:
        return True
    return (order.dtype.kind in "iu" and order.shape == (lower.shape[0],)
            and bool((np.sort(order) == np.arange(lower.shape[0])).all()) and not np.triu(lower, 1).any())


def _read_cache(path: Path, key: dict[str, Any], wanted_features: int) -> ReferenceStats | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored_key = json.loads(str(data["key"]))
            if stored_key != key:
                warnings.warn(f"reference cache {path} was made for {stored_key}, not {key}; recomputing",
                              StaleCacheWarning, stacklevel=3)
                return None
            features = torch.from_numpy(data["features"]) if "features" in data else None
            if wanted_features and (features is None or len(features) < wanted_features):
                return None   # cached without (enough) features: recompute with them
            sigma = data["sigma"]
            return ReferenceStats(data["mu"], sigma, int(data["n"]), features,
                                  {"kind": "data", "source": path.name.rsplit("-", 1)[0], "fingerprint": key["data"],
                                   "cache": str(path), "cached": True}, _stored_factor(data, sigma, path))
    except (OSError, ValueError, KeyError) as err:   # truncated or foreign file
        warnings.warn(f"reference cache {path} is unreadable ({err}); recomputing", StaleCacheWarning, stacklevel=3)
        return None
