"""xaiutils.book: glued strings paste without quotes; Colab copies are output-free notebooks whose setup cell
does nothing outside Colab."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest

from xaiutils import book

ROOT = Path(__file__).resolve().parent.parent
REPO_URL = "https://github.com/example/xai-mri-bench"


def test_text_displays_without_quotes():
    assert repr(book.Text("integrated_gradients")) == "integrated_gradients"
    assert repr("integrated_gradients") == "'integrated_gradients'"  # what a plain str would paste


def test_glue_wraps_strings_and_keeps_numbers(monkeypatch):
    myst_nb = pytest.importorskip("myst_nb")
    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: calls.append((name, value, display)))
    book.glue("method", "saliency")
    book.glue("score", 0.25)
    book.glue("mean", np.float64(0.5))
    book.glue("count", np.int64(7))
    assert [(name, repr(value), display) for name, value, display in calls] == [
        ("method", "saliency", False), ("score", "0.25", False), ("mean", "0.5", False), ("count", "7", False)]


def test_colab_copy_is_the_notebook_plus_a_setup_cell():
    source = ROOT / "notebooks" / "03_finetune.py"
    copy = book.colab_notebook(source, REPO_URL, branch="main")
    original = jupytext.read(source, fmt="py:percent")
    nbformat.validate(copy)
    assert len(copy.cells) == len(original.cells) + 1
    assert [cell.source for cell in copy.cells[1:]] == [cell.source for cell in original.cells]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in copy.cells if cell.cell_type == "code")
    setup = copy.cells[0]
    assert setup.metadata["tags"] == ["colab-setup"]
    assert REPO_URL in setup.source
    # the notebooks before 03, in order, are the ones it may need to run
    assert "['00_overview', '01_data', '02_pretrain_mri']" in setup.source
    # the parameters cell keeps its tag, so papermill still finds it in the copy
    assert any("parameters" in cell.metadata.get("tags", []) for cell in copy.cells)


def test_colab_setup_cell_does_nothing_outside_colab(monkeypatch, tmp_path):
    source = book.colab_setup_source(REPO_URL, "main", "04_explain", ["00_overview"])
    compile(source, "setup", "exec")
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(tmp_path)
    exec(source, {})  # would clone and chdir under Colab
    assert Path(os.getcwd()) == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_write_colab_notebooks_leaves_no_partial_files(tmp_path):
    sources = sorted((ROOT / "notebooks").glob("0[01]_*.py"))
    written = book.write_colab_notebooks(sources, tmp_path / "colab", REPO_URL)
    assert [path.name for path in written] == [f"{source.stem}.ipynb" for source in sources]
    assert sorted(path.name for path in (tmp_path / "colab").iterdir()) == [path.name for path in written]
    for path in written:
        nbformat.validate(nbformat.read(path, as_version=4))
