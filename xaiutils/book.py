"""Helpers for the book: numbers glued into the prose, and the Colab copies of the notebooks.

Every number in the book's prose is a value computed by a notebook and pasted with MyST-NB's ``glue``: the
notebook calls :func:`glue`, the text says ``{glue:text}`key:.2f```, or from another page
``{glue:text}`../notebooks/05_regression.py::key:.2f```.

Colab opens only ``.ipynb`` files from GitHub, and this repository keeps its notebooks as py:percent text. The
book build therefore writes output-free ``.ipynb`` copies next to the HTML (``_colab/notebooks/<name>.ipynb``),
each opening with a setup cell that clones the repository, installs it and runs the notebooks before it when
their run folders are missing; publishing the HTML to the ``gh-pages`` branch makes them reachable by Colab.
"""

from __future__ import annotations

import os
from pathlib import Path

from xaiutils.foundation.files import write_atomic

COLAB_DIR = "_colab"


class Text(str):
    """A string whose plain-text display has no quotes, so ``{glue:text}`` pastes it as a word."""

    def __repr__(self) -> str:
        return str(self)


def glue(name: str, value) -> None:
    """Store ``value`` under ``name`` for ``{glue:text}`` without showing it; strings paste without quotes.

    Outside a MyST-NB build (papermill, Colab) the value is still recorded in the notebook's outputs when
    ``myst_nb`` is installed, and silently skipped when it is not: the numbers matter only to the book.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    if isinstance(value, str) and not isinstance(value, Text):
        value = Text(value)
    elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy 2 shows scalars as np.float64(…), which format specs cannot read
    myst_glue(name, value, display=False)


def colab_setup_source(repo_url: str, branch: str, notebook_stem: str, earlier: list[str]) -> str:
    """The first code cell of a Colab copy: clone, install, and produce the inputs this notebook reads."""
    repo_name = repo_url.rstrip("/").rsplit("/", 1)[-1]
    return "\n".join([
        "# Colab only (skipped elsewhere): fetch the repository, install it, and run the notebooks before this",
        "# one at the smoke preset when their run folders are missing. The book's own build never runs this cell.",
        "import os, subprocess, sys",
        "if 'google.colab' in sys.modules:",
        f"    if not os.path.isdir({repo_name!r}):",
        f"        subprocess.run(['git', 'clone', '--depth', '1', '--branch', {branch!r}, {repo_url!r}], check=True)",
        f"    os.chdir(os.path.join({repo_name!r}, 'notebooks'))",
        "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '-e', '..'], check=True)",
        "    subprocess.run([sys.executable, '-m', 'xaiutils', 'setup-weights'], check=True)",
        "    subprocess.run([sys.executable, '-m', 'xaiutils', 'setup-anatomy'], check=True)",
        f"    for step in {earlier!r}:",
        "        if not os.path.isdir(os.path.join('..', 'runs', 'smoke', step)):",
        "            subprocess.run([sys.executable, '-m', 'xaiutils', 'run', step, '--preset', 'smoke'], check=True)",
        f"    print('ready: run the cells below ({notebook_stem})')",
    ])


def colab_notebook(source: str | os.PathLike, repo_url: str, branch: str = "main"):
    """An output-free ``.ipynb`` (nbformat node) of the py:percent notebook ``source``, with the Colab setup cell
    first. ``branch`` is the branch the setup cell clones."""
    import jupytext
    import nbformat

    source = Path(source)
    notebook = jupytext.read(source)  # py:percent or MyST markdown, told apart by the file's header
    earlier = sorted(path.stem for path in source.parent.glob("[0-9][0-9]_*.py") if path.stem < source.stem)
    setup = nbformat.v4.new_code_cell(colab_setup_source(repo_url, branch, source.stem, earlier))
    setup.metadata["tags"] = ["colab-setup"]
    notebook.cells.insert(0, setup)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.metadata["colab"] = {"provenance": []}
    nbformat.validate(notebook)
    return notebook


def write_colab_notebooks(sources, out_dir: str | os.PathLike, repo_url: str, branch: str = "main") -> list[Path]:
    """Write :func:`colab_notebook` copies of ``sources`` into ``out_dir`` (each atomically); return the paths."""
    import nbformat

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        target = out_dir / f"{Path(source).stem}.ipynb"
        write_atomic(target, nbformat.writes(colab_notebook(source, repo_url, branch)) + "\n")
        written.append(target)
    return written
