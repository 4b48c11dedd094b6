"""MRI volumes, axial slices and (later) synthetic lesions.

The embedded default anatomy is the MNI152 2009 T1 template that nilearn ships inside its wheel, so the
benchmark runs offline, on Binder and on Colab.
"""

from __future__ import annotations

import numpy as np


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


def brain_area_per_level(brain_mask: np.ndarray) -> np.ndarray:
    """Number of brain voxels in each axial slice (last axis of a RAS+ volume)."""
    if brain_mask.ndim != 3:
        raise ValueError(f"brain mask must be 3-D, got shape {brain_mask.shape}")
    return brain_mask.reshape(-1, brain_mask.shape[2]).sum(axis=0)


def axial_band(brain_mask: np.ndarray, min_brain_fraction: float = 0.6) -> np.ndarray:
    """Indices of the contiguous band of axial slices whose brain area is at least ``min_brain_fraction`` of
    the largest slice's, around that largest slice. These are the levels the benchmark draws slices from.
    """
    if not 0.0 < min_brain_fraction <= 1.0:
        raise ValueError(f"min_brain_fraction must lie in (0, 1], got {min_brain_fraction}")
    area = brain_area_per_level(brain_mask)
    if area.max() == 0:
        raise ValueError("brain mask is empty: no axial slice contains brain voxels")
    peak = int(np.argmax(area))
    keep = area >= min_brain_fraction * area[peak]
    low = peak
    while low > 0 and keep[low - 1]:
        low -= 1
    high = peak
    while high < len(area) - 1 and keep[high + 1]:
        high += 1
    return np.arange(low, high + 1)


def level_to_mm(levels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World z coordinate (mm) of axial slice indices, for an axis-aligned affine."""
    levels = np.asarray(levels, dtype=float)
    return affine[2, 2] * levels + affine[2, 3]
