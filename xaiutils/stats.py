"""Statistics on explanation performance: regressions that correct for classification accuracy.

Unit of analysis: a trained model run (source, k, seed) × method. Everything returns tidy tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .evaluate import aggregate, bootstrap_ci

DEFAULT_FORMULA = "score ~ accuracy + C(source) * k"


def performance_table(scores: pd.DataFrame, accuracy: pd.DataFrame, metric: str, selection: str = "correct",
                      n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Explanation performance per run × method (mean ``metric`` over the selected images) joined with each
    run's test accuracy. Columns: run, source, k, seed, method, is_baseline, score, ci_low, ci_high, accuracy."""
    table = aggregate(scores, metric, selection=selection, n_boot=n_boot, seed=seed)
    table = table.rename(columns={"mean": "score", "n_pretrained_blocks": "k"})
    return table.merge(accuracy[["run", "test_accuracy"]].rename(columns={"test_accuracy": "accuracy"}),
                       on="run", how="left", validate="many_to_one")


def check_design(table: pd.DataFrame, formula: str) -> None:
    """Refuse designs the formula cannot be fitted on, with a message that says what is missing."""
    if "C(source)" in formula and table["source"].nunique() < 2:
        only = ", ".join(map(repr, sorted(table["source"].unique())))
        raise ValueError(f"the formula {formula!r} compares pre-training sources, but the data hold one source "
                         f"only ({only}); run the grid with at least two sources or drop C(source) from the formula")
    if " k" in formula and table["k"].nunique() < 2:
        raise ValueError(f"the formula {formula!r} has a slope in k, but every run has k = {table['k'].iloc[0]}")
    if len(table) <= 3:
        raise ValueError(f"{len(table)} rows are too few to fit {formula!r}")
    from patsy import dmatrix

    design = dmatrix(formula.split("~", 1)[1], table, return_type="dataframe")
    if np.linalg.matrix_rank(design.to_numpy()) < design.shape[1]:
        empty = [name for name in design.columns if not design[name].any()]
        hint = (f"; the columns {', '.join(empty)} are all zero (e.g. a source run at one k only)" if empty else "")
        raise ValueError(f"the design of {formula!r} is rank-deficient on these runs{hint}: drop the terms that the "
                         "grid cannot estimate, e.g. use 'score ~ accuracy + C(source) + k'")


def tidy_coefficients(result, model: str) -> pd.DataFrame:
    ci = result.conf_int()
    return pd.DataFrame({
        "term": result.params.index, "estimate": result.params.to_numpy(), "std_error": result.bse.to_numpy(),
        "ci_low": ci.iloc[:, 0].to_numpy(), "ci_high": ci.iloc[:, 1].to_numpy(),
        "p_value": result.pvalues.to_numpy(), "model": model,
    })


def fit_ols(table: pd.DataFrame, formula: str = DEFAULT_FORMULA, cluster: str = "run") -> tuple[pd.DataFrame, dict]:
    """OLS with cluster-robust standard errors by ``cluster`` (one cluster per model run).

    Returns ``(coefficients, fit)``: a tidy table with 95 % CIs and p-values, and R², adjusted R², n, clusters.
    """
    import statsmodels.formula.api as smf

    check_design(table, formula)
    data = table.dropna(subset=["score", "accuracy"])
    groups = pd.factorize(data[cluster])[0]
    result = smf.ols(formula, data=data).fit(cov_type="cluster", cov_kwds={"groups": groups})
    fit = {"r_squared": float(result.rsquared), "adj_r_squared": float(result.rsquared_adj),
           "n": int(result.nobs), "n_clusters": int(len(np.unique(groups))), "formula": formula}
    return tidy_coefficients(result, "ols_cluster"), fit


def fit_mixed(table: pd.DataFrame, formula: str = DEFAULT_FORMULA, group: str = "run") -> tuple[pd.DataFrame, dict]:
    """Linear mixed model with a random intercept per ``group`` (statsmodels ``mixedlm``, REML).

    Returns ``(coefficients, fit)`` where ``fit`` holds the random-intercept variance, the residual variance
    and whether the optimiser converged.
    """
    import warnings

    import statsmodels.formula.api as smf

    check_design(table, formula)
    data = table.dropna(subset=["score", "accuracy"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; convergence is reported in ``fit``
        result = smf.mixedlm(formula, data=data, groups=data[group]).fit(reml=True)
    coefficients = tidy_coefficients(result, "mixedlm")
    coefficients = coefficients[coefficients["term"] != "Group Var"].reset_index(drop=True)
    fit = {"group_variance": float(result.cov_re.iloc[0, 0]), "residual_variance": float(result.scale),
           "converged": bool(result.converged), "n": int(result.nobs), "n_groups": int(data[group].nunique()),
           "formula": formula}
    return coefficients, fit


def accuracy_correlation(table: pd.DataFrame) -> pd.DataFrame:
    """Pearson and Spearman correlation of accuracy with explanation performance, per method."""
    from scipy import stats

    rows = []
    for method, group in table.dropna(subset=["score", "accuracy"]).groupby("method"):
        if len(group) < 3 or group["accuracy"].nunique() < 2 or group["score"].nunique() < 2:
            rows.append({"method": method, "n": len(group), "pearson_r": np.nan, "pearson_p": np.nan,
                         "spearman_rho": np.nan, "spearman_p": np.nan})
            continue
        pearson = stats.pearsonr(group["accuracy"], group["score"])
        spearman = stats.spearmanr(group["accuracy"], group["score"])
        rows.append({"method": method, "n": len(group), "pearson_r": float(pearson.statistic),
                     "pearson_p": float(pearson.pvalue), "spearman_rho": float(spearman.statistic),
                     "spearman_p": float(spearman.pvalue)})
    return pd.DataFrame(rows)


def rank_methods(scores: pd.DataFrame, metric: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Methods (baselines included) ranked by their mean ``metric`` over all rows, with bootstrap CIs of the
    mean and of the rank (resampling images with replacement, the same images for every method)."""
    wide = scores.pivot_table(index=["run", "image"], columns="method", values=metric)
    methods = list(wide.columns)
    values = wide.to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    ranks = np.empty((n_boot, len(methods)))
    for draw in range(n_boot):
        sample = values[rng.integers(0, len(values), size=len(values))]
        means = np.nanmean(sample, axis=0)
        ranks[draw] = pd.Series(means).rank(ascending=False).to_numpy()
    rows = []
    for index, method in enumerate(methods):
        low, high = bootstrap_ci(values[:, index], n_boot=n_boot, seed=seed)
        rows.append({"method": method, "mean": float(np.nanmean(values[:, index])), "ci_low": low, "ci_high": high,
                     "rank_low": float(np.percentile(ranks[:, index], 2.5)),
                     "rank_high": float(np.percentile(ranks[:, index], 97.5))})
    table = pd.DataFrame(rows).sort_values("mean", ascending=False).reset_index(drop=True)
    table.insert(1, "rank", np.arange(1, len(table) + 1))
    return table
