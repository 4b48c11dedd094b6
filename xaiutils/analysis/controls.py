"""Reading a metric against its controls: how much room the data leave between chance, the best model-free map and
the ground truth, and where each method falls in that room.

Three reference points per metric, all scored on the same images as the methods:

- the ``random`` control map: chance;
- the best control map (``input``, ``sobel``, ``laplace`` or ``random``, whichever scores best on that metric): what
  the image alone gives, without any model;
- the oracle: the lesion mask scored as its own attribution map, the best a map can do.

A metric separates methods on a dataset only if the oracle lies well above the best control. A method's
*normalised skill* places it in that interval: ``(method − best control) / (oracle − best control)``, 0 at the best
control, 1 at the oracle, negative below the control (:func:`normalised_skill`).

:func:`oracle_table` asks the question before any model is trained: can the image be read as an explanation by
itself? The book's default data must pass :data:`IMAGE_NOT_ORACLE` for the ``input`` map.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xaiutils.analysis.evaluate import select
from xaiutils.analysis.leaderboard import higher_is_better
from xaiutils.domain import explain, metrics

ORACLE_TABLE_MAPS = ("input", "sobel", "laplace", "random")
ORACLE_TABLE_METRICS = ("pointing_game", "roc_auc", "importance_mass_accuracy")
ORACLE = "mask (oracle)"
# The criterion of the default data, stated before any method was scored: the image itself (the ``input`` control
# map) is not an oracle when it wins the pointing game on at most 30 % of the images and ranks lesion pixels above
# the others with a ROC-AUC of at most 0.75.
IMAGE_NOT_ORACLE = {"pointing_game": 0.3, "roc_auc": 0.75}


def oracle_table(images, masks, maps=ORACLE_TABLE_MAPS, metric_names=ORACLE_TABLE_METRICS, seed: int = 0,
                 resolution: int | None = None) -> pd.DataFrame:
    """Mean scores of model-free maps against ``masks`` (N×H×W, soft, binarised at 0.5), one row per map, plus the
    row :data:`ORACLE` (the mask scored as its own map). No model is involved: the table says what the images
    alone give. ``images``: N×H×W or N×1×H×W in [0, 1]; ``resolution``: the EMD metrics' scoring grid."""
    images = np.asarray(images, dtype=np.float32)
    masks = np.asarray(masks, dtype=np.float32)
    if images.ndim == 3:
        images = images[:, None]
    if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"images {images.shape} and masks {masks.shape} must hold the same number of images of the "
                         "same size")
    metric_names = list(metrics.check_metrics(metric_names))
    unknown = [name for name in maps if name not in explain.control_map_names()]
    if unknown:
        raise ValueError(f"unknown control map(s) {unknown}; valid: {', '.join(explain.control_map_names())}")
    rows = {}
    for name in [*maps, ORACLE]:
        attribution = masks if name == ORACLE else explain.attribute(None, images, None, name, seed=seed)
        scored = metrics.score_maps(attribution, masks, metrics=metric_names, resolution=resolution, n_jobs=1)
        rows[name] = scored[metric_names].mean()
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "map"
    table.attrs["n_images"] = int(images.shape[0])
    return table


def image_is_oracle(table: pd.DataFrame, limits=None) -> dict[str, bool]:
    """Which limits of :data:`IMAGE_NOT_ORACLE` the ``input`` row of an :func:`oracle_table` exceeds (``True``:
    exceeded, the image is an oracle on that metric)."""
    limits = dict(IMAGE_NOT_ORACLE if limits is None else limits)
    if "input" not in table.index:
        raise ValueError(f"the table has no 'input' row; rows: {list(table.index)}")
    missing = [metric for metric in limits if metric not in table.columns]
    if missing:
        raise ValueError(f"the table lacks the metric(s) {missing} that the criterion reads")
    return {metric: bool(table.loc["input", metric] > limit) for metric, limit in limits.items()}


def oracle_scores(masks, metric_names, resolution: int | None = None) -> pd.DataFrame:
    """Each mask scored as its own attribution map: one row per image (index = position in ``masks``)."""
    return metrics.score_maps(np.asarray(masks, dtype=np.float32), masks, metrics=metric_names,
                              resolution=resolution, n_jobs=1)


def _controls_in(selected: pd.DataFrame) -> list[str]:
    """The control maps the score table holds (refused when it holds none)."""
    controls = [name for name in explain.control_map_names() if name in set(selected["method"])]
    if not controls:
        raise ValueError("the score table has no control maps; valid: " + ", ".join(explain.control_map_names()))
    return controls


def _best_control(wide: pd.DataFrame, controls: list[str], metric: str) -> str:
    """The control map with the best mean over runs, by the metric's direction."""
    means = wide[controls].mean()
    return means.idxmax() if higher_is_better(metric) else means.idxmin()


def _per_run(selected: pd.DataFrame, oracle: pd.Series, metric: str) -> pd.DataFrame:
    """Run × method means over each run's selected images, and the column ``oracle``: the oracle's mean over the
    same images of that run."""
    wide = selected.pivot_table(index="run", columns="method", values=metric, aggfunc="mean")
    images = selected.drop_duplicates(["run", "image"])
    per_image = images["image"].map(oracle)
    if per_image.isna().any():
        lacking = sorted(int(image) for image in images.loc[per_image.isna(), "image"].unique())
        raise ValueError(f"the oracle scores lack image(s) {lacking}")
    wide["oracle"] = per_image.groupby(images["run"]).mean()
    return wide


def metric_ranges(scores: pd.DataFrame, oracle: pd.DataFrame, metric_names, selection: str = "correct"
                  ) -> pd.DataFrame:
    """Per metric: the ``random`` map's mean, the best control map (name and mean), the oracle's mean and the room
    between the best control and the oracle; means over runs of each run's selected images. ``oracle``: one row per
    image (index = image, as :func:`oracle_scores` gives for the dataset's images)."""
    selected = select(scores, selection)
    controls = _controls_in(selected)
    rows = []
    for metric in metrics.check_metrics(metric_names):
        wide = _per_run(selected, oracle[metric], metric)
        means = wide[controls].mean()
        best = _best_control(wide, controls, metric)
        rows.append({"metric": metric, "higher_is_better": higher_is_better(metric),
                     "random": float(means.get("random", np.nan)), "best_control": best,
                     "best_control_score": float(means[best]), "oracle": float(wide["oracle"].mean()),
                     "room": float(wide["oracle"].mean() - means[best])})
    return pd.DataFrame(rows).set_index("metric")


def normalised_skill(scores: pd.DataFrame, oracle: pd.DataFrame, metric: str, selection: str = "correct",
                     n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Each method's place between the best control map (0) and the oracle (1) on ``metric``.

    Per run, the method's, the best control's and the oracle's means over the run's selected images; the skill is
    ``mean over runs of (method − control) / mean over runs of (oracle − control)``, and its 95 % interval a
    percentile bootstrap over runs, resampling the numerator and denominator together (paired by run). The best
    control is the control map with the best mean over runs (by the metric's direction). Columns: method,
    best_control, skill, ci_low, ci_high, n_runs; sorted by skill. Control maps get a row too (the best one at 0).
    """
    selected = select(scores, selection)
    wide = _per_run(selected, oracle[metric], metric)
    best = _best_control(wide, _controls_in(selected), metric)
    rng = np.random.default_rng(seed)
    rows = []
    for method in [column for column in wide.columns if column != "oracle"]:
        values = np.column_stack([wide[method], wide[best], wide["oracle"]])  # the best control pairs with itself
        pair = values[np.isfinite(values).all(axis=1)]
        gain, room = pair[:, 0] - pair[:, 1], pair[:, 2] - pair[:, 1]
        skill = low = high = float("nan")
        if len(pair) and room.mean() != 0:
            skill = float(gain.mean() / room.mean())
            if len(pair) >= 2:
                draws = rng.integers(0, len(pair), size=(n_boot, len(pair)))
                with np.errstate(divide="ignore", invalid="ignore"):
                    boot = gain[draws].mean(axis=1) / room[draws].mean(axis=1)
                low, high = (float(v) for v in np.nanpercentile(boot, [2.5, 97.5]))
        rows.append({"method": method, "best_control": best, "skill": skill, "ci_low": low, "ci_high": high,
                     "n_runs": int(len(pair))})
    return pd.DataFrame(rows).sort_values("skill", ascending=False, na_position="last").reset_index(drop=True)


def paired_skill(scores: pd.DataFrame, metric: str, selection: str = "correct", n_boot: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """Each method's score minus the best control map's, paired by image within each run, with a 95 % interval that
    resamples runs and then images within each drawn run (a two-stage bootstrap: both sources of variation).

    The best control is the control map with the best mean over runs (by the metric's direction, as in
    :func:`normalised_skill`). The point estimate is the mean over runs of each run's mean paired difference over
    the images where both the method and the control have a score. Columns: method, best_control, skill, ci_low,
    ci_high, n_runs, n_pairs; sorted by skill (higher is better for every metric: the difference is signed so).
    """
    selected = select(scores, selection)
    controls = _controls_in(selected)
    best = _best_control(selected.pivot_table(index="run", columns="method", values=metric, aggfunc="mean"),
                         controls, metric)
    sign = 1.0 if higher_is_better(metric) else -1.0
    wide = selected.pivot_table(index=["run", "image"], columns="method", values=metric, aggfunc="mean")
    rng = np.random.default_rng(seed)
    rows = []
    for method in wide.columns:
        difference = (sign * (wide[method] - wide[best])).dropna()
        runs = [group.to_numpy() for _, group in difference.groupby(level="run")]
        skill = low = high = float("nan")
        if runs:
            skill = float(np.mean([run.mean() for run in runs]))
            if len(runs) >= 2 and method != best:
                picked = rng.integers(0, len(runs), size=(n_boot, len(runs)))  # stage 1: runs
                total = np.zeros(n_boot)
                for slot in range(len(runs)):  # stage 2: each drawn run's images, drawn afresh for every slot
                    resampled = np.stack([run[rng.integers(0, len(run), size=(n_boot, len(run)))].mean(axis=1)
                                          for run in runs])  # runs × draws
                    total += resampled[picked[:, slot], np.arange(n_boot)]
                low, high = (float(v) for v in np.percentile(total / len(runs), [2.5, 97.5]))
            elif method == best:
                low = high = 0.0
        rows.append({"method": method, "best_control": best, "skill": skill, "ci_low": low, "ci_high": high,
                     "n_runs": len(runs), "n_pairs": int(len(difference))})
    return pd.DataFrame(rows).sort_values("skill", ascending=False, na_position="last").reset_index(drop=True)
