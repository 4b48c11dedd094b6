"""The book build must fail when a notebook cell raises (and succeed when none does)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")

NOTEBOOK = textwrap.dedent(
    """\
    # ---
    # jupyter:
    #   jupytext:
    #     text_representation:
    #       extension: .py
    #       format_name: percent
    #   kernelspec:
    #     display_name: Python 3
    #     language: python
    #     name: python3
    # ---

    # %% [markdown]
    # # A tiny notebook

    # %% tags=["parameters"]
    preset = "smoke"

    # %%
    print("value:", 6 * 7)
    {extra}
    """
)


def make_book(folder: Path, extra: str) -> Path:
    """A two-page book that uses the project's own _config.yml (so its execution settings are under test)."""
    shutil.copy(ROOT / "_config.yml", folder / "_config.yml")
    (folder / "book").mkdir()
    shutil.copy(ROOT / "book" / "references.bib", folder / "book" / "references.bib")
    (folder / "book" / "intro.md").write_text("# Intro\n\nA test book.\n")
    (folder / "notebooks").mkdir()
    (folder / "notebooks" / "tiny.py").write_text(NOTEBOOK.format(extra=extra))
    (folder / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/tiny\n"
    )
    return folder


def build(folder: Path) -> subprocess.CompletedProcess:
    if not JUPYTER_BOOK.exists():
        pytest.skip("jupyter-book is not installed beside this Python")
    return subprocess.run(
        [str(JUPYTER_BOOK), "build", str(folder), "--builder", "html"],
        capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_book_builds_and_executes_a_clean_notebook(tmp_path):
    result = build(make_book(tmp_path, extra=""))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    page = (tmp_path / "_build" / "html" / "notebooks" / "tiny.html").read_text()
    assert "value: 42" in page, "the notebook was not executed during the build"


@pytest.mark.slow
def test_book_build_fails_when_a_cell_raises(tmp_path):
    result = build(make_book(tmp_path, extra='raise RuntimeError("cell failure under test")'))
    assert result.returncode != 0, "a raising cell must make the book build fail"
    assert "cell failure under test" in result.stdout + result.stderr
