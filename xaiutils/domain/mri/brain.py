"""Brain masks and intensity thresholds: the MNI152 template with its mask (shipped inside nilearn), a mask
computed from intensities for volumes given without one, and Otsu's thresholds (also used by the lesion placement
to find white matter in a slice)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def load_mni152(resolution: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MNI152 T1 template, its brain mask and their affine, from the files inside nilearn (no download).

    Returns ``(t1, brain_mask, affine)``: ``t1`` float32 (X×Y×Z, RAS+), ``brain_mask`` bool, ``affine`` 4×4 (mm).
    """
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    template = load_mni152_template(resolution=resolution)
    mask = load_mni152_brain_mask(resolution=resolution)
    t1 = np.asarray(template.get_fdata(), dtype=np.float32)
    brain_mask = np.asarray(mask.get_fdata()) > 0.5
    if t1.shape != brain_mask.shape:
        raise ValueError(f"template shape {t1.shape} and brain mask shape {brain_mask.shape} differ")
    return t1, brain_mask, np.asarray(template.affine)


def compute_brain_mask(t1: np.ndarray, zooms=(1.0, 1.0, 1.0), opening_mm: float = 4.0) -> np.ndarray:
    """A brain mask from intensities alone, for volumes given without one.

    Tissue = voxels of the lightly smoothed volume above Otsu's threshold of the non-zero voxels; an opening by a
    ball of ``opening_mm`` cuts thin bridges (to scalp, neck), the largest connected part is kept, and holes
    (ventricles) are filled. On a skull-stripped volume this returns the brain; on a raw head scan it is a
    heuristic that may keep some non-brain tissue: provide brain masks where the placement must be exact.
    """
    t1 = np.asarray(t1, dtype=np.float32)
    if t1.ndim != 3:
        raise ValueError(f"volume must be 3-D, got shape {t1.shape}")
    zooms = np.asarray(zooms, dtype=float)
    smooth = ndimage.gaussian_filter(t1, 1.0 / zooms)
    low, high = float(t1.min(initial=0.0)), float(t1.max(initial=0.0))
    if low < 0 and -low > 10 * high:  # the negative tail dominates: an inverted or offset volume, not noise
        raise ValueError(f"cannot compute a brain mask: the volume has no positive intensity to speak of (values from "
                         f"{float(t1.min()):.4g} to {float(t1.max()):.4g}); a T1 volume's tissue is brighter than its "
                         "background, so give intensities >= 0 (e.g. undo a sign flip or an offset), or a brain mask")
    nonzero = smooth[smooth > 1e-6 * max(float(np.abs(smooth).max()), 1e-30)]
    if nonzero.size == 0 or np.ptp(nonzero) == 0:
        raise ValueError("cannot compute a brain mask: the volume is empty or constant")
    tissue = smooth > otsu_threshold(nonzero)
    inner = ndimage.distance_transform_edt(tissue, sampling=zooms) > opening_mm
    labels, count = ndimage.label(inner)
    if count == 0:
        raise ValueError(f"cannot compute a brain mask: no tissue thicker than {2 * opening_mm} mm")
    largest = labels == (1 + int(np.argmax(ndimage.sum_labels(inner, labels, np.arange(1, count + 1)))))
    brain = (ndimage.distance_transform_edt(~largest, sampling=zooms) <= opening_mm) & tissue
    brain = ndimage.binary_fill_holes(brain)
    for level in range(brain.shape[2]):  # ventricles open to one side in 3-D are closed in each axial slice
        brain[:, :, level] = ndimage.binary_fill_holes(brain[:, :, level])
    return brain


def otsu_thresholds_3(values: np.ndarray, bins: int = 64) -> tuple[float, float]:
    """Two thresholds splitting ``values`` into three classes with the largest between-class variance (the
    middle of the optimal plateau when the classes are well separated)."""
    counts, edges = np.histogram(np.asarray(values, dtype=float).ravel(), bins=bins)
    centers = 0.5 * (edges[:-1] + edges[1:])
    weight = np.concatenate([[0], np.cumsum(counts)]).astype(float)
    moment = np.concatenate([[0], np.cumsum(counts * centers)])
    low, high = np.meshgrid(np.arange(bins + 1), np.arange(bins + 1), indexing="ij")
    parts = [(weight[low], moment[low]), (weight[high] - weight[low], moment[high] - moment[low]),
             (weight[-1] - weight[high], moment[-1] - moment[high])]
    valid = (low < high) & np.all([w > 0 for w, _ in parts], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.where(valid, sum(m * m / w for w, m in parts), -np.inf)
    if not np.isfinite(between.max()):
        raise ValueError("cannot split the values into three classes: too few distinct values")
    best = np.argwhere(between >= between.max() - 1e-9 * abs(between.max()))
    return float(edges[best[:, 0]].mean()), float(edges[best[:, 1]].mean())


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance of ``values``."""
    values = np.asarray(values, dtype=float).ravel()
    counts, edges = np.histogram(values, bins=bins)
    centers = 0.5 * (edges[:-1] + edges[1:])
    weight = np.cumsum(counts)
    weight_high = weight[-1] - weight
    mean_sum = np.cumsum(counts * centers)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = mean_sum / weight
        mean_high = (mean_sum[-1] - mean_sum) / weight_high
        between = weight * weight_high * (mean_low - mean_high) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a plateau when the classes are separated
    return float(0.5 * (edges[1:][best[0]] + edges[1:][best[-1]]))

