"""Exact earth mover's distance between an attribution map and a lesion mask, built on their supports.

The EMD between two mass distributions on a pixel grid only ever moves mass *from* pixels that hold some *to*
pixels that need some: rows and columns of the transport plan for zero-mass pixels are zero in every feasible
plan. So the optimal cost on the supports (map pixels with mass × mask pixels) is exactly the optimal cost on the
full grid, without the dense (H·W)² cost matrix the full grid needs (20 GB at 224²). The solver is POT's network
simplex (``ot.emd2``), whose result code is read back: a solve stopped by ``num_iter_max`` is not optimal and is
reported as such, never as an exact distance.

Exact EMD is the costliest step of the benchmark, so maps are scored at a reduced resolution: :func:`sum_pool`
sums mass into a coarser grid (the convention of the sibling benchmark XAI-TRIS is 64×64).

A second exact solver, :mod:`xaiutils.domain.emd_fast` (successive shortest paths from multiscale prices, numba), is
available with ``solver="fast"``: its result counts only when a certificate over all source × sink pairs proves it
optimal (reduced costs, marginals, primal–dual gap); otherwise POT solves the map, and ``EmdResult.solver`` says
which path ran ("fast-certified" or "pot-fallback"). It is not the default: on the benchmark's maps it is slower
than POT so far (see ``benchmarks/emd_speed.py`` and issue 13), so ``DEFAULT_SOLVER`` stays "pot".
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from scipy.spatial.distance import cdist

# POT's network-simplex result codes (ot/lp/network_simplex: ProblemType).
RESULT_CODES = {0: "infeasible", 1: "optimal", 2: "unbounded", 3: "iteration limit (numItermax) reached"}
# Generous: a dense 128² map against a few hundred mask pixels needs well under this; the result is checked anyway.
DEFAULT_NUM_ITER_MAX = 100_000_000
DENSE_MAX_PIXELS = 128 * 128  # the dense reference holds an (H·W)² float64 matrix: 2 GB at 128²
SOLVERS = ("pot", "fast")
DEFAULT_SOLVER = "pot"  # "fast" is exact and certified but not yet faster than POT on realistic maps
FAST_PATHS_PER_NODE = 10  # the fast solver's path budget is this × (sources + sinks), capped by num_iter_max


class EmdResult(NamedTuple):
    """``distance`` in pixels of the grid it was computed on; NaN unless ``optimal``, with ``reason`` saying why.

    ``solver`` records the path that produced the result: "pot" (POT asked for), "fast-certified" (the fast
    solver, proven optimal by its certificate) or "pot-fallback" (the fast solver's certificate failed or it was
    unavailable, and POT solved the map; ``certificate`` says why).
    """

    distance: float
    optimal: bool
    reason: str
    result_code: int
    solver: str = "pot"
    certificate: str = ""


def pooling_matrix(size: int, target: int) -> np.ndarray:
    """``target × size`` matrix that sums pixels into ``target`` equal cells along one axis.

    Entry ``[i, j]`` is the fraction of source pixel ``j`` (the interval ``[j, j+1)``) lying in target cell ``i``
    (the interval ``[i·size/target, (i+1)·size/target)``), so every column sums to 1 and total mass is preserved.
    When ``target`` divides ``size`` this is plain block summation; otherwise a pixel on a cell boundary is split
    between the two cells by area.
    """
    if target < 1 or size < 1:
        raise ValueError(f"pooling sizes must be positive, got size={size}, target={target}")
    edges = np.arange(target + 1) * (size / target)
    left = np.maximum(edges[:-1, None], np.arange(size)[None, :])
    right = np.minimum(edges[1:, None], np.arange(1, size + 1)[None, :])
    return np.clip(right - left, 0.0, None)


def pooled_shape(shape: tuple[int, int], resolution: int | None) -> tuple[int, int]:
    """Each axis longer than ``resolution`` is pooled down to it; shorter axes are kept (never upsampled)."""
    if resolution is None:
        return tuple(shape)
    if int(resolution) != resolution or resolution < 1:
        raise ValueError(f"resolution must be a positive integer or None, got {resolution!r}")
    return tuple(min(int(size), int(resolution)) for size in shape)


def sum_pool(array: np.ndarray, resolution: int | None) -> np.ndarray:
    """Sum-pool the last two axes to at most ``resolution × resolution`` cells, preserving total mass.

    Exact block sums (reshape and sum) when the resolution divides the size; area-weighted sums otherwise (see
    :func:`pooling_matrix`). Axes already at or below ``resolution`` are left as they are.
    """
    array = np.asarray(array, dtype=np.float64)
    height, width = array.shape[-2:]
    target_h, target_w = pooled_shape((height, width), resolution)
    if (target_h, target_w) == (height, width):
        return array
    if height % target_h == 0 and width % target_w == 0:
        blocks = array.reshape(*array.shape[:-2], target_h, height // target_h, target_w, width // target_w)
        return blocks.sum(axis=(-3, -1))
    rows, cols = pooling_matrix(height, target_h), pooling_matrix(width, target_w)
    return rows @ array @ cols.T


def _solve(source: np.ndarray, target: np.ndarray, cost: np.ndarray, num_iter_max: int) -> EmdResult:
    import ot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the result code below says the same, and is recorded
        distance, log = ot.emd2(source, target, cost, numItermax=int(num_iter_max), log=True)
    code = int(log["result_code"])
    if code != 1 or log.get("warning"):
        why = RESULT_CODES.get(code, f"code {code}")
        return EmdResult(float("nan"), False,
                         f"EMD solver did not reach optimality (POT result {code}: {why}; {log.get('warning')}); "
                         f"num_iter_max={num_iter_max}", code)
    return EmdResult(float(distance), True, "", code)


def _normalised(mass: np.ndarray, what: str) -> np.ndarray:
    mass = np.asarray(mass, dtype=np.float64)
    if mass.ndim != 2:
        raise ValueError(f"{what} must be a 2-D mass array, got shape {mass.shape}")
    if not np.all(np.isfinite(mass)) or np.any(mass < 0):
        raise ValueError(f"{what} must be finite and non-negative")
    total = mass.sum()
    if total <= 0:
        raise ValueError(f"{what} holds no mass")
    return mass / total


def emd_support(source_mass: np.ndarray, target_mass: np.ndarray,
                num_iter_max: int = DEFAULT_NUM_ITER_MAX, solver: str | None = None) -> EmdResult:
    """Exact EMD (Euclidean pixel distance) between two non-negative 2-D arrays, each normalised to mass 1.

    The cost matrix has one row per pixel with source mass and one column per pixel with target mass.
    ``solver``: "pot" or "fast" (default :data:`DEFAULT_SOLVER`); "fast" falls back to POT unless certified.
    """
    solver = DEFAULT_SOLVER if solver is None else solver
    if solver not in SOLVERS:
        raise ValueError(f"unknown EMD solver {solver!r}; choose one of {SOLVERS}")
    source, target = _normalised(source_mass, "source_mass"), _normalised(target_mass, "target_mass")
    if source.shape != target.shape:
        raise ValueError(f"source shape {source.shape} differs from target shape {target.shape}")
    if solver == "fast":
        why = _fast(source, target, num_iter_max)
        if isinstance(why, EmdResult):
            return why
        return _support_pot(source, target, num_iter_max)._replace(solver="pot-fallback", certificate=why)
    return _support_pot(source, target, num_iter_max)


def _fast(source: np.ndarray, target: np.ndarray, num_iter_max: int) -> EmdResult | str:
    """The certified fast solve, or the reason why it does not count."""
    from xaiutils.domain import emd_fast

    if not emd_fast.AVAILABLE:
        return "fast solver unavailable (numba not installed)"
    nodes = np.count_nonzero(source) + np.count_nonzero(target)
    certificate = emd_fast.solve(source, target, max_paths=min(int(num_iter_max), FAST_PATHS_PER_NODE * nodes))
    if not certificate["certified"]:
        return "certificate failed: " + certificate["reason"]
    return EmdResult(certificate["distance"], True, "", 1, "fast-certified", "")


def _support_pot(source: np.ndarray, target: np.ndarray, num_iter_max: int) -> EmdResult:
    source_pixels, target_pixels = np.flatnonzero(source), np.flatnonzero(target)
    width = source.shape[1]
    source_xy = np.stack(np.divmod(source_pixels, width), axis=1).astype(np.float64)
    target_xy = np.stack(np.divmod(target_pixels, width), axis=1).astype(np.float64)
    cost = cdist(source_xy, target_xy)
    weights_s, weights_t = source.ravel()[source_pixels], target.ravel()[target_pixels]
    return _solve(weights_s / weights_s.sum(), weights_t / weights_t.sum(), cost, num_iter_max)


def emd_dense(source_mass: np.ndarray, target_mass: np.ndarray,
              num_iter_max: int = DEFAULT_NUM_ITER_MAX) -> EmdResult:
    """Reference formulation (as XAI-TRIS computes it): the full pixel-grid cost matrix via ``ot.dist``.

    Only for checking :func:`emd_support` and timing it: memory grows as (H·W)², refused above 128².
    """
    import ot

    source, target = _normalised(source_mass, "source_mass"), _normalised(target_mass, "target_mass")
    if source.shape != target.shape:
        raise ValueError(f"source shape {source.shape} differs from target shape {target.shape}")
    if source.size > DENSE_MAX_PIXELS:
        raise ValueError(f"dense EMD of a {source.shape} grid needs a {source.size}² cost matrix; "
                         f"use emd_support (at most {DENSE_MAX_PIXELS} pixels here)")
    coordinates = np.indices(source.shape).reshape(2, -1).T.astype(np.float64)
    cost = ot.dist(coordinates, coordinates, metric="euclidean")
    return _solve(source.ravel(), target.ravel(), cost, num_iter_max)
