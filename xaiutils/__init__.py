"""Helpers for an executable benchmark of explanation methods on brain-MRI slices with synthetic lesions.

The notebooks in ``notebooks/`` hold the narrative, the parameters and the figures; this package holds the
logic they share, so that tests can reach it. Modules are small and flat:

- ``presets``: the ``smoke`` and ``study`` parameter sets and how overrides combine with them;
- ``runs``: run folders and the papermill runner behind ``python -m xaiutils run``; ``cluster``: a Dask cluster
  (scheduler address or spec file, SLURM and PBS through dask-jobqueue) for the grid's cells and the scoring;
- ``weights``: placing pre-trained weight files in the torch hub cache;
- ``data``: MRI volumes, slices, pseudo-subjects, dataset I/O and cards; ``lesions``: the lesion generators;
  ``fetch``: the IXI download;
- ``models``: backbones cut into blocks, pre-trained weight sources, freezing; ``train``: the fitting loop;
  ``pretrain``: the MRI-domain pre-training data;
- ``explain``: the attribution-method registry and model-free baselines; ``metrics``: scores against the masks.
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
