"""Leaderboard, metric agreement and difficulty on score tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xaiutils.analysis import difficulty, leaderboard


def score_table(seed: int = 0) -> pd.DataFrame:
    """Four runs × five methods × six images. Method i scores 0.1·i + noise on emd_score; importance mass is its
    square (the same ranking), roc_auc is 1 − emd_score (the reverse ranking). 'input' is the control map."""
    rng = np.random.default_rng(seed)
    methods = ["a", "b", "c", "mine", "input"]
    rows = []
    for run in range(4):
        for image in range(6):
            for level, method in enumerate(methods):
                value = 0.1 * (level + 1) + rng.normal(0, 0.01)
                rows.append({"run": f"r{run}", "source": "none", "n_pretrained_blocks": 0, "seed": run,
                             "method": method, "is_baseline": method == "input", "image": image,
                             "correct": True, "emd_score": value, "importance_mass_accuracy": value**2,
                             "roc_auc": 1 - value, "lesion_area_px": 10 * (image + 1), "n_lesions": 2,
                             "contrast": 0.5, "solidity": 0.9, "edge_distance_px": float(6 - image)})
    return pd.DataFrame(rows)


def test_leaderboard_columns_ranks_and_skill():
    table = score_table()
    sanity = pd.DataFrame({"method": ["a", "input"], "sanity_rho": [0.1, 1.0], "sanity": ["passed", "flagged"]})
    board = leaderboard.build(table, ["emd_score", "roc_auc"], sanity=sanity, user_names=["mine"], n_boot=200)
    assert board["method"].tolist() == ["input", "mine", "c", "b", "a"]  # by mean emd_score, best first
    assert board["rank"].tolist() == [1, 2, 3, 4, 5]
    row = board.set_index("method")
    assert row.loc["mine", "kind"] == "user" and row.loc["input", "kind"] == "control"
    assert row.loc["a", "kind"] == "registered"
    means = table.groupby("method")["emd_score"].mean()
    assert row.loc["mine", "emd_score"] == pytest.approx(means["mine"])
    assert row.loc["mine", "emd_score_ci_low"] < means["mine"] < row.loc["mine", "emd_score_ci_high"]
    # Skill over the best (here: only) control map, paired by run: 0.4 − 0.5 for "mine"; none for the control.
    assert row.loc["mine", "skill"] == pytest.approx(means["mine"] - means["input"], abs=1e-12)
    assert row.loc["mine", "skill_over"] == "input" and np.isnan(row.loc["input", "skill"])
    assert row.loc["a", "sanity"] == "passed" and row.loc["mine", "sanity"] == "not run"
    assert (row["rank_low"] <= row["rank"]).all() and (row["rank"] <= row["rank_high"]).all()


def test_metric_agreement_known_answers():
    table = score_table()
    agreement = leaderboard.metric_agreement(table, ["emd_score", "importance_mass_accuracy", "roc_auc"],
                                             n_boot=200).set_index(["metric_a", "metric_b"])
    same = agreement.loc[("emd_score", "importance_mass_accuracy")]
    assert same["tau"] == pytest.approx(1.0) and same["ci_low"] == pytest.approx(1.0)
    assert agreement.loc[("emd_score", "roc_auc"), "tau"] == pytest.approx(-1.0)
    assert agreement["n_methods"].eq(5).all()
    matrix = leaderboard.agreement_matrix(agreement.reset_index())
    assert matrix.loc["roc_auc", "emd_score"] == matrix.loc["emd_score", "roc_auc"] == pytest.approx(-1.0)
    # the vectorised τ-b is scipy's, ties included
    noisy = table.assign(roc_auc=np.random.default_rng(3).permutation(table["roc_auc"].to_numpy()))
    tau = leaderboard.metric_agreement(noisy, ["emd_score", "roc_auc"], n_boot=10)["tau"].iloc[0]
    means = noisy.groupby("method")[["emd_score", "roc_auc"]].mean()
    assert tau == pytest.approx(stats.kendalltau(means["emd_score"], means["roc_auc"]).statistic)


def test_edge_distance_known_answers():
    brain = np.zeros((1, 32, 32), dtype=bool)
    brain[0, 10:20, 10:20] = True
    lesion = np.zeros((1, 32, 32))
    lesion[0, 15, 14] = 1.0  # the nearest pixels outside the brain: column 9 and row 20, both 5 pixels away
    assert difficulty.edge_distance(lesion, brain)[0] == pytest.approx(5.0)
    lesion[0, 10, 10] = 1.0  # a corner pixel of the brain: its outside neighbour is 1 pixel away
    assert difficulty.edge_distance(lesion, brain)[0] == pytest.approx(1.0)
    assert np.isnan(difficulty.edge_distance(np.zeros((1, 32, 32)), brain)[0])
    with pytest.raises(ValueError, match="must be equal N×H×W"):
        difficulty.edge_distance(lesion, brain[:, :5])


def test_property_correlations_known_answers():
    table = score_table()
    table["emd_score"] = table["lesion_area_px"] / 100 + 0.001 * table["run"].str[1:].astype(int)
    result = difficulty.property_correlations(table, "emd_score", n_boot=100).set_index(["method", "property"])
    assert result.loc[("a", "edge_distance_px"), "rho"] < -0.9  # the area grows as the edge distance shrinks
    assert result.loc[("a", "lesion_area_px"), "rho"] > 0.9
    assert np.isnan(result.loc[("a", "n_lesions"), "rho"])
    assert result.loc[("a", "n_lesions"), "note"] == "n_lesions is constant in this table"
    with pytest.raises(ValueError, match="lacks the lesion properties"):
        difficulty.property_correlations(table.drop(columns="solidity"), "emd_score")
