"""Issue 23 (reliability, second round), cases 10 to 14: errors a user meets are answered with one line naming
what is wrong, never a traceback: a read-only output folder, a full disk while a notebook is saved, a damaged run
file, a broken method file, a scheduler address that is not one.

One test (or a few) per numbered case of the issue; each failed on the code before the fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import test_evaluate  # the tests folder is on sys.path under pytest (rootdir import mode)
from test_reliability import ROOT

from xaiutils.execution.run_record import RunRecord

tiny_grid = test_evaluate.tiny_grid


def error_line(stderr: str) -> str:
    """The one ``error: ...`` line on stderr (a progress bar may precede it on the same line), with no traceback."""
    assert "Traceback" not in stderr, stderr
    found = [line[line.index("error: "):] for line in stderr.replace("\r", "\n").splitlines() if "error: " in line]
    assert len(found) == 1, f"expected one error line, got:\n{stderr}"
    return found[0]


# ------------------------------------------------------------ case 12: a damaged model.json or predictions.csv


def copy_run(tiny_grid, tmp_path: Path) -> Path:
    import shutil

    root, _, _ = tiny_grid
    shutil.copytree(root / "grid", tmp_path / "grid")
    (tmp_path / "grid" / "accuracy.csv").write_text("run,test_accuracy\nnone-k0-s0,0.5\nnone-k0-s1,0.75\n")
    return tmp_path / "grid" / "none-k0-s0"


def test_case12_a_damaged_sidecar_is_named_with_how_to_regenerate_it(tiny_grid, tmp_path):
    run = copy_run(tiny_grid, tmp_path)
    (run / "model.json").write_text("")
    with pytest.raises(ValueError) as caught:
        RunRecord.read(run)
    message = str(caught.value)
    assert f"{run / 'model.json'} is damaged: not valid JSON (Expecting value: line 1 column 1 (char 0))" in message
    assert "python -m xaiutils grid" in message and "\n" not in message
    (run / "model.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match=r"model.json is damaged: it lacks history, metrics"):
        RunRecord.read(run)


def test_case12_an_empty_predictions_file_is_named_with_how_to_regenerate_it(tiny_grid, tmp_path):
    run = copy_run(tiny_grid, tmp_path)
    (run / "predictions.csv").write_bytes(b"")
    with pytest.raises(ValueError) as caught:
        RunRecord.read(run)
    message = str(caught.value)
    assert f"{run / 'predictions.csv'} is damaged: it is empty (0 bytes, no header row)" in message
    assert "python -m xaiutils grid" in message
    (run / "predictions.csv").write_text("image,split\n1,test\n")
    with pytest.raises(ValueError, match=r"predictions.csv is damaged: it lacks the column\(s\) label, "):
        RunRecord.read(run)
    assert RunRecord.read(run, predictions=False).config["seed"] == 0  # the sidecar alone still reads


def test_case12_evaluate_on_a_damaged_run_prints_one_line(tiny_grid, tmp_path):
    root, data_dir, _ = tiny_grid
    run = copy_run(tiny_grid, tmp_path)
    (run / "model.json").write_text("{")
    (tmp_path / "flat.py").write_text("def flat(model, images, target):\n    return images[:, 0] + 1.0\n")
    result = subprocess.run([sys.executable, "-m", "xaiutils", "evaluate", "--method", f"{tmp_path / 'flat.py'}:flat",
                             "--preset", "smoke", "--grid-dir", str(run.parent), "--data-dir", str(data_dir),
                             "--out", str(tmp_path / "out"), "-p", "methods", "[input]", "-p", "workers", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert line.startswith(f"error: {run / 'model.json'} is damaged: not valid JSON"), line
