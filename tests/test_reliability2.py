"""Issue 23 (reliability, second round): ``--overwrite`` deletes only run folders, result sets are written whole,
grids are checked against accuracy.csv, duplicate methods and a user's ``sys.exit`` are refused, and damaged files
of a finished grid cell are found.

One test (or a few) per numbered case of the issue; each failed on the code before the fix.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_reliability import ROOT, one_line

from xaiutils.execution.runner import run_notebook

# A notebook that writes one file and finishes at once.
TINY_NOTEBOOK = textwrap.dedent(
    """\
    # %% tags=["parameters"]
    preset = "smoke"
    out_dir = None
    text = "new"

    # %%
    from pathlib import Path
    (Path(out_dir) / "result.txt").write_text(text)
    """
)


# ------------------------------------------------------------------------------- case 1: --overwrite deletes only runs


def user_folder(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.txt").write_text("three years of work")
    (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return folder


def test_case1_overwrite_refuses_a_folder_that_is_not_a_run_folder(tmp_path):
    notebook = tmp_path / "tiny.py"
    notebook.write_text(TINY_NOTEBOOK)
    folder = user_folder(tmp_path / "mine")
    result = subprocess.run([sys.executable, "-m", "xaiutils", "run", str(notebook), "--out", str(folder),
                             "--overwrite"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert f"{folder} is not a run folder" in line and "nothing was deleted" in line
    assert (folder / "thesis.txt").read_text() == "three years of work"
    assert (folder / "sub" / "data.csv").read_text() == "a,b\n1,2\n"
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.endswith(".lock")) == [
        "mine", "tiny.py"]  # no temporary folder left
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes")
    with pytest.raises(FileExistsError, match="it is a file, not a folder"):
        run_notebook(notebook, out_dir=a_file, overwrite=True, progress=False)
    assert a_file.read_text() == "notes"


def test_case1_overwrite_still_replaces_a_run_folder_and_an_empty_folder(tmp_path):
    notebook = tmp_path / "tiny.py"
    notebook.write_text(TINY_NOTEBOOK)
    empty = tmp_path / "empty"
    empty.mkdir()
    run_notebook(notebook, out_dir=empty, overwrite=True, progress=False, parameters={"text": "first"})
    assert (empty / "result.txt").read_text() == "first" and (empty / "run.json").is_file()
    run_notebook(notebook, out_dir=empty, overwrite=True, progress=False, parameters={"text": "second"})
    assert (empty / "result.txt").read_text() == "second"
