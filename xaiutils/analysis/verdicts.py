"""The reference study's three claims, each given a verdict computed from estimates and 95 % intervals.

Oliveira et al. (2024) report that (1) attribution methods differ in explanation performance even on correctly
classified images, (2) explanation performance depends on the pre-training source and on the number of
pre-trained layers, and (3) both still hold after correcting for classification accuracy. The claims name no
direction, so an interval that excludes zero supports them; for claim 3 the direction is the one this build
estimates without the correction, and an accuracy-corrected interval on the other side of zero is reported as
"opposite direction".

Every verdict is one of :data:`VERDICTS`; notebook 5 glues them into the text, so no verdict is typed by hand.
"""

from __future__ import annotations

import hashlib
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from xaiutils.analysis import stats

SUPPORTED, NOT_SUPPORTED, OPPOSITE = "supported", "not supported", "opposite direction"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, OPPOSITE)
UNCORRECTED_FORMULA = "score ~ C(source) + k"
CORRECTED_FORMULA = "score ~ accuracy + C(source) + k"


def interval_verdict(ci_low: float, ci_high: float, expected_sign: float | None = None) -> str:
    """``supported`` when the interval excludes zero (on the side of ``expected_sign`` when one is given),
    ``opposite direction`` when it excludes zero on the other side, ``not supported`` otherwise (NaN included)."""
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return NOT_SUPPORTED
    if ci_low > ci_high:
        raise ValueError(f"the interval must have ci_low <= ci_high, got ({ci_low}, {ci_high})")
    if ci_low <= 0 <= ci_high:
        return NOT_SUPPORTED
    sign = 1.0 if ci_low > 0 else -1.0
    if expected_sign is None or expected_sign == 0 or np.sign(expected_sign) == sign:
        return SUPPORTED
    return OPPOSITE


def combine(verdicts) -> str:
    """A claim with several parts (e.g. several source pairs): supported when any part is, else opposite when any
    part is, else not supported."""
    verdicts = list(verdicts)
    unknown = sorted(set(verdicts) - set(VERDICTS))
    if unknown:
        raise ValueError(f"unknown verdict(s) {unknown}; valid verdicts: {', '.join(VERDICTS)}")
    for verdict in (SUPPORTED, OPPOSITE):
        if verdict in verdicts:
            return verdict
    return NOT_SUPPORTED


def method_difference(performance: pd.DataFrame, n_boot: int = 2000, seed: int = 0,
                      alpha: float = 0.05) -> dict:
    """Claim 1: the largest difference in mean explanation performance between two attribution methods.

    ``performance`` holds one row per run × method (columns run, method, score; model-free baselines left out by
    the caller). The best and the worst method by mean score over runs are compared on the runs where both have a
    score, paired by run; the interval is a percentile bootstrap over runs, Bonferroni-adjusted for the
    m(m−1)/2 pairs that could have been the largest, so that picking the largest pair does not inflate it.
    """
    table = performance.dropna(subset=["score"]).pivot_table(index="run", columns="method", values="score")
    if table.shape[1] < 2:
        raise ValueError(f"claim 1 needs at least two attribution methods with scores, got {list(table.columns)}")
    means = table.mean().sort_values(ascending=False)
    best, worst = means.index[0], means.index[-1]
    paired = (table[best] - table[worst]).dropna().to_numpy()
    if len(paired) < 2:
        raise ValueError(f"methods {best!r} and {worst!r} share fewer than two runs with scores")
    n_pairs = table.shape[1] * (table.shape[1] - 1) // 2
    level = alpha / n_pairs
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(paired), size=(n_boot, len(paired)))
    boot = paired[draws].mean(axis=1)
    low, high = np.quantile(boot, [level / 2, 1 - level / 2])
    return {"best": best, "worst": worst, "estimate": float(paired.mean()), "ci_low": float(low),
            "ci_high": float(high), "n_runs": int(len(paired)), "n_pairs": int(n_pairs)}


def _effects(performance: pd.DataFrame, formula: str, alpha: float = 0.05) -> dict[str, dict]:
    """Source contrasts (each pair once, at the mean k and accuracy) and the k slope of an OLS fit of
    ``formula`` with cluster-robust errors by run. The source contrasts' intervals are Bonferroni-adjusted over
    the pairs (the source part of a claim holds when any pair differs); the k slope's is a plain 1 − ``alpha``."""
    from scipy.stats import norm

    effects = {}
    contrasts = stats.source_contrasts(performance, formula)
    pairs = list(combinations(sorted(performance["source"].unique()), 2))
    critical = norm.ppf(1 - alpha / (2 * len(pairs)))  # statsmodels' cluster-robust tests are normal (z)
    for a, b in pairs:
        row = contrasts[(contrasts["source_a"] == a) & (contrasts["source_b"] == b)].iloc[0]
        half = critical * row["std_error"]
        effects[f"source {a} − {b}"] = {"estimate": row["estimate"], "ci_low": row["estimate"] - half,
                                          "ci_high": row["estimate"] + half}
    coefficients, _ = stats.fit_ols(performance, formula)
    k_row = coefficients.set_index("term").loc["k"]
    effects["k (per block)"] = {"estimate": k_row["estimate"], "ci_low": k_row["ci_low"],
                                "ci_high": k_row["ci_high"]}
    return effects


def claim_verdicts(performance: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A tidy table of the three claims: one row per claim × part, with the estimate, its 95 % interval and the
    verdict, plus one summary row per claim (part ``"overall"``). Intervals over several candidates (claim 1: the
    method pairs; claims 2 and 3: the source pairs) are Bonferroni-adjusted, so that the family holds 95 %.

    ``performance``: one row per run × attribution method (columns run, source, k, method, score, accuracy), the
    model-free baselines left out, e.g. from :func:`xaiutils.analysis.stats.performance_table`.
    """
    rows = []
    difference = method_difference(performance, n_boot=n_boot, seed=seed)
    rows.append({"claim": 1, "part": f"{difference['best']} − {difference['worst']}",
                 "estimate": difference["estimate"], "ci_low": difference["ci_low"],
                 "ci_high": difference["ci_high"],
                 "verdict": interval_verdict(difference["ci_low"], difference["ci_high"])})
    uncorrected = _effects(performance, UNCORRECTED_FORMULA)
    corrected = _effects(performance, CORRECTED_FORMULA)
    for part, effect in uncorrected.items():
        rows.append({"claim": 2, "part": part, **effect,
                     "verdict": interval_verdict(effect["ci_low"], effect["ci_high"])})
    for part, effect in corrected.items():
        rows.append({"claim": 3, "part": part, **effect,
                     "verdict": interval_verdict(effect["ci_low"], effect["ci_high"],
                                                 expected_sign=np.sign(uncorrected[part]["estimate"]))})
    table = pd.DataFrame(rows)
    overall = []
    for claim, group in table.groupby("claim"):
        if claim == 1:
            verdict = group["verdict"].iloc[0]
        else:
            # "depends on the source and on k": each of the two factors must show an effect
            parts = factor_verdicts(table, claim)
            verdict = (SUPPORTED if parts["source"] == parts["k"] == SUPPORTED
                       else OPPOSITE if OPPOSITE in parts.values() else NOT_SUPPORTED)
        overall.append({"claim": claim, "part": "overall", "estimate": np.nan, "ci_low": np.nan,
                        "ci_high": np.nan, "verdict": verdict})
    return pd.concat([table, pd.DataFrame(overall)], ignore_index=True)


def factor_verdicts(table: pd.DataFrame, claim: int) -> dict[str, str]:
    """The verdict on the source part and on the k part of claim 2 or 3 of :func:`claim_verdicts`."""
    rows = table[table["claim"] == claim]
    return {"source": combine(rows.loc[rows["part"].str.startswith("source"), "verdict"]),
            "k": rows.loc[rows["part"].str.startswith("k"), "verdict"].iloc[0]}


def read_cross_build_record(path) -> dict | None:
    """The cross-machine record that ``benchmarks/cross_build.py compare --record`` writes (``None`` if absent):
    each glued verdict of notebook 5 as two builds of the preset found it, one per instruction-set setting."""
    path = Path(path)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if not isinstance(record.get("verdicts"), dict):
        raise ValueError(f"{path} has no 'verdicts' table; write it with benchmarks/cross_build.py compare --record")
    return record


def preset_settings(preset: str) -> str:
    """A short sha256 of every parameter of ``preset`` (all steps): a cross-build record vouches for the verdicts
    of builds with these values only. Another method list or image count gives other verdicts, and comparing
    them with the record would call a change of settings a change of CPU."""
    from xaiutils.foundation.config import preset_as_dicts

    text = json.dumps(preset_as_dicts(preset), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


NOT_MEASURED = "robustness across CPUs not measured for this setting"


def robustness(name: str, verdict: str, record: dict | None, preset: str) -> str:
    """How a verdict fared across machines, as text for the book.

    Robust means: the record holds the verdict ``name`` for the same preset, every build in it found the same
    verdict, and so does this build. A verdict that flips between builds whose only difference is the CPU's
    instruction set hangs on rounding, and the book says so instead of stating it as a finding. A record of other
    preset values (``settings``, :func:`preset_settings`; absent in records written before it) vouches for nothing.
    """
    if record is None or record.get("preset") != preset or name not in record["verdicts"]:
        return NOT_MEASURED
    if record.get("settings") != preset_settings(preset):
        return NOT_MEASURED + " (the record is of other preset values: rebuild it with benchmarks/cross_build.py)"
    found = record["verdicts"][name]
    if len(set(found.values()) | {verdict}) == 1:
        return f"robust across CPUs (the same in the {' and '.join(found)} builds)"
    builds = "; ".join(f"{label}: {value}" for label, value in found.items())
    return f"NOT ROBUST across CPUs ({builds})"
