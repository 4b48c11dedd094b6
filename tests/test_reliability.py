"""Issue 15: concurrent grids, killed runs, stale inputs and unreadable files lose nothing and say what is wrong.

One test (or a few) per numbered case of the issue; each failed on the code before the fix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import test_grid  # the tests folder is on sys.path under pytest (rootdir import mode)
import torch

from xaiutils.__main__ import main
from xaiutils.domain import explain, models
from xaiutils.domain.mri.nifti import load_volumes, read_nifti
from xaiutils.domain.synth import dataset as synth_dataset
from xaiutils.domain.synth.benchmark import content_hash
from xaiutils.domain.synth.dataset import dataset_hash, load_benchmark, make_benchmark
from xaiutils.domain.synth.lesions import LesionParams
from xaiutils.execution.grid import run_grid
from xaiutils.execution.locks import remove_dead_leftovers
from xaiutils.execution.params import parse_value
from xaiutils.execution.paths import RUNS_ENV
from xaiutils.execution.runner import run_notebook

ROOT = Path(__file__).resolve().parent.parent

# Stands in for notebook 3: the grid tests' stand-in (logs each execution, writes the sidecar the grid collects).
FAKE_FINETUNE = test_grid.FAKE_FINETUNE

# A run that writes part of its output, tells the test its kernel's PID, then works for a long time.
SLOW_NOTEBOOK = textwrap.dedent(
    """\
    # %% tags=["parameters"]
    preset = "smoke"
    out_dir = None
    marker = None

    # %%
    import os
    import time
    from pathlib import Path
    (Path(out_dir) / "half-trained.bin").write_bytes(b"x" * 100_000)
    Path(marker).write_text(str(os.getpid()))
    time.sleep(120)
    """
)

# A second process that holds the lock of one grid cell and writes that cell's temporary folder, as a live grid
# does while it trains; it reports whether its work survived.
HOLDER = textwrap.dedent(
    """\
    import shutil, sys, time
    from pathlib import Path
    from xaiutils.execution.locks import folder_lock
    target, release = Path(sys.argv[1]), Path(sys.argv[2])
    with folder_lock(target, wait=0):
        partial = target.with_name(f".{target.name}.partial-live")
        partial.mkdir(parents=True)
        (partial / "work.txt").write_text("half-trained")
        print("holding", flush=True)
        while not release.exists():
            time.sleep(0.05)
        intact = partial.is_dir() and (partial / "work.txt").read_text() == "half-trained"
        shutil.rmtree(partial, ignore_errors=True)
    print("intact" if intact else "deleted", flush=True)
    """
)

TINY = {"n_subjects": 3, "slices_per_subject": 2, "image_size": 32, "radius_range": (2.0, 3.0)}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return make_benchmark(tmp_path_factory.mktemp("tiny") / "dataset", "smoke", progress=False, **TINY)


@pytest.fixture
def dataset_copy(tiny_dataset, tmp_path):
    import shutil

    copy = tmp_path / "dataset"
    shutil.copytree(tiny_dataset, copy)
    return copy


def fake_notebook(tmp_path) -> Path:
    notebook = tmp_path / "fake_finetune.py"
    notebook.write_text(FAKE_FINETUNE)
    return notebook


def one_line(text: str) -> str:
    """The one line of an error on stderr (papermill's progress bar aside), with no traceback."""
    assert "Traceback" not in text
    lines = [line for line in text.replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("Executing:")]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


def start_holder(target: Path, release: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(target), str(release)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = holder.stdout.readline().strip()
    assert line == "holding", holder.stderr.read()
    return holder


# ------------------------------------------------------------------------------------------ case 1: two processes


@pytest.mark.slow
def test_case1_second_grid_process_leaves_live_work_alone_and_waits_for_it(tmp_path, dataset_copy, capfd):
    notebook, log, out = fake_notebook(tmp_path), tmp_path / "executions.log", tmp_path / "grid"
    spec = {"sources": ["imagenet", "none"], "n_pretrained_blocks": {"imagenet": [1], "none": [0]}, "seeds": [0]}
    release = tmp_path / "release"
    holder = start_holder(out / "imagenet-k1-s0", release)  # another grid process is training this cell
    live = out / ".imagenet-k1-s0.partial-live"
    seen = {}

    def release_when_the_free_cell_is_done():
        deadline = time.time() + 120
        while not (out / "none-k0-s0" / "run.json").is_file() and time.time() < deadline:
            time.sleep(0.1)
        seen["live work present after the free cell ran"] = (live / "work.txt").is_file()
        release.touch()

    watcher = threading.Thread(target=release_when_the_free_cell_is_done)
    watcher.start()
    try:
        table = run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False,
                         parameters={"log_file": str(log), "data_dir": str(dataset_copy)})
    finally:
        release.touch()
        watcher.join()
        holder_out, holder_err = holder.communicate(timeout=60)
    assert holder_out.strip() == "intact", f"the live process's temporary folder was deleted: {holder_err[-2000:]}"
    assert seen == {"live work present after the free cell ran": True}
    # the busy cell was left to its owner, the free one ran first; the busy one ran once its owner let go of it
    assert log.read_text().split() == ["none-k0-s0", "imagenet-k1-s0"]
    assert list(table["run"]) == ["imagenet-k1-s0", "none-k0-s0"]
    assert f"waiting for cell imagenet-k1-s0, which process {holder.pid} is writing" in capfd.readouterr().err
    assert not list(out.glob(".*.partial-*"))


@pytest.mark.slow
def test_case1_second_run_on_a_busy_folder_stops_with_a_clear_message(tmp_path):
    target, release = tmp_path / "runs" / "overview", tmp_path / "release"
    holder = start_holder(target, release)
    try:
        result = subprocess.run([sys.executable, "-m", "xaiutils", "run", "00_overview", "--out", str(target),
                                 "--overwrite"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        release.touch()
        holder_out, _ = holder.communicate(timeout=60)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert f"{target} is being written by process {holder.pid}" in line and "wait for it" in line
    assert holder_out.strip() == "intact"


def test_case1_only_leftovers_of_dead_writers_are_removed(tmp_path):
    out = tmp_path / "grid"
    release = tmp_path / "release"
    holder = start_holder(out / "cell-a", release)
    victim = start_holder(out / "cell-b", tmp_path / "never")
    victim.kill()  # SIGKILL: no clean-up at all; the operating system drops its lock
    victim.wait(timeout=30)
    try:
        removed = remove_dead_leftovers(out)
        assert [path.name for path in removed] == [".cell-b.partial-live"]
        assert (out / ".cell-a.partial-live" / "work.txt").is_file()
    finally:
        release.touch()
        assert holder.communicate(timeout=60)[0].strip() == "intact"


# ------------------------------------------------------------------------------------- case 2: SIGTERM, SIGHUP


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_case2_termination_signal_cleans_up_like_ctrl_c(tmp_path, signum):
    notebook = tmp_path / "slow.py"
    notebook.write_text(SLOW_NOTEBOOK)
    out, marker = tmp_path / "runs" / "slow", tmp_path / "kernel.pid"
    out.parent.mkdir(parents=True)
    (out.parent / ".slow.partial-deadbeef").mkdir()  # left by an earlier run that was killed
    (out.parent / ".slow.partial-deadbeef" / "big.bin").write_bytes(b"x" * 1000)
    child = subprocess.Popen([sys.executable, "-m", "xaiutils", "run", str(notebook), "--out", str(out),
                              "-p", "marker", str(marker)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.is_file() and time.time() < deadline and child.poll() is None:
        time.sleep(0.1)
    assert marker.is_file(), child.communicate()[1][-3000:]
    time.sleep(0.2)
    kernel = int(marker.read_text())
    started = [path.name for path in out.parent.glob(".slow.partial-*") if path.name != ".slow.partial-deadbeef"]
    assert len(started) == 1, "the run is writing its temporary folder"

    child.send_signal(signum)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 128 + signum
    # (after papermill's progress bar, and whatever the dying kernel prints)
    assert (f"error: stopped by {signal.Signals(signum).name}; the unfinished run folder was removed, nothing else "
            "changed") in stderr.splitlines()
    assert not out.exists()
    assert not list(out.parent.glob(".slow.partial-*")), "temporary folders (live and dead) must be removed"
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(kernel, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the notebook's kernel (PID {kernel}) outlived the run")


def test_case2_a_swap_killed_half_way_gives_the_old_folder_back(tmp_path):
    target = tmp_path / "grid" / "none-k0-s0"
    aside = tmp_path / "grid" / ".none-k0-s0.old-x1" / "none-k0-s0"
    aside.mkdir(parents=True)
    (aside / "run.json").write_text("{}")  # the previous complete run, moved aside; the new one never arrived
    (tmp_path / "grid" / ".none-k0-s0.partial-x2").mkdir()
    removed = remove_dead_leftovers(tmp_path / "grid")
    assert len(removed) == 2 and (target / "run.json").is_file()
    assert sorted(path.name for path in target.parent.iterdir()) == [".none-k0-s0.lock", "none-k0-s0"]


# ------------------------------------------------------------------------------- case 3: data, not the card


def flip_labels(dataset: Path, count: int = 50, keep_mtime: bool = False) -> None:
    file = dataset / "cache" / "labels.npy"
    before = file.stat()
    labels = np.load(file)
    labels[:count] = 1 - labels[:count]
    np.save(file, labels)
    if keep_mtime:  # an edit that hides behind the old modification time
        os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["edited", "edited-mtime-restored"])
def test_case3_default_load_refuses_data_changed_after_the_card(dataset_copy, keep_mtime):
    assert len(load_benchmark(dataset_copy)) == 6
    flip_labels(dataset_copy, 3, keep_mtime)
    with pytest.raises(ValueError, match="no longer matches its card.*01_data"):
        load_benchmark(dataset_copy)  # notebooks 3 and 4 load like this (verify=False)
    with pytest.raises(ValueError, match="no longer matches its card"):
        load_benchmark(dataset_copy, mmap=True)


def test_case3_unchanged_data_are_not_hashed_again_and_a_touched_file_is_rechecked(dataset_copy, monkeypatch):
    calls = []
    real = content_hash
    # load_benchmark lives in synth.dataset and looks the hash function up there
    monkeypatch.setattr(synth_dataset, "content_hash", lambda bench: calls.append(1) or real(bench))
    load_benchmark(dataset_copy)  # a copy has new change times: hashed once, then the stamp is renewed
    assert calls == [1]
    load_benchmark(dataset_copy)
    assert calls == [1], "a dataset whose stamp matches is not hashed again"
    os.utime(dataset_copy / "metadata.csv")  # touched, same content: hashed once more
    load_benchmark(dataset_copy)
    load_benchmark(dataset_copy)
    assert calls == [1, 1]
    load_benchmark(dataset_copy, verify=True)  # verify=True always hashes
    assert calls == [1, 1, 1]
    assert dataset_hash(dataset_copy) == json.loads((dataset_copy / "card.json").read_text())["content_hash"]


@pytest.mark.slow
def test_case3_grid_neither_skips_nor_runs_cells_on_changed_data(tmp_path, dataset_copy):
    notebook, log, out = fake_notebook(tmp_path), tmp_path / "executions.log", tmp_path / "grid"
    spec = {"sources": ["none"], "n_pretrained_blocks": {"none": [0]}, "seeds": [0]}
    parameters = {"log_file": str(log), "data_dir": str(dataset_copy)}
    run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, parameters=parameters)
    run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, parameters=parameters)
    assert log.read_text().split() == ["none-k0-s0"]
    flip_labels(dataset_copy, 3)
    with pytest.raises(ValueError, match="no longer matches its card"):
        run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, parameters=parameters)
    assert log.read_text().split() == ["none-k0-s0"], "no cell may run on data that do not match the card"


# ---------------------------------------------------------------------------------------- case 4: NaN voxels


def write_volume(path: Path, nan_every: int | None = None, all_nan: bool = False) -> Path:
    rng = np.random.default_rng(0)
    volume = rng.uniform(50, 100, size=(30, 32, 28)).astype(np.float32)
    if nan_every is not None:
        volume.reshape(-1)[::nan_every] = np.nan
    if all_nan:
        volume[:] = np.nan
    nib.Nifti1Image(volume, np.eye(4)).to_filename(str(path))
    return path


def test_case4_non_finite_voxels_are_refused_above_a_small_share_and_warned_below(tmp_path):
    many = write_volume(tmp_path / "many_T1w.nii.gz", nan_every=3)
    with pytest.raises(ValueError, match=r"many_T1w\.nii\.gz: 33\.3% of its voxels are NaN or infinite"):
        read_nifti(many, "T1 volume")
    few = write_volume(tmp_path / "few_T1w.nii.gz", nan_every=5000)
    with pytest.warns(UserWarning, match=r"few_T1w\.nii\.gz: 0\.0\d+% of its voxels are NaN or infinite"):
        array, _ = read_nifti(few, "T1 volume")
    assert np.isfinite(array).all()
    empty = tmp_path / "empty"
    empty.mkdir()
    write_volume(empty / "void_T1w.nii.gz", all_nan=True)
    with pytest.raises(ValueError, match=r"void_T1w\.nii\.gz holds no finite voxel"):
        load_volumes(empty)
    clean = write_volume(tmp_path / "clean_T1w.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_nifti(clean)


# ------------------------------------------------------------------------------ case 5: one line, names it


def test_case5_malformed_parameter_yaml_is_one_line_naming_the_parameter(capsys, tmp_path):
    assert main(["run", "00_overview", "-p", "x", "[1, 2", "--out", str(tmp_path / "o")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "-p x" in line and "'[1, 2'" in line and "not a valid YAML value" in line


def test_case5_missing_or_malformed_grid_file(capsys, tmp_path):
    assert main(["grid", "--grid-file", str(tmp_path / "nowhere.yml"), "--out", str(tmp_path / "g")]) == 2
    assert "grid file" in one_line(capsys.readouterr().err)
    broken = tmp_path / "broken.yml"
    broken.write_text("sources: [imagenet\nseeds: [0]\n")
    assert main(["grid", "--grid-file", str(broken), "--out", str(tmp_path / "g")]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(broken) in line and "not valid YAML" in line
    wrong = tmp_path / "wrong.yml"
    wrong.write_text("sources: imagenet\nn_pretrained_blocks: [1]\nseeds: [0]\n")
    assert main(["grid", "--grid-file", str(wrong), "--out", str(tmp_path / "g")]) == 2
    assert "sources must be a non-empty list" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("override, name", [({"radius_range": (float("nan"), 8.0)}, "radius_range"),
                                            ({"max_aspect": float("inf")}, "max_aspect"),
                                            ({"edge_softness": float("nan")}, "edge_softness"),
                                            ({"noise": float("inf")}, "noise")])
def test_case5_non_finite_lesion_and_variability_values_are_named(override, name, tmp_path):
    with pytest.raises(ValueError, match=f"{name} must be a .*finite"):
        make_benchmark(tmp_path / "dataset", progress=False, **override)
    assert not (tmp_path / "dataset").exists()


def test_case5_parameter_types_are_checked_before_the_notebook_starts(capsys, tmp_path):
    out = tmp_path / "data-run"
    assert main(["run", "01_data", "-p", "image_size", "abc", "--out", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "parameter image_size of notebook 01_data must be an integer" in line and "64" in line
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))
    with pytest.raises(ValueError, match="n_lesions .* must be a list"):
        run_notebook("01_data", out_dir=out, parameters={"n_lesions": "many"})
    with pytest.raises(ValueError, match="min_brain_fraction .* must be a number"):
        run_notebook("00_overview", out_dir=out, parameters={"min_brain_fraction": [0.5]})
    # YAML 1.1 reads an exponent without a dot as text; -p lr 1e-3 means the number
    assert parse_value("1e-3") == 0.001 and parse_value('"1e-3"') == "1e-3"


def test_case5_damaged_dataset_files_are_named(dataset_copy):
    cache = dataset_copy / "cache"
    labels = (cache / "labels.npy").read_bytes()
    (cache / "labels.npy").write_bytes(b"")
    with pytest.raises(ValueError, match=r"cache/labels\.npy is not a readable \.npy array.*01_data"):
        load_benchmark(dataset_copy)
    (cache / "labels.npy").write_bytes(labels[: len(labels) - 9])
    with pytest.raises(ValueError, match=r"cache/labels\.npy is not a readable \.npy array"):
        load_benchmark(dataset_copy)
    (cache / "labels.npy").write_bytes(labels)
    masks = np.load(cache / "masks.npy")
    np.save(cache / "masks.npy", masks[:-1])
    with pytest.raises(ValueError, match=r"cache/masks\.npy has shape \(5, 32, 32\), the images \(6, 32, 32\)"):
        load_benchmark(dataset_copy)
    (dataset_copy / "card.json").write_text('{"content_hash": ')
    with pytest.raises(ValueError, match=r"card\.json is not valid JSON"):
        load_benchmark(dataset_copy)


def test_case5_text_file_as_checkpoint_is_named(tmp_path):
    text = tmp_path / "model.pt"
    text.write_text("these are not weights\n")
    with pytest.raises(ValueError, match=r"weights file .*model\.pt is not a loadable PyTorch state dict"):
        models.load_weights(text)
    with pytest.raises(ValueError, match=r"model\.pt is not a loadable"):
        models.prepare_model("mobilenet_v2", "mri", 1, mri_checkpoint=text)


# ------------------------------------------------------------------------- case 6: values that make no sense


def test_case6_fractional_lesion_count_and_target_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"n_lesions must be a pair of whole numbers"):
        LesionParams(n_lesions=(1, 2.7))
    with pytest.raises(ValueError, match=r"n_lesions must be a pair of whole numbers"):
        make_benchmark(tmp_path / "dataset", progress=False, n_lesions=(1, 2.7))
    assert LesionParams(n_lesions=(1.0, 2.0)).n_lesions == (1, 2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    images = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="targets must be class indices"):
        explain.attribute(model, images, 0.7, "saliency")
    with pytest.raises(ValueError, match="targets must be class indices"):
        explain.attribute(model, images, [0, 0.5], "saliency")
    assert explain.attribute(model, images, 1, "saliency").shape == (2, 8, 8)


# -------------------------------------------------------------------- case 7: grid inputs, one-line failures


def test_case7_grid_without_a_dataset_names_the_command_before_any_cell(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "runs"))
    assert main(["grid", "--out", str(tmp_path / "grid"), "-p", "epochs", "1"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "needs a dataset" in line and "python -m xaiutils run 01_data --preset smoke" in line
    assert not list((tmp_path / "grid").glob("*-k*"))


def test_case7_grid_mri_cells_need_the_checkpoint(tmp_path, dataset_copy):
    with pytest.raises(FileNotFoundError, match="python -m xaiutils run 02_pretrain_mri --preset smoke"):
        run_grid(out_dir=tmp_path / "grid", notebook=fake_notebook(tmp_path), progress=False,
                 spec={"sources": ["mri"], "n_pretrained_blocks": [1], "seeds": [0]},
                 parameters={"data_dir": str(dataset_copy), "mri_checkpoint": str(tmp_path / "no.pt")})


@pytest.mark.slow
def test_case7_a_failing_cell_is_one_line_that_points_at_the_kept_notebook(capsys, tmp_path):
    notebook = tmp_path / "fails.py"
    notebook.write_text(textwrap.dedent(
        """\
        # %% tags=["parameters"]
        preset = "smoke"
        out_dir = None

        # %%
        raise RuntimeError("deliberate failure in a notebook cell")
        """))
    assert main(["run", str(notebook), "--out", str(tmp_path / "fails")]) == 1
    line = one_line(capsys.readouterr().err)
    assert "RuntimeError: deliberate failure in a notebook cell" in line
    assert f"executed notebook kept as {tmp_path / 'fails.failed.ipynb'}" in line
