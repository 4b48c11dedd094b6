"""Explanation performance: attribution maps scored against lesion masks (the ground-truth explanations).

Every metric takes one map (H×W) or a batch (N×H×W, or a list of H×W arrays) and masks of the same shape, and
returns a float or an N-vector. Maps are scored by their absolute values ``|a|``; masks may be soft and are
binarised at 0.5 (``mask >= 0.5``, the convention of :mod:`xaiutils.domain.synth.lesions`). :data:`METRICS` declares
each
metric's direction and range, as Quantus does, so tables and plots never have to guess.

Degenerate input (an all-zero map, an empty mask, NaN or inf in the map, an item whose map and mask shapes
differ, a non-optimal EMD solve) gives NaN with a recorded reason — never an exception in the middle of a batch
and never a silent 0. Pass ``return_reason=True`` to get the reasons, or use :func:`score_maps`, which puts them
in a ``reason`` column. A whole ``maps`` array whose shape differs from the whole ``masks`` array is a caller's
error and raises ``ValueError``.

Ties (constant regions, e.g. a uniform map) are scored at their expected value under random tie-breaking, so a
constant map scores chance level on top-k precision and the pointing game rather than whatever pixel order
would pick.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from xaiutils.domain.emd import DEFAULT_NUM_ITER_MAX, emd_support, pooled_shape, sum_pool

DEFAULT_RESOLUTION = 64  # EMD scoring grid; XAI-TRIS's convention
MASK_THRESHOLD = 0.5


class Degenerate(Exception):
    """Raised inside a per-map computation when the score is undefined; becomes NaN plus this reason."""


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``function(attribution, lesion_mask, **options)`` and how to read its value."""

    function: Callable
    higher_is_better: bool
    range: tuple[float, float]
    description: str


# ---------------------------------------------------------------------------------------------------- per map


def _prepare(attribution, lesion_mask) -> tuple[np.ndarray, np.ndarray]:
    """``(|a| as float64, binary mask)``, or :class:`Degenerate` saying why the pair cannot be scored."""
    attribution = np.asarray(attribution)
    lesion_mask = np.asarray(lesion_mask)
    if attribution.shape != lesion_mask.shape or attribution.ndim != 2:
        raise Degenerate(f"shape mismatch: map {attribution.shape} vs mask {lesion_mask.shape} (need equal H×W)")
    magnitude = np.abs(attribution.astype(np.float64))
    if not np.all(np.isfinite(magnitude)):
        raise Degenerate("map has NaN or inf values")
    if not np.all(np.isfinite(lesion_mask.astype(np.float64))):
        raise Degenerate("mask has NaN or inf values")
    if not magnitude.any():
        raise Degenerate("map is all zero")
    binary = lesion_mask >= MASK_THRESHOLD
    if not binary.any():
        raise Degenerate(f"mask is empty (no pixel >= {MASK_THRESHOLD})")
    return magnitude, binary


def _emd_distance_one(magnitude, binary, resolution=DEFAULT_RESOLUTION, num_iter_max=DEFAULT_NUM_ITER_MAX):
    source = sum_pool(magnitude, resolution)
    target = sum_pool(binary.astype(np.float64), resolution)
    result = emd_support(source, target, num_iter_max=num_iter_max)
    if not result.optimal:
        raise Degenerate(result.reason)
    return result.distance


def _emd_score_one(magnitude, binary, resolution=DEFAULT_RESOLUTION, num_iter_max=DEFAULT_NUM_ITER_MAX):
    height, width = pooled_shape(magnitude.shape, resolution)
    return 1.0 - _emd_distance_one(magnitude, binary, resolution, num_iter_max) / math.hypot(height, width)


def _ima_one(magnitude, binary):
    return float(magnitude[binary].sum() / magnitude.sum())


def _topk_one(magnitude, binary):
    k = int(binary.sum())
    values = magnitude.ravel()
    threshold = np.partition(values, values.size - k)[values.size - k]  # the k-th largest value
    above = values > threshold
    tied = values == threshold
    inside = binary.ravel()
    # pixels strictly above the threshold are all in the top k; the remaining places go to tied pixels at random
    expected_hits = inside[above].sum() + (k - above.sum()) * inside[tied].sum() / tied.sum()
    return float(expected_hits / k)


def _pointing_one(magnitude, binary, tolerance=0):
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    target = binary if tolerance == 0 else ndimage.distance_transform_edt(~binary) <= tolerance
    peaks = magnitude == magnitude.max()
    return float(target[peaks].sum() / peaks.sum())


def _roc_auc_one(magnitude, binary):
    positives = int(binary.sum())
    negatives = binary.size - positives
    if negatives == 0:
        raise Degenerate("mask covers the whole image: ROC-AUC needs pixels outside it")
    ranks = stats.rankdata(magnitude.ravel())  # average ranks for ties, as sklearn's roc_auc_score
    return float((ranks[binary.ravel()].sum() - positives * (positives + 1) / 2) / (positives * negatives))


_PER_MAP: dict[str, Callable] = {
    "emd_score": _emd_score_one,
    "emd_distance": _emd_distance_one,
    "importance_mass_accuracy": _ima_one,
    "topk_precision": _topk_one,
    "relevance_rank_accuracy": _topk_one,
    "pointing_game": _pointing_one,
    "roc_auc": _roc_auc_one,
}


def score_one(name: str, attribution, lesion_mask, **options) -> tuple[float, str]:
    """``(value, reason)`` for one map: reason is ``""`` when the value is defined, else value is NaN."""
    try:
        magnitude, binary = _prepare(attribution, lesion_mask)
        return float(_PER_MAP[name](magnitude, binary, **options)), ""
    except Degenerate as degenerate:
        return float("nan"), str(degenerate)


# ---------------------------------------------------------------------------------------------------- batches


def _as_items(maps, masks) -> tuple[list, list, bool]:
    """Split into per-image items; ``single`` when one H×W pair was given. Whole-array shape mismatch raises."""
    ragged = isinstance(maps, (list, tuple)) or isinstance(masks, (list, tuple))
    if ragged:
        maps, masks = list(maps), list(masks)
        if len(maps) != len(masks):
            raise ValueError(f"got {len(maps)} maps but {len(masks)} masks")
        return maps, masks, False
    maps, masks = np.asarray(maps), np.asarray(masks)
    if maps.shape != masks.shape:
        raise ValueError(f"maps shape {maps.shape} differs from masks shape {masks.shape}")
    if maps.ndim == 2:
        return [maps], [masks], True
    if maps.ndim == 3:
        return list(maps), list(masks), False
    raise ValueError(f"expected one H×W map or an N×H×W batch, got shape {maps.shape}")


def _batched(name: str):
    def metric(attribution, lesion_mask, *, return_reason: bool = False, **options):
        items, masks, single = _as_items(attribution, lesion_mask)
        results = [score_one(name, a, m, **options) for a, m in zip(items, masks, strict=True)]
        values = np.array([value for value, _ in results], dtype=np.float64)
        reasons = [reason for _, reason in results]
        if single:
            return (values[0], reasons[0]) if return_reason else float(values[0])
        return (values, reasons) if return_reason else values

    return metric


def _public(name: str, doc: str):
    function = _batched(name)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc + (
        "\n\n    Takes one H×W map or an N×H×W batch and masks of the same shape; returns a float or an N-vector "
        "(NaN where undefined). ``return_reason=True`` also returns the reason(s) (``''`` when defined)."
    )
    return function


emd_distance = _public("emd_distance", """Exact EMD (scoring-grid pixels) from p = |a|/Σ|a| to q = uniform on the mask.

    ``resolution``: both distributions are sum-pooled to at most resolution × resolution first (``None``: native
    size). ``num_iter_max``: POT's iteration limit; a solve that hits it gives NaN with the reason.""")
emd_score = _public("emd_score", """1 − EMD/D, with D = sqrt(H² + W²) the diagonal of the scoring grid (after pooling).

    1 when the map's mass lies exactly on the mask (up to pooling). Same options as :func:`emd_distance`; the
    default scoring resolution is 64 (XAI-TRIS). Pooling sums the binarised mask, so q is the pooled uniform
    distribution on the full-resolution lesion, not a re-binarised coarse mask.""")
importance_mass_accuracy = _public("importance_mass_accuracy", """Share of the map's absolute mass inside the mask.

    Σ_mask |a| / Σ |a| (Arras et al. 2022's relevance mass accuracy). A uniform map scores mask area / image area.""")
topk_precision = _public("topk_precision", """Share of the k = |mask| pixels with the largest |a| that lie in the mask.

    Ties at the k-th value are counted at their expected share (random tie-breaking).""")
relevance_rank_accuracy = _public("relevance_rank_accuracy", """Relevance rank accuracy (Arras et al. 2022).

    Defined as |top-K pixels ∩ mask| / K with K = |mask|, which is exactly :func:`topk_precision`; it is kept under
    its own name because the literature reports it under both.""")
pointing_game = _public("pointing_game", """1 if the pixel with the largest |a| lies in the mask, else 0.

    Several pixels sharing the maximum score the share of them inside the mask. ``tolerance`` (pixels, default 0)
    counts a hit within that distance of the mask (Zhang et al. used 15 px at 224²).""")
roc_auc = _public("roc_auc", """ROC-AUC of |a| as a score for mask membership (0.5 = chance, ties averaged).

    NaN when the mask covers the whole image.""")

METRICS: dict[str, Metric] = {
    "emd_score": Metric(emd_score, True, (0.0, 1.0), "1 − exact EMD / image diagonal"),
    "importance_mass_accuracy": Metric(importance_mass_accuracy, True, (0.0, 1.0), "share of |a| inside the mask"),
    "topk_precision": Metric(topk_precision, True, (0.0, 1.0), "share of the |mask| largest |a| inside the mask"),
    "relevance_rank_accuracy": Metric(relevance_rank_accuracy, True, (0.0, 1.0),
                                      "Arras et al.'s RRA; identical to top-k precision"),
    "pointing_game": Metric(pointing_game, True, (0.0, 1.0), "maximum of |a| inside the mask (1/0)"),
    "roc_auc": Metric(roc_auc, True, (0.0, 1.0), "ROC-AUC of |a| against the mask (0.5 = chance)"),
}
DEFAULT_METRICS = tuple(METRICS)
_EMD_METRICS = ("emd_score", "emd_distance")


def check_metrics(metrics) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    valid = (*METRICS, "emd_distance")
    unknown = [name for name in metrics if name not in valid]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid metrics: {', '.join(valid)}")
    if not metrics:
        raise ValueError(f"no metrics requested; valid metrics: {', '.join(valid)}")
    return tuple(metrics)


def _score_item(attribution, lesion_mask, metrics, resolution, num_iter_max, limit_threads) -> dict:
    """All ``metrics`` for one map; runs in a worker process under ``score_maps(n_jobs>1)``."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    row, reasons = {}, []
    # one process per core: BLAS/OpenMP threads inside each would only oversubscribe the cores
    with threadpool_limits(limits=1) if limit_threads else nullcontext():
        try:
            magnitude, binary = _prepare(attribution, lesion_mask)
        except Degenerate as degenerate:
            return {**dict.fromkeys(metrics, float("nan")), "reason": str(degenerate)}
        for name in metrics:
            options = {"resolution": resolution, "num_iter_max": num_iter_max} if name in _EMD_METRICS else {}
            try:
                row[name] = float(_PER_MAP[name](magnitude, binary, **options))
            except Degenerate as degenerate:
                row[name] = float("nan")
                reasons.append(f"{name}: {degenerate}")
    row["reason"] = "; ".join(reasons)
    return row


def _cost_estimate(attribution, lesion_mask) -> float:
    """Arcs in the EMD's transport problem (map support × mask support), a proxy for its solve time."""
    try:
        return float(np.count_nonzero(attribution)) * float(np.count_nonzero(np.asarray(lesion_mask) >= 0.5))
    except (TypeError, ValueError):
        return 0.0


def score_maps(maps, masks, metrics=DEFAULT_METRICS, resolution: int | None = DEFAULT_RESOLUTION,
               n_jobs: int | None = -1, num_iter_max: int = DEFAULT_NUM_ITER_MAX,
               progress: bool = False, backend=None) -> pd.DataFrame:
    """Score a batch: one row per image (index = image position), a column per metric, and ``reason``.

    ``reason`` is ``""`` for a fully scored image; otherwise it says why values are NaN (a map-level problem
    such as an all-zero map NaNs every metric; a metric-level one is prefixed with the metric's name).
    ``resolution`` applies to the EMD metrics only (the exact solve is what is expensive); the others score the
    native grid. ``n_jobs``: processes for the batch (joblib; -1 = all cores, 1 = serial in this process). Exact EMD
    dominates the cost, about 0.1–1 s per 64² map, so a batch is spread over cores with one BLAS thread each.
    ``backend``: a context manager (not yet entered) within which joblib's ``Parallel(n_jobs=-1)`` runs elsewhere,
    e.g. :func:`xaiutils.execution.cluster.joblib_backend` for a Dask cluster's workers; the batch is then spread there
    (``n_jobs`` is ignored), with the same scores. This module knows nothing of where the work runs.
"""
    from joblib import Parallel, cpu_count, delayed
    from tqdm import tqdm

    metrics = check_metrics(metrics)
    items, mask_items, _ = _as_items(maps, masks)
    workers = cpu_count() if n_jobs in (None, -1) else int(n_jobs)
    if workers < 1:
        raise ValueError(f"n_jobs must be -1 (all cores), None or a positive integer, got {n_jobs}")
    workers = min(workers, len(items))
    bar = tqdm(total=len(items), desc="scoring", disable=not progress)
    if backend is not None and items:
        tasks = (delayed(_score_item)(attribution, lesion_mask, metrics, resolution, num_iter_max, True)
                 for attribution, lesion_mask in zip(items, mask_items, strict=True))
        rows = []
        with backend:
            for row in Parallel(n_jobs=-1, return_as="generator")(tasks):
                rows.append(row)
                bar.update()
    elif workers <= 1:
        rows = []
        for attribution, lesion_mask in zip(items, mask_items, strict=True):
            rows.append(_score_item(attribution, lesion_mask, metrics, resolution, num_iter_max, False))
            bar.update()
    else:
        # longest first (support sizes bound the EMD's cost): the last worker then does not finish far behind
        order = sorted(range(len(items)), key=lambda index: -_cost_estimate(items[index], mask_items[index]))
        tasks = (delayed(_score_item)(items[index], mask_items[index], metrics, resolution, num_iter_max, True)
                 for index in order)
        rows = [None] * len(items)
        for index, row in zip(order, Parallel(n_jobs=workers, batch_size=1, return_as="generator")(tasks),
                              strict=True):
            rows[index] = row
            bar.update()
    bar.close()
    columns = [*metrics, "reason"]
    table = pd.DataFrame(rows, columns=columns)
    table.index.name = "image"
    return table


def metric_table() -> pd.DataFrame:
    """The registered metrics with their direction, range and definition: the book's metrics table."""
    return pd.DataFrame(
        [{"metric": name, "higher is better": spec.higher_is_better,
          "range": f"[{spec.range[0]:g}, {spec.range[1]:g}]", "definition": spec.description}
         for name, spec in METRICS.items()]
    ).set_index("metric")
