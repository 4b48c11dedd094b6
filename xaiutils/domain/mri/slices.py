"""Axial slices sampled from a prepared anatomy, optionally of a pseudo-subject: the template under a random
rotation and scaling, a smooth B-spline deformation field, an intensity curve, a bias field and Rician noise, all
drawn from the caller's random generator. Slices are scaled robustly within the brain."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from xaiutils.domain.mri.anatomy import Anatomy

CONTROL_SPACING_MM = 30.0  # B-spline control-point spacing of the pseudo-subject deformation
BIAS_SPACING_MM = 60.0  # control-point spacing of the smooth bias field


@dataclass(frozen=True)
class Variability:
    """How pseudo-subjects differ from the template (all zero: the template itself)."""

    deformation_mm: float = 5.0  # SD of the B-spline coefficients of the displacement (mm)
    rotation_deg: float = 5.0  # rotation about the axial axis drawn from ± this
    scale_jitter: float = 0.05  # isotropic scaling drawn from 1 ± this
    contrast_jitter: float = 0.15  # SD of log gamma of the intensity curve
    bias_field: float = 0.2  # SD of the B-spline coefficients of the log bias field
    noise: float = 0.02  # Rician noise SD relative to bright brain tissue

    def __post_init__(self):
        for name in ("deformation_mm", "rotation_deg", "scale_jitter", "contrast_jitter", "bias_field", "noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
            if not getattr(self, name) < float("inf"):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.scale_jitter >= 0.5:
            raise ValueError(f"scale_jitter must be < 0.5, got {self.scale_jitter!r}")


def _control_grid(extent_mm: np.ndarray, spacing: float) -> tuple[np.ndarray, tuple[int, ...]]:
    shape = tuple(int(np.ceil(e / spacing)) + 2 for e in extent_mm)
    low = -0.5 * spacing * (np.array(shape) - 1)
    return low, shape


def _spline_field(values: np.ndarray, low: np.ndarray, spacing: float, points: np.ndarray) -> np.ndarray:
    """Cubic B-spline interpolation of control-point ``values`` (grid from ``low`` with ``spacing`` mm) at
    ``points`` (…×3, mm)."""
    coords = ((points - low) / spacing).reshape(-1, 3).T
    # prefilter=False: the values are B-spline coefficients (a free-form deformation), so the field is an
    # approximating, smooth spline rather than one forced through noisy control values
    return ndimage.map_coordinates(values, coords, order=3, mode="nearest", prefilter=False).reshape(
        points.shape[:-1])


def _slice_points(offsets: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
    """Points (mm, relative to the FOV centre) of square axial slices: K×S×S×3, rows anterior → posterior."""
    points = np.empty((len(z_mm), len(offsets), len(offsets), 3))
    points[..., 0] = offsets[None, None, :]  # x: columns, subject's left to right
    points[..., 1] = -offsets[None, :, None]  # y: rows, anterior at the top
    points[..., 2] = z_mm[:, None, None]
    return points


def _smooth_field(values, low, spacing, offsets, z_mm, coarse: int = 32) -> np.ndarray:
    """A smooth spline field on the slices' pixel grid: evaluated exactly on a coarse grid spanning the same
    square, then interpolated linearly (the field varies over tens of mm, the coarse grid every few mm)."""
    size = len(offsets)
    if size <= coarse:
        return _spline_field(values, low, spacing, _slice_points(offsets, z_mm))
    coarse_offsets = np.linspace(offsets[0], offsets[-1], coarse)
    field = _spline_field(values, low, spacing, _slice_points(coarse_offsets, z_mm))
    # separable linear interpolation, rows then columns (element-wise: no BLAS threads, bit-reproducible)
    position = np.linspace(0.0, coarse - 1.0, size)
    lower = np.minimum(np.floor(position).astype(int), coarse - 2)
    fraction = position - lower
    rows = field[:, lower, :] * (1.0 - fraction)[None, :, None] + field[:, lower + 1, :] * fraction[None, :, None]
    return rows[:, :, lower] * (1.0 - fraction) + rows[:, :, lower + 1] * fraction


def sample_slices(anatomy: Anatomy, levels: np.ndarray, image_size: int, rng: np.random.Generator | None = None,
                  variability: Variability | None = None, extra_volumes=(), label_volumes=()) -> tuple[np.ndarray, ...]:
    """Axial slices at ``levels`` (indices of the original volume) on an ``image_size``² grid over the FOV.

    With ``variability`` (and ``rng``) the volume is first turned into a pseudo-subject: a random rotation about
    the axial axis and isotropic scaling, plus a smooth cubic B-spline displacement field; then a random gamma
    curve, a smooth multiplicative bias field and Rician noise change its intensities. Only the requested slices
    are computed. Returns ``(images, brain_masks)``: float32 ``K×S×S`` scaled by :func:`scale_to_brain`, and bool.

    ``extra_volumes``: arrays on the grid of ``anatomy.t1`` (e.g. tissue probability maps prepared like it) that
    are sampled at the same, deformed positions (linear interpolation, no intensity changes) and returned as a
    third element, ``E×K×S×S`` float32, so that they follow the pseudo-subject's anatomy exactly.
    ``label_volumes``: integer label maps on the same grid, sampled at the same positions by nearest neighbour and
    returned last, ``L×K×S×S`` int16 (0 outside the volume).
    """
    levels = np.asarray(levels)
    size = int(image_size)
    pixel = anatomy.pixel_mm(size)
    offsets = (np.arange(size) - (size - 1) / 2) * pixel
    z_mm = (levels - anatomy.z_offset - anatomy.center[2]) * anatomy.zooms[2]
    points = _slice_points(offsets, z_mm)
    pulled = points
    vary = variability is not None and rng is not None
    if vary:
        half_band = 0.5 * len(anatomy.band) * anatomy.zooms[2] + 20.0
        extent = np.array([anatomy.side_mm, anatomy.side_mm, 2 * half_band])
        angle = np.radians(rng.uniform(-1, 1) * variability.rotation_deg)
        scale = 1.0 + rng.uniform(-1, 1) * variability.scale_jitter
        rotation = scale * np.array(
            [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
        )
        low, shape = _control_grid(extent, CONTROL_SPACING_MM)
        displacement = rng.normal(0.0, variability.deformation_mm, size=(3, *shape))
        bias_low, bias_shape = _control_grid(extent, BIAS_SPACING_MM)
        log_bias = rng.normal(0.0, variability.bias_field, size=bias_shape)
        gamma = float(np.exp(rng.normal(0.0, variability.contrast_jitter)))
        pulled = np.empty_like(points)
        for axis in range(3):  # element-wise rather than a matmul: no BLAS threads, bit-reproducible
            pulled[..., axis] = sum(rotation[axis, j] * points[..., j] for j in range(3))
        for axis in range(3):
            pulled[..., axis] += _smooth_field(displacement[axis], low, CONTROL_SPACING_MM, offsets, z_mm)
    voxels = (pulled / anatomy.zooms + anatomy.center).reshape(-1, 3).T
    t1 = ndimage.map_coordinates(anatomy.t1, voxels, order=1, mode="constant", cval=0.0)
    extras = [ndimage.map_coordinates(np.asarray(volume, dtype=np.float32), voxels, order=1, mode="constant",
                                      cval=0.0).reshape(points.shape[:-1]) for volume in extra_volumes]
    labels = [ndimage.map_coordinates(np.asarray(volume, dtype=np.int16), voxels, order=0, mode="constant",
                                      cval=0).reshape(points.shape[:-1]) for volume in label_volumes]
    brain = ndimage.map_coordinates(anatomy.brain, voxels, order=1, mode="constant", cval=0.0) > 0.5
    t1 = t1.reshape(points.shape[:-1]).astype(np.float64)
    brain = brain.reshape(points.shape[:-1])
    if vary:
        t1 *= np.exp(_smooth_field(log_bias, bias_low, BIAS_SPACING_MM, offsets, z_mm))
        t1 = anatomy.reference * np.maximum(t1 / anatomy.reference, 0.0) ** gamma
        sigma = variability.noise * anatomy.reference
        if sigma > 0:
            noise = rng.normal(0.0, sigma, size=(2, *t1.shape))
            t1 = np.sqrt((t1 + noise[0]) ** 2 + noise[1] ** 2)
    images = np.empty(t1.shape, np.float32)
    for index, level in enumerate(levels):
        if brain[index].sum() < 16:
            raise ValueError(f"brain mask is empty (under 16 pixels) in the slice at level {int(level)}")
        images[index] = scale_to_brain(t1[index], brain[index])
    result = (images, brain)
    if len(extra_volumes):
        result += (np.asarray(extras, dtype=np.float32),)
    if len(label_volumes):
        result += (np.asarray(labels, dtype=np.int16),)
    return result


def scale_to_brain(image: np.ndarray, brain: np.ndarray, percentiles=(0.5, 99.5)) -> np.ndarray:
    """Map the ``percentiles`` of the brain's intensities to 0 and 1 and clip to [0, 1] (robust to outliers)."""
    brain = np.asarray(brain, dtype=bool)
    if not brain.any():
        raise ValueError("brain mask of the slice is empty")
    low, high = np.percentile(image[brain], percentiles)
    if high <= low:
        raise ValueError("the slice's brain intensities are constant; cannot scale them")
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)

