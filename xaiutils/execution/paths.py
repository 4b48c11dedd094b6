"""Where things are: the repository checkout, the runs root, a step's default run folder and the notebooks."""

from __future__ import annotations

import os
from pathlib import Path

RUNS_ENV = "XAIBENCH_RUNS"


def project_root() -> Path | None:
    """The repository checkout this package belongs to (the folder holding ``_toc.yml``), if any."""
    candidates = [Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]]
    for folder in candidates:
        if (folder / "_toc.yml").is_file() and (folder / "xaiutils").is_dir():
            return folder
    return None


def runs_root() -> Path:
    """Where run folders go: ``$XAIBENCH_RUNS`` if set, else ``runs/`` in the checkout, else ``./runs``."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV])
    root = project_root()
    return (root if root is not None else Path.cwd()) / "runs"


def default_out_dir(preset: str, step: str) -> Path:
    """The run folder a notebook uses when no ``out_dir`` is given: ``<runs root>/<preset>/<step>``."""
    return runs_root() / preset / step


def notebooks_dir() -> Path:
    root = project_root()
    if root is None:
        raise FileNotFoundError("no repository checkout found (a folder with _toc.yml and xaiutils/)")
    return root / "notebooks"


def available_notebooks() -> list[str]:
    try:
        return sorted(path.stem for path in notebooks_dir().glob("[0-9]*.py"))
    except FileNotFoundError:
        return []


def find_notebook(name: str | os.PathLike) -> Path:
    """Resolve a notebook given as a path or as a name in ``notebooks/`` (``00_overview`` or ``00_overview.py``)."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".py")
    try:
        candidate = notebooks_dir() / f"{stem}.py"
    except FileNotFoundError:
        candidate = None
    if candidate is not None and candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"notebook {str(name)!r} not found; available notebooks: {', '.join(available_notebooks()) or 'none'}"
    )
