"""How fast is exact EMD, POT against the certified fast solver, and what does scoring the ``study`` preset cost?

For each scoring size (32², 64², 128², 224²; the map is scored at its native size) the same maps are solved by
POT's network simplex (``emd_support(solver="pot")``, the default) and by the fast solver
(``emd_support(solver="fast")``: successive shortest paths from multiscale prices, accepted only with a
certificate over all source × sink pairs, POT otherwise). Printed per size: seconds per map for each, the median
and the worst per-map ratio POT / fast (side by side, in one run, so machine load affects both alike), the
largest score difference, and how many maps took the POT fallback. Then the projected cost of scoring the
``study`` preset (models × methods × images) at 64² and 224² on one core and on one 16-core node.

Maps are realistic rather than random, one third each: gradient-like (pixel noise under a smooth envelope, more
on the lesions), CAM-like (a coarse smooth map upsampled, rectified) and occlusion-like (blocky); masks hold 1–4
lesions of radius 3–8 px at 64², scaled with the size. The maps are synthetic: no model is trained here.

The fast solver is slower than POT so far (issue 13 stays open), and both grow steeply with the size: at 128² and
224² a full run takes hours. ``--fast-paths-per-node`` bounds the fast solver's work (maps beyond the bound take
the POT fallback and are counted as such).

    python benchmarks/emd_speed.py --quick            # 32² and 64², 3 maps each: a few minutes
    python benchmarks/emd_speed.py                    # all four sizes: 128² and 224² take hours (see below)
    python benchmarks/emd_speed.py --sizes 64 --maps 24
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

from xaiutils.domain.emd import emd_support  # noqa: E402

SIZES = (32, 64, 128, 224)
FULL_MAPS = {32: 12, 64: 12, 128: 2, 224: 1}
QUICK_MAPS = {32: 3, 64: 3, 128: 0, 224: 0}
KINDS = ("gradient", "cam", "occlusion")


def lesion_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """1–4 disk lesions of radius 3–8 px at 64² (scaled with the size), inside the central 60% of the image."""
    scale = size / 64
    rows, cols = np.indices((size, size))
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(1, 5)):
        radius = rng.uniform(3, 8) * scale
        center = rng.uniform(0.2 * size, 0.8 * size, 2)
        mask |= (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2
    return mask.astype(np.float32)


def attribution_map(rng: np.random.Generator, mask: np.ndarray, kind: str) -> np.ndarray:
    """A signed map of one of the three kinds (scored by its absolute value)."""
    size = mask.shape[0]
    rows, cols = np.indices(mask.shape) / size - 0.5
    brain = np.clip(1.2 - (rows / 0.42) ** 2 - (cols / 0.36) ** 2, 0, None)  # elliptic head, zero outside
    on_lesion = ndimage.gaussian_filter(mask, size / 32) * rng.uniform(0.5, 3.0)
    if kind == "gradient":
        envelope = brain * (0.3 + np.abs(ndimage.gaussian_filter(rng.normal(size=mask.shape), size / 16)) * size / 16)
        return rng.normal(size=mask.shape) * (envelope + on_lesion)
    if kind == "cam":
        coarse = max(size // 16, 4)
        low = ndimage.gaussian_filter(rng.normal(size=(coarse, coarse)), 1.0)
        smooth = ndimage.zoom(low, size / coarse, order=1)[:size, :size] + 2 * on_lesion
        return np.clip(smooth, 0, None) * (brain > 0)  # rectified: exact zeros where the CAM is negative
    patch = max(size // 8, 2)
    blocks = rng.normal(size=(-(-size // patch),) * 2) * 0.3
    blocky = np.kron(blocks, np.ones((patch, patch)))[:size, :size]
    lesion_blocks = ndimage.uniform_filter(mask.astype(float), patch)[::patch, ::patch]
    blocky += np.kron(lesion_blocks, np.ones((patch, patch)))[:size, :size] * rng.uniform(1, 4)
    return blocky * (brain > 0)


def maps(rng: np.random.Generator, size: int, count: int):
    for index in range(count):
        mask = lesion_mask(rng, size)
        attribution = attribution_map(rng, mask, KINDS[index % len(KINDS)])
        if not np.any(attribution):
            attribution[size // 2, size // 2] = 1.0
        yield attribution, mask


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def compare(size: int, count: int, rng: np.random.Generator) -> dict:
    pot_times, fast_times, differences, fallbacks, ratios = [], [], [], 0, []
    diagonal = math.hypot(size, size)
    for attribution, mask in maps(rng, size, count):
        source, target = np.abs(attribution), (mask >= 0.5).astype(np.float64)
        pot, pot_seconds = timed(emd_support, source, target, solver="pot")
        fast, fast_seconds = timed(emd_support, source, target, solver="fast")
        pot_times.append(pot_seconds)
        fast_times.append(fast_seconds)
        ratios.append(pot_seconds / fast_seconds)
        fallbacks += fast.solver != "fast-certified"
        differences.append(abs(pot.distance - fast.distance) / diagonal)
    return dict(maps=count, pot=float(np.mean(pot_times)), fast=float(np.mean(fast_times)),
                median=float(np.median(ratios)), worst=float(np.min(ratios)), diff=float(np.max(differences)),
                fallbacks=fallbacks)


def study_maps(models: int, images: int, images_costly: int) -> tuple[int, int, int]:
    """(maps, cheap methods incl. baselines, costly methods) of the study preset (costly ones on a subset)."""
    from xaiutils.foundation.config import resolve

    explain = resolve("explain", "study")
    costly = [name for name in explain["methods"] if name in ("lime", "kernel_shap", "shapley_sampling")]
    cheap = len(explain["methods"]) - len(costly)
    return models * (cheap * images + len(costly) * images_costly), cheap, len(costly)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32² and 64² only, 3 maps each")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help=f"scoring sizes (default {SIZES})")
    parser.add_argument("--maps", type=int, default=None, help="maps per size (default 12/12/2/1, quick 3/3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=int, default=33, help="study: 11 grid cells × 3 seeds")
    parser.add_argument("--images", type=int, default=1000, help="study: explain.n_test_images")
    parser.add_argument("--images-costly", type=int, default=100, help="study: explain.n_images_costly")
    parser.add_argument("--cores", type=int, default=16, help="cores of the node in the projection")
    parser.add_argument("--fast-paths-per-node", type=int, default=None,
                        help="cap on the fast solver's shortest paths per node (beyond it: POT fallback, counted)")
    args = parser.parse_args(argv)
    if args.fast_paths_per_node is not None:
        import xaiutils.domain.emd

        xaiutils.domain.emd.FAST_PATHS_PER_NODE = args.fast_paths_per_node
    counts = QUICK_MAPS if args.quick else FULL_MAPS
    sizes = args.sizes or [size for size in SIZES if counts.get(size, 0) > 0]
    rng = np.random.default_rng(args.seed)
    for solver in ("pot", "fast"):  # import POT and compile (or load) numba once, outside the timings
        emd_support(np.ones((8, 8)), np.eye(8), solver=solver)

    print(f"{'size':>6} {'maps':>5} {'POT s/map':>10} {'fast s/map':>11} {'median POT/fast':>16} "
          f"{'worst':>7} {'max |Δscore|':>13} {'fallbacks':>10}")
    rows = {}
    for size in sizes:
        count = args.maps or counts.get(size, 1)
        rows[size] = row = compare(size, count, rng)
        print(f"{size:>5}² {row['maps']:>5} {row['pot']:>10.3f} {row['fast']:>11.3f} {row['median']:>15.2f}× "
              f"{row['worst']:>6.2f}× {row['diff']:>13.2e} {row['fallbacks']:>10}", flush=True)

    total, cheap, costly = study_maps(args.models, args.images, args.images_costly)
    print(f"\nstudy preset: {args.models} models × ({cheap} methods+baselines × {args.images} images + {costly} "
          f"costly methods × {args.images_costly} images) = {total:,} maps (at most: only correct images count)")
    for size, row in rows.items():
        for name in ("pot", "fast"):
            hours = total * row[name] / 3600
            print(f"  {size}² {name:>4}: {row[name]:.3f} s/map (measured, {row['maps']} maps) → {hours:,.1f} "
                  f"core-hours → {hours / args.cores:,.1f} h on one {args.cores}-core node (projected)")


if __name__ == "__main__":
    main()
