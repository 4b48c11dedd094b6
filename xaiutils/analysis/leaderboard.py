"""The leaderboard: one row per method (registered, user and control maps alike), and how far the metrics agree.

Columns of :func:`build`, from the tidy score table of notebook 4 (one row per run × method × image):

- ``<metric>``, ``<metric>_ci_low``, ``<metric>_ci_high`` for every metric: the mean over the selected images of
  every run, with a 95 % percentile bootstrap interval over those (run, image) rows
  (:func:`xaiutils.analysis.stats.rank_methods`);
- ``rank``, ``rank_low``, ``rank_high``: the rank by the main metric (1 = best) and its 95 % bootstrap interval,
  the same resampled rows for every method;
- ``skill``, ``skill_ci_low``, ``skill_ci_high``: mean main-metric score minus that of the best control map, paired
  by run, 95 % bootstrap interval over runs (:func:`xaiutils.analysis.stats.skill_over_baseline`; empty for control
  maps);
- ``sanity``, ``sanity_rho`` …: the model-randomisation check (:mod:`xaiutils.analysis.sanity`), when given;
- ``kind``: ``registered``, ``user`` or ``control``.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from xaiutils.analysis import evaluate, stats
from xaiutils.domain import explain, metrics, plugins
from xaiutils.domain.synth.dataset import load_benchmark
from xaiutils.execution.paths import default_out_dir
from xaiutils.foundation.config import resolve
from xaiutils.foundation.files import atomic_folder, check_writable, output_folder


def higher_is_better(metric: str) -> bool:
    """The direction of a metric: as registered, and lower for ``emd_distance`` (pixels of transport)."""
    return metrics.METRICS[metric].higher_is_better if metric in metrics.METRICS else False


def _kind(method: str, user_names) -> str:
    if method in user_names:
        return "user"
    return "control" if method in explain.control_map_names() else "registered"


def build(scores: pd.DataFrame, metric_names, selection: str = "correct", sanity: pd.DataFrame | None = None,
          user_names=(), n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The leaderboard, sorted by rank on the first of ``metric_names`` (see the module's docstring)."""
    metric_names = list(metrics.check_metrics(metric_names))
    main = metric_names[0]
    if not higher_is_better(main):
        raise ValueError(f"the leaderboard ranks by its first metric, which must be higher-is-better; got {main!r} "
                         f"(valid: {', '.join(metrics.METRICS)})")
    selected = evaluate.select(scores, selection)
    if selected.empty:
        raise ValueError(f"no rows in the score table under selection {selection!r}; try selection 'all'")
    ranked = stats.rank_methods(selected, main, n_boot=n_boot, seed=seed).set_index("method")
    board = ranked[["mean", "ci_low", "ci_high", "rank_low", "rank_high"]].rename(
        columns={"mean": main, "ci_low": f"{main}_ci_low", "ci_high": f"{main}_ci_high"})
    for metric in metric_names[1:]:  # the same mean and interval as rank_methods gives, without ranking again
        rows = {}
        for method, values in selected.groupby("method")[metric]:
            values = values.to_numpy(dtype=float)
            if np.isfinite(values).any():
                low, high = evaluate.bootstrap_ci(values, n_boot=n_boot, seed=seed)
                rows[method] = {metric: float(np.nanmean(values)), f"{metric}_ci_low": low,
                                f"{metric}_ci_high": high}
        board = board.join(pd.DataFrame.from_dict(rows, orient="index"), how="outer")
    # Methods that could not score a single image (not applicable to the backbone) keep a row, without a rank.
    board = board.reindex(board.index.union(pd.Index(selected["method"].unique()), sort=False))
    board.index.name = "method"
    board["rank"] = board[main].rank(ascending=False, method="min")
    performance = evaluate.aggregate(selected, main, selection="all", n_boot=2, seed=seed).rename(
        columns={"mean": "score"})
    try:
        skill = stats.skill_over_baseline(performance, n_boot=n_boot, seed=seed).set_index("method")
        board = board.join(skill[["skill", "ci_low", "ci_high", "best_baseline"]].rename(
            columns={"ci_low": "skill_ci_low", "ci_high": "skill_ci_high", "best_baseline": "skill_over"}))
    except ValueError:  # no control maps or no methods: no skill column to give
        board[["skill", "skill_ci_low", "skill_ci_high", "skill_over"]] = np.nan
    if sanity is not None and len(sanity):
        board = board.join(sanity.set_index("method"))
    else:
        board["sanity"] = "not run"
    board["sanity"] = board["sanity"].fillna("not run")
    board["n_rows"] = selected.groupby("method")[main].count().reindex(board.index).fillna(0).astype(int)
    board.insert(0, "kind", [_kind(method, set(user_names)) for method in board.index])
    board = board.reset_index().rename(columns={"index": "method"})
    order = ["method", "kind", "rank", "rank_low", "rank_high", "skill", "skill_ci_low", "skill_ci_high",
             "skill_over", "sanity"]
    rest = [column for column in board.columns if column not in order]
    board = board[order + rest]
    return board.sort_values(["rank", "method"], na_position="last").reset_index(drop=True)


def metric_agreement(scores: pd.DataFrame, metric_names, selection: str = "correct", n_boot: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Kendall's τ between the rankings of the methods by mean score under each pair of metrics.

    Methods are ranked by their mean over the selected (run, image) rows; the 95 % interval is a percentile
    bootstrap over those rows, resampled together for every method and metric (so τ's interval holds the
    uncertainty of both rankings). Methods with no score under some metric are left out of every pair.
    Columns: metric_a, metric_b, tau, ci_low, ci_high, n_methods.
    """
    metric_names = list(metrics.check_metrics(metric_names))
    if len(metric_names) < 2:
        raise ValueError(f"metric agreement needs at least two metrics, got {metric_names}")
    selected = evaluate.select(scores, selection)
    cubes = [selected.pivot_table(index=["run", "image"], columns="method", values=metric, dropna=False)
             for metric in metric_names]
    methods = sorted(set.intersection(*[set(cube.columns[cube.notna().any()]) for cube in cubes]))
    index = cubes[0].index
    values = np.stack([cube.reindex(index=index, columns=methods).to_numpy(dtype=float) for cube in cubes])
    sign = np.array([1.0 if higher_is_better(m) else -1.0 for m in metric_names])[:, None]

    upper = np.triu_indices(len(methods), k=1)

    def pair_signs(means):  # (..., methods) → the sign of every method pair's difference
        return np.sign(means[..., upper[0]] - means[..., upper[1]])

    def kendall(a, b):  # Kendall's τ-b over the last axis (scipy's default variant, ties counted)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a * b).sum(axis=-1) / np.sqrt((a**2).sum(axis=-1) * (b**2).sum(axis=-1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a method with no row in a resample gives NaN: that τ is dropped
        signs = pair_signs(sign * np.nanmean(values, axis=1))  # metrics × pairs
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, values.shape[1], size=(n_boot, values.shape[1]))
        boot_signs = np.stack([pair_signs(sign * np.nanmean(values[:, rows], axis=1)) for rows in draws], axis=1)
    point, samples = {}, {}
    for a, b in itertools.combinations(range(len(metric_names)), 2):
        point[a, b] = float(kendall(signs[a], signs[b]))
        samples[a, b] = kendall(boot_signs[a], boot_signs[b])
    table = []
    for (a, b), tau in point.items():
        sample = samples[a, b][np.isfinite(samples[a, b])]
        low, high = (np.percentile(sample, [2.5, 97.5]) if len(sample) else (np.nan, np.nan))
        table.append({"metric_a": metric_names[a], "metric_b": metric_names[b], "tau": float(tau),
                      "ci_low": float(low), "ci_high": float(high), "n_methods": len(methods)})
    return pd.DataFrame(table)


def agreement_matrix(agreement: pd.DataFrame) -> pd.DataFrame:
    """The pairwise τ as a symmetric metric × metric matrix (1 on the diagonal)."""
    names = list(dict.fromkeys([*agreement["metric_a"], *agreement["metric_b"]]))
    matrix = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for row in agreement.itertuples():
        matrix.loc[row.metric_a, row.metric_b] = matrix.loc[row.metric_b, row.metric_a] = row.tau
    return matrix


OUTPUT_FILES = ("scores.csv", "sanity.csv", "leaderboard.csv")


def evaluate_methods(user_methods, preset: str = "book", grid_dir=None, data_dir=None, out_dir=None,
                     progress: bool = True, method_timeout: float | None = None, **overrides) -> pd.DataFrame:
    """Score ``user_methods`` on the trained grid with the preset's methods and control maps; write the leaderboard.

    What ``python -m xaiutils evaluate`` runs. ``user_methods``: specs or entries (:func:`plugins.parse_entries`).
    Every user method is first called on two test images of the most accurate run and refused with a one-line
    :class:`plugins.InvalidMethod` if it breaks the contract, before anything is scored. Then every run of the grid
    is explained and scored (:func:`evaluate.explain_grid`), the sanity check runs on the most accurate run
    (:func:`sanity.model_randomisation`), and ``scores.csv``, ``sanity.csv`` and ``leaderboard.csv`` are written
    as one folder ``out_dir`` (default ``runs/<preset>/evaluate``), built under a temporary name and swapped in whole,
    so a failure while writing leaves the previous set or none; ``out_dir`` must be new, empty or such a set, and
    writable (checked before any work).
    ``overrides``: notebook 4's parameters of the ``explain`` preset section (``methods``, ``metrics``,
    ``n_test_images``, ``workers`` …). ``method_timeout``: seconds a user method may take on one batch (default:
    each entry's ``timeout``, :data:`plugins.DEFAULT_TIMEOUT`); a method past it is refused, naming it and the limit.
    Returns the leaderboard.
    """
    from xaiutils.analysis import difficulty, sanity

    config = resolve("explain", preset, **overrides)
    explain.check_methods(config["methods"])  # a method listed twice is refused before any work
    entries = plugins.parse_entries(user_methods)
    if method_timeout is not None:
        limit = plugins.check_timeout(method_timeout, "--method-timeout")
        entries = [{**entry, "timeout": limit} for entry in entries]
    data_dir = Path(data_dir) if data_dir is not None else default_out_dir(preset, "01_data") / "dataset"
    grid_dir = Path(grid_dir) if grid_dir is not None else default_out_dir(preset, "03_finetune") / "grid"
    out_dir = output_folder(out_dir if out_dir is not None else default_out_dir(preset, "evaluate"), "--out")
    check_output_folder(out_dir)
    check_writable(out_dir.parent, f"result folder {out_dir}")  # before anything is loaded or computed
    for path, made_by in ((data_dir, "notebook 1"), (grid_dir / "accuracy.csv", "the grid (notebook 3)")):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; it is made by {made_by} (make book, or give "
                                    "--data-dir / --grid-dir)")
    bench = load_benchmark(data_dir)
    accuracy = evaluate.read_accuracy(grid_dir, preset)  # the grid's table as it wrote it, or refused
    images = evaluate.test_images(bench, config["n_test_images"], seed=config["seed"])
    best_run = accuracy.sort_values("test_accuracy", ascending=False)["run"].iloc[0]
    model, _, _ = evaluate.load_run(grid_dir / best_run)
    probe = images[:2]
    plugins.validate(entries, model, bench.images[probe], bench.labels[probe], seed=config["seed"])

    scores, _ = evaluate.explain_grid(grid_dir, accuracy["run"], data_dir, images, config["methods"],
                                      config["metrics"], workers=config["workers"], progress=progress,
                                      resolution=config["resolution"], seed=config["seed"],
                                      n_images_costly=config["n_images_costly"], user_methods=entries)
    scores = difficulty.add_edge_distance(evaluate.add_correct_for_all(scores), bench)
    checked = images[: config["sanity_images"]]
    cascade = sanity.model_randomisation(model, bench.images[checked], bench.labels[checked],
                                         [*config["methods"], *(entry["name"] for entry in entries)],
                                         n_stages=config["sanity_stages"], seed=config["seed"],
                                         user_methods=entries, progress=progress)
    verdicts = sanity.summarise(cascade, threshold=config["sanity_threshold"], n_boot=config["n_boot"],
                                seed=config["seed"])
    board = build(scores, config["metrics"], config["selection"], sanity=verdicts,
                  user_names=[entry["name"] for entry in entries], n_boot=config["n_boot"], seed=config["seed"])
    # One result set, swapped in whole: a failure while writing (a full disk) leaves the previous set or nothing.
    with atomic_folder(out_dir) as partial:
        for name, table in zip(OUTPUT_FILES, (scores, cascade.assign(run=best_run), board), strict=True):
            (partial / name).write_text(table.to_csv(index=False))
    return board


def check_output_folder(out_dir: Path) -> None:
    """``evaluate`` replaces its output folder as a whole (:func:`atomic_folder`), so the folder must be new, empty
    or an earlier result set (:data:`OUTPUT_FILES` and nothing else); any other is refused before any work."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"output folder {out_dir} is a file; give --out a folder")
    others = sorted(path.name for path in out_dir.iterdir() if path.name not in OUTPUT_FILES)
    if others:
        raise FileExistsError(f"output folder {out_dir} holds files evaluate did not write ({', '.join(others[:5])}"
                              f"{' …' if len(others) > 5 else ''}); evaluate replaces its folder as a whole, so give "
                              f"--out a new folder (or one holding only {', '.join(OUTPUT_FILES)})")
