"""Difficulty: how explanation performance depends on the lesions an image holds.

The tidy score table carries each image's lesion properties (:data:`PROPERTIES`): the number of lesions, their
total area, their contrast and solidity (written by :mod:`xaiutils.domain.synth.dataset`), and the distance from the
lesions to the brain's edge, computed here from the image's lesion and brain masks (:func:`edge_distance`).
:func:`property_correlations` gives, per method and property, Spearman's rank correlation of the score with the
property over the selected images, with a bootstrap interval; a property that is constant in the table (e.g. every
image of the ``book`` preset holds two lesions) gets NaN and says so.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from xaiutils.analysis import evaluate

PROPERTIES = {
    "lesion_area_px": "total lesion area (pixels)",
    "contrast": "lesion contrast (units of the slice's brain intensity range)",
    "n_lesions": "number of lesions",
    "edge_distance_px": "distance from the lesions to the brain's edge (pixels)",
    "solidity": "solidity (area / convex-hull area; irregular lesions score lower)",
}


def edge_distance(masks, brain_masks) -> np.ndarray:
    """Per image: the smallest Euclidean distance (pixels) from a lesion pixel (mask ≥ 0.5) to the nearest pixel
    outside the brain, i.e. how close the nearest lesion comes to the brain's edge. A lesion pixel on the edge is
    1 pixel away; NaN for an image without lesion pixels."""
    masks, brain_masks = np.asarray(masks), np.asarray(brain_masks, dtype=bool)
    if masks.shape != brain_masks.shape or masks.ndim != 3:
        raise ValueError(f"masks {masks.shape} and brain masks {brain_masks.shape} must be equal N×H×W arrays")
    distances = np.full(len(masks), np.nan)
    for index, (mask, brain) in enumerate(zip(masks, brain_masks, strict=True)):
        lesion = mask >= 0.5
        if lesion.any():
            # padded, so that a brain touching the image border has its edge there
            inside = ndimage.distance_transform_edt(np.pad(brain, 1))[1:-1, 1:-1]
            distances[index] = float(inside[lesion].min())
    return distances


def add_edge_distance(table: pd.DataFrame, bench) -> pd.DataFrame:
    """``table`` with column ``edge_distance_px`` (from the benchmark's masks), when it lacks one."""
    if "edge_distance_px" in table.columns:
        return table
    images = np.unique(table["image"].to_numpy())
    distance = pd.Series(edge_distance(bench.masks[images], bench.brain_masks[images]), index=images)
    return table.assign(edge_distance_px=table["image"].map(distance).to_numpy())


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each row of ``x`` with the same row of ``y`` (average ranks for ties; NaN if constant)."""
    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant resample divides by zero: NaN, dropped by the caller
        with np.errstate(invalid="ignore", divide="ignore"):
            return (rx * ry).sum(axis=1) / np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))


def property_correlations(scores: pd.DataFrame, metric: str, selection: str = "correct", properties=None,
                          n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Spearman's ρ of ``metric`` with each lesion property, per method, over the selected (run, image) rows.

    The 95 % interval is a percentile bootstrap over the rows. Columns: method, property, rho, ci_low, ci_high,
    n, note (why ρ is missing, else '').
    """
    properties = list(PROPERTIES) if properties is None else list(properties)
    missing = [name for name in properties if name not in scores.columns]
    if missing:
        raise ValueError(f"the score table lacks the lesion properties {missing}; valid: {', '.join(PROPERTIES)} "
                         "(add edge_distance_px with difficulty.add_edge_distance)")
    selected = evaluate.select(scores, selection)
    rng = np.random.default_rng(seed)
    rows = []
    for method, group in selected.groupby("method", sort=False):
        group = group.dropna(subset=[metric])
        draws = rng.integers(0, len(group), size=(n_boot, len(group))) if len(group) else None
        for name in properties:
            x, y = group[name].to_numpy(dtype=float), group[metric].to_numpy(dtype=float)
            row = {"method": method, "property": name, "rho": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                   "n": len(group), "note": ""}
            if len(group) < 3:
                row["note"] = "fewer than 3 scored images"
            elif np.ptp(x) == 0:
                row["note"] = f"{name} is constant in this table"
            elif np.ptp(y) == 0:
                row["note"] = f"{metric} is constant for this method"
            else:
                row["rho"] = float(stats.spearmanr(x, y).statistic)
                boot = _spearman_rows(x[draws], y[draws])
                boot = boot[np.isfinite(boot)]
                if len(boot):
                    row["ci_low"], row["ci_high"] = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
            rows.append(row)
    return pd.DataFrame(rows, columns=["method", "property", "rho", "ci_low", "ci_high", "n", "note"])
