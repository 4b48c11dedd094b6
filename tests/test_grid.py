"""The grid runner: expansion, skipping finished runs, resuming after an interruption."""

from __future__ import annotations

import json
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from xaiutils.domain.synth.dataset import load_benchmark, make_benchmark
from xaiutils.execution.grid import cell_name, grid_cells, run_grid
from xaiutils.execution.paths import RUNS_ENV
from xaiutils.foundation import config
from xaiutils.foundation.config import resolve

# Stands in for notebook 3: writes the run folder's sidecar through RunRecord, logs each execution, and fails on demand.
FAKE_FINETUNE = textwrap.dedent(
    """\
    # %% tags=["parameters"]
    preset = "smoke"
    out_dir = None
    grid = True
    source = "none"
    n_pretrained_blocks = 0
    seed = 0
    log_file = None
    fail_on = None
    data_dir = None
    mri_checkpoint = None

    # %%
    from xaiutils.execution.run_record import RunRecord
    with open(log_file, "a") as log:
        log.write(f"{source}-k{n_pretrained_blocks}-s{seed}\\n")
    if fail_on == f"{source}-k{n_pretrained_blocks}-s{seed}":
        raise RuntimeError("simulated crash in the middle of the grid")
    accuracy = 0.5 + 0.1 * n_pretrained_blocks
    RunRecord({"model": "fake"}, {"best_epoch": 1, "seconds": 0.1},
              {"val": {"accuracy": accuracy}, "test": {"accuracy": accuracy}}).write(out_dir)
    """
)

SPEC = {"sources": ["imagenet", "none"], "n_pretrained_blocks": {"imagenet": [1, 3], "none": [0]}, "seeds": [0, 1]}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A runs folder holding a small real dataset where the smoke preset's notebook 1 puts it: the grid checks
    that its input exists and matches its card before any cell starts."""

    root = tmp_path_factory.mktemp("runs")
    make_benchmark(root / "smoke" / "01_data" / "dataset", "smoke", progress=False, n_subjects=3,
                   slices_per_subject=2, image_size=32, radius_range=(2.0, 3.0))
    return root


@pytest.fixture(autouse=True)
def default_dataset(request, monkeypatch):
    if "slow" in request.keywords:
        monkeypatch.setenv(RUNS_ENV, str(request.getfixturevalue("tiny_runs")))


def fake_grid(tmp_path):
    """The stand-in notebook, its execution log and the grid folder."""
    notebook = tmp_path / "fake_finetune.py"
    notebook.write_text(FAKE_FINETUNE)
    return notebook, tmp_path / "executions.log", tmp_path / "grid"


def test_grid_expansion():
    cells = grid_cells(SPEC)
    assert [cell_name(cell) for cell in cells] == [
        "imagenet-k1-s0", "imagenet-k1-s1", "imagenet-k3-s0", "imagenet-k3-s1", "none-k0-s0", "none-k0-s1"]
    assert len(grid_cells({"sources": ["a", "b"], "n_pretrained_blocks": [0, 1, 2], "seeds": [0]})) == 6
    with pytest.raises(ValueError, match="lacks seeds"):
        grid_cells({"sources": ["a"], "n_pretrained_blocks": [0]})
    with pytest.raises(ValueError, match="no values for source 'mri'"):
        grid_cells({"sources": ["mri"], "n_pretrained_blocks": {"none": [0]}, "seeds": [0]})


@pytest.mark.slow
def test_grid_skips_finished_runs_and_resumes_after_a_crash(tmp_path):
    notebook, log, out = fake_grid(tmp_path)
    spec = {"sources": ["imagenet", "none"], "n_pretrained_blocks": {"imagenet": [1, 3], "none": [0]},
            "seeds": [0]}

    # First attempt crashes on the second cell: the first cell's run folder is complete, the second left nothing.
    with pytest.raises(Exception, match="simulated crash"):
        run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False,
                 parameters={"log_file": str(log), "fail_on": "imagenet-k3-s0"})
    assert (out / "imagenet-k1-s0" / "run.json").is_file()
    assert not (out / "imagenet-k3-s0").exists()
    assert log.read_text().split() == ["imagenet-k1-s0", "imagenet-k3-s0"]

    # Resume: a finished cell is skipped only if its parameters match, so pass the same ones minus the crash.
    table = run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False,
                     parameters={"log_file": str(log), "fail_on": "imagenet-k3-s0-never"})
    # Changed parameters invalidate the finished cell too: all three run.
    assert log.read_text().split()[2:] == ["imagenet-k1-s0", "imagenet-k3-s0", "none-k0-s0"]
    assert list(table["run"]) == ["imagenet-k1-s0", "imagenet-k3-s0", "none-k0-s0"]
    assert table["test_accuracy"].round(6).tolist() == [0.6, 0.8, 0.5]
    assert (out / "accuracy.csv").is_file()

    # A third call with the same parameters executes nothing.
    run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False,
             parameters={"log_file": str(log), "fail_on": "imagenet-k3-s0-never"})
    assert len(log.read_text().split()) == 5
    recorded = json.loads((out / "none-k0-s0" / "run.json").read_text())["parameters"]
    assert recorded["grid"] is False and recorded["source"] == "none"
    assert not list(out.glob(".*partial*")), "no temporary folders may remain"


@pytest.mark.slow
def test_grid_resume_with_identical_parameters_runs_only_missing_cells(tmp_path):
    notebook, log, out = fake_grid(tmp_path)
    spec = {"sources": ["imagenet"], "n_pretrained_blocks": [1, 2, 3], "seeds": [0]}
    parameters = {"log_file": str(log)}
    run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, parameters=parameters)
    # Simulate an interruption that lost the last cell and left a temporary folder behind.
    import shutil

    shutil.rmtree(out / "imagenet-k3-s0")
    (out / ".imagenet-k3-s0.partial-abc").mkdir()
    run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, parameters=parameters)
    assert log.read_text().split() == ["imagenet-k1-s0", "imagenet-k2-s0", "imagenet-k3-s0", "imagenet-k3-s0"]
    assert not (out / ".imagenet-k3-s0.partial-abc").exists()


@pytest.mark.slow
def test_grid_reruns_cells_when_an_input_changes_under_the_same_path(tmp_path):
    notebook, log, out = fake_grid(tmp_path)
    spec = {"sources": ["none"], "n_pretrained_blocks": {"none": [0]}, "seeds": [0]}

    data_dir, checkpoint = tmp_path / "dataset", tmp_path / "model.pt"
    tiny = {"n_subjects": 3, "slices_per_subject": 2, "image_size": 32, "radius_range": (2.0, 3.0)}
    first = make_benchmark(data_dir, seed=0, progress=False, **tiny)
    first_hash = load_benchmark(first).card["content_hash"]
    checkpoint.write_bytes(b"first weights")
    parameters = {"log_file": str(log), "data_dir": str(data_dir), "mri_checkpoint": str(checkpoint)}

    run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, parameters=parameters)
    run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, parameters=parameters)
    assert log.read_text().split() == ["none-k0-s0"]  # same parameters, same inputs: skipped
    assert json.loads((out / "none-k0-s0" / "inputs.json").read_text())["dataset_hash"] == first_hash

    checkpoint.write_bytes(b"retrained weights")  # notebook 2 re-run: same path, other contents
    run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, parameters=parameters)
    assert log.read_text().split() == ["none-k0-s0", "none-k0-s0"]

    make_benchmark(data_dir, seed=1, progress=False, overwrite=True, **tiny)  # notebook 1 re-run
    run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, parameters=parameters)
    assert log.read_text().split() == ["none-k0-s0"] * 3


@pytest.mark.slow
def test_grid_reruns_cells_when_a_preset_value_or_the_code_changes(tmp_path, monkeypatch):
    notebook, log, out = fake_grid(tmp_path)
    spec = {"sources": ["none"], "n_pretrained_blocks": {"none": [0]}, "seeds": [0]}
    parameters = {"log_file": str(log)}

    def runs_so_far():
        run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, parameters=parameters)
        return len(log.read_text().split())

    assert runs_so_far() == 1
    assert runs_so_far() == 1  # nothing changed: skipped
    recorded = json.loads((out / "none-k0-s0" / "inputs.json").read_text())
    assert recorded["finetune_config"] == resolve("finetune", "smoke")

    # The same papermill parameters, but the preset's learning rate changed: the cell must run again.
    smoke = config.PRESETS["smoke"]
    monkeypatch.setitem(config.PRESETS, "smoke", replace(smoke, finetune=replace(smoke.finetune, lr=0.123)))
    assert runs_so_far() == 2
    assert json.loads((out / "none-k0-s0" / "inputs.json").read_text())["finetune_config"]["lr"] == 0.123
    assert runs_so_far() == 2  # and only once

    # The notebook's code changed (a comment is enough: the fingerprint does not interpret code).
    notebook.write_text(notebook.read_text() + "\n# edited\n")
    assert runs_so_far() == 3


THREADS_LOGGING = FAKE_FINETUNE.replace(
    'log.write(f"{source}-k{n_pretrained_blocks}-s{seed}\\n")',
    'import os\n    log.write(f"{source}-k{n_pretrained_blocks}-s{seed} {os.environ.get(\'OMP_NUM_THREADS\')}\\n")')


def test_grid_with_two_workers_runs_each_cell_once_with_its_share_of_threads(tmp_path, monkeypatch):
    import os

    notebook, log, out = fake_grid(tmp_path)
    notebook.write_text(THREADS_LOGGING)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    table = run_grid(out_dir=out, spec={**SPEC, "workers": 2}, notebook=notebook, progress=False,
                     parameters={"log_file": str(log)}, check_inputs=False)
    lines = [line.split() for line in log.read_text().splitlines()]
    assert sorted(name for name, _ in lines) == sorted(table["run"]) and len(lines) == len(table) == 6
    assert {threads for _, threads in lines} == {"2"}, "each of 2 workers on 4 cores gets 2 threads"
    assert "OMP_NUM_THREADS" not in os.environ, "the caller's environment is restored"
    # the table keeps the grid's order whatever order the cells finished in, and equals a one-worker run
    again = run_grid(out_dir=tmp_path / "one", spec=SPEC, notebook=notebook, progress=False,
                     parameters={"log_file": str(log)}, check_inputs=False, workers=1)
    columns = ["run", "test_accuracy"]
    assert table[columns].equals(again[columns])
    with pytest.raises(ValueError, match="workers must be a whole number >= 1, got 0"):
        run_grid(out_dir=out, spec=SPEC, notebook=notebook, progress=False, workers=0, check_inputs=False)


def test_book_cells_have_no_time_limit():
    """The grid of the default book runs inside notebook 3's cell: a per-cell limit would kill it on a busy
    machine (it did, at 1,200 s) and throw the running cell away; finished cells are kept either way."""
    import yaml

    root = Path(__file__).resolve().parent.parent
    config = yaml.safe_load((root / "_config.yml").read_text())
    assert config["execute"]["timeout"] == -1


def test_a_failing_cell_in_a_grid_with_two_workers_stops_the_grid_with_its_error(tmp_path):
    notebook, log, out = fake_grid(tmp_path)
    spec = {"sources": ["none"], "n_pretrained_blocks": [0], "seeds": list(range(4)), "workers": 2}
    with pytest.raises(Exception, match="simulated crash"):
        run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, check_inputs=False,
                 parameters={"log_file": str(log), "fail_on": "none-k0-s0"})
    assert "none-k0-s0" in log.read_text().split()
    assert not (out / "none-k0-s0" / "run.json").exists(), "the failed cell leaves no finished folder"


def test_no_queued_cell_starts_after_a_cell_failed_in_a_grid_with_two_workers(tmp_path, monkeypatch):
    """The order of events is forced, not timed: s0 fails while s1 is running, and s1 returns only after s0's
    error has left its worker; whichever thread is free then must not start s2 … s7 (the CI run of bcd3f31
    started all eight under a real kernel, whose error path is slower than a whole cell)."""
    import threading

    import xaiutils.execution.grid as grid_module

    started, s1_running, s0_failed = [], threading.Event(), threading.Event()

    def fake_cell(folder, cell_parameters, inputs, preset, prepare, wait):
        name = Path(folder).name
        started.append(name)
        if name == "none-k0-s0":
            assert s1_running.wait(30)
            s0_failed.set()
            raise RuntimeError("simulated crash in s0")
        if name == "none-k0-s1":
            s1_running.set()
            assert s0_failed.wait(30)
            time.sleep(0.3)  # s0's error has left its worker by now (an exception travels in microseconds)
        return True

    monkeypatch.setattr(grid_module, "run_grid_cell", fake_cell)
    spec = {"sources": ["none"], "n_pretrained_blocks": [0], "seeds": list(range(8)), "workers": 2}
    with pytest.raises(RuntimeError, match="simulated crash in s0"):
        run_grid(out_dir=tmp_path / "grid", spec=spec, notebook=fake_grid(tmp_path)[0], progress=False,
                 check_inputs=False)
    assert sorted(started) == ["none-k0-s0", "none-k0-s1"], f"queued cells started after the failure: {started}"
