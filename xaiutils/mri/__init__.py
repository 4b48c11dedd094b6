"""MRI volumes and slices, with no knowledge of lesions or of the benchmark built from them.

- :mod:`.nifti`: T1 NIfTI files on disk (read, reoriented to RAS+), the volumes and brain masks of a folder,
  subject IDs, :func:`voxel_size`;
- :mod:`.brain`: the MNI152 template and its brain mask, computed brain masks, Otsu's thresholds;
- :mod:`.anatomy`: the axial band of levels with enough brain, a volume prepared for slicing
  (:class:`Anatomy`), the template anatomy;
- :mod:`.slices`: axial slices of pseudo-subjects (:class:`Variability`: deformation, intensity curve, bias
  field, noise) scaled within the brain.

Image convention: a slice is seen from above with anterior at the top and the subject's left on the left
(``imshow`` shows it the right way up).
"""

from .anatomy import (
    FOV_MARGIN,
    Anatomy,
    axial_band,
    brain_area_per_level,
    level_to_mm,
    prepare_anatomy,
    template_anatomy,
)
from .brain import compute_brain_mask, load_mni152, otsu_threshold, otsu_thresholds_3
from .nifti import (
    MASK_SUFFIXES,
    MAX_NONFINITE,
    MODALITY_SUFFIXES,
    VOLUME_SUFFIXES,
    Volume,
    VolumeFile,
    find_volumes,
    load_volume,
    load_volumes,
    read_nifti,
    subject_id,
    voxel_size,
)
from .slices import BIAS_SPACING_MM, CONTROL_SPACING_MM, Variability, sample_slices, scale_to_brain

__all__ = [
    "BIAS_SPACING_MM", "CONTROL_SPACING_MM", "FOV_MARGIN", "MASK_SUFFIXES", "MAX_NONFINITE", "MODALITY_SUFFIXES",
    "VOLUME_SUFFIXES", "Anatomy", "Variability", "Volume", "VolumeFile", "axial_band", "brain_area_per_level",
    "compute_brain_mask", "find_volumes", "level_to_mm", "load_mni152", "load_volume", "load_volumes",
    "otsu_threshold", "otsu_thresholds_3", "prepare_anatomy", "read_nifti", "sample_slices", "scale_to_brain",
    "subject_id", "template_anatomy", "voxel_size",
]
