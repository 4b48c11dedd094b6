"""Helpers for an executable benchmark of explanation methods on brain-MRI slices with synthetic lesions.

The notebooks in ``notebooks/`` hold the narrative, the parameters and the figures; this package holds the
logic they share, so that tests can reach it. Each module has one job:

- ``config``: the presets, a frozen dataclass per step (``presets.resolve`` hands them to notebooks as dicts);
- ``_io``: atomic file and folder writes, dataset stamps;
- ``mri/``: NIfTI volumes, brain masks, the template anatomy, slice sampling; ``fetch``: the IXI download;
- ``synth/``: synthetic lesions, benchmark synthesis, the dataset on disk (card, hash, NIfTI stacks);
  ``pretrain``: the MRI-domain pre-training data and tasks;
- ``models``: backbones cut into blocks, pre-trained weight sources, freezing; ``weights``: weight files in the
  torch hub cache; ``train``: the fitting loop; ``run_record``: what a fine-tuning run folder holds;
  ``task_selection``: notebook 2's choice of pre-training task;
- ``explain/``: one class per attribution method and per control map, in one registry; ``plugins``: users' own
  methods; ``sanity``: the model-randomisation check;
- ``metrics``, ``emd`` (and the opt-in ``emd_fast``): scores against the lesion masks; ``evaluate``: explaining
  and scoring the grid; ``leaderboard``, ``difficulty``, ``stats``, ``verdicts``: what notebooks 4 and 5 report;
- ``pipeline/``: the papermill runner, run folders, locks and the fine-tuning grid; ``cluster``: Dask; ``parallel``:
  process pools;
- ``book``, ``bookcheck``: the book's glue and its browser check; ``quantus_metric``: the exact EMD for Quantus.

``data``, ``lesions``, ``runs`` and ``presets`` are the names the notebooks have always used: ``data``, ``lesions``
and ``runs`` re-export ``mri``/``synth`` and ``pipeline``/``_io``, so code written against them keeps working.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Packages whose versions a dataset card or a notebook reports.
REPORTED_PACKAGES = (
    "xaiutils",
    "numpy",
    "scipy",
    "nibabel",
    "nilearn",
    "torch",
    "torchvision",
    "captum",
    "pot",
    "statsmodels",
    "pandas",
    "matplotlib",
    "papermill",
    "jupytext",
)


def versions() -> dict[str, str]:
    """Return ``{package: version}`` for the packages the benchmark depends on, plus Python itself."""
    import platform
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in REPORTED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
