"""MRI volumes, axial slices, synthetic lesions and the benchmark dataset on disk: the names of the modules
below, gathered in one place so that ``from xaiutils import data`` and ``data.make_benchmark(...)`` keep working.

Each job now lives in its own module:

- NIfTI files, the volumes and brain masks of a folder, :func:`voxel_size`: :mod:`xaiutils.mri.nifti`;
- the MNI152 template and its brain mask, computed brain masks: :mod:`xaiutils.mri.brain`;
- the axial band, the anatomy prepared for slicing, the template anatomy: :mod:`xaiutils.mri.anatomy`;
- slice sampling and pseudo-subjects (:class:`Variability`): :mod:`xaiutils.mri.slices`;
- the lesion generators: :mod:`xaiutils.synth.lesions` (also as :mod:`xaiutils.lesions`);
- the ``data`` configuration, its checks and the volume source: :mod:`xaiutils.synth.parameters`;
- the dataset in memory and its content hash: :mod:`xaiutils.synth.benchmark`;
- benchmark synthesis and the splits: :mod:`xaiutils.synth.generate`;
- the dataset on disk (card, README, arrays, tables, NIfTI stacks): :mod:`xaiutils.synth.dataset`.

The embedded default anatomy is the MNI152 2009 T1 template that nilearn ships inside its wheel, so the
benchmark runs offline, on Binder and on Colab. One template is one anatomy: *pseudo-subjects* are that template
under a random smooth deformation, an intensity-curve change, a smooth bias field and noise, each drawn from the
seed. They simulate inter-subject variability; they are not real subjects. Real data come from a folder of T1
NIfTI volumes (:func:`load_volumes`), for example the IXI collection fetched by :mod:`xaiutils.fetch`.

Image convention: ``images[n]`` is an axial slice seen from above with anterior at the top and the subject's left
on the left (``imshow`` shows it the right way up); the NIfTI stacks store the same pixels as RAS+ slices.

Renamed, the old names kept for one release with a ``DeprecationWarning``: ``lesion_params`` →
:func:`lesion_params_from_config`, ``variability`` → :func:`variability_from_config`, ``resolve_source`` →
:func:`resolve_volume_source`. ``BenchmarkDataset`` (a torch ``Dataset`` only the tests used) is gone.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

from .mri.anatomy import (
    FOV_MARGIN,
    Anatomy,
    axial_band,
    brain_area_per_level,
    level_to_mm,
    prepare_anatomy,
    template_anatomy,
)
from .mri.brain import compute_brain_mask, load_mni152
from .mri.nifti import (
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
from .mri.slices import BIAS_SPACING_MM, CONTROL_SPACING_MM, Variability, sample_slices, scale_to_brain
from .synth.benchmark import Benchmark, content_hash
from .synth.dataset import (
    ARRAY_FILES,
    CARD_FILE,
    HASHED_FILES,
    NIFTI_FILES,
    from_nifti_stack,
    load_benchmark,
    make_benchmark,
    to_nifti_stack,
    write_benchmark,
)
from .synth.generate import assign_splits, synthesize
from .synth.parameters import (
    CLASS_NAMES,
    IXI_SOURCE,
    SPLITS,
    TASKS,
    TEMPLATE_SOURCE,
    check_config,
    describe_volume_source,
    lesion_params_from_config,
    resolve_volume_source,
    variability_from_config,
)


def _deprecated(function: Callable, old_name: str) -> Callable:
    """``function`` under its old name, warning that the old name is going."""

    @functools.wraps(function)
    def alias(*args, **kwargs):
        warnings.warn(f"xaiutils.data.{old_name} is deprecated and will be removed in the next release; use "
                      f"xaiutils.data.{function.__name__}", DeprecationWarning, stacklevel=2)
        return function(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old_name
    return alias


lesion_params = _deprecated(lesion_params_from_config, "lesion_params")
variability = _deprecated(variability_from_config, "variability")
resolve_source = _deprecated(resolve_volume_source, "resolve_source")

__all__ = [
    "ARRAY_FILES", "BIAS_SPACING_MM", "CARD_FILE", "CLASS_NAMES", "CONTROL_SPACING_MM", "FOV_MARGIN", "HASHED_FILES",
    "IXI_SOURCE", "MASK_SUFFIXES", "MAX_NONFINITE", "MODALITY_SUFFIXES", "NIFTI_FILES", "SPLITS", "TASKS",
    "TEMPLATE_SOURCE", "VOLUME_SUFFIXES", "Anatomy", "Benchmark", "Variability", "Volume", "VolumeFile",
    "assign_splits", "axial_band", "brain_area_per_level", "check_config", "compute_brain_mask", "content_hash",
    "describe_volume_source", "find_volumes", "from_nifti_stack", "lesion_params", "lesion_params_from_config",
    "level_to_mm", "load_benchmark", "load_mni152", "load_volume", "load_volumes", "make_benchmark",
    "prepare_anatomy", "read_nifti", "resolve_source", "resolve_volume_source", "sample_slices", "scale_to_brain",
    "subject_id", "synthesize", "template_anatomy", "to_nifti_stack", "variability", "variability_from_config",
    "voxel_size", "write_benchmark",
]
