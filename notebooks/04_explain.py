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
# # 4. XAI evaluation: attribution maps scored against the lesion masks
#
# ## Overview
#
# Every model of the fine-tuning grid (notebook 3) is explained with post-hoc attribution methods from Captum
# {cite:p}`kokhlikyan2020captum` and with model-free baselines (`sobel`, `laplace`, `random`, `input`) that any
# method must beat to mean something. Each map is reduced to H×W (sum of absolute values over channels) and
# scored against the image's lesion mask, the ground-truth explanation:
#
# - **EMD score** = 1 − EMD(p, q) / D: exact optimal transport (POT {cite:p}`flamary2021pot`) between the
#   normalised |map| and the uniform distribution on the mask, Euclidean pixel cost, D the image diagonal; the
#   solver's optimality is checked, a solve stopped at its iteration limit is reported as missing;
# - **importance mass accuracy** (share of |map| inside the mask), **top-k precision** (k = mask size),
#   **pointing game** and **ROC-AUC** of |map| against the mask.
#
# Scores are kept per image in a tidy table (one row per run × method × image), then averaged over the
# images each model classified correctly, with bootstrap confidence intervals over images.
#
# ## Prerequisites
#
# | Concept | Importance |
# | --- | --- |
# | [Notebook 3](03_finetune) (the trained grid) | necessary |
# | Attribution methods (gradients, Integrated Gradients, Grad-CAM, occlusion) | helpful |
#
# ## Time to run
#
# A few minutes on 2 CPU cores at the `book` preset; the measured time of the latest build is in
# {doc}`../book/reproducing`. At the `study` preset the exact EMD is the most expensive step of the benchmark
# (`benchmarks/emd_speed.py` measures it per map on your machine).

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from xaiutils import data, evaluate, explain, metrics, presets, runs
from xaiutils.book import glue

# %% tags=["parameters"]
# Parameter set: "book" (the default book, 2 CPU cores), "smoke" (the tests) or "study" (the study's scale, GPU).
preset = "book"
# Methods and baselines to run, e.g. ["saliency", "occlusion", "sobel"] (None: preset list).
methods = None
# Metrics to compute (None: preset list; valid: emd_score, importance_mass_accuracy, topk_precision,
# relevance_rank_accuracy, pointing_game, roc_auc).
metric_names = None
# Number of test images explained per run (a class-balanced sample, the same for every run) (None: preset).
n_test_images = None
# Costly perturbation methods (LIME, KernelSHAP, Shapley sampling) run on this many of them (None: preset).
n_images_costly = None
# Scoring resolution in pixels: maps and masks are sum-pooled to this size before scoring (None: preset).
resolution = None
# Images averaged per run: "correct" (classified correctly by that run), "correct_all" (by every run), "all".
selection = None
# Bootstrap resamples for the confidence intervals, and the seed of sampling and stochastic methods.
n_boot = None
seed = None
# Runs explained at once, each in its own process with cpu_count // workers threads (None: preset). The scores do
# not depend on it.
workers = None
# A Dask cluster to explain and score on: a scheduler address (tcp://host:8786) or a cluster spec YAML such as
# examples/slurm-cpu.yaml (None: this machine, as set by workers). Scores as here with one thread per run.
cluster = None
# Inputs: the dataset of notebook 1 and the grid folder of notebook 3 (None: the preset's run folders).
data_dir = None
grid_dir = None
# Run folder (None: runs/<preset>/04_explain in the checkout).
out_dir = None

# %%
config = presets.resolve(
    "explain", preset, methods=methods, metrics=metric_names, n_test_images=n_test_images,
    n_images_costly=n_images_costly, resolution=resolution, selection=selection, n_boot=n_boot, seed=seed,
    workers=workers,
)
data_dir = Path(data_dir) if data_dir is not None else runs.default_out_dir(preset, "01_data") / "dataset"
grid_dir = Path(grid_dir) if grid_dir is not None else runs.default_out_dir(preset, "03_finetune") / "grid"
out_dir = Path(out_dir) if out_dir is not None else runs.default_out_dir(preset, "04_explain")
out_dir.mkdir(parents=True, exist_ok=True)
pd.Series({key: str(value) for key, value in config.items()}, name="value").to_frame()

# %% [markdown]
# ## The methods
#
# What each method costs and needs, as registered in `xaiutils.explain` (Captum's docs compare methods the same
# way). A method that has no correct rule for a layer of the backbone (e.g. DeepLift on MobileNetV2's ReLU6) is
# recorded as *not applicable* rather than run silently wrong.

# %%
method_table = explain.method_table()
method_table[method_table.index.isin(config["methods"])]

# %% [markdown]
# ## Explaining and scoring every run

# %%
bench = data.load_benchmark(data_dir)
accuracy = pd.read_csv(grid_dir / "accuracy.csv")
images = evaluate.test_images(bench, config["n_test_images"], seed=config["seed"])
# The gallery below shows the maps of the most accurate run; only its maps are kept.
best_run = accuracy.sort_values("test_accuracy", ascending=False)["run"].iloc[0]
scores, best_run_maps = evaluate.explain_grid(
    grid_dir, accuracy["run"], data_dir, images, config["methods"], config["metrics"], workers=config["workers"],
    maps_for=best_run, resolution=config["resolution"], seed=config["seed"], cluster=cluster,
    n_images_costly=config["n_images_costly"],
)
scores = evaluate.add_correct_for_all(scores)
scores.to_csv(out_dir / "scores.csv", index=False)
not_applicable = scores[scores["reason"].str.startswith("not applicable")].groupby("method")["reason"].first()
print(f"{len(scores)} rows: {scores['run'].nunique()} runs × {scores['method'].nunique()} methods × "
      f"{len(images)} images, scored at {config['resolution']}² pixels")
print(f"images correct for every run: {scores.loc[scores['correct_all'], 'image'].nunique()} of {len(images)}")
# Every score that is missing, with its reason in full (a method that does not apply to this backbone, or an
# all-zero map, which no metric can rank).
with pd.option_context("display.max_colwidth", None):
    display(scores.loc[scores["reason"] != "", "reason"].value_counts().to_frame("missing scores"))

# %% [markdown]
# ## Explanation performance per run and method
#
# Mean over the images each run classified correctly, with 95 % bootstrap intervals over images.

# %%
aggregates = pd.concat([
    evaluate.aggregate(scores, metric, selection=config["selection"], n_boot=config["n_boot"], seed=config["seed"])
    for metric in config["metrics"]
], ignore_index=True)
aggregates.to_csv(out_dir / "aggregates.csv", index=False)
main_metric = config["metrics"][0]
pivot = aggregates[aggregates["metric"] == main_metric].pivot_table(index="method", columns="run", values="mean")
pivot.round(3)

# %% [markdown]
# ## Gallery: where the maps put their mass
#
# For the most accurate run, each method's map on the images where it scored best and worst
# (the first metric of the list, in the titles). All maps share one colour scale: each map is divided by its own maximum
# |value|, so 1 is the map's most important pixel. The anatomy is underneath, the lesion mask outlined in cyan.

# %%
run_scores = scores[(scores["run"] == best_run) & (scores["reason"] == "")]
shown_methods = [m for m in config["methods"] if m in best_run_maps and (run_scores["method"] == m).any()]
# Methods in rows of at most six: each row of methods takes two figure rows, best image above worst.
n_columns = min(6, len(shown_methods))
n_groups = -(-len(shown_methods) // n_columns)
fig, axes = plt.subplots(2 * n_groups, n_columns, figsize=(2.0 * n_columns + 1.5, 2.2 * 2 * n_groups),
                         squeeze=False)
for ax in axes.flat:
    ax.set_axis_off()
position = {image: index for index, image in enumerate(images)}
for number, method in enumerate(shown_methods):
    group, column = divmod(number, n_columns)
    ranked = run_scores[run_scores["method"] == method].sort_values(main_metric)
    for row, (label, pick) in enumerate((("best", ranked.iloc[-1]), ("worst", ranked.iloc[0]))):
        ax = axes[2 * group + row, column]
        attribution = np.abs(best_run_maps[method][position[pick["image"]]])
        attribution = attribution / attribution.max()
        ax.imshow(bench.images[pick["image"]], cmap="gray", vmin=0, vmax=1)
        shown = ax.imshow(np.ma.masked_less(attribution, 0.05), cmap="inferno", vmin=0, vmax=1, alpha=0.75)
        ax.contour(bench.masks[pick["image"]], levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(f"{method.replace('_', ' ')}\n{label}: {pick[main_metric]:.2f}", fontsize=9)
fig.colorbar(shown, ax=axes, shrink=0.5, label="|attribution| / max |attribution|")
fig.suptitle(f"Run {best_run}: best and worst image per method ({main_metric})")
fig.savefig(out_dir / "gallery.png", dpi=110)

# %% [markdown]
# ## Score distributions: methods next to the model-free baselines

# %%
selected = evaluate.select(scores, config["selection"])
order = selected.groupby("method")[main_metric].median().sort_values(ascending=False).index
order = [method for method in order if selected.loc[selected["method"] == method, main_metric].notna().any()]
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
for ax, metric in zip(axes, config["metrics"][:2], strict=False):
    values = [selected.loc[selected["method"] == method, metric].dropna() for method in order]
    boxes = ax.boxplot(values, patch_artist=True, showfliers=False)
    for patch, method in zip(boxes["boxes"], order, strict=True):
        patch.set_facecolor("lightgrey" if method in explain.BASELINES else "tab:blue")
    direction, value_range = metrics.METRICS[metric].higher_is_better, metrics.METRICS[metric].range
    ax.set_xticks(range(1, len(order) + 1), order, rotation=60, ha="right")
    ax.set(ylabel=f"{metric} (range {value_range[0]:g}–{value_range[1]:g})",
           title=f"{metric}: {'higher' if direction else 'lower'} is better\n(correctly classified images, all runs)")
axes[0].plot([], [], color="tab:blue", lw=8, label="attribution method")
axes[0].plot([], [], color="lightgrey", lw=8, label="model-free baseline")
axes[0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(out_dir / "score_distributions.png", dpi=110)

# %%
method_means = selected[~selected["method"].isin(explain.BASELINES)].groupby("method")[main_metric].mean()
baseline_means = selected[selected["method"].isin(explain.BASELINES)].groupby("method")[main_metric].mean()
glue("n_score_rows", len(scores))
glue("n_images_explained", len(images))
glue("resolution", config["resolution"])
glue("main_metric", main_metric)
glue("best_method", method_means.idxmax())
glue("best_method_score", method_means.max())
glue("best_baseline", baseline_means.idxmax())
glue("best_baseline_score", baseline_means.max())
glue("n_methods_scored", len(method_means))
glue("n_methods_above_baselines", int((method_means > baseline_means.max()).sum()))
summary = {"n_rows": len(scores), "resolution": config["resolution"], "selection": config["selection"],
           "best_run": best_run, "methods_not_applicable": not_applicable.index.tolist()}
runs.write_atomic(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")

# %% [markdown]
# ## Summary
#
# - Every run of the grid was explained with the preset's methods and baselines on the same test images; the
#   tidy table `scores.csv` (one row per run × method × image) and `aggregates.csv` (per run × method, with
#   bootstrap intervals) are in the run folder for notebook 5.
# - Maps are scored at the resolution printed above; where it is below the image size, maps and masks were
#   sum-pooled to keep exact EMD affordable (the `study` preset follows the convention of XAI-TRIS
#   {cite:p}`clark2024xaitris`).
# - In this build, {glue:text}`n_score_rows` scores were computed on {glue:text}`n_images_explained` test
#   images at {glue:text}`resolution` pixels a side. By mean {glue:text}`main_metric` on correctly classified
#   images, the best method is {glue:text}`best_method` ({glue:text}`best_method_score:.3f`) and the best
#   model-free baseline {glue:text}`best_baseline` ({glue:text}`best_baseline_score:.3f`);
#   {glue:text}`n_methods_above_baselines` of {glue:text}`n_methods_scored` methods beat every baseline.
# - A method is only informative where it beats the model-free baselines; notebook 5 gives each method's skill
#   over the best baseline with an interval over runs.
#
# **Next:** notebook 5 relates explanation performance to the pre-training source and k, correcting for accuracy.
