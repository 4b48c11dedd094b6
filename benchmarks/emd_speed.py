"""How fast is the exact EMD score, and what does scoring the ``study`` preset cost?

Times :func:`xaiutils.metrics.emd_score` (cost matrix on the supports only) against the dense formulation that
XAI-TRIS uses (full pixel-grid cost matrix via ``ot.dist``) at 48² and 64², and ``emd_score`` alone at 128² (the
dense matrix would take 2 GB there). Prints seconds per map, the ratio, the largest score difference, the speed-up
of batch scoring on all cores over one core, and the projected core-hours to score the ``study`` preset.

Maps are realistic rather than random: smooth blobs (some on the lesions) plus noise, non-zero almost everywhere
as gradient maps are; masks hold 1–3 lesions of radius 3–8 px at 64² (scaled with the size).

    python benchmarks/emd_speed.py --quick     # < 2 minutes on 2 cores
    python benchmarks/emd_speed.py             # more maps per size
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from xaiutils.emd import emd_dense  # noqa: E402
from xaiutils.metrics import emd_score, score_maps  # noqa: E402


def lesion_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    scale = size / 64
    rows, cols = np.indices((size, size))
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(1, 4)):
        radius = rng.uniform(3, 8) * scale
        center = rng.uniform(0.2 * size, 0.8 * size, 2)
        mask |= (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2
    return mask.astype(np.float32)


def attribution_map(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Smooth background structure, a blob on the lesions (a partly right explanation), and pixel noise."""
    size = mask.shape[0]
    background = np.abs(ndimage.gaussian_filter(rng.normal(size=mask.shape), size / 16)) * size / 16
    on_lesion = ndimage.gaussian_filter(mask, size / 32) * rng.uniform(0.5, 3.0)
    noise = np.abs(rng.normal(scale=0.05, size=mask.shape))
    return (background + on_lesion + noise).astype(np.float32)


def pairs(rng, size, count):
    masks = [lesion_mask(rng, size) for _ in range(count)]
    return np.stack([attribution_map(rng, m) for m in masks]), np.stack(masks)


def dense_score(attribution, mask) -> float:
    result = emd_dense(np.abs(attribution), mask >= 0.5)
    return 1.0 - result.distance / math.hypot(*attribution.shape)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def worker_cpu_seconds() -> float:
    """CPU seconds used so far by this process's worker processes (NaN without psutil)."""
    try:
        import psutil
    except ImportError:
        return float("nan")
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few maps: finishes in under 2 minutes on 2 cores")
    parser.add_argument("--maps", type=int, default=None, help="maps per size at 48² and 64² (default 4, quick 3)")
    parser.add_argument("--maps-128", type=int, default=None, help="maps at 128² (default 3, quick 1)")
    parser.add_argument("--parallel-maps", type=int, default=None, help="64² maps for the batch speed-up (32/16)")
    parser.add_argument("--n-jobs", type=int, default=-1, help="cores for the batch run (-1: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sources", type=int, default=3, help="study: pre-training sources")
    parser.add_argument("--ks", type=int, default=6, help="study: numbers of pre-trained blocks (0..5)")
    parser.add_argument("--model-seeds", type=int, default=3, help="study: seeds per (source, k)")
    parser.add_argument("--methods", type=int, default=20, help="study: methods + baselines (~16 + 4)")
    parser.add_argument("--images", type=int, default=1000, help="study: correctly classified test images")
    args = parser.parse_args(argv)
    maps_small = args.maps or (3 if args.quick else 4)
    maps_large = args.maps_128 or (1 if args.quick else 3)
    maps_parallel = args.parallel_maps or (16 if args.quick else 32)
    rng = np.random.default_rng(args.seed)
    emd_score(np.ones((4, 4)), np.eye(4))  # import POT once, outside the timings

    per_map = {}
    print(f"{'size':>6} {'maps':>5} {'support s/map':>14} {'dense s/map':>12} {'dense/support':>14} "
          f"{'max |Δscore|':>13}")
    for size in (48, 64):
        attributions, masks = pairs(rng, size, maps_small)
        support_times, dense_times, differences = [], [], []
        for attribution, mask in zip(attributions, masks, strict=True):
            ours, seconds = timed(emd_score, attribution, mask, resolution=None)
            support_times.append(seconds)
            reference, seconds = timed(dense_score, attribution, mask)
            dense_times.append(seconds)
            differences.append(abs(ours - reference))
        support, dense = float(np.mean(support_times)), float(np.mean(dense_times))
        per_map[size] = support
        print(f"{size:>5}² {maps_small:>5} {support:>14.3f} {dense:>12.3f} {dense / support:>14.2f} "
              f"{max(differences):>13.2e}")
    attributions, masks = pairs(rng, 128, maps_large)
    times = [timed(emd_score, a, m, resolution=None)[1] for a, m in zip(attributions, masks, strict=True)]
    per_map[128] = float(np.mean(times))
    print(f"{128:>5}² {maps_large:>5} {per_map[128]:>14.3f} {'(2 GB: skipped)':>12}")

    from joblib import cpu_count

    cores = cpu_count() if args.n_jobs == -1 else args.n_jobs
    attributions, masks = pairs(rng, 64, maps_parallel)
    batch = dict(metrics=("emd_score",), resolution=None)
    cpu_before = time.process_time()
    serial_table, serial = timed(score_maps, attributions, masks, n_jobs=1, **batch)
    serial_cpu = time.process_time() - cpu_before
    # the first parallel call starts the worker processes (each imports POT once); they are reused afterwards.
    # Two maps per worker, so that every worker has run once before the timing.
    warm = min(2 * cores, maps_parallel)
    _, cold = timed(score_maps, attributions[:warm], masks[:warm], n_jobs=cores, **batch)
    workers_before = worker_cpu_seconds()
    parallel_table, parallel = timed(score_maps, attributions, masks, n_jobs=cores, **batch)
    parallel_cpu = worker_cpu_seconds() - workers_before
    same = serial_table.equals(parallel_table)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nbatch of {maps_parallel} maps at 64²: 1 core {serial:.2f} s, {cores} cores {parallel:.2f} s "
          f"→ speed-up {serial / parallel:.2f}× (ideal {cores}×); identical scores: {same}")
    print(f"  starting the {cores} workers took {cold:.2f} s once (incl. {warm} maps); "
          f"1-minute load average now {load:.2f} on {os.cpu_count()} CPUs")
    if not math.isnan(parallel_cpu):  # psutil present
        print(f"  CPU actually received: serial run {serial_cpu / serial:.2f} core, "
              f"workers {parallel_cpu / parallel:.2f} cores on average; "
              f"CPU per map {serial_cpu / maps_parallel:.3f} s serial vs "
              f"{parallel_cpu / maps_parallel:.3f} s in workers → expected speed-up on {cores} idle cores "
              f"≈ {cores * serial_cpu / parallel_cpu:.2f}×")

    evaluations = args.sources * args.ks * args.model_seeds * args.methods * args.images
    per_map_64 = serial / maps_parallel  # the larger sample of 64² maps, on one core
    core_hours = evaluations * per_map_64 / 3600
    print(f"\nstudy projection: {args.sources} sources × {args.ks} k × {args.model_seeds} seeds × {args.methods} "
          f"methods+baselines × {args.images} images = {evaluations:,} maps")
    print(f"  at 64² ({per_map_64:.3f} s/map, mean of {maps_parallel} maps): {core_hours:,.1f} core-hours "
          f"= {core_hours / cores:,.1f} h on {cores} cores")
    print(f"  at 128² ({per_map[128]:.2f} s/map): {evaluations * per_map[128] / 3600:,.0f} core-hours")


if __name__ == "__main__":
    main()
