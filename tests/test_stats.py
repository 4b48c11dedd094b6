"""Regressions on simulated data with known effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xaiutils import stats

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
    coefficients, _ = stats.fit_ols(simulated_runs())
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
        stats.fit_ols(only_imagenet)
    with pytest.raises(ValueError, match="one source only"):
        stats.fit_mixed(only_imagenet)
    coefficients, _ = stats.fit_ols(only_imagenet, "score ~ accuracy + k")  # without sources it fits
    assert set(coefficients["term"]) == {"Intercept", "accuracy", "k"}


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
        stats.fit_mixed(table)
    coefficients, _ = stats.fit_mixed(table, "score ~ accuracy + C(source) + k")
    assert "C(source)[T.none]" in set(coefficients["term"])
