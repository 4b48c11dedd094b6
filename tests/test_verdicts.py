"""Verdicts on the study's three claims, on simulated run × method tables whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xaiutils.analysis import verdicts
from xaiutils.analysis.verdicts import NOT_SUPPORTED, OPPOSITE, SUPPORTED


def simulated(source_effect=0.0, k_effect=0.0, accuracy_effect=0.0, method_gap=0.0, confound=False,
              noise=0.002, seeds=4, seed=0) -> pd.DataFrame:
    """Runs of three sources (imagenet and mri at k = 1, 3, 5; none at k = 0) × three methods.

    score = 0.8 + source_effect·[mri] + k_effect·k + accuracy_effect·(accuracy − 0.9) + method offset + noise.
    With ``confound``, the mri runs are also more accurate, so that an uncorrected source effect appears that
    the accuracy term explains.
    """
    rng = np.random.default_rng(seed)
    rows = []
    cells = [("imagenet", k) for k in (1, 3, 5)] + [("mri", k) for k in (1, 3, 5)] + [("none", 0)]
    for source, k in cells:
        for run_seed in range(seeds):
            run = f"{source}-k{k}-s{run_seed}"
            accuracy = 0.9 + rng.normal(0, 0.02) + (0.05 if confound and source == "mri" else 0.0)
            run_noise = rng.normal(0, noise)
            for offset, method in zip((0.0, 0.5, 1.0), ("a", "b", "c"), strict=True):
                score = (0.8 + source_effect * (source == "mri") + k_effect * k
                         + accuracy_effect * (accuracy - 0.9) - method_gap * offset + run_noise
                         + rng.normal(0, noise))
                rows.append({"run": run, "source": source, "k": k, "seed": run_seed, "method": method,
                             "score": score, "accuracy": accuracy})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("low", "high", "sign", "expected"), [
    (0.1, 0.3, None, SUPPORTED), (-0.3, -0.1, None, SUPPORTED), (-0.1, 0.2, None, NOT_SUPPORTED),
    (0.1, 0.3, 1.0, SUPPORTED), (0.1, 0.3, -1.0, OPPOSITE), (-0.3, -0.1, 1.0, OPPOSITE),
    (np.nan, 0.2, None, NOT_SUPPORTED), (0.0, 0.2, None, NOT_SUPPORTED),
])
def test_interval_verdict(low, high, sign, expected):
    assert verdicts.interval_verdict(low, high, sign) == expected


def test_combine_and_bad_input():
    assert verdicts.combine([NOT_SUPPORTED, SUPPORTED, OPPOSITE]) == SUPPORTED
    assert verdicts.combine([NOT_SUPPORTED, OPPOSITE]) == OPPOSITE
    assert verdicts.combine([NOT_SUPPORTED, NOT_SUPPORTED]) == NOT_SUPPORTED
    with pytest.raises(ValueError, match="unknown verdict"):
        verdicts.combine(["maybe"])
    with pytest.raises(ValueError, match="ci_low <= ci_high"):
        verdicts.interval_verdict(0.3, 0.1)


def overall(table: pd.DataFrame, claim: int) -> str:
    return table[(table["claim"] == claim) & (table["part"] == "overall")]["verdict"].iloc[0]


def test_all_three_claims_supported_when_the_effects_are_real():
    table = verdicts.claim_verdicts(simulated(source_effect=0.05, k_effect=-0.01, accuracy_effect=0.2,
                                              method_gap=0.1), n_boot=500)
    assert [overall(table, claim) for claim in (1, 2, 3)] == [SUPPORTED] * 3
    claim1 = table[table["claim"] == 1].iloc[0]
    assert claim1["part"] == "a − c" and claim1["estimate"] == pytest.approx(0.1, abs=0.005)
    mri = table[(table["claim"] == 3) & (table["part"] == "source mri − none")].iloc[0]
    assert mri["estimate"] == pytest.approx(0.05, abs=0.005)  # the contrast holds k (and accuracy) fixed


def test_nothing_supported_without_effects():
    table = verdicts.claim_verdicts(simulated(noise=0.01), n_boot=500)
    assert [overall(table, claim) for claim in (1, 2, 3)] == [NOT_SUPPORTED] * 3


def test_an_effect_explained_by_accuracy_is_not_supported_after_correction():
    # the mri runs are more accurate, and accuracy (not the source) drives the score
    table = verdicts.claim_verdicts(simulated(k_effect=-0.01, accuracy_effect=1.0, confound=True, noise=0.001,
                                              seeds=6), n_boot=500)
    assert verdicts.factor_verdicts(table, 2) == {"source": SUPPORTED, "k": SUPPORTED}
    assert verdicts.factor_verdicts(table, 3) == {"source": NOT_SUPPORTED, "k": SUPPORTED}
    assert overall(table, 2) == SUPPORTED and overall(table, 3) == NOT_SUPPORTED


def test_a_source_effect_that_reverses_after_correction_is_opposite():
    # mri runs are much more accurate (+0.05), which raises their score by 0.1; their own effect is −0.05
    table = verdicts.claim_verdicts(simulated(source_effect=-0.05, k_effect=-0.01, accuracy_effect=2.0,
                                              confound=True, noise=0.001, seeds=6), n_boot=500)
    mri = table[(table["part"] == "source mri − none")].set_index("claim")
    assert mri.loc[2, "estimate"] > 0 and mri.loc[2, "verdict"] == SUPPORTED
    assert mri.loc[3, "estimate"] < 0 and mri.loc[3, "verdict"] == OPPOSITE


def test_method_difference_needs_two_methods():
    one = simulated()
    with pytest.raises(ValueError, match="at least two attribution methods"):
        verdicts.method_difference(one[one["method"] == "a"])


def test_skill_over_the_best_baseline_is_paired_by_run():
    from xaiutils.analysis import stats

    rng = np.random.default_rng(0)
    rows = []
    for run in range(12):
        run_effect = rng.normal(0, 0.05)  # shared by every method of a run: pairing removes it
        for method, score, baseline in (("good", 0.90, False), ("tied", 0.80, False), ("input", 0.80, True),
                                        ("random", 0.60, True)):
            rows.append({"run": f"r{run}", "method": method, "is_baseline": baseline,
                         "score": score + run_effect + rng.normal(0, 0.002)})
    skill = stats.skill_over_baseline(pd.DataFrame(rows), n_boot=500).set_index("method")
    assert set(skill["best_baseline"]) == {"input"}
    assert skill.loc["good", "skill"] == pytest.approx(0.10, abs=0.003)
    assert skill.loc["good", "beats_every_baseline"] and not skill.loc["tied", "beats_every_baseline"]
    assert skill.loc["good", "ci_high"] - skill.loc["good", "ci_low"] < 0.01  # the run effect cancels
