"""The book build: it fails when a notebook cell raises; glued values reach other pages; launch buttons open
notebooks (Binder: the paired .ipynb, Colab: the output-free copy the build writes)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

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
    from xaiutils.book import glue

    print("value:", 6 * 7)
    glue("answer", 6 * 7)
    glue("word", "forty-two")
    {extra}
    """
)

# An executable chapter kept as MyST markdown (like book/methods.md).
MYST_CHAPTER = textwrap.dedent(
    """\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    # A chapter

    ```{code-cell} ipython3
    print("chapter value:", 2 + 3)
    ```
    """
)


def make_book(folder: Path, extra: str) -> Path:
    """A two-page book that uses the project's own _config.yml (so its execution settings are under test)."""
    shutil.copy(ROOT / "_config.yml", folder / "_config.yml")
    (folder / "book").mkdir()
    shutil.copy(ROOT / "book" / "references.bib", folder / "book" / "references.bib")
    shutil.copytree(ROOT / "book" / "_ext", folder / "book" / "_ext")
    (folder / "book" / "intro.md").write_text(
        "# Intro\n\nPasted: {glue:text}`../notebooks/tiny.py::answer:d` and "
        "{glue:text}`../notebooks/tiny.py::word:s`.\n"
    )
    (folder / "notebooks").mkdir()
    (folder / "notebooks" / "tiny.py").write_text(NOTEBOOK.format(extra=extra))
    (folder / "book" / "chapter.md").write_text(MYST_CHAPTER)
    (folder / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/tiny\n  - file: book/chapter\n"
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
    intro = (tmp_path / "_build" / "html" / "book" / "intro.html").read_text()
    # (a cross-page reference needs a format spec: MyST-NB reads the text after the last colon as one)
    assert re.search(r"Pasted: <span[^>]*>42</span> and <span[^>]*>forty-two</span>\.", intro), \
        "glued values did not reach another page"


COLAB_BLOB = "https://colab.research.google.com/github/xai-mri-bench/xai-mri-bench/blob/"


def colab_target(link: str, html: Path) -> Path:
    """The file of the built site that a Colab link opens: the link names ``blob/<branch>/<path>``, and the branch
    holds the folder ``colab_root`` of the built HTML (both from the project's _config.yml)."""
    sphinx = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    branch, root = sphinx["colab_branch"], sphinx["colab_root"]
    prefix = f"{COLAB_BLOB}{branch}/"
    assert link.startswith(prefix), f"{link} is not on the branch {branch!r} that the deploy publishes"
    return html / root / link.removeprefix(prefix)


@pytest.mark.slow
def test_launch_buttons_open_notebooks_not_text(tmp_path):
    result = build(make_book(tmp_path, extra=""))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = tmp_path / "_build" / "html"
    page = (html / "notebooks" / "tiny.html").read_text()
    links = set(re.findall(r'href="(https://[^"]+)"', page))
    colab = [link for link in links if link.startswith("https://colab.research.google.com/")]
    binder = [link for link in links if link.startswith("https://mybinder.org/")]
    assert colab == [f"{COLAB_BLOB}colab/notebooks/tiny.ipynb"], links
    assert len(binder) == 1 and binder[0].endswith("urlpath=lab/tree/notebooks/tiny.ipynb"), binder
    # every launch link resolves: the Colab copy is in the folder published to the Colab branch, and the Binder
    # target is the .ipynb that binder/postBuild pairs with the page's py:percent source
    copy = json.loads(colab_target(colab[0], html).read_text())
    paired = binder[0].split("urlpath=lab/tree/")[1]
    assert (tmp_path / paired).with_suffix(".py").exists(), paired
    assert 'for nb in notebooks/*.py; do jupytext --to ipynb "$nb"' in (ROOT / "binder" / "postBuild").read_text()
    assert copy["cells"][0]["metadata"]["tags"] == ["colab-setup"]
    assert all(not cell.get("outputs") for cell in copy["cells"] if cell["cell_type"] == "code")
    assert any('print("value:", 6 * 7)' in "".join(cell["source"]) for cell in copy["cells"])
    # the MyST markdown chapter is a notebook too: executed, and its Colab button opens its own copy
    chapter = (html / "book" / "chapter.html").read_text()
    assert "chapter value: 5" in chapter
    chapter_links = sorted({link for link in re.findall(r'href="(https://[^"]+)"', chapter)
                            if link.startswith(COLAB_BLOB)})
    assert chapter_links == [f"{COLAB_BLOB}colab/book/chapter.ipynb"], chapter_links
    chapter_copy = json.loads(colab_target(chapter_links[0], html).read_text())
    assert any('print("chapter value:", 2 + 3)' in "".join(cell["source"]) for cell in chapter_copy["cells"])


@pytest.mark.slow
def test_book_build_fails_when_a_cell_raises(tmp_path):
    result = build(make_book(tmp_path, extra='raise RuntimeError("cell failure under test")'))
    assert result.returncode != 0, "a raising cell must make the book build fail"
    assert "cell failure under test" in result.stdout + result.stderr
