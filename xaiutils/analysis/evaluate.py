"""Explanation performance of trained runs: attribution maps scored against the lesion masks, per image.

The result is a tidy table, one row per model run × method × image, carrying the scores, the reason a score is
missing, the image's correctness under that model, its label and lesion properties. Aggregation comes after, on
a chosen selection of images (:func:`aggregate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm

from xaiutils.domain import explain, metrics, plugins
from xaiutils.domain.synth.dataset import dataset_hash, load_benchmark
from xaiutils.execution import parallel
from xaiutils.execution.cluster import joblib_backend
from xaiutils.execution.parallel import check_workers
from xaiutils.execution.run_record import RunRecord

SELECTIONS = ("correct", "correct_all", "all")
LESION_COLUMNS = ("label", "class_name", "n_lesions", "lesion_area_px", "contrast", "solidity", "subject", "level")


def load_run(run_dir: str | Path):
    """``(model, sidecar, predictions)`` of a fine-tuning run folder written by notebook 3 (see
    :class:`xaiutils.execution.run_record.RunRecord`): the model in eval mode, the content of ``model.json`` and the
    table
    of ``predictions.csv``."""
    record = RunRecord.read(run_dir)
    return record.load_model(run_dir), record.sidecar(), record.predictions


ACCURACY_FILE = "accuracy.csv"


def read_accuracy(grid_dir, preset: str = "book") -> pd.DataFrame:
    """The grid's ``accuracy.csv``, checked before anything is scored: the runs it left out would silently drop out
    of every result.

    The grid records the file's size and SHA-256 when it writes it (``checksums.json`` in the grid folder): a file
    that no longer matches (truncated, edited) is refused. A file with no record (an older grid, or one written by
    hand) must list every finished run folder of ``grid_dir`` (a folder holding ``model.json``) once. Either way a run
    listed twice or without a finished folder is refused; a finished folder that a recorded file leaves out (a cell
    of another grid definition in the same folder) is named on standard error and not scored.
    """
    import sys

    from xaiutils.execution.run_record import SIDECAR_FILE
    from xaiutils.foundation.files import changed_files

    grid_dir = Path(grid_dir)
    path = grid_dir / ACCURACY_FILE
    again = (f"collect it again with python -m xaiutils grid --preset {preset} --out {grid_dir} (finished cells are "
             "skipped)")
    changed = changed_files(grid_dir)
    recorded = changed is not None
    if recorded and ACCURACY_FILE in changed:
        raise ValueError(f"{path} changed since the grid wrote it (its size or SHA-256 differ from "
                         f"{grid_dir / 'checksums.json'}); {again}")
    try:
        accuracy = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable table ({str(error).splitlines()[0]}); {again}") from None
    for column in ("run", "test_accuracy"):
        if column not in accuracy.columns:
            raise ValueError(f"{path} has no column {column!r} (columns: {', '.join(accuracy.columns)}); {again}")
    finished = sorted(folder.name for folder in grid_dir.iterdir()
                      if folder.is_dir() and not folder.name.startswith(".") and (folder / SIDECAR_FILE).is_file())
    listed = accuracy["run"].astype(str).tolist()
    problems = []
    missing = [name for name in finished if name not in listed]
    if missing and not recorded:
        problems.append(f"lacks {len(missing)} of the {len(finished)} finished runs ({', '.join(missing)})")
    twice = sorted({name for name in listed if listed.count(name) > 1})
    if twice:
        problems.append(f"lists {', '.join(twice)} more than once")
    unknown = [name for name in listed if name not in finished]
    if unknown:
        problems.append(f"lists {', '.join(unknown)}, which the folder holds no finished run of")
    if problems:
        raise ValueError(f"{path} does not match its grid folder: it {'; it '.join(problems)} (it must list every "
                         f"finished run folder, those holding {SIDECAR_FILE}, once and nothing else); {again}")
    if missing:
        print(f"note: {grid_dir} also holds finished runs that its accuracy.csv does not list, from another grid "
              f"definition: {', '.join(missing)}; they are not scored", file=sys.stderr)
    return accuracy


class ExplainedRun(NamedTuple):
    """What :func:`explain_run` gives: the tidy ``table`` of scores, and the ``maps`` (``{method: maps}``, for
    figures) when they were asked for, else ``None``."""

    table: pd.DataFrame
    maps: dict[str, np.ndarray] | None


def test_images(bench, n_images: int | None, seed: int = 0) -> np.ndarray:
    """Indices of the test images to explain: all of them, or a seeded, class-balanced sample of ``n_images``."""
    rows = bench.indices("test")
    if n_images is None or n_images >= len(rows):
        return rows
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(rows[bench.labels[rows] == label]) for label in np.unique(bench.labels[rows])]
    picked = np.concatenate([group[: int(np.ceil(n_images / len(per_class)))] for group in per_class])
    return np.sort(picked[:n_images])


def explain_run(run_dir, bench, images: np.ndarray, methods, metric_names, resolution: int = 64,
                batch_size: int = 32, seed: int = 0, n_jobs: int = -1, keep_maps: bool = False,
                n_images_costly: int | None = None, progress: bool = True, cluster=None,
                user_methods=None) -> ExplainedRun:
    """Tidy scores of one run: every method (and baseline) on ``images`` (dataset indices), targets = true labels;
    and, with ``keep_maps``, the maps of every method that applies (``{method: maps}``, for figures).

    Methods of cost class ``costly`` (LIME, KernelSHAP, Shapley sampling) run on the first ``n_images_costly``
    images only, when that is set: at 224² they take seconds per image.

    A method that does not apply to the backbone gives rows with NaN scores and the reason. ``cluster``: the maps
    are scored on that Dask cluster (:func:`xaiutils.execution.cluster.joblib_backend` given to
    :func:`xaiutils.domain.metrics.score_maps`), the same scores. ``user_methods``: your
    own methods (entries of :func:`xaiutils.domain.plugins.parse_entries`), scored after ``methods`` under their names,
    each map batch validated before scoring (:class:`xaiutils.domain.plugins.InvalidMethod` otherwise).
    """
    user = {entry["name"]: entry for entry in plugins.parse_entries(user_methods)}
    methods = [*methods, *user]
    record = RunRecord.read(run_dir)
    model, config = record.load_model(run_dir), record.config
    correct = record.predictions.set_index("image")["correct"].reindex(images).to_numpy()
    if np.isnan(correct.astype(float)).any():
        raise ValueError(f"run {run_dir} has no prediction for some of the requested images")
    frames, kept = [], {} if keep_maps else None
    for method in tqdm(methods, desc=f"methods ({Path(run_dir).name})", leave=False, disable=not progress):
        costly = method not in user and explain.METHODS[explain.resolve_method(method)].cost == "costly"
        used = slice(0, n_images_costly) if costly and n_images_costly is not None else slice(None)
        x, targets, masks = bench.images[images[used]], bench.labels[images[used]], bench.masks[images[used]]
        try:
            maps = plugins.maps_of(model, x, targets, method, user=user, seed=seed, batch_size=batch_size)
            scores = metrics.score_maps(maps, masks, metrics=metric_names, resolution=resolution, n_jobs=n_jobs,
                                        backend=None if cluster is None else joblib_backend(cluster))
            if kept is not None:
                kept[method] = maps
        except explain.NotApplicable as reason:
            scores = pd.DataFrame({name: np.nan for name in metric_names}, index=range(len(x)))
            scores["reason"] = f"not applicable: {reason}"
        scores.insert(0, "image", images[used])
        scores["correct"] = correct[used].astype(bool)
        scores.insert(1, "method", method)
        # the column keeps its first name (scores.csv files written before read the same); it marks the control maps
        scores.insert(2, "is_baseline", method in explain.control_map_names())
        frames.append(scores)
    table = pd.concat(frames, ignore_index=True)
    for key in ("source", "n_pretrained_blocks", "seed", "model"):
        table[key] = config[key]
    table["run"] = Path(run_dir).name
    properties = bench.metadata.set_index("image").loc[table["image"], list(LESION_COLUMNS)].reset_index(drop=True)
    return ExplainedRun(pd.concat([table, properties], axis=1), kept)


_WORKER_BENCH = {}


def _load_worker_bench(data_dir: str) -> None:
    _WORKER_BENCH["bench"] = load_benchmark(data_dir)


def _explain_in_worker(run_dir, images, methods, metric_names, options, keep_maps) -> ExplainedRun:
    return explain_run(run_dir, _WORKER_BENCH["bench"], images, methods, metric_names, n_jobs=1, keep_maps=keep_maps,
                       progress=False, **options)


def explain_grid(grid_dir, run_names, data_dir, images: np.ndarray, methods, metric_names, workers: int = 1,
                 maps_for: str | None = None, progress: bool = True, cluster=None, **options):
    """Tidy scores of every run in ``run_names`` (folders of ``grid_dir``), in that order, and the maps of the run
    ``maps_for`` (``{method: maps}``, or None).

    ``workers`` runs are explained at once, each in its own process with ``cpu_count // workers`` threads and
    serial scoring: at a small batch, two single-threaded processes get more out of 2 cores than one process with
    two threads. ``workers=1`` runs here, scoring in parallel across cores. Every method is seeded by ``seed``, not
    by the order in which runs are done, so the scores depend on ``workers`` only through the rounding of threaded
    kernels (largest difference over the book's 2,184 scores, two threads against one: 4e-4). ``options`` go to
    :func:`explain_run` (``resolution``, ``seed``, ``n_images_costly``, ``batch_size``).

    ``cluster`` (a scheduler address, a cluster spec file, or a Dask client or cluster;
    :mod:`xaiutils.execution.cluster`):
    each run is one Dask task instead (asking for the spec's ``task_resources``), whose maps are scored by tasks
    spread over the whole cluster; ``workers`` is then ignored.
    """
    workers = check_workers(workers)
    explain.check_methods(methods)
    grid_dir, run_names = Path(grid_dir), list(run_names)
    tables, maps = {}, None
    bar = tqdm(total=len(run_names), desc="runs explained", disable=not progress)
    if cluster is not None:
        tables, maps = _explain_runs_on_dask(cluster, grid_dir, run_names, data_dir, images, methods, metric_names,
                                             maps_for, options, bar)
    elif workers == 1:
        bench = load_benchmark(data_dir)
        for name in run_names:
            tables[name], kept = explain_run(grid_dir / name, bench, images, methods, metric_names,
                                             keep_maps=name == maps_for, progress=progress, **options)
            maps = kept if kept is not None else maps
            bar.update()
    else:
        with parallel.process_pool(workers, _load_worker_bench, (str(data_dir),)) as pool:
            futures = {pool.submit(_explain_in_worker, grid_dir / name, images, methods, metric_names, options,
                                   name == maps_for): name for name in run_names}
            with parallel.cancel_on_error(futures):
                for future in as_completed(futures):
                    tables[futures[future]], kept = future.result()
                    maps = kept if kept is not None else maps
                    bar.update()
    bar.close()
    return pd.concat([tables[name] for name in run_names], ignore_index=True), maps


_BENCHES: dict[tuple[str, str | None], Any] = {}  # per worker process: datasets loaded, by folder and content


def _explain_task(run_dir: str, data_dir: str, content: str | None, images, methods, metric_names, options,
                  keep_maps: bool):
    """One run explained in a Dask worker; its maps are scored by tasks of the same cluster."""
    from distributed import get_client

    if (data_dir, content) not in _BENCHES:
        _BENCHES[(data_dir, content)] = load_benchmark(data_dir)
    return explain_run(run_dir, _BENCHES[(data_dir, content)], images, methods, metric_names, keep_maps=keep_maps,
                       progress=False, cluster=get_client(), **options)


def _explain_runs_on_dask(cluster: Any, grid_dir: Path, run_names: list[str], data_dir, images, methods, metric_names,
                          maps_for: str | None, options: Mapping[str, Any], bar=None):
    """``({run: table}, maps of maps_for)``: each run of ``run_names`` explained as one Dask task (asking for the
    spec's ``task_resources``); called by :func:`explain_grid` with ``cluster``."""
    from dask.base import tokenize
    from distributed import as_completed

    from xaiutils.execution.cluster import as_spec, cancel_on_error, connect, task_resources

    spec = as_spec(cluster)
    content = dataset_hash(data_dir)  # a worker reloads the dataset when its content changed
    tables, maps = {}, None
    with connect(spec) as client:
        futures = {}
        for name in run_names:
            arguments = (str(Path(grid_dir) / name), str(data_dir), content, images, methods, metric_names,
                         dict(options), name == maps_for)
            key = f"explain-{name}-{tokenize(*arguments)}"
            futures[client.submit(_explain_task, *arguments, key=key, resources=task_resources(spec))] = name
        with cancel_on_error(client, futures):
            for future in as_completed(list(futures)):
                tables[futures[future]], kept = future.result()
                maps = kept if kept is not None else maps
                if bar is not None:
                    bar.update()
    return tables, maps


def add_correct_for_all(table: pd.DataFrame) -> pd.DataFrame:
    """Column ``correct_all``: the image is classified correctly by every run in the table."""
    every = table.groupby("image")["correct"].all()
    return table.assign(correct_all=table["image"].map(every).astype(bool))


def select(table: pd.DataFrame, selection: str = "correct") -> pd.DataFrame:
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; valid selections: {', '.join(SELECTIONS)}")
    if selection == "all":
        return table
    return table[table[selection]]


def bootstrap_ci(values, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (NaNs dropped; NaN when fewer than two values)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def aggregate(table: pd.DataFrame, metric: str, selection: str = "correct", n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """Per run × method: mean score over the selected images, with a bootstrap CI over images."""
    rows = []
    keys = ["run", "source", "n_pretrained_blocks", "seed", "method", "is_baseline"]
    for values, group in select(table, selection).groupby(keys, sort=False):
        scores = group[metric].to_numpy(dtype=float)
        low, high = bootstrap_ci(scores, n_boot=n_boot, seed=seed)
        rows.append({**dict(zip(keys, values, strict=True)), "metric": metric, "selection": selection,
                     "n_images": int(np.isfinite(scores).sum()), "mean": float(np.nanmean(scores))
                     if np.isfinite(scores).any() else float("nan"), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)
