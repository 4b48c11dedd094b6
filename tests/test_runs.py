"""The notebook convention and the papermill runner behind ``python -m xaiutils run``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import yaml

from xaiutils.domain import weights
from xaiutils.domain.mri.anatomy import axial_band
from xaiutils.domain.mri.brain import load_mni152
from xaiutils.execution.params import notebook_parameters, parse_value, read_notebook
from xaiutils.execution.paths import find_notebook
from xaiutils.execution.runner import run_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.py"))

FAILING_NOTEBOOK = textwrap.dedent(
    """\
    # %% tags=["parameters"]
    preset = "smoke"
    out_dir = None
    fail = True

    # %%
    from pathlib import Path
    (Path(out_dir) / "half-written.txt").write_text("partial result")

    # %%
    if fail:
        raise RuntimeError("deliberate failure in a notebook cell")
    """
)


def test_pipeline_modules_do_one_job_each():
    from xaiutils.execution import grid, inputs, locks, params, paths, runner

    for module in (paths, locks, params, runner, inputs, grid):  # one job each: no module over about 400 lines
        assert len(Path(module.__file__).read_text().splitlines()) <= 400, module.__name__


def test_parse_value_reads_yaml_scalars_and_lists():
    assert parse_value("3") == 3
    assert parse_value("0.5") == 0.5
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("null") is None
    assert parse_value("imagenet") == "imagenet"
    assert parse_value("true") is True


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_follow_the_convention(path):
    text = path.read_text()
    assert "format_name: percent" in text, f"{path.name} is not a jupytext py:percent notebook"
    notebook = read_notebook(path)
    names = notebook_parameters(notebook)
    assert "preset" in names and "out_dir" in names
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    assert notebook.cells[0].cell_type == "markdown" and "Overview" in notebook.cells[0].source
    assert "Summary" in notebook.cells[-1].source, f"{path.name} should end with a summary"


def test_every_notebook_is_in_the_table_of_contents():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {chapter["file"] for part in toc["parts"] for chapter in part["chapters"]}
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in files, f"{path.name} is missing from _toc.yml"


def test_no_ipynb_tracked_in_git():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert tracked.stdout.strip() == "", f"notebooks with outputs are tracked: {tracked.stdout.split()}"


def test_unknown_notebook_lists_available_ones():
    with pytest.raises(FileNotFoundError, match="00_overview"):
        find_notebook("99_missing")


def test_cli_override_reaches_the_outputs(tmp_path):
    out = tmp_path / "overview-run"
    result = subprocess.run(
        [sys.executable, "-m", "xaiutils", "run", "00_overview", "--preset", "smoke",
         "-p", "min_brain_fraction", "0.8", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "overview.json").read_text())
    assert summary["min_brain_fraction"] == 0.8
    # Known answer: the band computed directly with the same fraction.
    _, brain_mask, _ = load_mni152()
    band = axial_band(brain_mask, 0.8)
    assert summary["band_levels"] == [int(band[0]), int(band[-1])]
    assert len(band) < len(axial_band(brain_mask, 0.6)), "a stricter fraction must narrow the band"
    executed = nbformat.read(out / "00_overview.ipynb", as_version=4)
    injected = [cell for cell in executed.cells if "injected-parameters" in cell.metadata.get("tags", [])]
    assert injected and "min_brain_fraction = 0.8" in injected[0].source
    record = json.loads((out / "run.json").read_text())
    assert record["parameters"] == {"min_brain_fraction": 0.8} and record["preset"] == "smoke"
    assert (out / "band_slices.png").stat().st_size > 10_000


def test_cli_refuses_unknown_parameters_before_running(tmp_path):
    out = tmp_path / "never"
    result = subprocess.run(
        [sys.executable, "-m", "xaiutils", "run", "00_overview", "-p", "colour", "red", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "'colour'" in result.stderr and "min_brain_fraction" in result.stderr
    assert not out.exists()


def test_failing_notebook_leaves_no_run_folder(tmp_path):
    notebook = tmp_path / "fails.py"
    notebook.write_text(FAILING_NOTEBOOK)
    out = tmp_path / "runs" / "fails"
    with pytest.raises(Exception, match="deliberate failure"):
        run_notebook(notebook, out_dir=out, progress=False)
    assert not out.exists()
    # (the run folder's lock file .fails.lock stays, empty of any lock: waiters must share its inode)
    leftovers = sorted(path.name for path in out.parent.iterdir() if path.name != ".fails.lock")
    assert leftovers == ["fails.failed.ipynb"], f"only the failed notebook copy may remain, found {leftovers}"


def test_run_folder_is_replaced_only_with_overwrite(tmp_path):
    notebook = tmp_path / "ok.py"
    notebook.write_text(FAILING_NOTEBOOK)
    out = tmp_path / "ok-run"
    run_notebook(notebook, out_dir=out, parameters={"fail": False}, progress=False)
    assert (out / "half-written.txt").read_text() == "partial result"
    assert (out / "ok.ipynb").is_file() and (out / "run.json").is_file()
    with pytest.raises(FileExistsError, match="overwrite"):
        run_notebook(notebook, out_dir=out, parameters={"fail": False}, progress=False)
    (out / "marker").write_text("old run")
    run_notebook(notebook, out_dir=out, parameters={"fail": False}, progress=False, overwrite=True)
    assert not (out / "marker").exists(), "the old run folder should have been replaced"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".ok-run.lock", "ok-run", "ok.py"]


def test_weight_file_hash_prefix(tmp_path):
    payload = b"pretend weights"
    import hashlib

    prefix = hashlib.sha256(payload).hexdigest()[:8]
    good = tmp_path / f"net-{prefix}.pth"
    good.write_bytes(payload)
    assert weights.hash_prefix_ok(good)
    bad = tmp_path / "net-00000000.pth"
    bad.write_bytes(payload)
    assert not weights.hash_prefix_ok(bad)
    copy = tmp_path / "download.partial-1"
    copy.write_bytes(payload)
    assert weights.hash_prefix_ok(copy, f"net-{prefix}.pth")
