"""The fine-tuning grid: source × n_pretrained_blocks × seed, one papermill run of notebook 3 per cell, resumed
where it stopped, on several workers or a Dask cluster, and collected into ``accuracy.csv``."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xaiutils.execution.inputs import INPUTS_FILE, check_grid_inputs, input_fingerprint
from xaiutils.execution.locks import (
    FolderBusy,
    folder_lock,
    lock_file,
    lock_owner,
    remove_dead_leftovers,
    remove_leftovers,
)
from xaiutils.execution.parallel import check_workers, kernel_threads
from xaiutils.execution.params import prepare_notebook
from xaiutils.execution.paths import default_out_dir
from xaiutils.execution.run_record import RunRecord
from xaiutils.execution.runner import execute
from xaiutils.foundation.config import SOURCES
from xaiutils.foundation.files import (
    CHECKSUMS_FILE,
    changed_files,
    check_safe_name,
    check_writable,
    output_folder,
    read_yaml_file,
    record_checksums,
    write_atomic,
)

GRID_KEYS = ("sources", "n_pretrained_blocks", "seeds")


def grid_cells(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Expand a grid spec into cells ``{"source", "n_pretrained_blocks", "seed"}``.

    ``n_pretrained_blocks`` is either one list for every source or a mapping source → list (so that the
    ``none`` source, which has nothing to transfer, can be run at k = 0 only).
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a grid spec must be a mapping with keys {', '.join(GRID_KEYS)}, got {spec!r}")
    missing = [key for key in GRID_KEYS if key not in spec]
    if missing:
        raise ValueError(f"grid spec lacks {', '.join(missing)}; a grid needs {', '.join(GRID_KEYS)}")
    # workers: how many cells run at once; anb_plus_cells: notebook 3's comparison of protocols, not grid cells
    unknown = sorted(set(spec) - set(GRID_KEYS) - {"workers", "anb_plus_cells"})
    if unknown:
        raise ValueError(f"unknown grid key(s) {', '.join(unknown)}; valid keys: {', '.join(GRID_KEYS)}, workers, "
                         "anb_plus_cells")

    def integers(values, what: str) -> list[int]:
        if not isinstance(values, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ValueError(f"grid {what} must be a list of non-negative integers, got {values!r}")
        return [int(v) for v in values]

    sources = spec["sources"]
    if not isinstance(sources, (list, tuple)) or not sources or not all(isinstance(s, str) for s in sources):
        raise ValueError(f"grid sources must be a non-empty list of names ({', '.join(SOURCES)}), got {sources!r}")
    for source in sources:
        check_safe_name(source, "grid source", SOURCES)
    seeds = integers(spec["seeds"], "seeds")
    cells = []
    for source in sources:
        ks = spec["n_pretrained_blocks"]
        if isinstance(ks, Mapping):
            if source not in ks:
                raise ValueError(f"n_pretrained_blocks gives no values for source {source!r}")
            ks = ks[source]
        for k in integers(ks, f"n_pretrained_blocks of source {source!r}"):
            for seed in seeds:
                cells.append({"source": source, "n_pretrained_blocks": k, "seed": seed})
    return cells



def read_grid_file(path: str | os.PathLike) -> dict[str, Any]:
    """A grid spec from a YAML file, with one-line errors naming the file."""
    spec = read_yaml_file(path, "grid file", f"write a YAML file with {', '.join(GRID_KEYS)}, or leave --grid-file "
                          "out to use the preset's grid")
    try:
        grid_cells(spec)
    except ValueError as error:
        raise ValueError(f"grid file {path}: {error}") from None
    return spec


def cell_name(cell: Mapping[str, Any]) -> str:
    return f"{cell['source']}-k{cell['n_pretrained_blocks']}-s{cell['seed']}"


def cell_files(folder: Path) -> list[str]:
    """The files of a cell's run folder that its checksums cover: every top-level file but the records written
    after them (``inputs.json``, ``checksums.json``)."""
    return sorted(path.name for path in folder.iterdir()
                  if path.is_file() and path.name not in (INPUTS_FILE, CHECKSUMS_FILE))


def damaged_files(folder: Path) -> list[str]:
    """The files of a finished cell that changed since it was written (size or SHA-256, :func:`changed_files`);
    a cell without a readable record of them counts as damaged (``checksums.json``)."""
    changed = changed_files(folder)
    return [CHECKSUMS_FILE] if changed is None else changed


def is_finished(folder: Path, parameters: Mapping[str, Any], inputs: Mapping[str, Any] | None = None) -> bool:
    """A run folder is finished when it holds ``run.json`` recorded with exactly these parameters (and, when
    ``inputs`` is given, ``inputs.json`` recorded with exactly these input fingerprints), and its files still have
    the size and SHA-256 recorded when it was written (:func:`damaged_files`)."""
    return _recorded_as(folder, parameters, inputs) and not damaged_files(folder)


def _recorded_as(folder: Path, parameters: Mapping[str, Any], inputs: Mapping[str, Any] | None) -> bool:
    record = folder / "run.json"
    if not record.is_file():
        return False
    try:
        recorded = json.loads(record.read_text()).get("parameters")
    except (ValueError, AttributeError):
        return False  # a damaged record: the cell runs again
    if recorded != json.loads(json.dumps(dict(parameters), default=str)):
        return False
    if inputs is None:
        return True
    inputs_record = folder / INPUTS_FILE
    try:
        return inputs_record.is_file() and json.loads(inputs_record.read_text()) == dict(inputs)
    except ValueError:
        return False


def run_grid_cell(folder: Path, cell_parameters: dict[str, Any], inputs: Mapping[str, Any], preset: str,
                  prepare, wait: float | None) -> bool:
    """Run one grid cell into ``folder`` under its lock, unless it is finished; whether it ran.

    ``prepare(cell_parameters)`` gives ``(path, notebook)``. Raises :class:`FolderBusy` when another live process
    holds the lock beyond ``wait`` seconds."""
    with folder_lock(folder, wait=wait):
        if _recorded_as(folder, cell_parameters, inputs):
            damaged = damaged_files(folder)
            if not damaged:
                return False
            print(f"grid: cell {folder.name} is damaged ({', '.join(damaged)} changed since it was written: size or "
                  "SHA-256 differ, or missing); running it again", file=sys.stderr, flush=True)
        path, nb = prepare(cell_parameters)
        remove_leftovers(folder)
        execute(path, nb, folder, preset, cell_parameters, "python3", True, False, None)
        # Written after the folder is in place: a crash in between leaves the cell unfinished, so it runs again.
        record_checksums(folder, cell_files(folder))
        write_atomic(folder / INPUTS_FILE, json.dumps(inputs, indent=2) + "\n")
        return True


def run_grid(
    preset: str = "smoke",
    out_dir: str | os.PathLike | None = None,
    spec: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    notebook: str | os.PathLike = "03_finetune",
    progress: bool = True,
    check_inputs: bool = True,
    workers: int | None = None,
    cluster=None,
    resources: Mapping[str, float] | None = None,
):
    """Run every grid cell that is not finished yet, then collect ``accuracy.csv``; return that table.

    Each cell is one run folder ``<out_dir>/<source>-k<k>-s<seed>``, built atomically by :func:`run_notebook`.
    A cell whose folder holds ``run.json`` with the same parameters, and ``inputs.json`` with the same
    fingerprint (:func:`input_fingerprint`: inputs, resolved settings and code), and whose files still have the size
    and SHA-256 recorded in ``checksums.json`` when it was written, is skipped, so an interrupted grid
    resumes where it stopped; a cell recorded with other parameters or another fingerprint, or whose files were
    damaged since (``model.pt``, ``predictions.csv`` …, named on stderr), is run again and replaced. ``parameters``
    are passed to every cell (e.g. ``epochs``, ``data_dir``).

    Before any cell starts, the grid spec, the parameters' names and types (before the first cell that must
    run) and (``check_inputs``) the inputs are checked: the dataset must exist and match its card by content
    (:func:`check_grid_inputs`, :func:`input_fingerprint`).

    Several processes may run the same grid folder: each cell is written under its lock (:func:`folder_lock`). A
    cell that another live process is writing is left to it and taken up after the other cells: this process
    waits for the lock, then skips the cell if the other process finished it, or runs it if that one failed.
    Only temporary folders whose writer is gone are deleted.

    ``workers`` cells run at once (default: the spec's ``workers``, else 1), each in its own kernel with
    ``cpu_count // workers`` threads, the slowest cells (fewest frozen blocks) first. On a CPU, two small models
    trained side by side with one thread each get more done than one at a time with two threads (whose threads
    wait on each other at every layer); the per-cell locks keep the workers, and other processes, apart.
    Results do not depend on ``workers``: every cell is seeded by its own parameters.

    ``cluster`` (a scheduler address, a cluster spec file, or a Dask client or cluster; see
    :mod:`xaiutils.execution.cluster`): each cell that is not finished is one Dask task instead, asking for
    ``resources``
    (default: the spec's ``task_resources``, e.g. ``{"GPU": 1}``); ``workers`` is then ignored. The task takes the
    cell's lock in the worker that runs it, so the contract above holds on a cluster too (see
    :func:`_run_cells_on_dask`).
    """
    import pandas as pd
    from tqdm import tqdm

    from xaiutils.foundation.config import resolve

    spec = dict(spec) if spec is not None else resolve("grid", preset)
    workers = check_workers(spec.pop("workers", 1) if workers is None else workers)
    spec.pop("workers", None)
    out_dir = output_folder(out_dir if out_dir is not None else default_out_dir(preset, "03_finetune") / "grid",
                            "--out")
    parameters = dict(parameters or {})
    cells = grid_cells(spec)
    check_writable(out_dir, f"grid folder {out_dir}")  # before the inputs are hashed or any cell starts
    if check_inputs:
        check_grid_inputs(preset, parameters, cells)
    inputs = input_fingerprint(preset, parameters, notebook)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(out_dir)

    executed = []
    prepared = []  # the notebook, read and its parameters checked once, before the first cell that must run
    preparing = threading.Lock()

    def prepare(cell_parameters):
        with preparing:
            if not prepared:
                prepared.extend(prepare_notebook(notebook, preset, cell_parameters, label=" of the grid"))
        return prepared[0], prepared[1]

    # Set by the worker thread whose cell failed, before the error reaches the main thread: that thread (or the
    # other workers) may already be taking the next queued cell by the time the main thread cancels the queue.
    stopping = threading.Event()

    def run_cell(cell, wait) -> None:
        if stopping.is_set():
            return
        cell_parameters = {**parameters, **cell, "grid": False}
        try:
            ran = run_grid_cell(out_dir / cell_name(cell), cell_parameters, inputs, preset, prepare, wait)
        except FolderBusy:
            raise
        except BaseException:
            stopping.set()
            raise
        if ran:
            executed.append(cell_name(cell))

    busy = []
    if cluster is not None:
        executed += _run_cells_on_dask(cluster, out_dir, [{**parameters, **cell, "grid": False} for cell in cells],
                                       inputs, preset, prepare, resources=resources, progress=progress)
    elif workers == 1:
        for cell in tqdm(cells, desc="grid", disable=not progress):
            try:
                run_cell(cell, wait=0)
            except FolderBusy:
                busy.append(cell)
    else:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        # slowest first (fewest frozen blocks), so that no long cell starts last
        ordered = sorted(cells, key=lambda cell: cell["n_pretrained_blocks"])
        with kernel_threads(max(1, (os.cpu_count() or 1) // workers)), ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(run_cell, cell, 0): cell for cell in ordered}
            try:
                for future in tqdm(as_completed(futures), total=len(futures), desc="grid", disable=not progress):
                    try:
                        future.result()
                    except FolderBusy:
                        busy.append(futures[future])
            except BaseException:
                # a failed cell, Ctrl-C or a stop signal: start no further cell (the pool would otherwise run every
                # queued one before it lets go); the running ones finish or fail on their own
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    for cell in busy:
        print(f"grid: waiting for cell {cell_name(cell)}, which {lock_owner(lock_file(out_dir / cell_name(cell)))}"
              " is writing", file=sys.stderr, flush=True)
        run_cell(cell, wait=None)

    rows = [{**cell, "run": cell_name(cell), **RunRecord.read(out_dir / cell_name(cell), predictions=False).grid_row()}
            for cell in cells]
    table = pd.DataFrame(rows)
    write_atomic(out_dir / "accuracy.csv", table.to_csv(index=False))
    # its size and sha256, so that a reader finds a truncated or edited table (evaluate.read_accuracy)
    record_checksums(out_dir, ["accuracy.csv"])
    table.attrs["executed"] = executed
    return table


def _cell_task(folder: str, cell_parameters: dict, inputs: dict, preset: str, path: str, notebook, wait):
    """One grid cell, in a Dask worker: the cell's lock is taken here, in the process that runs the notebook, so
    the operating system drops it if this worker dies. ``(outcome, pid)``: ran, skipped (finished) or busy."""
    try:
        ran = run_grid_cell(Path(folder), cell_parameters, inputs, preset, lambda _: (Path(path), notebook), wait)
    except FolderBusy:
        return "busy", os.getpid()
    return ("ran" if ran else "skipped"), os.getpid()


def _cell_result(future, name: str) -> str:
    """The outcome of a cell's task; a cell whose workers died every time it ran is named in the error."""
    from distributed import KilledWorker

    try:
        return future.result()[0]
    except KilledWorker as error:
        raise RuntimeError(f"grid cell {name} ran on workers that died each time (Dask stops after "
                           f"distributed.scheduler.allowed-failures attempts); its run folder was not written: look "
                           f"in the workers' logs for the cause (out of memory, walltime, a crash)") from error


def _run_cells_on_dask(cluster: Any, out_dir: Path, cells: list[dict], inputs: Mapping[str, Any], preset: str,
                       prepare, resources: Mapping[str, float] | None = None, progress: bool = True) -> list[str]:
    """Run the grid cells ``cells`` (each a cell's full parameters) as Dask tasks, one per cell; the names of the
    cells that ran. Called by :func:`run_grid` with ``cluster``; :mod:`xaiutils.execution.cluster` gives the client.

    - A cell whose folder is finished is not submitted (the task checks again under the lock).
    - Each task holds the cell's lock while it runs (:func:`run_grid_cell`), so two clients, on the
      same scheduler or not, never run one cell at once; a cell another process is writing comes back as busy
      and is submitted again, waiting for the lock, after the other cells.
    - A worker that dies mid-cell leaves only its temporary folder, which holds no ``run.json``; Dask runs the
      task again on another worker (up to ``distributed.scheduler.allowed-failures`` times), and that attempt
      removes the leftover under the lock before it starts.
    - Task keys name the cell and the content of its parameters and inputs: two clients of one scheduler that
      submit the same cell get the same task.
    """
    from dask.base import tokenize
    from distributed import as_completed
    from tqdm import tqdm

    from xaiutils.execution.cluster import as_spec, cancel_on_error, connect, task_resources

    names = [cell_name(cell) for cell in cells]
    todo = [(name, cell) for name, cell in zip(names, cells, strict=True)
            if not is_finished(out_dir / name, cell, inputs)]
    if not todo:
        return []
    path, notebook = prepare(todo[0][1])  # names and types of the parameters checked here, before any task
    spec = as_spec(cluster)
    if resources is None:
        resources = task_resources(spec)
    todo.sort(key=lambda item: item[1].get("n_pretrained_blocks", 0))  # slowest first (fewest frozen blocks)
    executed: list[str] = []
    with connect(spec) as client:

        def submit(name: str, cell: dict, wait):
            key = f"grid-cell-{name}-{tokenize(str(out_dir), cell, dict(inputs), wait)}"
            return client.submit(_cell_task, str(out_dir / name), cell, dict(inputs), preset, str(path), notebook,
                                 wait, key=key, resources=resources)

        futures = {submit(name, cell, 0): (name, cell) for name, cell in todo}
        busy = []
        bar = tqdm(total=len(todo), desc="grid (dask)", disable=not progress)
        with cancel_on_error(client, futures):
            for future in as_completed(list(futures)):
                outcome = _cell_result(future, futures[future][0])
                if outcome == "busy":
                    busy.append(futures[future])
                    continue
                executed += [futures[future][0]] if outcome == "ran" else []
                bar.update()
            for name, _ in busy:
                print(f"grid: waiting for cell {name}, which {lock_owner(lock_file(out_dir / name))} "
                      "is writing", file=sys.stderr, flush=True)
            waiting = {submit(name, cell, None): (name, cell) for name, cell in busy}
            futures.update(waiting)
            for future in as_completed(list(waiting)):
                outcome = _cell_result(future, waiting[future][0])
                executed += [waiting[future][0]] if outcome == "ran" else []
                bar.update()
        bar.close()
    remove_dead_leftovers(out_dir)  # a killed worker's kernel may outlive it by a second or so
    return executed
