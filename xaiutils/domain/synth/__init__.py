"""The benchmark built from MRI slices (:mod:`xaiutils.domain.mri`): synthetic lesions, synthesis, the dataset on disk.

- :mod:`.lesions`: the lesion generators (shapes, soft masks, placement inside a region, drawing);
- :mod:`.parameters`: the ``data`` configuration checked once (:func:`check_config`), the lesion parameters and
  pseudo-subject variability it gives, the volume source (template, IXI or a folder);
- :mod:`.benchmark`: the dataset in memory (:class:`Benchmark`) and its :func:`content_hash`;
- :mod:`.generate`: :func:`synthesize`, the benchmark from a configuration, and the subject-wise splits;
- :mod:`.dataset`: the dataset folder on disk (card, README, arrays, tables, NIfTI stacks), written atomically
  and read back with its hash checked.

The package re-exports nothing: import each name from its module (``from xaiutils.domain.synth.dataset import
load_benchmark``).
"""
