"""Issue 23 (reliability, second round): ``--overwrite`` deletes only run folders, result sets are written whole,
grids are checked against accuracy.csv, duplicate methods and a user's ``sys.exit`` are refused, and damaged files
of a finished grid cell are found.

One test (or a few) per numbered case of the issue; each failed on the code before the fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import test_evaluate  # the tests folder is on sys.path under pytest (rootdir import mode)
import test_reliability
from test_reliability import ROOT, one_line

from xaiutils.__main__ import main
from xaiutils.analysis import evaluate
from xaiutils.domain import plugins
from xaiutils.execution.grid import run_grid
from xaiutils.execution.runner import run_notebook
from xaiutils.foundation import files

tiny_grid = test_evaluate.tiny_grid
tiny_dataset, dataset_copy = test_reliability.tiny_dataset, test_reliability.dataset_copy

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


# --------------------------------------------------------------------------------- case 4: duplicate method names


def test_case4_duplicate_methods_are_refused_naming_them_before_any_work(tmp_path, capsys, monkeypatch):
    from xaiutils.analysis import evaluate

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the method list was checked")

    monkeypatch.setattr(evaluate, "explain_grid", no_work)
    monkeypatch.setattr(evaluate, "load_run", no_work)
    code = main(["evaluate", "--method", "tools.py:flat", "--preset", "smoke", "--grid-dir", str(tmp_path / "grid"),
                 "--data-dir", str(tmp_path / "dataset"), "--out", str(tmp_path / "out"),
                 "-p", "methods", "[saliency, saliency, sobel]"])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert "methods list a method more than once: saliency ('saliency', 'saliency')" in line
    assert not (tmp_path / "out").exists()
    # aliases count as their method; the grid's own entry point refuses the same list
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"more than once: grad_cam \('grad_cam', 'Grad-CAM'\)"):
        evaluate.explain_grid(tmp_path / "grid", ["none-k0-s0"], tmp_path / "dataset", [0],
                              ["grad_cam", "Grad-CAM", "sobel"], ["emd_score"])


# ------------------------------------------------------------------------ case 6: sys.exit in a user's method


def write_accuracy(grid: Path, runs=("none-k0-s0", "none-k0-s1")) -> None:
    pd.DataFrame({"run": list(runs), "test_accuracy": [0.5, 0.75][: len(runs)]}).to_csv(grid / "accuracy.csv",
                                                                                       index=False)


def test_case6_a_method_calling_sys_exit_is_refused_with_a_non_zero_exit_code(tiny_grid, tmp_path, capsys):
    root, data_dir, _ = tiny_grid
    write_accuracy(root / "grid")
    methods_file = tmp_path / "quitting.py"
    methods_file.write_text("import sys\n\n\ndef quits(model, images, target):\n    sys.exit(0)\n")
    out = tmp_path / "board"
    # the command line's own code in this process: a SystemExit escaping it would fail the test (exit code 0)
    try:
        code = main(["evaluate", "--method", f"{methods_file}:quits", "--preset", "smoke", "--grid-dir",
                     str(root / "grid"), "--data-dir", str(data_dir), "--out", str(out), "-p", "methods", "[input]"])
    except SystemExit as escaped:
        pytest.fail(f"the method's sys.exit({escaped.code}) ended the command")
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert one_line(stderr).startswith("error: method 'quits' called sys.exit(0) on a batch of 2 images")
    assert not out.exists()
    # sys.exit while the method file is imported is refused the same way
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(3)\n\n\ndef method(model, images, target):\n"
                                                  "    return images[:, 0]\n")
    entry = plugins.parse_entries([f"{tmp_path / 'exits_on_import.py'}:method"])[0]
    with pytest.raises(plugins.InvalidMethod, match=r"called sys.exit\(3\) while it was imported"):
        plugins.load(entry)


# ------------------------------------------------------------- case 2: a result set is written whole or not at all

EVALUATE_OPTIONS = ["--preset", "smoke", "-p", "methods", "[input, sobel]", "-p", "metrics",
                    "[emd_score, importance_mass_accuracy]", "-p", "n_test_images", "4", "-p", "resolution", "16",
                    "-p", "selection", "all", "-p", "n_boot", "20", "-p", "sanity_images", "2",
                    "-p", "sanity_stages", "1", "-p", "workers", "1"]


def flat_method(tmp_path: Path) -> str:
    (tmp_path / "flat.py").write_text("def flat(model, images, target):\n    return images[:, 0] + 1.0\n")
    return f"{tmp_path / 'flat.py'}:flat"


def test_case2_a_full_disk_while_evaluate_writes_leaves_the_previous_result_set(tiny_grid, tmp_path, capsys,
                                                                                 monkeypatch):
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "1")
    root, data_dir, _ = tiny_grid
    write_accuracy(root / "grid")
    out = tmp_path / "board"
    out.mkdir()
    previous = {name: f"previous {name}\n" for name in ("scores.csv", "sanity.csv", "leaderboard.csv")}
    for name, text in previous.items():
        (out / name).write_text(text)
    written = []
    to_csv = pd.DataFrame.to_csv

    def disk_fills_up(self, *args, **kwargs):  # the second table written finds the disk full
        written.append(len(self))
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        return to_csv(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_fills_up)
    arguments = ["evaluate", "--method", flat_method(tmp_path), "--grid-dir", str(root / "grid"), "--data-dir",
                 str(data_dir), "--out", str(out), *EVALUATE_OPTIONS]
    with pytest.raises(OSError, match="No space left"):
        main(arguments)
    assert {path.name: path.read_text() for path in out.iterdir()} == previous  # the old set, complete
    assert sorted(path.name for path in tmp_path.iterdir()) == ["board", "flat.py"]  # no temporary folder left
    monkeypatch.undo()
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "1")
    assert main(arguments) == 0
    assert sorted(path.name for path in out.iterdir()) == ["leaderboard.csv", "sanity.csv", "scores.csv"]
    assert "flat" in pd.read_csv(out / "leaderboard.csv")["method"].tolist()
    # a folder holding anything else is not replaced: refused before any work, nothing deleted
    (out / "thesis.txt").write_text("mine")
    capsys.readouterr()
    assert main(arguments) == 2
    assert "holds files evaluate did not write (thesis.txt)" in one_line(capsys.readouterr().err)
    assert (out / "thesis.txt").read_text() == "mine"


# -------------------------------------------------------------------- case 3: accuracy.csv checked against the grid


def test_case3_a_truncated_accuracy_table_is_refused_naming_the_missing_runs(tiny_grid, tmp_path, capsys,
                                                                               monkeypatch):
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "1")
    root, data_dir, _ = tiny_grid
    grid = root / "grid"
    write_accuracy(grid, runs=["none-k0-s0"])  # the second row cut off
    out = tmp_path / "board"
    try:
        code = main(["evaluate", "--method", flat_method(tmp_path), "--grid-dir", str(grid), "--data-dir",
                     str(data_dir), "--out", str(out), *EVALUATE_OPTIONS])
        line = one_line(capsys.readouterr().err)
        assert code == 2 and not out.exists()
        assert f"{grid / 'accuracy.csv'} does not match its grid folder: it lacks 1 of the 2 finished runs " \
               "(none-k0-s1)" in line and "python -m xaiutils grid --preset smoke" in line
        (grid / "accuracy.csv").write_text("")  # emptied
        with pytest.raises(ValueError, match="accuracy.csv is not a readable table"):
            evaluate.read_accuracy(grid)
        write_accuracy(grid, runs=["none-k0-s0", "none-k0-s0"])
        with pytest.raises(ValueError, match="lacks 1 of the 2 finished runs .none-k0-s1.; it lists none-k0-s0 "
                                             "more than once"):
            evaluate.read_accuracy(grid)
    finally:
        write_accuracy(grid)
    assert evaluate.read_accuracy(grid)["run"].tolist() == ["none-k0-s0", "none-k0-s1"]


# --------------------------------------------------------------- case 7: damaged files of a finished grid cell

# The grid tests' stand-in for notebook 3, writing the weights and predictions a real cell writes too.
FAKE_CELL = test_reliability.FAKE_FINETUNE + textwrap.dedent(
    """\
    from pathlib import Path
    (Path(out_dir) / "model.pt").write_bytes(bytes(range(256)) * 64)
    (Path(out_dir) / "predictions.csv").write_text("image,split,label,prob_class1,predicted,correct\\n"
                                                   "0,test,1,0.9,1,True\\n")
    """
)


def damage_in_place(path: Path) -> None:
    """Flip one byte, keeping the size and the modification time."""
    info = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


@pytest.mark.slow
def test_case7_a_damaged_file_of_a_finished_cell_is_found_and_the_cell_runs_again(tmp_path, dataset_copy, capfd):
    notebook, log, out = tmp_path / "fake_cell.py", tmp_path / "executions.log", tmp_path / "grid"
    notebook.write_text(FAKE_CELL)
    spec = {"sources": ["none"], "n_pretrained_blocks": {"none": [0]}, "seeds": [0]}
    parameters = {"log_file": str(log), "data_dir": str(dataset_copy)}

    def grid():
        return run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, parameters=parameters)

    grid()
    grid()
    assert log.read_text().split() == ["none-k0-s0"], "an intact finished cell is skipped"
    cell = out / "none-k0-s0"
    damage_in_place(cell / "model.pt")
    grid()
    assert log.read_text().split() == ["none-k0-s0"] * 2, "the cell with a damaged model.pt ran again"
    assert "grid: cell none-k0-s0 is damaged (model.pt changed since it was written" in capfd.readouterr().err
    assert (cell / "model.pt").read_bytes() == bytes(range(256)) * 64
    (cell / "predictions.csv").write_text("image,split,la")  # truncated
    grid()
    assert log.read_text().split() == ["none-k0-s0"] * 3
    assert "(predictions.csv changed since it was written" in capfd.readouterr().err
    grid()
    assert log.read_text().split() == ["none-k0-s0"] * 3, "the repaired cell is skipped again"


def test_case3_the_grid_records_its_accuracy_table_and_a_changed_one_is_refused(tiny_grid, capsys):
    """A table the grid wrote carries its size and SHA-256 (checksums.json): an edited or truncated one is refused
    even when the rows it keeps are all finished runs, and a finished cell of another grid definition left in the
    folder is named, not a reason to refuse."""
    root, _, _ = tiny_grid
    grid = root / "grid"
    try:
        write_accuracy(grid, runs=["none-k0-s0"])  # a grid definition with one cell; none-k0-s1 is left over
        files.record_checksums(grid, ["accuracy.csv"])  # as run_grid does after writing it
        assert evaluate.read_accuracy(grid)["run"].tolist() == ["none-k0-s0"]
        assert "also holds finished runs that its accuracy.csv does not list" in capsys.readouterr().err
        write_accuracy(grid, runs=["none-k0-s0", "none-k0-s1"])
        files.record_checksums(grid, ["accuracy.csv"])
        text = (grid / "accuracy.csv").read_text()
        (grid / "accuracy.csv").write_text(text.rsplit("\n", 2)[0] + "\n")  # the last row cut off
        with pytest.raises(ValueError, match="accuracy.csv changed since the grid wrote it"):
            evaluate.read_accuracy(grid)
    finally:
        (grid / files.CHECKSUMS_FILE).unlink(missing_ok=True)
        write_accuracy(grid)
