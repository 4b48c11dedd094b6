"""Issue 14: the grid's cells and the scoring on a Dask cluster (a LocalCluster of 2 worker processes here).

The cluster runs must give the same accuracy.csv and scores as one machine; a worker killed with SIGKILL in the
middle of a cell loses nothing and duplicates nothing; a cluster spec file is checked before anything starts.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import test_evaluate  # the tests folder is on sys.path under pytest (rootdir import mode)

from xaiutils.analysis import evaluate
from xaiutils.domain import metrics
from xaiutils.execution import cluster
from xaiutils.execution.grid import is_finished, run_grid
from xaiutils.execution.locks import lock_file

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent

# A stand-in for notebook 3 (like test_grid's), logging the start and the end of each execution with the PID of the
# process that runs the kernel (the Dask worker); on the first execution of the cell `hang_on` it tells the test
# that PID through `marker`, then hangs until killed.
CELL = textwrap.dedent(
    """\
    # %% tags=["parameters"]
    preset = "smoke"
    out_dir = None
    grid = True
    source = "none"
    n_pretrained_blocks = 0
    seed = 0
    log_file = None
    hang_on = None
    marker = None
    data_dir = None
    mri_checkpoint = None

    # %%
    import os
    import time
    from pathlib import Path
    from xaiutils.execution.run_record import RunRecord
    name = f"{source}-k{n_pretrained_blocks}-s{seed}"
    with open(log_file, "a") as log:
        log.write(f"start {name} {os.getppid()}\\n")
    (Path(out_dir) / "half-written.bin").write_bytes(b"x" * 10_000)
    if name == hang_on and not Path(marker).exists():
        Path(marker).write_text(str(os.getppid()))
        time.sleep(600)
    accuracy = 0.5 + 0.1 * n_pretrained_blocks + 0.01 * seed
    RunRecord({"model": "fake"}, {"best_epoch": 1, "seconds": 0.1},
              {"val": {"accuracy": accuracy}, "test": {"accuracy": accuracy}}).write(out_dir)
    with open(log_file, "a") as log:
        log.write(f"done {name} {os.getppid()}\\n")
    """
)
SPEC = {"sources": ["imagenet", "none"], "n_pretrained_blocks": {"imagenet": [1, 3], "none": [0]}, "seeds": [0]}


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes, as two CPU nodes would be; shut down after the module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  resources={"GPU": 1}) as local, distributed.Client(local) as client:
        yield client


def worker_pids(client) -> set[int]:
    return set(client.run(os.getpid).values())


def log_lines(log: Path) -> list[tuple[str, str, int]]:
    return [(what, name, int(pid)) for what, name, pid in (line.split() for line in log.read_text().splitlines())]


# ---------------------------------------------------------------------------------------------------- the grid


def test_grid_on_a_cluster_writes_what_one_machine_writes(tmp_path, client):
    notebook = tmp_path / "cell.py"
    notebook.write_text(CELL)
    parameters = {"log_file": str(tmp_path / "here.log")}
    here = run_grid(out_dir=tmp_path / "here", spec=SPEC, notebook=notebook, progress=False,
                    parameters=parameters, check_inputs=False)
    parameters = {"log_file": str(tmp_path / "there.log")}
    there = run_grid(out_dir=tmp_path / "there", spec=SPEC, notebook=notebook, progress=False,
                     parameters=parameters, check_inputs=False, cluster=client, resources={"GPU": 1})
    assert (tmp_path / "there" / "accuracy.csv").read_bytes() == (tmp_path / "here" / "accuracy.csv").read_bytes()
    assert list(there["run"]) == ["imagenet-k1-s0", "imagenet-k3-s0", "none-k0-s0"]
    assert sorted(there.attrs["executed"]) == sorted(here.attrs["executed"]) == sorted(there["run"])
    # every cell ran once, in a worker process, which also held the cell's lock (its PID is in the lock file)
    lines = log_lines(tmp_path / "there.log")
    workers = worker_pids(client)
    assert sorted(name for what, name, _ in lines if what == "done") == sorted(there["run"])
    assert {pid for *_, pid in lines} <= workers and os.getpid() not in workers
    for name in there["run"]:
        assert int(lock_file(tmp_path / "there" / name).read_text()) in workers
    for name in there["run"]:  # the same run folders: parameters (but the log) and input fingerprints alike
        here_run, there_run = (json.loads((tmp_path / side / name / "run.json").read_text())["parameters"]
                               for side in ("here", "there"))
        assert {**here_run, "log_file": None} == {**there_run, "log_file": None}
        assert (tmp_path / "here" / name / "inputs.json").read_text() == (
            tmp_path / "there" / name / "inputs.json").read_text()

    # finished cells are skipped on the cluster, and cells finished on one machine count as finished there
    again = run_grid(out_dir=tmp_path / "there", spec=SPEC, notebook=notebook, progress=False,
                     parameters=parameters, check_inputs=False, cluster=client)
    assert again.attrs["executed"] == [] and len(log_lines(tmp_path / "there.log")) == 6


def test_a_worker_killed_mid_cell_loses_nothing_and_duplicates_nothing(tmp_path, client):
    notebook = tmp_path / "cell.py"
    notebook.write_text(CELL)
    log, marker, out = tmp_path / "executions.log", tmp_path / "hanging.pid", tmp_path / "grid"
    parameters = {"log_file": str(log), "hang_on": "imagenet-k3-s0", "marker": str(marker)}
    result = {}

    def grid():
        try:
            result["table"] = run_grid(out_dir=out, spec=SPEC, notebook=notebook, progress=False,
                                       parameters=parameters, check_inputs=False, cluster=client)
        except BaseException as error:  # reported by the assertion below
            result["error"] = error

    before = worker_pids(client)
    thread = threading.Thread(target=grid)
    thread.start()
    deadline = time.monotonic() + 120
    while not marker.is_file() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert marker.is_file(), result
    victim = int(marker.read_text())
    assert victim in before
    partial = list(out.glob(".imagenet-k3-s0.partial-*"))
    assert len(partial) == 1 and (partial[0] / "half-written.bin").is_file(), "the cell is half-way"
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive() and "error" not in result, result

    table = result["table"]
    assert list(table["run"]) == ["imagenet-k1-s0", "imagenet-k3-s0", "none-k0-s0"]
    np.testing.assert_allclose(table["test_accuracy"], [0.6, 0.8, 0.5])
    lines = log_lines(log)
    done = [name for what, name, _ in lines if what == "done"]
    assert sorted(done) == sorted(table["run"]), f"each cell finished exactly once: {lines}"
    started = [(name, pid) for what, name, pid in lines if what == "start"]
    assert [pid for name, pid in started if name == "imagenet-k3-s0"][0] == victim
    assert [name for name, _ in started].count("imagenet-k3-s0") == 2, "the killed cell ran again"
    assert [name for name, _ in started].count("imagenet-k1-s0") == 1
    assert [name for name, _ in started].count("none-k0-s0") == 1
    assert [pid for name, pid in started if name == "imagenet-k3-s0"][1] != victim
    # no half-written folder: only complete cells, their lock files, accuracy.csv and its record are left
    assert sorted(path.name for path in out.iterdir() if not path.name.endswith(".lock")) == [
        "accuracy.csv", "cache", "checksums.json", "imagenet-k1-s0", "imagenet-k3-s0", "none-k0-s0"]
    for name in table["run"]:
        assert is_finished(out / name, {**parameters, **_cell(name), "grid": False})
    assert victim not in worker_pids(client)  # the nanny started a new worker in its place


def _cell(name: str) -> dict:
    source, k, seed = name.split("-")
    return {"source": source, "n_pretrained_blocks": int(k[1:]), "seed": int(seed[1:])}


def test_a_cell_another_process_is_writing_is_left_to_it_then_run_once(tmp_path, client, capfd):
    """Two clients on one grid: the lock is taken in the worker that runs the cell, so a cell held by another
    live process (here a stand-in for another client's worker) is not touched until that process lets go."""
    from test_reliability import start_holder

    notebook = tmp_path / "cell.py"
    notebook.write_text(CELL)
    log, out, release = tmp_path / "executions.log", tmp_path / "grid", tmp_path / "release"
    spec = {"sources": ["none"], "n_pretrained_blocks": [0], "seeds": [0, 1]}
    holder = start_holder(out / "none-k0-s1", release)
    seen = {}

    def release_when_the_free_cell_is_done():
        deadline = time.monotonic() + 120
        while not (out / "none-k0-s0" / "run.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["live work present after the free cell ran"] = (out / ".none-k0-s1.partial-live" / "work.txt").is_file()
        release.touch()

    watcher = threading.Thread(target=release_when_the_free_cell_is_done)
    watcher.start()
    try:
        table = run_grid(out_dir=out, spec=spec, notebook=notebook, progress=False, check_inputs=False,
                         parameters={"log_file": str(log)}, cluster=client)
    finally:
        release.touch()
        watcher.join()
        holder_out, holder_err = holder.communicate(timeout=60)
    assert holder_out.strip() == "intact", holder_err[-2000:]
    assert seen == {"live work present after the free cell ran": True}
    assert [(what, name) for what, name, _ in log_lines(log)] == [
        ("start", "none-k0-s0"), ("done", "none-k0-s0"), ("start", "none-k0-s1"), ("done", "none-k0-s1")]
    assert list(table["run"]) == ["none-k0-s0", "none-k0-s1"]
    assert f"waiting for cell none-k0-s1, which process {holder.pid} is writing" in capfd.readouterr().err
    assert not list(out.glob(".*.partial-*"))


# ---------------------------------------------------------------------------------------------------- scoring


tiny_grid = test_evaluate.tiny_grid  # a small real dataset and two untrained runs as notebook 3 writes them


def test_scores_on_a_cluster_equal_the_single_machine_scores(tiny_grid, client):
    import torch

    root, data_dir, bench = tiny_grid
    images = evaluate.test_images(bench, 4, seed=0)
    methods, metric_names = ["saliency", "input"], ["emd_score", "importance_mass_accuracy", "roc_auc"]
    names = ["none-k0-s0", "none-k0-s1"]
    # one machine at the cluster's thread count: Dask starts its workers with OMP_NUM_THREADS=1, and threaded
    # kernels may round differently (see test_evaluate)
    assert set(client.run(lambda: os.environ.get("OMP_NUM_THREADS")).values()) == {"1"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here, maps_here = evaluate.explain_grid(root / "grid", names, data_dir, images, methods, metric_names,
                                                workers=1, maps_for="none-k0-s1", resolution=16, progress=False,
                                                n_jobs=1)  # serial scoring: no process pool to start
    finally:
        torch.set_num_threads(threads)
    there, maps_there = evaluate.explain_grid(root / "grid", names, data_dir, images, methods, metric_names,
                                              maps_for="none-k0-s1", resolution=16, progress=False, cluster=client)
    assert len(there) == 2 * 2 * len(images) and there[metric_names].notna().all().all()
    pd.testing.assert_frame_equal(there, here)
    assert sorted(maps_there) == sorted(methods)
    for method in methods:
        np.testing.assert_array_equal(maps_there[method], maps_here[method])

    # score_maps alone: joblib's dask backend against one process, on maps with a known degenerate one
    maps = np.abs(np.random.default_rng(3).normal(size=(9, 32, 32)))
    maps[4] = 0.0  # all zero: NaN with its reason, on the cluster too
    masks = bench.masks[images[np.arange(9) % len(images)]]
    local = metrics.score_maps(maps, masks, metrics=metric_names, resolution=16, n_jobs=1)
    spread = metrics.score_maps(maps, masks, metrics=metric_names, resolution=16,
                                backend=cluster.joblib_backend(client))
    pd.testing.assert_frame_equal(spread, local)
    assert spread.loc[4, "reason"] == "map is all zero" and np.isnan(spread.loc[4, "emd_score"])


# ---------------------------------------------------------------------------------------------- spec files


def write_spec(tmp_path, text: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD_SLURM = """\
    type: slurm
    jobs: 2
    options: {cores: 16, memory: 64GB, walltime: "04:00:00"}
"""


@pytest.mark.parametrize("text, message", [
    ("type: sge\njobs: 2\n",
     "unknown cluster type 'sge'; valid types: local, slurm, pbs, scheduler"),
    ("jobs: 2\noptions: {cores: 16}\n", "lacks 'type'; valid types: local, slurm, pbs, scheduler"),
    ("type: slurm\njobs: 2\noptions: {cores: 16, walltime: '01:00:00'}\n",
     "a slurm cluster needs options.memory; required options: cores, memory, walltime"),
    ("type: pbs\noptions: {cores: 16, memory: 8GB, walltime: '01:00:00'}\n",
     "a pbs cluster needs 'jobs'"),
    ("type: scheduler\n", "a 'scheduler' cluster needs 'address'"),
    ("type: slurm\njobs: 0\noptions: {cores: 16, memory: 64GB, walltime: '01:00:00'}\n",
     "jobs must be a whole number >= 1, got 0"),
    ("type: slurm\njobs: 2\noptions: {cores: 16, memory: 64GB, walltime: 12:00:00}\n",
     "options.walltime must be quoted text like '04:00:00', got 43200"),
    ("type: slurm\njobs: 2\noptions: {cores: 16, memory: lots, walltime: '01:00:00'}\n",
     "options.memory must be a size like 64GB or 500MiB, got 'lots'"),
    ("type: slurm\njobs: 2\nnodes: 3\noptions: {cores: 16, memory: 64GB, walltime: '01:00:00'}\n",
     "unknown key(s) 'nodes'; valid keys: type, jobs, address, worker_resources, task_resources, options"),
    ("type: slurm\njobs: 2\ntask_resources: {GPU: -1}\noptions: {cores: 1, memory: 1GB, walltime: '01:00:00'}\n",
     "task_resources must map resource names to positive numbers"),
])
def test_a_bad_spec_file_is_refused_with_the_bad_value_and_the_choices(tmp_path, text, message):
    path = write_spec(tmp_path, text)
    with pytest.raises(ValueError) as error:
        cluster.read_cluster_spec(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_an_unknown_option_names_the_valid_ones(tmp_path):
    path = write_spec(tmp_path, GOOD_SLURM.replace("memory: 64GB", "mem: 64GB"))
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'mem' for a slurm cluster \(SLURMCluster\); "
                                         r"valid options: .*\bmemory\b.*\bwalltime\b"):
        cluster.read_cluster_spec(path)


def test_bad_cluster_arguments_are_refused_before_anything_starts(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="cluster spec .*missing.yaml does not exist"):
        cluster.as_spec(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="'gpu-nodes' is neither a cluster spec file .* nor a scheduler address"):
        cluster.as_spec("gpu-nodes")
    assert cluster.as_spec("tcp://10.0.0.1:8786") == cluster.ClusterSpec(
        "scheduler", address="tcp://10.0.0.1:8786", source="scheduler tcp://10.0.0.1:8786")
    from xaiutils.__main__ import main

    assert main(["grid", "--cluster", str(write_spec(tmp_path, "type: lsf\n"))]) == 2
    # the runner hands --cluster to the notebook's 'cluster' parameter, which only some notebooks have
    assert main(["run", "00_overview", "--cluster", "tcp://10.0.0.1:8786", "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert "unknown cluster type 'lsf'; valid types: local, slurm, pbs, scheduler" in error
    assert "unknown parameter(s) 'cluster' for notebook 00_overview; valid parameters: preset" in error
    assert not (tmp_path / "o").exists()


def test_the_committed_slurm_example_gives_a_gpu_job_script():
    """examples/slurm.yaml, as the Reproducing chapter shows it: parsed, and the batch script dask-jobqueue would
    submit asks SLURM for a GPU and starts a worker that offers one (no job is submitted)."""
    spec = cluster.read_cluster_spec(ROOT / "examples" / "slurm.yaml")
    assert (spec.type, spec.jobs, spec.task_resources, spec.worker_resources) == ("slurm", 8, {"GPU": 1}, {"GPU": 1})
    script = cluster.job_script(spec)
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH -t 12:00:00" in script and "#SBATCH -p gpu" in script
    assert "--resources GPU=1" in script and "--nthreads 8" in script and "--nworkers" not in script
    cpu = cluster.read_cluster_spec(ROOT / "examples" / "slurm-cpu.yaml")
    assert (cpu.jobs, cpu.options["cores"], cpu.options["processes"], cpu.task_resources) == (8, 16, 16, {})
    script = cluster.job_script(cpu)
    assert "--nthreads 1 " in script and "--nworkers 16 " in script
