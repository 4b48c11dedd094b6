"""A volume prepared for slicing: the band of axial levels with enough brain, the square field of view around
the brain, and the template anatomy (MNI152) every pseudo-subject starts from."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from xaiutils.domain.mri.brain import load_mni152
from xaiutils.domain.mri.nifti import voxel_size

FOV_MARGIN = 0.08  # the square field of view is the brain's in-plane extent plus 8 %


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


@dataclass
class Anatomy:
    """A volume prepared for slicing: smoothed against aliasing, cropped to the slab around its band of levels,
    with a square in-plane field of view (FOV) around the brain."""

    t1: np.ndarray  # float32, cropped slab
    brain: np.ndarray  # float32 in [0, 1], cropped slab
    zooms: np.ndarray  # voxel size (mm)
    center: np.ndarray  # FOV centre in voxel coordinates of the cropped slab (x, y, z)
    side_mm: float  # FOV side
    band: np.ndarray  # axial levels (indices in the original volume) with enough brain
    z_offset: int  # original level = slab level + z_offset
    affine: np.ndarray  # of the original volume
    reference: float  # bright-tissue intensity (99.5th percentile in the brain)

    def pixel_mm(self, image_size: int) -> float:
        return self.side_mm / image_size


def prepare_anatomy(t1: np.ndarray, brain_mask: np.ndarray, affine: np.ndarray, image_size: int,
                    min_brain_fraction: float, levels: np.ndarray | None = None, margin_mm: float = 20.0) -> Anatomy:
    """Crop ``t1`` and ``brain_mask`` to the slab of ``levels`` (default: the whole band) ± ``margin_mm``,
    smooth them in-plane so that sampling at the output pixel size does not alias, and fix the square FOV."""
    brain_mask = np.asarray(brain_mask, dtype=bool)
    if not brain_mask.any():
        raise ValueError("brain mask is empty: no voxel is inside the brain")
    zooms = voxel_size(affine)
    band = axial_band(brain_mask, min_brain_fraction)
    used = band if levels is None else np.asarray(levels)
    margin = int(np.ceil(margin_mm / zooms[2]))
    low, high = max(int(used.min()) - margin, 0), min(int(used.max()) + margin + 1, t1.shape[2])
    projection = brain_mask[:, :, band].any(axis=2)
    xs, ys = np.nonzero(projection)
    extent = np.array([(xs.max() - xs.min() + 1) * zooms[0], (ys.max() - ys.min() + 1) * zooms[1]])
    side_mm = float(extent.max() * (1.0 + FOV_MARGIN))
    center = np.array([(xs.max() + xs.min()) / 2, (ys.max() + ys.min()) / 2, (band[0] + band[-1]) / 2 - low])
    factor = side_mm / image_size / zooms[:2]
    sigma = [0.4 * np.sqrt(max(f * f - 1.0, 0.0)) for f in factor] + [0.0]
    slab = np.asarray(t1[:, :, low:high], dtype=np.float32)
    slab_brain = brain_mask[:, :, low:high].astype(np.float32)
    if max(sigma) > 0:
        slab = ndimage.gaussian_filter(slab, sigma)
        slab_brain = ndimage.gaussian_filter(slab_brain, sigma)
    reference = float(np.percentile(t1[brain_mask], 99.5))
    if reference <= 0:
        raise ValueError("the volume has no positive intensity inside its brain mask")
    return Anatomy(slab, slab_brain, zooms, center, side_mm, band, low, np.asarray(affine), reference)


@functools.lru_cache(maxsize=4)
def template_anatomy(image_size: int, min_brain_fraction: float) -> Anatomy:
    """The MNI152 template prepared for slicing (cached: every pseudo-subject starts from it)."""
    t1, brain, affine = load_mni152(resolution=1)
    return prepare_anatomy(t1, brain, affine, image_size, min_brain_fraction)

