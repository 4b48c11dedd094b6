"""Helpers for an executable benchmark of explanation methods on brain-MRI slices with synthetic lesions.

The notebooks in ``notebooks/`` hold the narrative, the parameters and the figures; this package holds the
logic they share, so that tests can reach it. It reads as layers, bottom-up; a module imports only from its own
layer or the layers below it, never from a higher one, and no two modules import each other, directly or in a
circle. ``lint-imports`` (import-linter, run by ``make test``; the contract is in ``pyproject.toml``) checks both.

1. ``foundation/``: what every layer may use and which knows nothing of MRI or models. ``config``: the presets,
   a frozen dataclass per step, and ``resolve``/``resolve_from`` that hand them to notebooks as dicts;
   ``files``: atomic file and folder writes, dataset stamps, YAML files; ``versions``: the package versions a run
   records.
2. ``domain/``: the benchmark's science, with no knowledge of how or where it runs. ``mri/``: NIfTI volumes,
   brain masks, the template anatomy, slice sampling, the IXI download (``mri.fetch``); ``synth/``: synthetic
   lesions, benchmark synthesis, the dataset on disk (card, hash, NIfTI stacks); ``models``: backbones cut into
   blocks, weight sources, freezing; ``weights``: weight files in the torch hub cache; ``train``: the fitting
   loop; ``pretrain``: the MRI-domain pre-training data and tasks; ``explain/``: one class per attribution method
   and per control map, in one registry; ``plugins``: users' own methods; ``metrics``, ``emd`` (and the opt-in
   ``emd_fast``): scores against the lesion masks.
3. ``execution/``: running work, knowing nothing of explanations. The papermill runner (``runner``, ``params``,
   ``paths``, ``locks``), the fine-tuning grid (``grid``, ``inputs``), what a run folder holds (``run_record``),
   and the executors, which take callables: process pools (``parallel``) and Dask (``cluster``).
4. ``analysis/``: what the notebooks report. ``evaluate``: explaining and scoring the grid; ``stats``: the
   regressions; ``leaderboard``, ``sanity``, ``difficulty``, ``verdicts``; ``task_selection``: notebook 2's choice
   of pre-training task.
5. Entry points, the modules at the top of the package: ``__main__`` (``python -m xaiutils``), ``book`` and
   ``bookcheck`` (the book's glue and its browser check), ``quantus_metric`` (the exact EMD for Quantus). The
   notebooks sit at this level too.

Every name has one home: import it from the module that defines it (``from xaiutils.foundation.config import
resolve``, ``from xaiutils.domain.synth.dataset import load_benchmark``); no module re-exports another's names.
"""

from __future__ import annotations

__version__ = "0.1.0"
