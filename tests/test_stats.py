"""Regressions on simulated data with known effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xaiutils.analysis import stats

# The study preset's formula (the book and smoke presets drop the interaction: their grids cannot estimate it).
INTERACTION = "score ~ accuracy + C(source) * k"
TRUE = {"Intercept": 0.2, "accuracy": 0.5, "C(source)[T.none]": -0.15, "k": 0.03}


def simulated_runs(n_seeds: int = 8, n_methods: int = 4, run_sd: float = 0.0, noise: float = 0.02, seed: int = 0):
    """Runs over sources × k × seed, several methods each; score = linear truth + run effect + noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for source in ("imagenet", "mri", "none"):
        for k in range(6):
            for run_seed in range(n_seeds):
                run = f"{source}-k{k}-s{run_seed}"
                accuracy = rng.uniform(0.6, 1.0)
                run_effect = rng.normal(0, run_sd)
                for method in range(n_methods):
                    score = (TRUE["Intercept"] + TRUE["accuracy"] * accuracy + TRUE["k"] * k
                             + (TRUE["C(source)[T.none]"] if source == "none" else 0.0)
                             + run_effect + rng.normal(0, noise))
                    rows.append({"run": run, "source": source, "k": k, "seed": run_seed, "method": f"m{method}",
                                 "accuracy": accuracy, "score": score})
    return pd.DataFrame(rows)


def test_ols_recovers_known_coefficients_within_their_intervals():
    table = simulated_runs()
    coefficients, fit = stats.fit_ols(table, "score ~ accuracy + C(source) + k")
    coefficients = coefficients.set_index("term")
    for term, value in TRUE.items():
        assert coefficients.loc[term, "ci_low"] <= value <= coefficients.loc[term, "ci_high"], term
    assert coefficients.loc["C(source)[T.mri]", "ci_low"] <= 0 <= coefficients.loc["C(source)[T.mri]", "ci_high"]
    assert fit["r_squared"] > 0.9 and fit["n_clusters"] == 3 * 6 * 8


def test_full_default_formula_fits_with_interactions():
    coefficients, _ = stats.fit_ols(simulated_runs(), INTERACTION)
    coefficients = coefficients.set_index("term")
    # No interaction was simulated: both interaction slopes are tiny next to the simulated k slope (0.03).
    for term in ("C(source)[T.mri]:k", "C(source)[T.none]:k"):
        assert abs(coefficients.loc[term, "estimate"]) < 0.003, term
    assert coefficients.loc["k", "ci_low"] <= TRUE["k"] <= coefficients.loc["k", "ci_high"]


def test_mixed_model_recovers_the_random_intercept_variance():
    table = simulated_runs(n_seeds=6, n_methods=12, run_sd=0.1, noise=0.02, seed=1)
    coefficients, fit = stats.fit_mixed(table, "score ~ accuracy + C(source) + k")
    assert fit["group_variance"] == pytest.approx(0.1**2, rel=0.35)
    assert fit["residual_variance"] == pytest.approx(0.02**2, rel=0.2)
    assert fit["n_groups"] == 3 * 6 * 6
    row = coefficients.set_index("term").loc["accuracy"]
    assert row["ci_low"] <= TRUE["accuracy"] <= row["ci_high"]


def test_one_source_gives_a_clear_message():
    table = simulated_runs()
    only_imagenet = table[table["source"] == "imagenet"]
    with pytest.raises(ValueError, match="one source only \\('imagenet'\\)"):
        stats.fit_ols(only_imagenet, INTERACTION)
    with pytest.raises(ValueError, match="one source only"):
        stats.fit_mixed(only_imagenet, INTERACTION)
    coefficients, _ = stats.fit_ols(only_imagenet, "score ~ accuracy + k")  # without sources it fits
    assert set(coefficients["term"]) == {"Intercept", "accuracy", "k"}
    # the check reads patsy's terms, not the text: a column named like a source, or k inside a function, is seen
    with pytest.raises(ValueError, match="one source only"):
        stats.fit_ols(only_imagenet, "score ~ accuracy + C( source ) + k")
    one_k = table[table["k"] == 2]
    with pytest.raises(ValueError, match="slope in k, but every run has k = 2"):
        stats.fit_ols(one_k, "score ~ accuracy + C(source) + np.log1p(k)")


def test_formula_variables_are_patsy_columns():
    assert stats.formula_variables(INTERACTION) == {"accuracy", "source", "k"}
    assert stats.formula_variables("score ~ np.log(accuracy) + C(source, Treatment('none'))") == {"accuracy",
                                                                                                  "source"}


def test_accuracy_correlation_known_sign():
    table = simulated_runs(noise=0.001)
    table = table[(table["source"] == "imagenet") & (table["k"] == 0)]
    correlation = stats.accuracy_correlation(table).set_index("method")
    assert (correlation["pearson_r"] > 0.99).all()


def test_method_ranking_is_reproducible_and_orders_known_means():
    rng = np.random.default_rng(0)
    rows = [{"run": "r", "image": image, "method": method, "emd_score": mean + rng.normal(0, 0.01)}
            for image in range(50) for method, mean in (("good", 0.9), ("mid", 0.7), ("random", 0.5))]
    scores = pd.DataFrame(rows)
    first = stats.rank_methods(scores, "emd_score", n_boot=200, seed=3)
    assert first["method"].tolist() == ["good", "mid", "random"]
    assert first["rank_low"].tolist() == [1, 2, 3] and first["rank_high"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(first, stats.rank_methods(scores, "emd_score", n_boot=200, seed=3))


def test_rank_deficient_grid_gives_a_clear_message():
    """The smoke grid runs source 'none' at k = 0 only: its k interaction cannot be estimated."""
    table = simulated_runs()
    table = table[(table["source"] != "none") | (table["k"] == 0)]
    with pytest.raises(ValueError, match=r"rank-deficient.*C\(source\)\[T.none\]:k"):
        stats.fit_mixed(table, INTERACTION)
    coefficients, _ = stats.fit_mixed(table, "score ~ accuracy + C(source) + k")
    assert "C(source)[T.none]" in set(coefficients["term"])


def simulated_grid(truth, methods=("m0",), n_seeds: int = 8, run_sd: float = 0.0, noise: float = 0.02,
                   seed: int = 0) -> pd.DataFrame:
    """Runs over sources × k × seed with the given methods; score = truth(method, source, k, accuracy)
    + run effect (shared by the run's methods) + noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for source in ("imagenet", "mri", "none"):
        for k in range(6):
            for run_seed in range(n_seeds):
                accuracy = rng.uniform(0.6, 1.0)
                run_effect = rng.normal(0, run_sd)
                for method in methods:
                    rows.append({"run": f"{source}-k{k}-s{run_seed}", "source": source, "k": k, "seed": run_seed,
                                 "method": method, "accuracy": accuracy,
                                 "score": truth(method, source, k, accuracy) + run_effect + rng.normal(0, noise)})
    return pd.DataFrame(rows)


# Method "A" scores 0.1 higher after MRI pre-training than after ImageNet; method "B" does not differ.
PER_METHOD_TRUE = {
    "A": {"Intercept": 0.2, "accuracy": 0.3, "C(source)[T.mri]": 0.1, "C(source)[T.none]": 0.0, "k": 0.02},
    "B": {"Intercept": 0.2, "accuracy": 0.3, "C(source)[T.mri]": 0.0, "C(source)[T.none]": 0.0, "k": 0.02},
}
ADDITIVE = "score ~ accuracy + C(source) + k"


def per_method_truth(method, source, k, accuracy):
    true = PER_METHOD_TRUE[method]
    return (true["Intercept"] + true["accuracy"] * accuracy + true["k"] * k
            + (true["C(source)[T.mri]"] if source == "mri" else 0.0))


def test_fit_by_method_recovers_each_methods_coefficients_and_pools():
    # 11 interval checks: at seed 0 one 95 % interval misses (k of B), as 5.9 % of them did over seeds 0-39.
    table = simulated_grid(per_method_truth, methods=("A", "B"), seed=1)
    coefficients, fits = stats.fit_by_method(table, ADDITIVE)
    assert fits["method"].tolist() == ["A", "B", "pooled"] and fits["error"].isna().all()
    assert fits.set_index("method")["n"].to_dict() == {"A": 144, "B": 144, "pooled": 288}
    coefficients = coefficients.set_index(["method", "term"])
    for method, true in PER_METHOD_TRUE.items():
        for term, value in true.items():
            row = coefficients.loc[(method, term)]
            assert row["ci_low"] <= value <= row["ci_high"], (method, term)
    # Pooled over both methods, the MRI effect is their average, 0.05.
    pooled = coefficients.loc[("pooled", "C(source)[T.mri]")]
    assert pooled["ci_low"] <= 0.05 <= pooled["ci_high"]
    # The pooled model ignores that the MRI effect differs between methods, so it explains less.
    r_squared = fits.set_index("method")["r_squared"]
    assert r_squared["A"] > 0.9 and r_squared["B"] > 0.9 and r_squared["pooled"] < min(r_squared["A"], r_squared["B"])


def test_per_method_cluster_robust_errors_are_hc1():
    """One row per run within a method: clustering by run is exactly the HC1 heteroskedasticity-robust error."""
    import statsmodels.formula.api as smf

    table = simulated_grid(per_method_truth, methods=("A", "B"))
    coefficients, _ = stats.fit_by_method(table, ADDITIVE)
    method_a = coefficients[coefficients["method"] == "A"].set_index("term")
    hc1 = smf.ols(ADDITIVE, data=table[table["method"] == "A"]).fit(cov_type="HC1")
    np.testing.assert_allclose(method_a.loc[hc1.bse.index, "std_error"], hc1.bse, rtol=1e-10)


def test_fit_by_method_records_an_unfittable_method_instead_of_crashing():
    table = simulated_grid(per_method_truth, methods=("A", "B"))
    method_a = table[(table["method"] == "A") & (table["seed"] == 0)]
    # Three runs of three sources at three k: the design is fine except for the number of rows.
    tiny = pd.concat([method_a[(method_a["source"] == source) & (method_a["k"] == k)]
                      for source, k in (("imagenet", 0), ("mri", 1), ("none", 2))]).assign(method="tiny")
    table = pd.concat([table, tiny], ignore_index=True)
    for model in ("ols", "mixed"):
        coefficients, fits = stats.fit_by_method(table, ADDITIVE, model=model)
        fits = fits.set_index("method")
        assert "too few" in fits.loc["tiny", "error"] and fits.loc["tiny", "n"] == 3, model
        assert fits.loc[["A", "B", "pooled"], "error"].isna().all(), model
        assert "tiny" not in set(coefficients["method"]) and {"A", "B", "pooled"} <= set(coefficients["method"])


def test_fit_by_method_mixed_reports_variance_components():
    table = simulated_grid(per_method_truth, methods=("A", "B"), run_sd=0.05, n_seeds=4)
    coefficients, fits = stats.fit_by_method(table, ADDITIVE, model="mixed")
    assert {"group_variance", "residual_variance", "converged", "marginal_r_squared"} <= set(fits.columns)
    assert (coefficients["model"] == "mixedlm").all()
    # Per method each run is one row, so only the variance sum is identified: 0.05² + 0.02².
    per_method = fits[fits["method"] != "pooled"]
    total = per_method["group_variance"] + per_method["residual_variance"]
    np.testing.assert_allclose(total, 0.05**2 + 0.02**2, rtol=0.35)


def test_fit_by_method_rejects_an_unknown_model():
    with pytest.raises(ValueError, match=r"unknown model 'glm'.*'ols', 'mixed'"):
        stats.fit_by_method(simulated_runs(n_seeds=2), ADDITIVE, model="glm")


def source_interaction_truth(method, source, k, accuracy):
    """ImageNet minus none = 0.05 + 0.02 k at any accuracy; MRI minus none = -0.03."""
    offset = {"imagenet": 0.05 + 0.02 * k, "mri": -0.03, "none": 0.0}[source]
    return 0.2 + 0.4 * accuracy + 0.01 * k + offset


def test_source_contrasts_recover_a_known_difference_that_depends_on_k():
    table = simulated_grid(source_interaction_truth, methods=("m0", "m1"))
    contrasts = stats.source_contrasts(table, INTERACTION, at_k=[1, 4])
    assert len(contrasts) == 2 * 6  # two k values × ordered pairs of three sources
    indexed = contrasts.set_index(["source_a", "source_b", "at_k"])
    for k in (1, 4):
        for (a, b), true in {("imagenet", "none"): 0.05 + 0.02 * k, ("imagenet", "mri"): 0.08 + 0.02 * k,
                             ("mri", "none"): -0.03}.items():
            row = indexed.loc[(a, b, k)]
            assert row["ci_low"] <= true <= row["ci_high"], (a, b, k)
            reverse = indexed.loc[(b, a, k)]
            assert reverse["estimate"] == pytest.approx(-row["estimate"], abs=1e-12)
            assert reverse["std_error"] == pytest.approx(row["std_error"], rel=1e-9)
            assert reverse["p_value"] == pytest.approx(row["p_value"], rel=1e-9)
    assert contrasts["at_accuracy"].eq(table["accuracy"].mean()).all()


def test_source_contrast_is_the_matching_combination_of_coefficients():
    """ImageNet is the reference level, so none − imagenet at k is β_none + k·β_none:k."""
    table = simulated_grid(source_interaction_truth, methods=("m0", "m1"))
    coefficients = stats.fit_ols(table, INTERACTION)[0].set_index("term")["estimate"]
    contrasts = stats.source_contrasts(table, INTERACTION)  # default: at the mean k
    mean_k = table["k"].mean()
    row = contrasts.set_index(["source_a", "source_b"]).loc[("none", "imagenet")]
    assert row["at_k"] == mean_k
    expected = coefficients["C(source)[T.none]"] + mean_k * coefficients["C(source)[T.none]:k"]
    assert row["estimate"] == pytest.approx(expected, abs=1e-12)


def test_source_contrasts_reject_bad_input():
    table = simulated_runs(n_seeds=2)
    with pytest.raises(ValueError, match="no C\\(source\\) term"):
        stats.source_contrasts(table, "score ~ accuracy + k")
    with pytest.raises(ValueError, match="'high'"):
        stats.source_contrasts(table, INTERACTION, at_k="high")


def hand_built_runs() -> pd.DataFrame:
    """Ten runs at accuracies 0.50 … 0.95: three quantile bins of 4, 3 and 3 runs; the middle bin has no 'none'."""
    runs = [  # (source, score) in order of accuracy
        ("imagenet", 0.2), ("none", 0.05), ("none", 0.1), ("none", 0.15),  # bin 0: imagenet 0.2, none 0.1
        ("imagenet", 0.5), ("imagenet", 0.5), ("imagenet", 0.5),  # bin 1: imagenet only
        ("imagenet", 0.7), ("imagenet", 0.9), ("none", 0.6),  # bin 2: imagenet 0.8, none 0.6
    ]
    return pd.DataFrame([{"run": f"r{index}", "source": source, "accuracy": 0.5 + 0.05 * index, "score": score}
                         for index, (source, score) in enumerate(runs)])


def test_accuracy_matched_weights_complete_bins_by_their_runs():
    by_bin, matched = stats.accuracy_matched(hand_built_runs(), n_bins=3)
    assert by_bin.groupby("bin")["n_runs"].sum().tolist() == [4, 3, 3]
    assert by_bin.groupby("bin")["all_sources"].first().tolist() == [True, False, True]
    assert by_bin.loc[0, "accuracy_low"] == pytest.approx(0.5)
    cell = by_bin.set_index(["bin", "source"])
    assert cell.loc[(0, "none"), "mean_score"] == pytest.approx(0.1)
    assert cell.loc[(2, "imagenet"), "mean_score"] == pytest.approx(0.8)
    # Bin 1 is excluded; bins 0 and 2 weigh 4 and 3 runs for both sources.
    matched = matched.set_index("source")
    assert matched.loc["imagenet", "matched_score"] == pytest.approx((4 * 0.2 + 3 * 0.8) / 7)
    assert matched.loc["none", "matched_score"] == pytest.approx((4 * 0.1 + 3 * 0.6) / 7)
    assert matched["n_bins_used"].tolist() == [2, 2]
    assert matched["n_runs"].to_dict() == {"imagenet": 3, "none": 4}


def test_accuracy_matched_per_method():
    runs = hand_built_runs()
    table = pd.concat([runs.assign(method="m1"), runs.assign(method="m2", score=runs["score"] + 1)])
    _, matched = stats.accuracy_matched(table, n_bins=3)
    scores = matched.set_index(["method", "source"])["matched_score"]
    assert scores.loc[("m1", "imagenet")] == pytest.approx((4 * 0.2 + 3 * 0.8) / 7)
    assert scores.loc[("m2", "none")] == pytest.approx((4 * 0.1 + 3 * 0.6) / 7 + 1)


def test_accuracy_matched_without_overlap_is_empty():
    runs = hand_built_runs()
    runs["source"] = np.where(runs["accuracy"] < 0.74, "imagenet", "none")  # sources in disjoint accuracy ranges
    by_bin, matched = stats.accuracy_matched(runs, n_bins=2)
    assert not by_bin["all_sources"].any()
    assert matched.empty and list(matched.columns) == ["source", "matched_score", "n_bins_used", "n_runs"]


def test_accuracy_matched_rejects_bad_bin_counts():
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match=f"not {bad!r}"):
            stats.accuracy_matched(hand_built_runs(), n_bins=bad)


def test_mixed_model_marginal_r_squared_is_near_the_simulated_value():
    table = simulated_runs(n_seeds=6, n_methods=12, run_sd=0.1, noise=0.02, seed=1)
    _, fit = stats.fit_mixed(table, "score ~ accuracy + C(source) + k")
    fixed = (TRUE["Intercept"] + TRUE["accuracy"] * table["accuracy"] + TRUE["k"] * table["k"]
             + TRUE["C(source)[T.none]"] * (table["source"] == "none"))
    fixed_variance = fixed.var()
    total = fixed_variance + 0.1**2 + 0.02**2
    assert 0 < fit["marginal_r_squared"] < fit["conditional_r_squared"] < 1
    assert fit["marginal_r_squared"] == pytest.approx(fixed_variance / total, abs=0.08)
    assert fit["conditional_r_squared"] == pytest.approx((fixed_variance + 0.1**2) / total, abs=0.02)


def test_a_method_with_as_many_runs_as_coefficients_is_an_error_not_a_crash():
    # score ~ accuracy + C(source) + k has 5 coefficients; a method scored on 5 runs leaves no residual degree of
    # freedom (the smoke build's notebook 5 crashed on this in statsmodels with a ZeroDivisionError)
    table = simulated_runs(n_seeds=2)
    five = ["imagenet-k1-s0", "imagenet-k3-s0", "mri-k2-s0", "mri-k4-s1", "none-k0-s0"]
    short = table[(table["method"] != "m0") | table["run"].isin(five)]
    assert short.loc[short["method"] == "m0", "run"].nunique() == 5
    with pytest.raises(ValueError, match="5 rows are too few to fit .* 5 coefficients"):
        stats.fit_ols(short[short["method"] == "m0"], ADDITIVE)
    coefficients, fits = stats.fit_by_method(short, ADDITIVE)
    errors = fits.set_index("method")["error"]
    assert "too few" in errors["m0"] and errors.drop("m0").isna().all()
    assert "m0" not in set(coefficients["method"]) and {"m1", "pooled"} <= set(coefficients["method"])


def test_mixed_model_at_zero_group_variance_falls_back_and_equals_ols():
    """Run means that the fixed effects explain exactly, and large method effects within runs (the book preset's
    shape): statsmodels' default L-BFGS raises "Singular matrix" on this table. The fit must still come back, with
    a random-intercept variance at its boundary 0, where the REML fixed effects are the OLS estimates."""
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(0)
    method_means = rng.uniform(0.80, 0.89, 13)
    rows = []
    for run in range(21):
        source = ["imagenet", "mri", "none"][run // 7 if run < 18 else 2]
        k = 0 if source == "none" else [2, 3, 5][run % 3]
        accuracy = rng.uniform(0.55, 0.98)
        rows += [{"run": f"r{run}", "source": source, "k": k, "accuracy": accuracy,
                  "score": mean + 0.01 * accuracy + 0.01 * rng.standard_normal()} for mean in method_means]
    table = pd.DataFrame(rows)
    formula = "score ~ accuracy + C(source) + k"
    with pytest.raises(np.linalg.LinAlgError):  # the failure this guards against, still there in statsmodels
        smf.mixedlm(formula, data=table, groups=table["run"]).fit(reml=True)
    coefficients, fit = stats.fit_mixed(table, formula)
    assert fit["converged"] and fit["optimiser"] != "lbfgs"
    assert fit["group_variance"] < 1e-8
    ols = smf.ols(formula, data=table).fit().params
    mixed = coefficients.set_index("term")["estimate"]
    np.testing.assert_allclose(mixed[ols.index].to_numpy(), ols.to_numpy(), atol=1e-6)
