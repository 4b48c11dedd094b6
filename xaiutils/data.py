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

from . import mri, synth
from .mri import *  # noqa: F403  (the façade: every name of the two packages)
from .synth import *  # noqa: F403
from .synth.parameters import lesion_params_from_config, resolve_volume_source, variability_from_config


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

__all__ = [*mri.__all__, *synth.__all__, "lesion_params", "resolve_source", "variability"]
