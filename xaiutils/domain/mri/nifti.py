"""T1 volumes on disk: reading NIfTI files (reoriented to RAS+), finding the volumes and brain masks in a folder,
subject IDs from file names, and the voxel size of an affine."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xaiutils.domain.mri.brain import compute_brain_mask

VOLUME_SUFFIXES = (".nii.gz", ".nii")
# a file "<id><suffix>.nii[.gz]" is the brain mask of the volume of subject <id>
MASK_SUFFIXES = ("_desc-brain_mask", "_brain_mask", "_brainmask", "-brainmask", "_mask", "-mask")
# trailing modality tags dropped from file names to get subject IDs ("sub-01_T1w" -> "sub-01")
MODALITY_SUFFIXES = ("_T1w", "_t1w", "-T1", "_T1", "-t1", "_t1")
MAX_NONFINITE = 0.001  # share of NaN / infinite voxels in a volume above which it is refused (0.1 %)
# Smallest extent (mm) of the brain mask's bounding box along every axis. Any human brain, a preterm neonate's
# included, measures more than 60 mm along each axis (an adult's about 140 x 170 x 120 mm), so a crop (the issue's
# was 12 mm) or a slab of a few slices, which cannot hold a brain, is refused instead of becoming a subject. The
# tests' phantoms have voxels large enough (3 to 6 mm) to span more than that.
MIN_BRAIN_EXTENT_MM = 60.0
# Largest ratio between a volume's voxel size (along each axis, sorted) and the median voxel size of its folder:
# scanners differ by a few tens of percent (1 mm against 0.94 mm), a factor above 2 means a volume of another kind.
MAX_VOXEL_SIZE_RATIO = 2.0


def voxel_size(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each array axis: the lengths of the columns of the affine's 3×3 part."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


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
        return voxel_size(self.affine)


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
    _check_voxel_sizes(found, folder)
    return found


def _check_voxel_sizes(found: list[VolumeFile], folder: Path) -> None:
    """Refuse a folder whose volumes' voxel sizes differ by more than :data:`MAX_VOXEL_SIZE_RATIO`, naming them."""
    if len(found) < 2:
        return
    sizes = np.array([np.sort(voxel_size(_nifti_header(item.path, "T1 volume").affine)) for item in found])
    median = np.median(sizes, axis=0)
    for item, size in zip(found, sizes, strict=True):
        ratio = np.maximum(size / median, median / size)
        if not np.all(ratio <= MAX_VOXEL_SIZE_RATIO):
            shown = " x ".join(f"{value:.3g}" for value in size)
            usual = " x ".join(f"{value:.3g}" for value in median)
            raise ValueError(
                f"T1 volume {item.path} has voxels of {shown} mm, while the volumes of {folder} have {usual} mm "
                f"(median); voxel sizes may differ by at most a factor {MAX_VOXEL_SIZE_RATIO:g}: resample it to the "
                "others' voxel size or remove it from the folder")


def check_brain_extent(brain: np.ndarray, affine: np.ndarray, path: str | os.PathLike,
                       min_extent_mm: float = MIN_BRAIN_EXTENT_MM) -> np.ndarray:
    """The extent (mm) of the bounding box of ``brain`` along each axis; refuses, naming ``path``, one shorter
    than ``min_extent_mm`` along any axis (a crop or a slab, not a brain)."""
    where = np.argwhere(brain)
    extent = (where.max(axis=0) - where.min(axis=0) + 1) * voxel_size(affine)
    if not np.all(extent >= min_extent_mm):
        shown = " x ".join(f"{value:.1f}" for value in extent)
        raise ValueError(
            f"T1 volume {path}: its brain mask spans {shown} mm (shape {tuple(brain.shape)}, voxels of "
            f"{' x '.join(f'{value:.3g}' for value in voxel_size(affine))} mm), shorter than {min_extent_mm:g} mm "
            "along an axis: this is a crop or a slab, not a whole brain; give whole-brain volumes")
    return extent


def load_volume(volume_file: VolumeFile) -> Volume:
    """Read one :class:`VolumeFile`: the T1 volume and its brain mask (from the file, else computed)."""
    t1, affine = read_nifti(volume_file.path, "T1 volume")
    if volume_file.mask_path is not None:
        mask, _ = read_nifti(volume_file.mask_path, "brain mask")
        brain = mask > 0.5
        if not brain.any():
            raise ValueError(f"brain mask {volume_file.mask_path} is empty (no voxel above 0.5)")
        mask_source = "file"
    else:
        try:
            brain = compute_brain_mask(t1, voxel_size(affine))
        except ValueError as error:
            raise ValueError(f"T1 volume {volume_file.path}: {error}") from error
        mask_source = "computed"
    check_brain_extent(brain, affine, volume_file.path)
    return Volume(volume_file.subject, t1, brain, affine, mask_source)


def load_volumes(folder: str | os.PathLike) -> list[Volume]:
    """Read every T1 NIfTI volume in ``folder`` (see :func:`find_volumes`), with its brain mask when the folder
    holds one, else a computed one (:func:`compute_brain_mask`). Subject IDs come from the file names."""
    return [load_volume(found) for found in find_volumes(folder)]

