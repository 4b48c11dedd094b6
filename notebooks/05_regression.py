# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Does pre-training shape explanation performance once accuracy is accounted for?
#
# ## Overview
#
# Explanation performance tends to rise with classification accuracy, and pre-training changes accuracy, so a raw
# comparison of sources confounds the two. Following the reference study {cite:p}`oliveira2024benchmarking`, we
# regress explanation performance on accuracy together with the pre-training source and the number of
# pre-trained blocks k. The unit is a trained model run × method; performance is the mean score over the images
# that run classified correctly (notebook 4).
#
# - **OLS** with cluster-robust standard errors by model run (the methods of one run share its errors), pooled
#   over methods and per method;
# - a **mixed model** (statsmodels `mixedlm`) with a random intercept per model run;
# - **accuracy-adjusted contrasts** between sources from the fitted model, and an **accuracy-matched**
#   comparison (runs binned by accuracy, sources compared only within bins that hold all of them);
# - the **correlation** of accuracy with explanation performance per method, and a **method ranking** with
#   bootstrap intervals, control maps included.
#
# ## Prerequisites
#
# | Concept | Importance |
# | --- | --- |
# | [Notebook 4](04_explain) (the score tables) | necessary |
# | Linear regression, mixed models, confidence intervals | helpful |
#
# ## Time to run
#
# Seconds.

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from xaiutils.analysis import stats, verdicts
from xaiutils.book import glue
from xaiutils.domain import explain
from xaiutils.execution.paths import default_out_dir, project_root
from xaiutils.foundation.config import resolve_from
from xaiutils.foundation.files import write_atomic

# %% tags=["parameters"]
# Parameter set: "book" (the default book, 2 CPU cores), "smoke" (the tests) or "study" (the study's scale, GPU).
preset = "book"
# Score to analyse (a column of notebook 4's scores.csv) (None: preset value, "emd_score").
metric = None
# Images averaged per run: "correct", "correct_all" or "all" (None: preset value).
selection = None
# Regression formula (patsy) on columns score, accuracy, source, k (None: preset value).
formula = None
# Bootstrap resamples and seed (None: preset values).
n_boot = None
seed = None
# Inputs: the grid folder of notebook 3 and the run folder of notebook 4 (None: the preset's run folders).
grid_dir = None
explain_dir = None
# Run folder (None: runs/<preset>/05_regression in the checkout).
out_dir = None

# %%
config = resolve_from("regression", preset, globals())
grid_dir = Path(grid_dir) if grid_dir is not None else default_out_dir(preset, "03_finetune") / "grid"
explain_dir = Path(explain_dir) if explain_dir is not None else default_out_dir(preset, "04_explain")
out_dir = Path(out_dir) if out_dir is not None else default_out_dir(preset, "05_regression")
out_dir.mkdir(parents=True, exist_ok=True)
scores = pd.read_csv(explain_dir / "scores.csv")
accuracy = pd.read_csv(grid_dir / "accuracy.csv")
performance = stats.performance_table(scores, accuracy, config["metric"], selection=config["selection"],
                                      n_boot=config["n_boot"], seed=config["seed"])
methods_only = performance[~performance["is_baseline"]].dropna(subset=["score"])
performance.to_csv(out_dir / "performance.csv", index=False)
print(f"{len(methods_only)} run × method rows from {methods_only['run'].nunique()} runs and "
      f"{methods_only['method'].nunique()} methods; formula: {config['formula']}")

# %% [markdown]
# ## Explanation performance against accuracy

# %%
colours = {"imagenet": "tab:blue", "mri": "tab:orange", "none": "tab:grey", "random": "tab:green"}
fig, ax = plt.subplots(figsize=(7, 4.5))
for source, group in methods_only.groupby("source"):
    ax.scatter(group["accuracy"], group["score"], color=colours.get(source), alpha=0.7, label=source)
    if group["accuracy"].nunique() > 1:
        slope, intercept = np.polyfit(group["accuracy"], group["score"], 1)
        xs = np.linspace(group["accuracy"].min(), group["accuracy"].max(), 10)
        ax.plot(xs, intercept + slope * xs, color=colours.get(source))
ax.set(xlabel="test accuracy of the run", ylabel=f"mean {config['metric']} (correctly classified images)",
       title="Explanation performance vs accuracy (one point per run × method)")
ax.legend(title="pre-training source")
fig.tight_layout()

# %% [markdown]
# ## Regressions correcting for accuracy

# %%
ols_coefficients, ols_fit = stats.fit_ols(methods_only, config["formula"])
mixed_coefficients, mixed_fit = stats.fit_mixed(methods_only, config["formula"])
coefficients = pd.concat([ols_coefficients, mixed_coefficients], ignore_index=True)
coefficients.to_csv(out_dir / "coefficients.csv", index=False)
display(coefficients.round(4))
fit_summary = pd.DataFrame([ols_fit, mixed_fit], index=["OLS (cluster-robust by run)", "mixed model"])
display(fit_summary.drop(columns="formula"))  # the formula is printed above
accuracy_row = ols_coefficients.set_index("term").loc["accuracy"]
glue("main_metric_name", config["metric"])
glue("accuracy_effect", accuracy_row["estimate"])
glue("accuracy_ci_low", accuracy_row["ci_low"])
glue("accuracy_ci_high", accuracy_row["ci_high"])
glue("accuracy_p", accuracy_row["p_value"])
glue("n_clusters", ols_fit["n_clusters"])
glue("n_rows", ols_fit["n"])
glue("r_squared", ols_fit["r_squared"])
glue("marginal_r_squared", mixed_fit["marginal_r_squared"])

# %%
fig, ax = plt.subplots(figsize=(7, 3.8))
terms = [term for term in ols_coefficients["term"] if term != "Intercept"]
for offset, (name, table) in zip((-0.15, 0.15), (("OLS", ols_coefficients), ("mixed", mixed_coefficients)),
                                 strict=True):
    table = table.set_index("term").loc[terms]
    positions = np.arange(len(terms)) + offset
    ax.errorbar(table["estimate"], positions, xerr=[table["estimate"] - table["ci_low"],
                table["ci_high"] - table["estimate"]], fmt="o", capsize=3, label=name)
ax.axvline(0, color="black", lw=0.8)
ax.set_yticks(range(len(terms)), terms)
ax.set(xlabel=f"effect on mean {config['metric']} (95 % CI)", title="Effects, corrected for accuracy")
ax.legend()
fig.tight_layout()

# %% [markdown]
# ## Per method
#
# The same OLS fitted on each method alone (one row per run, so its robust errors are per-run, HC1) next to the
# pooled fit. A method whose design cannot be fitted gets the reason instead of coefficients.

# %%
method_coefficients, method_fits = stats.fit_by_method(methods_only, config["formula"], model="ols")
method_coefficients.to_csv(out_dir / "coefficients_by_method.csv", index=False)
# An empty error column means every method was fitted.
display(method_fits.drop(columns="formula").fillna({"error": ""}).round(3))  # the formula is printed above
accuracy_by_method = method_coefficients[method_coefficients["term"] == "accuracy"].set_index("method")
fig, ax = plt.subplots(figsize=(7, 0.35 * len(accuracy_by_method) + 1.2))
positions = np.arange(len(accuracy_by_method))[::-1]
ax.errorbar(accuracy_by_method["estimate"], positions,
            xerr=[accuracy_by_method["estimate"] - accuracy_by_method["ci_low"],
                  accuracy_by_method["ci_high"] - accuracy_by_method["estimate"]],
            fmt="o", capsize=3, color="tab:blue")
ax.axvline(0, color="black", lw=0.8)
ax.set_yticks(positions, accuracy_by_method.index)
ax.set(xlabel=f"change in mean {config['metric']} per unit of test accuracy (95 % CI)",
       title="Accuracy slope per method and pooled (OLS)")
fig.tight_layout()

# %% [markdown]
# ## Sources compared at equal accuracy
#
# Contrasts of the pooled OLS fit: the predicted difference between two sources at the mean accuracy (and at
# each k of the grid when the formula has a source × k interaction). Then the accuracy-matched comparison: runs
# are binned into accuracy terciles, and each source's mean is taken over only the bins that hold every source.

# %%
# With a source × k interaction the contrast depends on k: evaluate it at every k of the grid; without one it
# does not, and the mean k is used.
has_interaction = "*" in config["formula"] or ":" in config["formula"]
grid_ks = sorted(methods_only["k"].unique()) if has_interaction else None
contrasts = stats.source_contrasts(methods_only, config["formula"], at_k=grid_ks)
contrasts = contrasts[contrasts["source_a"] < contrasts["source_b"]]  # each pair once
contrasts.to_csv(out_dir / "source_contrasts.csv", index=False)
display(contrasts.round(4))
by_bin, matched = stats.accuracy_matched(methods_only.drop(columns="method"), n_bins=3)
display(by_bin.round(3))
display(matched.round(4) if len(matched) else "No accuracy bin holds every source: no matched comparison.")
glue("n_matched_sources", len(matched))

# %% [markdown]
# ## Explanation performance against k, per source and method

# %%
fig, ax = plt.subplots(figsize=(8, 4.2))
markers = dict(zip(sorted(methods_only["method"].unique()), "osD^v<>ph*", strict=False))
for (source, method), group in methods_only.groupby(["source", "method"]):
    group = group.sort_values("k")
    ax.plot(group["k"], group["score"], marker=markers.get(method, "o"), color=colours.get(source), alpha=0.6)
for source, colour in colours.items():
    ax.plot([], [], color=colour, label=source)
for method, marker in markers.items():
    ax.plot([], [], marker=marker, color="black", ls="", label=method)
ax.set(xlabel="number of pre-trained, frozen blocks k", ylabel=f"mean {config['metric']}",
       title="Explanation performance by k (colour: source, marker: method)")
ax.legend(fontsize=7, ncol=2, bbox_to_anchor=(1.02, 1), loc="upper left")
fig.tight_layout()

# %% [markdown]
# ## Correlation with accuracy, and the method ranking

# %%
correlation = stats.accuracy_correlation(methods_only)
display(correlation.round(3))
glue("median_spearman", correlation["spearman_rho"].median())
ranking = stats.rank_methods(scores, config["metric"], n_boot=config["n_boot"], seed=config["seed"])
ranking.to_csv(out_dir / "ranking.csv", index=False)
glue("top_method", ranking["method"].iloc[0])
glue("top_method_is_baseline", "a control map" if ranking["method"].iloc[0] in explain.control_map_names()
     else "an attribution method")
fig, ax = plt.subplots(figsize=(7, 4.2))
positions = np.arange(len(ranking))[::-1]
is_baseline = ranking["method"].isin(explain.control_map_names())
errors = [ranking["mean"] - ranking["ci_low"], ranking["ci_high"] - ranking["mean"]]
ax.errorbar(ranking["mean"], positions, xerr=errors, fmt="none", ecolor="black", capsize=3)
ax.scatter(ranking["mean"], positions, c=np.where(is_baseline, "lightgrey", "tab:blue"), edgecolors="black",
           zorder=3)
ax.set_yticks(positions, [f"{m} (rank {lo:.0f}–{hi:.0f})" for m, lo, hi in
                          zip(ranking["method"], ranking["rank_low"], ranking["rank_high"], strict=True)])
ax.set(xlabel=f"mean {config['metric']} over all runs and images (95 % bootstrap CI)",
       title="Method ranking (grey: control maps)")
fig.tight_layout()
write_atomic(out_dir / "summary.json", json.dumps({"ols": ols_fit, "mixed": mixed_fit}, indent=2) + "\n")

# %% [markdown]
# ## Skill over the best control map
#
# A method earns its place only by beating the control maps. For each method: its mean score minus that of the
# best control map (the one with the highest mean), paired by run, with a 95 % bootstrap interval over runs.

# %%
skill = stats.skill_over_baseline(performance[performance["method"].isin(methods_only["method"].unique())
                                              | performance["is_baseline"]], n_boot=config["n_boot"],
                                  seed=config["seed"])
skill.to_csv(out_dir / "skill_over_baseline.csv", index=False)
display(skill.round(4))
fig, ax = plt.subplots(figsize=(7, 0.35 * len(skill) + 1.4))
positions = np.arange(len(skill))[::-1]
ax.errorbar(skill["skill"], positions, xerr=[skill["skill"] - skill["ci_low"], skill["ci_high"] - skill["skill"]],
            fmt="none", ecolor="black", capsize=3)
ax.scatter(skill["skill"], positions, c=np.where(skill["beats_every_baseline"], "tab:blue", "white"),
           edgecolors="black", zorder=3)
ax.axvline(0, color="black", lw=0.8)
ax.set_yticks(positions, skill["method"])
ax.set(xlabel=f"mean {config['metric']} minus that of the best control map ({skill['best_baseline'].iloc[0]}), "
              "95 % CI over runs", title="Skill over the best control map (filled: interval above 0)")
fig.tight_layout()
glue("n_methods_beating_baselines", int(skill["beats_every_baseline"].sum()))
glue("n_methods_skill", len(skill))
glue("best_baseline_name", skill["best_baseline"].iloc[0])

# %% [markdown]
# ## The study's three claims, as this build finds them
#
# Each claim of the reference study {cite:p}`oliveira2024benchmarking` is given a verdict computed from the
# estimates above and their 95 % intervals, never typed by hand (`xaiutils.analysis.verdicts`):
#
# 1. *Methods differ on correctly classified images*: the best minus the worst method, paired by run; the
#    interval is Bonferroni-adjusted for the method pairs that could have been the largest.
# 2. *Explanation performance depends on the pre-training source and on k*: OLS `score ~ C(source) + k`
#    (cluster-robust by run), the source contrasts at equal k (Bonferroni-adjusted over the pairs) and the k
#    slope; the claim holds when both a source contrast and the k slope exclude zero.
# 3. *Both hold after correcting for accuracy*: the same with `score ~ accuracy + C(source) + k`; an interval
#    that excludes zero on the other side from the uncorrected estimate reads "opposite direction".
#
# "Supported" means the interval excludes zero; "not supported" means this build cannot tell, which is not
# evidence against the claim. The claims are about the study's sources (`imagenet`, `mri`, `none`): the runs of
# the `random` control are left out of them here (they stay in every table and figure above, where the sources
# are read against them).

# %%
study_sources = methods_only[methods_only["source"] != "random"]
claims = verdicts.claim_verdicts(study_sources, n_boot=config["n_boot"], seed=config["seed"])
glue("n_claim_runs", study_sources["run"].nunique())
claims.to_csv(out_dir / "claims.csv", index=False)
display(claims.round(4))
overall_verdicts = claims[claims["part"] == "overall"].set_index("claim")["verdict"]
claim1 = claims[claims["claim"] == 1].iloc[0]
glue("claim1_verdict", overall_verdicts[1])
glue("claim1_pair", claim1["part"])
glue("claim1_estimate", claim1["estimate"])
glue("claim1_ci_low", claim1["ci_low"])
glue("claim1_ci_high", claim1["ci_high"])
# How each verdict fared in two builds of this preset that differ only in the CPU's instruction set (measured with
# benchmarks/cross_build.py; see the Reproducing chapter): one that flips is marked, not stated as a finding.
cross_build = verdicts.read_cross_build_record((project_root() or Path("..")) / "book" / "cross_build.json")
glued_verdicts = {"claim1_verdict": overall_verdicts[1]}
for claim in (2, 3):
    glued_verdicts[f"claim{claim}_verdict"] = overall_verdicts[claim]
    for factor, verdict in verdicts.factor_verdicts(claims, claim).items():
        glued_verdicts[f"claim{claim}_{factor}_verdict"] = verdict
# and the two statements of the summary that are not interval verdicts: the top of the ranking, and the count of
# methods beating the control maps
glued_verdicts["top_method"] = str(ranking["method"].iloc[0])
glued_verdicts["n_methods_beating_baselines"] = int(skill["beats_every_baseline"].sum())
for name, verdict in glued_verdicts.items():
    if name.startswith(("claim2", "claim3")):
        glue(name, verdict)
    robustness = verdicts.robustness(name, verdict, cross_build, preset)
    glue(name.removesuffix("_verdict") + "_robustness", robustness)
    print(f"{name}: {verdict} ({robustness})")
for claim in (2, 3):
    k_row = claims[(claims["claim"] == claim) & (claims["part"].str.startswith("k"))].iloc[0]
    glue(f"claim{claim}_k_estimate", k_row["estimate"])
    glue(f"claim{claim}_k_ci_low", k_row["ci_low"])
    glue(f"claim{claim}_k_ci_high", k_row["ci_high"])

# %% [markdown]
# ## Summary
#
# - The coefficients table gives, for each pre-training source and for k, the change in mean explanation
#   performance at equal classification accuracy, from OLS with cluster-robust errors and from a mixed model.
#   In this build, pooled over methods ({glue:text}`n_rows` run × method rows from {glue:text}`n_clusters`
#   runs), the accuracy slope is {glue:text}`accuracy_effect:.3f` (95 % CI {glue:text}`accuracy_ci_low:.3f` to
#   {glue:text}`accuracy_ci_high:.3f`), with R² = {glue:text}`r_squared:.2f`; the median Spearman correlation of
#   accuracy with explanation performance across methods is {glue:text}`median_spearman:.2f`.
# - The top of the ranking is {glue:text}`top_method`, {glue:text}`top_method_is_baseline`
#   ({glue:text}`top_method_robustness`).
# - The study's three claims in this build ({glue:text}`n_claim_runs` runs of the study's sources; explanation
#   performance = mean {glue:text}`main_metric_name` on correctly classified images):
#   1. methods differ on correctly classified images: **{glue:text}`claim1_verdict`**, {glue:text}`claim1_robustness`
#      (largest difference
#      {glue:text}`claim1_pair` = {glue:text}`claim1_estimate:.3f`, adjusted 95 % CI
#      {glue:text}`claim1_ci_low:.3f` to {glue:text}`claim1_ci_high:.3f`);
#   2. explanation performance depends on the pre-training source and on k: **{glue:text}`claim2_verdict`**,
#      {glue:text}`claim2_robustness` (source: {glue:text}`claim2_source_verdict`,
#      {glue:text}`claim2_source_robustness`; k: {glue:text}`claim2_k_verdict`, {glue:text}`claim2_k_robustness`, slope
#      {glue:text}`claim2_k_estimate:.4f` per block, 95 % CI {glue:text}`claim2_k_ci_low:.4f` to
#      {glue:text}`claim2_k_ci_high:.4f`);
#   3. both hold after correcting for accuracy: **{glue:text}`claim3_verdict`**, {glue:text}`claim3_robustness`
#      (source: {glue:text}`claim3_source_verdict`, {glue:text}`claim3_source_robustness`; k:
#      {glue:text}`claim3_k_verdict`, {glue:text}`claim3_k_robustness`, slope {glue:text}`claim3_k_estimate:.4f`,
#      95 % CI {glue:text}`claim3_k_ci_low:.4f` to {glue:text}`claim3_k_ci_high:.4f`).
# - {glue:text}`n_methods_beating_baselines` of {glue:text}`n_methods_skill` attribution methods beat the best
#   control map ({glue:text}`best_baseline_name`) with an interval above zero
#   ({glue:text}`n_methods_beating_baselines_robustness`).
# - These are findings about this build's setting (MobileNetV2 at 64², pseudo-subjects of one template, our
#   lesion generator, three seeds per cell), not the reference study's numbers. With 21 runs, cluster-robust
#   errors are approximate; the mixed model above is the check. The `study` preset (VGG-16 at 224², every k)
#   is the setting closest to the reference study; its formula adds the source × k interaction.
