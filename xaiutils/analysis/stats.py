"""Statistics on explanation performance: regressions that correct for classification accuracy.

Unit of analysis: a trained model run (source, k, seed) × method. Everything returns tidy tables.
"""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd

from xaiutils.analysis.evaluate import aggregate, bootstrap_ci


def formula_variables(formula: str) -> set[str]:
    """The data columns the right-hand side of a patsy ``formula`` uses, read from patsy's own terms: for
    ``score ~ accuracy + C(source) * k``, {accuracy, source, k}. Function names (``C``, ``np.log``) are not
    columns."""
    from patsy import ModelDesc

    names = set()
    for term in ModelDesc.from_formula(formula).rhs_termlist:
        for factor in term.factors:
            tree = ast.parse(factor.code, mode="eval")
            called = {id(part) for node in ast.walk(tree) if isinstance(node, ast.Call) for part in ast.walk(node.func)}
            names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in called}
    return names


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
    variables = formula_variables(formula)
    if "source" in variables and table["source"].nunique() < 2:
        only = ", ".join(map(repr, sorted(table["source"].unique())))
        raise ValueError(f"the formula {formula!r} compares pre-training sources, but the data hold one source "
                         f"only ({only}); run the grid with at least two sources or drop C(source) from the formula")
    if "k" in variables and table["k"].nunique() < 2:
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
    if len(design) <= design.shape[1]:
        # an exact fit: no residual degrees of freedom, and statsmodels' small-sample correction divides by zero
        raise ValueError(f"{len(design)} rows are too few to fit {formula!r}, which has {design.shape[1]} "
                         "coefficients: standard errors need more rows than coefficients")


def tidy_coefficients(result, model: str) -> pd.DataFrame:
    ci = result.conf_int()
    return pd.DataFrame({
        "term": result.params.index, "estimate": result.params.to_numpy(), "std_error": result.bse.to_numpy(),
        "ci_low": ci.iloc[:, 0].to_numpy(), "ci_high": ci.iloc[:, 1].to_numpy(),
        "p_value": result.pvalues.to_numpy(), "model": model,
    })


def _fit_ols_result(table: pd.DataFrame, formula: str, cluster: str = "run"):
    """The statsmodels OLS result (cluster-robust by ``cluster``), the rows it was fitted on, and the cluster ids."""
    import statsmodels.formula.api as smf

    check_design(table, formula)
    data = table.dropna(subset=["score", "accuracy"])
    groups = pd.factorize(data[cluster])[0]
    result = smf.ols(formula, data=data).fit(cov_type="cluster", cov_kwds={"groups": groups})
    return result, data, groups


def fit_ols(table: pd.DataFrame, formula: str, cluster: str = "run") -> tuple[pd.DataFrame, dict]:
    """OLS with cluster-robust standard errors by ``cluster`` (one cluster per model run).

    Returns ``(coefficients, fit)``: a tidy table with 95 % CIs and p-values, and R², adjusted R², n, clusters.
    """
    result, _, groups = _fit_ols_result(table, formula, cluster)
    fit = {"r_squared": float(result.rsquared), "adj_r_squared": float(result.rsquared_adj),
           "n": int(result.nobs), "n_clusters": int(len(np.unique(groups))), "formula": formula}
    return tidy_coefficients(result, "ols_cluster"), fit


MIXED_OPTIMISERS = ("lbfgs", "powell", "nm")  # fit_mixed tries them in this order


def fit_mixed(table: pd.DataFrame, formula: str, group: str = "run") -> tuple[pd.DataFrame, dict]:
    """Linear mixed model with a random intercept per ``group`` (statsmodels ``mixedlm``, REML).

    Returns ``(coefficients, fit)`` where ``fit`` holds the random-intercept variance, the residual variance,
    whether the optimiser converged and which one (``MIXED_OPTIMISERS``, the first to converge), and the marginal
    and conditional R² of Nakagawa & Schielzeth (2013):
    var(fixed-effect predictions) / (that + group variance + residual variance), and the same with the group
    variance added to the numerator.
    """
    import warnings

    import statsmodels.formula.api as smf

    check_design(table, formula)
    data = table.dropna(subset=["score", "accuracy"])
    model = smf.mixedlm(formula, data=data, groups=data[group])
    result, optimiser, failures = None, None, []
    # statsmodels' default L-BFGS inverts X'V⁻¹X on its way and raises "Singular matrix" when the random-intercept
    # variance runs to its boundary at 0 (the fixed effects explain the runs' means; the book preset did this with 13
    # methods). Derivative-free Powell and Nelder-Mead reach that boundary; the first optimiser that converges wins,
    # else the last one that ran.
    for optimiser in MIXED_OPTIMISERS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence chatter; convergence is reported in ``fit``
                result = model.fit(reml=True, method=optimiser)
        except (np.linalg.LinAlgError, ValueError) as error:
            failures.append(f"{optimiser}: {error}")
            continue
        if result.converged:
            break
    if result is None:
        raise ValueError(f"the mixed model {formula!r} could not be fitted by any optimiser: {'; '.join(failures)}")
    coefficients = tidy_coefficients(result, "mixedlm")
    coefficients = coefficients[coefficients["term"] != "Group Var"].reset_index(drop=True)
    group_variance, residual_variance = float(result.cov_re.iloc[0, 0]), float(result.scale)
    # Fixed-effect predictions only (no random intercepts): the variance the fixed effects explain.
    fixed_variance = float(np.var(result.model.exog @ result.fe_params.to_numpy(), ddof=1))
    total_variance = fixed_variance + group_variance + residual_variance
    fit = {"group_variance": group_variance, "residual_variance": residual_variance,
           "converged": bool(result.converged), "optimiser": optimiser, "n": int(result.nobs),
           "n_groups": int(data[group].nunique()),
           "formula": formula,
           "marginal_r_squared": fixed_variance / total_variance if total_variance > 0 else np.nan,
           "conditional_r_squared": (fixed_variance + group_variance) / total_variance if total_variance > 0
           else np.nan}
    return coefficients, fit


POOLED = "pooled"
MODELS = ("ols", "mixed")


def fit_by_method(table: pd.DataFrame, formula: str,
                  model: str = "ols") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The regression fitted per method and once pooled over all methods (method ``"pooled"``).

    ``model="ols"`` fits :func:`fit_ols` (cluster-robust by run); ``model="mixed"`` fits :func:`fit_mixed`.
    Returns ``(coefficients, fits)``: the tidy coefficients with a ``method`` column, and one row per method with
    that fit's summary (r_squared, adj_r_squared, n_clusters for OLS; group_variance, residual_variance,
    converged, marginal/conditional R², n_groups for mixed), ``n`` and ``error``. A method whose design cannot be
    fitted (e.g. too few runs) gets the reason in ``error`` and no coefficients; ``error`` is None otherwise.

    Within one method each run contributes one row, so the per-method fits have one row per cluster/group:
    clustering by run reduces to heteroskedasticity-robust errors (exactly HC1, with statsmodels' small-sample
    correction), and in the mixed model the random intercept cannot be told apart from the residual (their
    split is arbitrary; the fixed effects are still estimated). Only the pooled fit uses the run grouping.
    """
    fitters = {"ols": fit_ols, "mixed": fit_mixed}
    if model not in fitters:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(map(repr, MODELS))}")
    if "method" not in table.columns:
        raise ValueError("fit_by_method needs a 'method' column in the table")
    if (table["method"] == POOLED).any():
        raise ValueError(f"a method is named {POOLED!r}, the name reserved for the pooled fit; rename it")
    subsets = [*table.groupby("method", sort=True), (POOLED, table)]
    coefficient_tables, fits = [], []
    for method, subset in subsets:
        try:
            coefficients, fit = fitters[model](subset, formula)
        except (ValueError, np.linalg.LinAlgError) as error:
            n_rows = len(subset.dropna(subset=["score", "accuracy"]))
            fits.append({"method": method, "n": n_rows, "formula": formula, "error": str(error)})
            continue
        coefficient_tables.append(coefficients.assign(method=method))
        fits.append({"method": method, **fit, "error": None})
    coefficient_columns = ["method", "term", "estimate", "std_error", "ci_low", "ci_high", "p_value", "model"]
    coefficients = (pd.concat(coefficient_tables, ignore_index=True)[coefficient_columns] if coefficient_tables
                    else pd.DataFrame(columns=coefficient_columns))
    fits = pd.DataFrame(fits)
    fits = fits[["method", *[c for c in fits.columns if c not in ("method", "error")], "error"]]
    return coefficients, fits


def source_contrasts(table: pd.DataFrame, formula: str, at_k=None,
                     at_accuracy: float | None = None) -> pd.DataFrame:
    """Accuracy-adjusted differences between pre-training sources, from the OLS fit (cluster-robust by run).

    For every ordered pair of sources (a, b), the predicted score of source a minus that of source b at the same
    accuracy ``at_accuracy`` (default: the mean accuracy of the fitted rows) and the same k ``at_k`` (a number or
    a sequence of numbers; default: the mean k of the fitted rows). Other numeric covariates of the formula are
    held at their mean. The contrast is a linear combination of the coefficients (the difference of the two
    design rows), so interactions such as ``C(source) * k`` enter correctly.

    Columns: source_a, source_b, at_accuracy, at_k, estimate, std_error, ci_low, ci_high (95 %), p_value.
    """
    from itertools import permutations

    from patsy import dmatrix

    if "C(source)" not in formula:
        raise ValueError(f"the formula {formula!r} has no C(source) term, so there are no source contrasts")
    try:
        ks = None if at_k is None else np.atleast_1d(np.asarray(at_k, dtype=float))
    except (TypeError, ValueError):
        raise ValueError(f"at_k must be a number or a sequence of numbers, not {at_k!r}") from None
    result, data, _ = _fit_ols_result(table, formula)
    ks = [float(data["k"].mean())] if ks is None else [float(k) for k in ks]
    accuracy = float(data["accuracy"].mean()) if at_accuracy is None else float(at_accuracy)
    sources = sorted(data["source"].unique())
    covariate_means = data.select_dtypes("number").mean().to_dict()
    # The patsy design of the fitted model: ``design_info`` up to statsmodels 0.14, ``model_spec`` from 0.15.
    design_info = getattr(result.model.data, "design_info", None)
    design_info = result.model.data.model_spec if design_info is None else design_info
    rows = []
    for k in ks:
        at = pd.DataFrame([{**covariate_means, "accuracy": accuracy, "k": k, "source": source}
                           for source in sources])
        design = np.asarray(dmatrix(design_info, at))
        for a, b in permutations(range(len(sources)), 2):
            test = result.t_test(design[a] - design[b])
            ci_low, ci_high = np.asarray(test.conf_int(alpha=0.05)).ravel()
            rows.append({"source_a": sources[a], "source_b": sources[b], "at_accuracy": accuracy, "at_k": k,
                         "estimate": float(np.squeeze(test.effect)), "std_error": float(np.squeeze(test.sd)),
                         "ci_low": float(ci_low), "ci_high": float(ci_high),
                         "p_value": float(np.squeeze(test.pvalue))})
    return pd.DataFrame(rows)


def accuracy_matched(table: pd.DataFrame, n_bins: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sources compared at matched accuracy: runs binned into ``n_bins`` accuracy quantiles.

    Scores are first averaged per run (per method where the table has a ``method`` column). Returns
    ``(by_bin, matched)``:

    - ``by_bin``: per [method,] bin and source: accuracy_low, accuracy_high (the bin edges), n_runs,
      mean_score, mean_accuracy, and all_sources (whether every source of the table has runs in that bin);
    - ``matched``: per [method,] source: matched_score, the mean of the bin means over only the bins that hold
      all sources, weighted by the number of runs in the bin (all sources together, so every source is
      averaged over the same accuracy distribution), with n_bins_used and n_runs (that source's runs in them).

    Ties in accuracy can merge quantile bins (``duplicates="drop"``), so there may be fewer than ``n_bins``.
    If no bin holds all sources, ``matched`` is empty (no rows, same columns); nothing is raised.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a whole number of at least 1, not {n_bins!r}")
    data = table.dropna(subset=["score", "accuracy"])
    keys = ["method"] if "method" in data.columns else []
    run_accuracy = data.groupby("run")["accuracy"].mean()
    if run_accuracy.nunique() <= 1:  # qcut cannot cut a single value; it is one bin
        run_bin = pd.Series(0, index=run_accuracy.index)
        edges = np.array([run_accuracy.min(), run_accuracy.max()])
    else:
        codes, edges = pd.qcut(run_accuracy, n_bins, labels=False, retbins=True, duplicates="drop")
        run_bin = codes.astype(int)
    runs = data.groupby([*keys, "source", "run"], as_index=False).agg(score=("score", "mean"),
                                                                       accuracy=("accuracy", "mean"))
    runs["bin"] = runs["run"].map(run_bin)
    by_bin = runs.groupby([*keys, "bin", "source"], as_index=False).agg(
        n_runs=("run", "nunique"), mean_score=("score", "mean"), mean_accuracy=("accuracy", "mean"))
    by_bin.insert(len(keys) + 1, "accuracy_low", edges[by_bin["bin"].to_numpy()])
    by_bin.insert(len(keys) + 2, "accuracy_high", edges[by_bin["bin"].to_numpy() + 1])
    n_sources = data["source"].nunique()
    by_bin["all_sources"] = by_bin.groupby([*keys, "bin"])["source"].transform("nunique") == n_sources

    matched_columns = [*keys, "source", "matched_score", "n_bins_used", "n_runs"]
    complete = by_bin[by_bin["all_sources"]].copy()
    if complete.empty:
        return by_bin, pd.DataFrame(columns=matched_columns)
    complete["weight"] = complete.groupby([*keys, "bin"])["n_runs"].transform("sum")
    complete["weighted_score"] = complete["weight"] * complete["mean_score"]
    matched = complete.groupby([*keys, "source"], as_index=False).agg(
        weighted_score=("weighted_score", "sum"), weight=("weight", "sum"), n_bins_used=("bin", "nunique"),
        n_runs=("n_runs", "sum"))
    matched["matched_score"] = matched["weighted_score"] / matched["weight"]
    return by_bin, matched[matched_columns]


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


def skill_over_baseline(performance: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Each attribution method's mean score minus that of the best model-free baseline, paired by run.

    ``performance``: one row per run × method (columns run, method, is_baseline, score), e.g. from
    :func:`performance_table`. The best baseline is the one with the highest mean score over runs; its score is
    subtracted run by run, and the 95 % interval is a percentile bootstrap over runs. A method "beats every
    baseline" when the lower end of its interval is above zero. Columns: method, best_baseline, skill, ci_low,
    ci_high, n_runs, beats_every_baseline; sorted by skill.
    """
    table = performance.dropna(subset=["score"])
    wide = table.pivot_table(index="run", columns="method", values="score")
    baselines = sorted(set(table.loc[table["is_baseline"], "method"]))
    methods = sorted(set(table.loc[~table["is_baseline"], "method"]))
    if not baselines or not methods:
        raise ValueError(f"skill needs attribution methods and model-free baselines; got methods {methods}, "
                         f"baselines {baselines}")
    best = wide[baselines].mean().idxmax()
    rng = np.random.default_rng(seed)
    rows = []
    for method in methods:
        paired = (wide[method] - wide[best]).dropna().to_numpy()
        if len(paired) >= 2:
            boot = paired[rng.integers(0, len(paired), size=(n_boot, len(paired)))].mean(axis=1)
            low, high = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
        else:
            low = high = float("nan")
        rows.append({"method": method, "best_baseline": best,
                     "skill": float(paired.mean()) if len(paired) else float("nan"), "ci_low": low,
                     "ci_high": high, "n_runs": int(len(paired)), "beats_every_baseline": bool(low > 0)})
    return pd.DataFrame(rows).sort_values("skill", ascending=False).reset_index(drop=True)
