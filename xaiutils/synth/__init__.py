"""The benchmark built from MRI slices (:mod:`xaiutils.mri`): synthetic lesions, synthesis, the dataset on disk.

- :mod:`.lesions`: the lesion generators (shapes, soft masks, placement inside a region, drawing);
- :mod:`.parameters`: the ``data`` configuration checked once (:func:`check_config`), the lesion parameters and
  pseudo-subject variability it gives, the volume source (template, IXI or a folder);
- :mod:`.benchmark`: the dataset in memory (:class:`Benchmark`) and its :func:`content_hash`;
- :mod:`.generate`: :func:`synthesize`, the benchmark from a configuration, and the subject-wise splits;
- :mod:`.dataset`: the dataset folder on disk (card, README, arrays, tables, NIfTI stacks), written atomically
  and read back with its hash checked.
"""

from .benchmark import Benchmark, content_hash
from .dataset import (
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
from .generate import assign_splits, synthesize
from .parameters import (
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

__all__ = [
    "ARRAY_FILES", "CARD_FILE", "CLASS_NAMES", "HASHED_FILES", "IXI_SOURCE", "NIFTI_FILES", "SPLITS", "TASKS",
    "TEMPLATE_SOURCE", "Benchmark", "assign_splits", "check_config", "content_hash", "describe_volume_source",
    "from_nifti_stack", "lesion_params_from_config", "load_benchmark", "make_benchmark", "resolve_volume_source",
    "synthesize", "to_nifti_stack", "variability_from_config", "write_benchmark",
]
