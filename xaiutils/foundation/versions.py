"""The versions of the packages the benchmark depends on, as a dataset card and a run folder record them."""

from __future__ import annotations

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
