"""MRI volumes, axial slices, synthetic lesions and the benchmark dataset on disk.

The embedded default anatomy is the MNI152 2009 T1 template that nilearn ships inside its wheel, so the
benchmark runs offline, on Binder and on Colab. One template is one anatomy: *pseudo-subjects* are that template
under a random smooth deformation, an intensity-curve change, a smooth bias field and noise, each drawn from the
seed. They simulate inter-subject variability; they are not real subjects. Real data come from a folder of T1
NIfTI volumes (:func:`load_volumes`), for example the IXI collection fetched by :mod:`xaiutils.fetch`.

The pipeline, in :func:`synthesize`: volumes → axial slices over a band of levels with enough brain, resampled to
``image_size`` and scaled robustly within the brain → lesions drawn (:mod:`xaiutils.lesions`) → subject-wise
splits with balanced classes. :func:`make_benchmark` writes the result atomically into one folder;
:func:`load_benchmark` reads it back; :class:`BenchmarkDataset` wraps it for torch.

Image convention: ``images[n]`` is an axial slice seen from above with anterior at the top and the subject's left
on the left (``imshow`` shows it the right way up); the NIfTI stacks store the same pixels as RAS+ slices.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from . import lesions as lesion_lib
from ._io import atomic_folder, stamp_matches, write_stamp

TASKS = ("shape", "presence")
SPLITS = ("train", "val", "test")
CLASS_NAMES = {"shape": ("regular", "irregular"), "presence": ("no lesion", "lesion")}
TEMPLATE_SOURCE = "mni152"
IXI_SOURCE = "ixi"
VOLUME_SUFFIXES = (".nii.gz", ".nii")
# a file "<id><suffix>.nii[.gz]" is the brain mask of the volume of subject <id>
MASK_SUFFIXES = ("_desc-brain_mask", "_brain_mask", "_brainmask", "-brainmask", "_mask", "-mask")
# trailing modality tags dropped from file names to get subject IDs ("sub-01_T1w" -> "sub-01")
MODALITY_SUFFIXES = ("_T1w", "_t1w", "-T1", "_T1", "-t1", "_t1")
FOV_MARGIN = 0.08  # the square field of view is the brain's in-plane extent plus 8 %
CONTROL_SPACING_MM = 30.0  # B-spline control-point spacing of the pseudo-subject deformation
BIAS_SPACING_MM = 60.0  # control-point spacing of the smooth bias field
CARD_FILE = "card.json"
ARRAY_FILES = {"images": "images.npy", "masks": "masks.npy", "brain_masks": "brain_masks.npy",
               "labels": "labels.npy"}
NIFTI_FILES = {"images": "images.nii.gz", "masks": "masks.nii.gz", "brain_masks": "brain_masks.nii.gz"}
# the files the content hash covers, relative to the dataset folder (their sizes and change times are stamped)
HASHED_FILES = tuple(f"cache/{name}" for name in ARRAY_FILES.values()) + ("metadata.csv", "lesions.csv")
MAX_NONFINITE = 0.001  # share of NaN / infinite voxels in a volume above which it is refused (0.1 %)


# --------------------------------------------------------------------------------------------------- volumes


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


@dataclass
class Volume:
    """One subject's T1 volume in RAS+ orientation, its brain mask and its affine (voxel → mm)."""

    subject: str
    t1: np.ndarray  # float32, X×Y×Z
    brain_mask: np.ndarray  # bool, X×Y×Z
    affine: np.ndarray  # 4×4
    mask_source: str = "file"  # "file", "computed" or "template"

    @property
    def zooms(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


@dataclass(frozen=True)
class VolumeFile:
    """A T1 volume found in a folder: subject ID, file, and the brain-mask file if one was given."""

    subject: str
    path: Path
    mask_path: Path | None = None


def _strip_nifti_suffix(name: str) -> str | None:
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def subject_id(path: str | os.PathLike) -> str:
    """Subject ID from a file name: the name without ``.nii[.gz]`` and without a trailing modality tag
    (``IXI002-Guys-0828-T1.nii.gz`` → ``IXI002-Guys-0828``, ``sub-01_T1w.nii.gz`` → ``sub-01``)."""
    stem = _strip_nifti_suffix(Path(path).name)
    if stem is None:
        raise ValueError(f"{path} is not a NIfTI file name (expected {' or '.join(VOLUME_SUFFIXES)})")
    for suffix in MODALITY_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _nifti_header(path: Path, what: str):
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as error:  # nibabel raises several types for unreadable files
        raise ValueError(f"cannot read {what} {path}: not a readable NIfTI file ({error})") from error
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        image = nib.funcs.squeeze_image(image)
        shape = image.shape
    if len(shape) != 3:
        raise ValueError(f"{what} {path} is {len(shape)}-D with shape {tuple(shape)}; expected a 3-D volume")
    if min(shape) < 2:
        raise ValueError(f"{what} {path} has shape {tuple(shape)}; expected a 3-D volume, not a single slice")
    return image


def read_nifti(path: str | os.PathLike, what: str = "volume",
               max_nonfinite: float = MAX_NONFINITE) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3-D NIfTI file reoriented to RAS+ (nibabel's closest canonical); return ``(float32 array,
    affine)``. Raises ``ValueError`` naming the file for a corrupt, unreadable or non-3-D file.

    Non-finite voxels (NaN, ±inf): up to ``max_nonfinite`` of all voxels they are set to 0 with a warning; a
    larger share, or a volume without any finite voxel, is refused with the file and the share named (setting
    them to 0 silently would shrink the brain mask and change the slices without a word)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    image = nib.as_closest_canonical(_nifti_header(path, what))
    try:
        array = np.asarray(image.get_fdata(dtype=np.float32), dtype=np.float32)
    except Exception as error:
        raise ValueError(f"cannot read the voxel data of {what} {path}: corrupt NIfTI file ({error})") from error
    finite = np.isfinite(array)
    if not finite.all():
        share = 1.0 - np.count_nonzero(finite) / finite.size
        if share >= 1.0:
            raise ValueError(f"{what} {path} holds no finite voxel (every voxel is NaN or infinite)")
        if share > max_nonfinite:
            raise ValueError(
                f"{what} {path}: {share:.1%} of its voxels are NaN or infinite (at most {max_nonfinite:.1%} are "
                f"accepted); set them to 0 where they mark background, or mask the volume, and run again")
        warnings.warn(f"{what} {path}: {share:.3%} of its voxels are NaN or infinite; they are set to 0",
                      stacklevel=2)
        array = np.where(finite, array, np.float32(0.0))
    return array, np.asarray(image.affine)


def find_volumes(folder: str | os.PathLike) -> list[VolumeFile]:
    """Every T1 NIfTI volume (``.nii``, ``.nii.gz``) directly in ``folder``, sorted by subject ID, each with its
    brain-mask file if the folder holds one (``<id>_mask.nii.gz``, ``<id>_brain_mask.nii.gz``,
    ``<id>_desc-brain_mask.nii.gz`` …). Headers are checked here, so a corrupt or non-3-D file fails early."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"volume folder {folder} does not exist or is not a folder")
    volumes: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = _strip_nifti_suffix(path.name)
        if stem is None or not path.is_file() or path.name.startswith("."):
            continue
        mask_suffix = next((s for s in MASK_SUFFIXES if stem.endswith(s) and len(stem) > len(s)), None)
        if mask_suffix is not None:
            masks[subject_id(stem[: -len(mask_suffix)] + ".nii")] = path
            continue
        subject = subject_id(path)
        if subject in volumes:
            raise ValueError(f"two volumes for subject {subject!r} in {folder}: {volumes[subject].name}, {path.name}")
        volumes[subject] = path
    if not volumes:
        raise FileNotFoundError(f"no T1 NIfTI volumes ({', '.join(VOLUME_SUFFIXES)}) found in folder {folder}")
    orphans = sorted(set(masks) - set(volumes))
    if orphans:
        warnings.warn(f"brain masks without a volume ignored: {', '.join(orphans)}", stacklevel=2)
    found = []
    for subject in sorted(volumes):
        header = _nifti_header(volumes[subject], "T1 volume")
        mask_path = masks.get(subject)
        if mask_path is not None:
            mask_header = _nifti_header(mask_path, "brain mask")
            if mask_header.shape != header.shape:
                raise ValueError(
                    f"brain mask {mask_path} has shape {mask_header.shape}, its volume {volumes[subject]} "
                    f"has shape {header.shape}"
                )
        found.append(VolumeFile(subject, volumes[subject], mask_path))
    return found


def load_volume(volume_file: VolumeFile) -> Volume:
    """Read one :class:`VolumeFile`: the T1 volume and its brain mask (from the file, else computed)."""
    t1, affine = read_nifti(volume_file.path, "T1 volume")
    if volume_file.mask_path is not None:
        mask, _ = read_nifti(volume_file.mask_path, "brain mask")
        brain = mask > 0.5
        if not brain.any():
            raise ValueError(f"brain mask {volume_file.mask_path} is empty (no voxel above 0.5)")
        source = "file"
    else:
        zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        try:
            brain = compute_brain_mask(t1, zooms)
        except ValueError as error:
            raise ValueError(f"T1 volume {volume_file.path}: {error}") from error
        source = "computed"
    return Volume(volume_file.subject, t1, brain, affine, source)


def load_volumes(folder: str | os.PathLike) -> list[Volume]:
    """Read every T1 NIfTI volume in ``folder`` (see :func:`find_volumes`), with its brain mask when the folder
    holds one, else a computed one (:func:`compute_brain_mask`). Subject IDs come from the file names."""
    return [load_volume(found) for found in find_volumes(folder)]


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
    nonzero = smooth[smooth > 1e-6 * max(float(np.abs(smooth).max()), 1e-30)]
    if nonzero.size == 0 or np.ptp(nonzero) == 0:
        raise ValueError("cannot compute a brain mask: the volume is empty or constant")
    tissue = smooth > lesion_lib.otsu_threshold(nonzero)
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


# ---------------------------------------------------------------------------------------------------- slices


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
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
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
                  variability: Variability | None = None, extra_volumes=()) -> tuple[np.ndarray, ...]:
    """Axial slices at ``levels`` (indices of the original volume) on an ``image_size``² grid over the FOV.

    With ``variability`` (and ``rng``) the volume is first turned into a pseudo-subject: a random rotation about
    the axial axis and isotropic scaling, plus a smooth cubic B-spline displacement field; then a random gamma
    curve, a smooth multiplicative bias field and Rician noise change its intensities. Only the requested slices
    are computed. Returns ``(images, brain_masks)``: float32 ``K×S×S`` scaled by :func:`scale_to_brain`, and bool.

    ``extra_volumes``: arrays on the grid of ``anatomy.t1`` (e.g. tissue probability maps prepared like it) that
    are sampled at the same, deformed positions (linear interpolation, no intensity changes) and returned as a
    third element, ``E×K×S×S`` float32, so that they follow the pseudo-subject's anatomy exactly.
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
    if len(extra_volumes):
        return images, brain, np.asarray(extras, dtype=np.float32)
    return images, brain


def scale_to_brain(image: np.ndarray, brain: np.ndarray, percentiles=(0.5, 99.5)) -> np.ndarray:
    """Map the ``percentiles`` of the brain's intensities to 0 and 1 and clip to [0, 1] (robust to outliers)."""
    brain = np.asarray(brain, dtype=bool)
    if not brain.any():
        raise ValueError("brain mask of the slice is empty")
    low, high = np.percentile(image[brain], percentiles)
    if high <= low:
        raise ValueError("the slice's brain intensities are constant; cannot scale them")
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------- synthesis


@dataclass
class Benchmark:
    """A benchmark dataset: arrays in memory (``path`` set when read from or written to disk).

    Unpacks as ``images, masks, labels, metadata, card = benchmark``.
    """

    images: np.ndarray  # N×H×W float32
    masks: np.ndarray  # N×H×W float32 in [0, 1]; binarise at 0.5
    labels: np.ndarray  # N int64
    metadata: pd.DataFrame  # one row per image
    card: dict[str, Any]
    brain_masks: np.ndarray  # N×H×W bool
    lesions: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per lesion
    path: Path | None = None

    def __iter__(self):
        return iter((self.images, self.masks, self.labels, self.metadata, self.card))

    def __len__(self) -> int:
        return len(self.labels)

    def indices(self, split: str | None = None) -> np.ndarray:
        """Row indices of ``split`` (all rows for ``None``)."""
        if split is None:
            return np.arange(len(self))
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        return np.flatnonzero(self.metadata["split"].to_numpy() == split)


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate a resolved ``data`` configuration; return it with tuples normalised. Raises ``ValueError``
    naming the bad value (and listing valid choices) before any work is done."""
    cfg = dict(config)
    if cfg["task"] not in TASKS:
        raise ValueError(f"unknown task {cfg['task']!r}; valid tasks: {', '.join(TASKS)}")
    for name in ("n_subjects", "slices_per_subject", "image_size"):
        value = cfg[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if cfg["image_size"] < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {cfg['image_size']!r}")
    fractions = tuple(float(f) for f in cfg["split_fractions"])
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"split_fractions must be {len(SPLITS)} non-negative numbers ({', '.join(SPLITS)}) summing to 1, "
            f"got {cfg['split_fractions']!r}"
        )
    if fractions[0] == 0:
        raise ValueError("split_fractions must give the train split a positive fraction")
    needed = sum(f > 0 for f in fractions)
    if cfg["n_subjects"] < needed:
        raise ValueError(f"n_subjects={cfg['n_subjects']} is too few for {needed} non-empty splits")
    cfg["split_fractions"] = fractions
    if not isinstance(cfg["seed"], (int, np.integer)) or isinstance(cfg["seed"], bool) or cfg["seed"] < 0:
        raise ValueError(f"seed must be a non-negative integer, got {cfg['seed']!r}")
    params = lesion_params(cfg)
    variability(cfg)
    source = cfg["source"]
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"source must be {TEMPLATE_SOURCE!r}, {IXI_SOURCE!r} or a folder, got {source!r}")
    # as the lesion generator reads them (checked: whole lesion counts, finite numbers), so the card records
    # exactly the values used
    cfg["n_lesions"], cfg["radius_range"] = params.n_lesions, params.radius_range
    cfg["lesion_contrast"] = params.contrast_range
    return cfg


def lesion_params(cfg: dict[str, Any]) -> lesion_lib.LesionParams:
    return lesion_lib.LesionParams(
        n_lesions=tuple(cfg["n_lesions"]),
        radius_range=tuple(cfg["radius_range"]),
        max_aspect=float(cfg["max_aspect"]),
        irregularity=float(cfg["irregularity"]),
        contrast_range=tuple(cfg["lesion_contrast"]),
        edge_softness=float(cfg["edge_softness"]),
        min_gap=float(cfg["min_gap"]),
        placement=cfg["placement"],
    )


def variability(cfg: dict[str, Any]) -> Variability:
    return Variability(*(float(cfg[name]) for name in (
        "deformation_mm", "rotation_deg", "scale_jitter", "contrast_jitter", "bias_field", "noise")))


def assign_splits(n_subjects: int, fractions, rng: np.random.Generator) -> np.ndarray:
    """Split name per subject (shuffled): counts by largest remainder, at least one subject in every split with
    a positive fraction."""
    fractions = np.asarray(fractions, dtype=float)
    counts = np.floor(fractions * n_subjects).astype(int)
    for index in np.argsort(-(fractions * n_subjects - counts), kind="stable")[: n_subjects - counts.sum()]:
        counts[index] += 1
    for index in np.flatnonzero((fractions > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        counts[donor] -= 1
        counts[index] += 1
    names = np.repeat(np.array(SPLITS), counts)
    return names[rng.permutation(n_subjects)]


def _balanced_labels(count: int, extra: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.array([0, 1] * (count // 2) + ([extra] if count % 2 else []), dtype=np.int64)
    return labels[rng.permutation(count)]


def resolve_source(source: str | os.PathLike) -> str | Path:
    """``"mni152"`` stays as it is; ``"ixi"`` becomes the fetched IXI folder; anything else is a folder."""
    if str(source) == TEMPLATE_SOURCE:
        return TEMPLATE_SOURCE
    if str(source) == IXI_SOURCE:
        from .fetch import ixi_folder

        return ixi_folder(must_exist=True)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"unknown source {str(source)!r}: not {TEMPLATE_SOURCE!r}, not {IXI_SOURCE!r} and not an existing "
            "folder of T1 NIfTI volumes"
        )
    return folder


def synthesize(config: dict[str, Any], progress: bool = True) -> Benchmark:
    """Build the benchmark in memory from a resolved ``data`` configuration (see ``presets``)."""
    from tqdm import tqdm

    import xaiutils

    cfg = check_config(config)
    params = lesion_params(cfg)
    size = int(cfg["image_size"])
    per_subject = int(cfg["slices_per_subject"])
    source = resolve_source(cfg["source"])
    root = np.random.SeedSequence(int(cfg["seed"]))
    split_seq, subject_seq, choice_seq = root.spawn(3)

    if source == TEMPLATE_SOURCE:
        n_subjects = int(cfg["n_subjects"])
        subjects = [f"pseudo{index:03d}" for index in range(n_subjects)]
        files = [None] * n_subjects
        template = template_anatomy(size, float(cfg["min_brain_fraction"]))
        if per_subject > len(template.band):
            raise ValueError(
                f"slices_per_subject={per_subject} exceeds the {len(template.band)} levels of the axial band "
                f"(min_brain_fraction={cfg['min_brain_fraction']})"
            )
        vary = variability(cfg)
    else:
        found = find_volumes(source)
        if len(found) > cfg["n_subjects"]:
            chosen = np.sort(np.random.default_rng(choice_seq).choice(len(found), cfg["n_subjects"], replace=False))
            found = [found[i] for i in chosen]
        elif len(found) < cfg["n_subjects"]:
            warnings.warn(f"{source} holds {len(found)} volumes; using all of them (n_subjects="
                          f"{cfg['n_subjects']})", stacklevel=2)
        needed = sum(f > 0 for f in cfg["split_fractions"])
        if len(found) < needed:
            raise ValueError(f"{source} holds {len(found)} volume(s), too few for {needed} non-empty splits")
        subjects = [f.subject for f in found]
        files = found
        n_subjects = len(found)
        vary = None

    splits = assign_splits(n_subjects, cfg["split_fractions"], np.random.default_rng(split_seq))
    rank_in_split = np.zeros(n_subjects, int)
    for name in SPLITS:
        members = np.flatnonzero(splits == name)
        rank_in_split[members] = np.arange(len(members))
    class_names = CLASS_NAMES[cfg["task"]]
    images, masks, brains, labels, rows, lesion_rows = [], [], [], [], [], []
    subject_seeds = subject_seq.spawn(n_subjects)
    for index in tqdm(range(n_subjects), desc="subjects", disable=not progress):
        rng = np.random.default_rng(subject_seeds[index])
        if files[index] is None:
            anatomy = template
            levels = np.sort(rng.choice(anatomy.band, per_subject, replace=False))
        else:
            volume = load_volume(files[index])
            band = axial_band(volume.brain_mask, float(cfg["min_brain_fraction"]))
            if per_subject > len(band):
                raise ValueError(f"slices_per_subject={per_subject} exceeds the {len(band)} levels of the axial "
                                 f"band of {files[index].path}")
            levels = np.sort(rng.choice(band, per_subject, replace=False))
            anatomy = prepare_anatomy(volume.t1, volume.brain_mask, volume.affine, size,
                                      float(cfg["min_brain_fraction"]), levels=levels)
        slice_images, slice_brains = sample_slices(anatomy, levels, size, rng, vary)
        subject_labels = _balanced_labels(per_subject, int(rank_in_split[index] % 2), rng)
        pixel_mm = anatomy.pixel_mm(size)
        for image, brain, level, label in zip(slice_images, slice_brains, levels, subject_labels, strict=True):
            where = f"subject {subjects[index]}, level {int(level)}"
            if cfg["task"] == "shape":
                shape = lesion_lib.SHAPES[label]
                count = int(rng.integers(params.n_lesions[0], params.n_lesions[1] + 1))
            elif label == 1:
                shape = lesion_lib.SHAPES[int(rng.integers(2))]
                count = int(rng.integers(params.n_lesions[0], params.n_lesions[1] + 1))
            else:
                shape, count = "none", 0
            region = brain if params.placement == "brain" else lesion_lib.white_matter_region(image, brain)
            placed, _ = lesion_lib.place_lesions(region, [shape] * count, params, rng, where=where)
            drawn, mask = lesion_lib.draw_lesions(image, placed, params.edge_softness)
            binary = mask >= 0.5
            n_image = len(images)
            table = lesion_lib.lesion_table_rows(placed, params.edge_softness)
            for row in table:
                lesion_rows.append({"image": n_image, **row})
            centroid = ndimage.center_of_mass(binary) if binary.any() else (np.nan, np.nan)
            rows.append({
                "image": n_image,
                "subject": subjects[index],
                "level": int(level),
                "z_mm": float(level_to_mm(level, anatomy.affine)),
                "split": str(splits[index]),
                "label": int(label),
                "class_name": class_names[label],
                "shape": shape,
                "n_lesions": len(placed),
                "lesion_area_px": int(binary.sum()),
                "lesion_area_mm2": float(binary.sum() * pixel_mm**2),
                "contrast": float(np.mean([p.contrast for p in placed])) if placed else np.nan,
                "solidity": float(np.mean([r["solidity"] for r in table])) if table else np.nan,
                "centroid_row": float(centroid[0]),
                "centroid_col": float(centroid[1]),
                "brain_area_px": int(brain.sum()),
                "pixel_mm": float(pixel_mm),
            })
            images.append(drawn)
            masks.append(mask)
            brains.append(brain)
            labels.append(int(label))

    metadata = pd.DataFrame(rows)
    lesion_table = pd.DataFrame(lesion_rows, columns=[
        "image", "lesion", "shape", "center_row", "center_col", "radius_px", "aspect", "angle_deg", "contrast",
        "area_px", "solidity"])
    bench = Benchmark(
        images=np.stack(images).astype(np.float32),
        masks=np.stack(masks).astype(np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        metadata=metadata,
        card={},
        brain_masks=np.stack(brains).astype(bool),
        lesions=lesion_table,
    )
    counts = metadata.groupby(["split", "class_name"]).size()
    bench.card = {
        "name": "xaiutils MRI lesion benchmark",
        "task": cfg["task"],
        "class_names": list(class_names),
        "n_images": len(bench),
        "n_subjects": n_subjects,
        "image_size": size,
        "seed": int(cfg["seed"]),
        "parameters": {key: (list(v) if isinstance(v, tuple) else v) for key, v in cfg.items()},
        "source": _describe_source(source),
        "counts": {split: {name: int(counts.get((split, name), 0)) for name in class_names} for split in SPLITS},
        "content_hash": content_hash(bench),
        "versions": xaiutils.versions(),
        "conventions": {
            "images": "N×H×W float32, slice seen from above: anterior at the top, subject's left on the left; "
                      "intensities scaled per slice so the brain's 0.5th/99.5th percentiles map to 0/1, then "
                      "lesions added",
            "masks": "N×H×W float32 in [0, 1] with soft edges; binarise at 0.5 for scoring",
            "brain_masks": "N×H×W bool",
            "labels": f"0 = {class_names[0]}, 1 = {class_names[1]}",
        },
    }
    return bench


def _describe_source(source) -> dict[str, Any]:
    if source == TEMPLATE_SOURCE:
        return {
            "kind": "pseudo-subjects",
            "name": "MNI152 2009 T1 template (nilearn)",
            "note": "every subject is the same template anatomy under a random smooth deformation, intensity "
                    "curve, bias field and noise: simulated variability of one anatomy, not real subjects",
        }
    return {"kind": "folder", "name": Path(source).name, "note": "real T1 volumes, one per subject"}


# ----------------------------------------------------------------------------------------------------- files


def content_hash(bench: Benchmark) -> str:
    """sha256 over the arrays' bytes (with dtype and shape) and a canonical CSV of the metadata and lesion
    tables; file timestamps and the card do not enter it."""
    digest = hashlib.sha256()
    for name in ("images", "masks", "brain_masks", "labels"):
        array = np.ascontiguousarray(getattr(bench, name))
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    for table in (bench.metadata, bench.lesions):
        digest.update(table.to_csv(index=False, float_format="%.10g", lineterminator="\n").encode())
    return digest.hexdigest()


def to_nifti_stack(array: np.ndarray, pixel_mm: float = 1.0, description: str = ""):
    """An ``N×H×W`` stack of slices as a NIfTI image (X×Y×N, RAS+): each slice becomes one axial plane, so a
    neuroimaging viewer shows it the same way up as ``imshow`` does."""
    import nibabel as nib

    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"a slice stack must be N×H×W, got shape {array.shape}")
    data = np.ascontiguousarray(np.transpose(array[:, ::-1, :], (2, 1, 0)))
    if data.dtype == bool:
        data = data.astype(np.uint8)
    affine = np.diag([pixel_mm, pixel_mm, pixel_mm, 1.0])
    image = nib.Nifti1Image(data, affine)
    image.header["descrip"] = description[:79].encode()
    image.header.set_xyzt_units("mm")
    return image


def from_nifti_stack(image) -> np.ndarray:
    """Inverse of :func:`to_nifti_stack`: the ``N×H×W`` array (dtype as stored)."""
    data = np.asarray(image.dataobj)
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1, :])


def _dataset_readme(card: dict[str, Any]) -> str:
    lines = [
        f"# {card['name']}",
        "",
        f"- task: {card['task']} (labels: {card['conventions']['labels']})",
        f"- images: {card['n_images']} of {card['image_size']}×{card['image_size']} pixels from "
        f"{card['n_subjects']} subjects; seed {card['seed']}",
        f"- source: {card['source']['name']}: {card['source']['note']}",
        f"- content hash (sha256): `{card['content_hash']}`",
        "",
        "| split | " + " | ".join(card["class_names"]) + " |",
        "| --- | " + " | ".join("---" for _ in card["class_names"]) + " |",
    ]
    for split, counts in card["counts"].items():
        lines.append(f"| {split} | " + " | ".join(str(counts[name]) for name in card["class_names"]) + " |")
    lines += [
        "",
        "Files: `images.nii.gz`, `masks.nii.gz`, `brain_masks.nii.gz` (slice stacks for neuroimaging viewers), "
        "`cache/*.npy` (arrays for training), `metadata.csv` (one row per image), `lesions.csv` (one row per "
        "lesion), `card.json` (parameters, versions, hash).",
        "",
    ]
    return "\n".join(lines)


def write_benchmark(bench: Benchmark, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``bench`` into ``out_dir`` atomically: built in a temporary sibling folder and renamed into place;
    on any error the temporary folder is removed and ``out_dir`` is left as it was."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"dataset folder {out_dir} exists; pass overwrite=True to replace it")
    with atomic_folder(out_dir) as partial:
        card = dict(bench.card)
        card["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        card["files"] = {"arrays": {k: f"cache/{v}" for k, v in ARRAY_FILES.items()}, "nifti": NIFTI_FILES,
                         "metadata": "metadata.csv", "lesions": "lesions.csv"}
        (partial / "cache").mkdir()
        for name, filename in ARRAY_FILES.items():
            np.save(partial / "cache" / filename, getattr(bench, name))
        pixel_mm = float(np.median(bench.metadata["pixel_mm"])) if len(bench.metadata) else 1.0
        for name, filename in NIFTI_FILES.items():
            to_nifti_stack(getattr(bench, name), pixel_mm, f"xaiutils benchmark {name}").to_filename(
                str(partial / filename))
        bench.metadata.to_csv(partial / "metadata.csv", index=False)
        bench.lesions.to_csv(partial / "lesions.csv", index=False)
        (partial / CARD_FILE).write_text(json.dumps(card, indent=2, default=str) + "\n")
        (partial / "README.md").write_text(_dataset_readme(card))
        write_stamp(partial, HASHED_FILES, card["content_hash"])
    bench.card = card
    bench.path = out_dir
    return out_dir


def make_benchmark(out_dir: str | os.PathLike, preset: str = "smoke", seed: int | None = 0, *,
                   overwrite: bool = False, progress: bool = True, **overrides: Any) -> Path:
    """Generate the benchmark dataset of ``preset`` (with ``seed`` and any ``data`` parameter overridden) and
    write it atomically into ``out_dir``; return that path. ``seed=None`` takes the preset's seed.

    Every parameter is checked before work starts, and nothing is written unless generation succeeds.
    """
    from .presets import resolve

    config = resolve("data", preset, seed=seed, **overrides)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"dataset folder {out_dir} exists; pass overwrite=True to replace it")
    bench = synthesize(config, progress=progress)
    bench.card["preset"] = preset
    return write_benchmark(bench, out_dir, overwrite=overwrite)


def _remake_hint(card: dict[str, Any] | None = None) -> str:
    preset = (card or {}).get("preset", "smoke")
    return (f"re-create it with notebook 1 (python -m xaiutils run 01_data --preset {preset} --overwrite) or "
            f"make_benchmark(..., overwrite=True)")


def _load_array(file: Path, dataset: Path, mmap: bool) -> np.ndarray:
    if not file.is_file():
        raise FileNotFoundError(f"dataset {dataset} is incomplete: {file.relative_to(dataset)} is missing; "
                                f"{_remake_hint()}")
    try:
        return np.load(file, mmap_mode="r" if mmap else None)
    except Exception as error:  # EOFError (empty), ValueError (truncated, pickled), OSError
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"dataset {dataset}: {file.relative_to(dataset)} is not a readable .npy array "
                         f"({reason}); the file is damaged: {_remake_hint()}") from None


def _read_table(file: Path, dataset: Path, **options) -> pd.DataFrame:
    if not file.is_file():
        raise FileNotFoundError(f"dataset {dataset} is incomplete: {file.name} is missing; {_remake_hint()}")
    try:
        return pd.read_csv(file, **options)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"dataset {dataset}: {file.name} is not a readable table ({reason}); "
                         f"{_remake_hint()}") from None


def load_benchmark(path: str | os.PathLike, verify: bool = False, mmap: bool = False) -> Benchmark:
    """Read a dataset folder written by :func:`make_benchmark`; ``mmap=True`` memory-maps the array cache.

    The data are always checked against the card's content hash, so nothing is computed on a dataset changed
    after its card was written. By default the check is cheap: the sizes and change times of the hashed files
    are compared with ``cache/stamp.json``, written with the dataset; while they match, the card's hash stands.
    When they differ (or the stamp is missing), and always with ``verify=True``, the content hash is recomputed
    from the data (about 0.07 s for the smoke dataset): a mismatch raises ``ValueError``; a match renews the
    stamp where the folder is writable. Damaged or inconsistent files raise one-line errors naming the file.
    """
    from .runs import read_card

    path = Path(path)
    card = read_card(path)
    arrays = {name: _load_array(path / "cache" / filename, path, mmap) for name, filename in ARRAY_FILES.items()}
    images = arrays["images"]
    if images.ndim != 3:
        raise ValueError(f"dataset {path}: cache/images.npy has shape {images.shape}, expected N×H×W; "
                         f"{_remake_hint(card)}")
    for name in ("masks", "brain_masks"):
        if arrays[name].shape != images.shape:
            raise ValueError(f"dataset {path}: cache/{ARRAY_FILES[name]} has shape {arrays[name].shape}, the "
                             f"images {images.shape}; {_remake_hint(card)}")
    if arrays["labels"].shape != images.shape[:1]:
        raise ValueError(f"dataset {path}: cache/labels.npy has shape {arrays['labels'].shape} for "
                         f"{images.shape[0]} images; {_remake_hint(card)}")
    text_columns = {"subject": str, "split": str, "class_name": str, "shape": str}
    metadata = _read_table(path / "metadata.csv", path, dtype=text_columns, keep_default_na=False,
                           na_values={c: [""] for c in ("contrast", "solidity", "centroid_row", "centroid_col")})
    lesions = _read_table(path / "lesions.csv", path, dtype={"shape": str})
    bench = Benchmark(arrays["images"], arrays["masks"], arrays["labels"], metadata, card, arrays["brain_masks"],
                      lesions, path)
    if len(metadata) != len(bench.labels):
        raise ValueError(f"dataset {path}: metadata.csv has {len(metadata)} rows for {len(bench.labels)} images; "
                         f"{_remake_hint(card)}")
    if verify or not stamp_matches(path, card["content_hash"]):
        actual = content_hash(bench)
        if actual != card["content_hash"]:
            raise ValueError(f"dataset {path} no longer matches its card: the content hash of its files is "
                             f"{actual[:12]}…, card.json records {card['content_hash'][:12]}… (a file was changed "
                             f"after the dataset was written); {_remake_hint(card)}")
        write_stamp(path, HASHED_FILES, actual)
    return bench


class BenchmarkDataset(torch.utils.data.Dataset):
    """A torch ``Dataset`` over a benchmark (or its folder), optionally one split.

    Items are ``(image, label)`` with ``image`` a ``C×H×W`` float32 tensor (grey repeated to ``channels``), or
    ``(image, label, mask)`` with ``with_mask=True``. ``indices`` maps item ``i`` to its row in the metadata.
    """

    def __init__(self, benchmark: Benchmark | str | os.PathLike, split: str | None = None, channels: int = 1,
                 with_mask: bool = False, transform=None):
        if not isinstance(benchmark, Benchmark):
            benchmark = load_benchmark(benchmark)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.benchmark = benchmark
        self.indices = benchmark.indices(split)
        self.channels = channels
        self.with_mask = with_mask
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int):
        row = int(self.indices[item])
        image = torch.from_numpy(np.array(self.benchmark.images[row], dtype=np.float32))[None]
        if self.channels > 1:
            image = image.expand(self.channels, -1, -1).contiguous()
        if self.transform is not None:
            image = self.transform(image)
        label = torch.tensor(int(self.benchmark.labels[row]), dtype=torch.long)
        if self.with_mask:
            return image, label, torch.from_numpy(np.array(self.benchmark.masks[row], dtype=np.float32))
        return image, label
