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
# {cite:p}`kokhlikyan2020captum` and with control maps (`sobel`, `laplace`, `random`, `input`) that any
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
# A few minutes on 2 CPU cores at the `book` preset, most of it explaining the grid (the sanity check, leaderboard,
# metric agreement and difficulty sections take seconds); measured times are in {doc}`../book/reproducing`. At the
# `study` preset the exact EMD is the most expensive step of the benchmark (`benchmarks/emd_speed.py` measures it
# per map on your machine).

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from xaiutils.analysis import controls, difficulty, evaluate, leaderboard, sanity
from xaiutils.book import glue
from xaiutils.domain import explain, plugins
from xaiutils.domain import metrics as metric_registry  # the parameter below is called `metrics`
from xaiutils.domain.synth.dataset import load_benchmark
from xaiutils.execution.paths import default_out_dir
from xaiutils.foundation.config import resolve_from
from xaiutils.foundation.files import write_atomic

# %% tags=["parameters"]
# Parameter set: "book" (the default book, 2 CPU cores), "smoke" (the tests) or "study" (the study's scale, GPU).
preset = "book"
# Methods and control maps to run, e.g. ["saliency", "occlusion", "sobel"] (None: preset list).
methods = None
# Your own explanation methods, scored beside them: a list of "package.module:function" or "path/to/file.py:function"
# (optionally "NAME=SPEC"), or of mappings {spec: ..., name: ..., settings: {...}} (None: none). The contract is
# method(model, images, target, **settings) -> maps; see the README.
user_methods = None
# Metrics to compute (None: preset list; valid: emd_score, importance_mass_accuracy, topk_precision,
# relevance_rank_accuracy, pointing_game, roc_auc).
metrics = None
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
# Runs explained at once, each in its own process with cpu_count // workers threads (None: preset). Scores differ
# only by the rounding of threaded kernels.
workers = None
# Model-randomisation sanity check on the most accurate run: how many of the explained images, how many stages
# re-initialised (the head, then blocks from the last), and the mean rank correlation at or above which a method is
# flagged (None: preset values).
sanity_images = None
sanity_stages = None
sanity_threshold = None
# A Dask cluster to explain and score on: a scheduler address (tcp://host:8786) or a cluster spec YAML such as
# examples/slurm-cpu.yaml (None: this machine, as set by workers). Scores as here with one thread per run.
cluster = None
# Inputs: the dataset of notebook 1 and the grid folder of notebook 3 (None: the preset's run folders).
data_dir = None
grid_dir = None
# Run folder (None: runs/<preset>/04_explain in the checkout).
out_dir = None

# %%
config = resolve_from("explain", preset, globals())
explain.check_methods(config["methods"])  # unknown or repeated method names are refused before any work
control_maps = explain.control_map_names()  # the model-free maps every method must beat
data_dir = Path(data_dir) if data_dir is not None else default_out_dir(preset, "01_data") / "dataset"
grid_dir = Path(grid_dir) if grid_dir is not None else default_out_dir(preset, "03_finetune") / "grid"
out_dir = Path(out_dir) if out_dir is not None else default_out_dir(preset, "04_explain")
out_dir.mkdir(parents=True, exist_ok=True)
pd.Series({key: str(value) for key, value in config.items()}, name="value").to_frame()

# %% [markdown]
# ## The methods
#
# What each method costs and needs, as registered in `xaiutils.domain.explain` (Captum's docs compare methods the same
# way). A method that has no correct rule for a layer of the backbone (e.g. LRP on a model that adds tensors outside
# modules) is recorded as *not applicable* rather than run silently wrong; every method of the preset has rules for
# every backbone of the presets (see the propagation section below).

# %%
method_table = explain.method_table()
method_table[method_table.index.isin(config["methods"])]

# %% [markdown]
# ## Explaining and scoring every run

# %%
bench = load_benchmark(data_dir)
accuracy = evaluate.read_accuracy(grid_dir, preset)  # a truncated or edited table is refused (see its docstring)
images = evaluate.test_images(bench, config["n_test_images"], seed=config["seed"])
# The gallery below shows the maps of the most accurate run; only its maps are kept.
best_run = accuracy.sort_values("test_accuracy", ascending=False)["run"].iloc[0]
# Your own methods are called once on two images of that run, and refused with the reason, before any scoring.
user_entries = plugins.parse_entries(user_methods)
all_methods = [*config["methods"], *(entry["name"] for entry in user_entries)]
best_model, _, _ = evaluate.load_run(grid_dir / best_run)
plugins.validate(user_entries, best_model, bench.images[images[:2]], bench.labels[images[:2]], seed=config["seed"])
scores, best_run_maps = evaluate.explain_grid(
    grid_dir, accuracy["run"], data_dir, images, config["methods"], config["metrics"], workers=config["workers"],
    maps_for=best_run, resolution=config["resolution"], seed=config["seed"], cluster=cluster,
    n_images_costly=config["n_images_costly"], user_methods=user_entries,
)
scores = evaluate.add_correct_for_all(scores)
# The distance from the lesions to the brain's edge, from the masks (xaiutils.analysis.difficulty), for the difficulty
# analysis.
scores = difficulty.add_edge_distance(scores, bench)
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
shown_methods = [m for m in all_methods if m in best_run_maps and (run_scores["method"] == m).any()]
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
# ## Score distributions: methods next to the control maps

# %%
selected = evaluate.select(scores, config["selection"])
order = selected.groupby("method")[main_metric].median().sort_values(ascending=False).index
order = [method for method in order if selected.loc[selected["method"] == method, main_metric].notna().any()]
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
for ax, metric in zip(axes, config["metrics"][:2], strict=False):
    values = [selected.loc[selected["method"] == method, metric].dropna() for method in order]
    boxes = ax.boxplot(values, patch_artist=True, showfliers=False)
    for patch, method in zip(boxes["boxes"], order, strict=True):
        patch.set_facecolor("lightgrey" if method in control_maps else "tab:blue")
    direction, value_range = metric_registry.METRICS[metric].higher_is_better, metric_registry.METRICS[metric].range
    ax.set_xticks(range(1, len(order) + 1), order, rotation=60, ha="right")
    ax.set(ylabel=f"{metric} (range {value_range[0]:g}–{value_range[1]:g})",
           title=f"{metric}: {'higher' if direction else 'lower'} is better\n(correctly classified images, all runs)")
axes[0].plot([], [], color="tab:blue", lw=8, label="attribution method")
axes[0].plot([], [], color="lightgrey", lw=8, label="control map")
axes[0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(out_dir / "score_distributions.png", dpi=110)

# %%
# Methods that do not apply to this backbone have no score: they are not counted.
method_means = selected[~selected["method"].isin(control_maps)].groupby("method")[main_metric].mean().dropna()
baseline_means = selected[selected["method"].isin(control_maps)].groupby("method")[main_metric].mean()
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
write_atomic(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")

# %% [markdown]
# ## Each metric against its controls
#
# A metric can only separate methods where the data leave room between what the image alone gives and the ground
# truth. For every metric, the table gives the `random` map (chance), the best control map (the best of `input`,
# `sobel`, `laplace` and `random`: no model involved) and the oracle (the lesion mask scored as its own map, the
# ceiling), as means over the correctly classified images of every run. A method's **normalised skill** places it in
# that room: `(method − best control) / (oracle − best control)`, 0 at the best control map, 1 at the oracle, below 0
# when the image alone does better; its 95 % interval resamples runs, numerator and denominator together.
#
# **The headline metric is the study's EMD score** {cite:p}`oliveira2024benchmarking`: it compares where a map puts
# its mass with the lesions as a transport distance, so near misses count, and it is what the regression of notebook
# 5 models. It compresses its range (a map spread over the brain already scores about 0.8), so the mass in the lesions
# (IMA) and the rank metrics (top-k precision, pointing game, ROC-AUC) are read beside it: where they disagree, the
# room column says which metric had room to tell.

# %%
oracle = controls.oracle_scores(bench.masks[images], config["metrics"], resolution=config["resolution"])
oracle.index = images
ranges = controls.metric_ranges(scores, oracle, config["metrics"], config["selection"])
ranges.to_csv(out_dir / "metric_ranges.csv")
skills = pd.concat([controls.normalised_skill(scores, oracle, metric, config["selection"], n_boot=config["n_boot"],
                                              seed=config["seed"]).assign(metric=metric)
                    for metric in config["metrics"]], ignore_index=True)
skills.to_csv(out_dir / "normalised_skill.csv", index=False)
skill_order = skills[skills["metric"] == main_metric].sort_values("skill", ascending=False)["method"].tolist()
fig, axes = plt.subplots(1, len(config["metrics"]), figsize=(2.9 * len(config["metrics"]) + 1.5,
                                                             0.32 * len(skill_order) + 1.8), sharey=True, sharex=True)
axes = np.atleast_1d(axes)
y_positions = np.arange(len(skill_order))[::-1]
for ax, metric in zip(axes, config["metrics"], strict=True):
    rows = skills[skills["metric"] == metric].set_index("method").reindex(skill_order)
    colour = ["lightgrey" if method in control_maps else "tab:blue" for method in skill_order]
    ax.errorbar(rows["skill"], y_positions, xerr=[rows["skill"] - rows["ci_low"], rows["ci_high"] - rows["skill"]],
                fmt="none", ecolor="black", capsize=2)
    ax.scatter(rows["skill"], y_positions, c=colour, edgecolors="black", zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.axvline(1, color="tab:green", lw=0.8, ls="--")
    room = ranges.loc[metric]
    ax.set_title(f"{metric}\nbest control: {room['best_control']}\nroom to oracle {room['room']:.3f}", fontsize=8)
    ax.set_xlabel("normalised skill\n(0 = best control, 1 = oracle)", fontsize=8)
axes[0].set_yticks(y_positions, skill_order)
axes[0].set_xlim(-1.5, 1.1)  # a map far below its control is cut at -1.5; the table holds its value
fig.suptitle("Where each method lies between the best control map and the oracle (95 % CI over runs)")
fig.tight_layout()
fig.savefig(out_dir / "normalised_skill.png", dpi=110)
glue("headline_room", float(ranges.loc[main_metric, "room"]))
glue("headline_best_control", ranges.loc[main_metric, "best_control"])
top_skill = skills[(skills["metric"] == main_metric) & ~skills["method"].isin(control_maps)].iloc[0]
glue("top_normalised_method", top_skill["method"])
glue("top_normalised_skill", float(top_skill["skill"]))
ranges.round(3)

# %%
# Normalised skill of every method under every metric (95 % interval over runs in brackets)
skills.assign(cell=lambda t: t["skill"].map("{:.2f}".format) + " [" + t["ci_low"].map("{:.2f}".format) + ", "
              + t["ci_high"].map("{:.2f}".format) + "]").pivot(index="method", columns="metric", values="cell"
                                                                ).reindex(index=skill_order, columns=config["metrics"])

# %% [markdown]
# ## Propagation methods on MobileNetV2
#
# The reference study and its sibling benchmark XAI-TRIS centre on propagation methods: DeepLift, DeepLiftShap,
# Guided Backpropagation, Deconvolution, Guided Grad-CAM and LRP. They change the backward pass layer by layer, so
# each needs a rule for every layer of the backbone. MobileNetV2 has two layers the study's VGG-16 lacks: ReLU6
# (`min(max(x, 0), 6)`) and residual sums (`x + block(x)`), plus BatchNorm. Here is what each method does with them
# (`xaiutils/domain/explain/canonical.py`; the tests in `tests/test_propagation.py` check each rule against a known
# answer):
#
# | method | library | ReLU6 | residual sum | BatchNorm |
# | --- | --- | --- | --- | --- |
# | DeepLift(Shap) | Captum | rescale: (out − out₀) / (in − in₀), clip included | linear (both branches) | affine |
# | Guided Backprop | Captum | ReLU's rule: gradient kept where 0 < input < 6 and positive | gradient | gradient |
# | Deconvolution | Captum | ReLU's rule on the gradient alone (input ignored) | gradient | gradient |
# | Guided Grad-CAM | Captum | as Guided Backprop, times Grad-CAM of the last block | gradient | gradient |
# | LRP | zennit | relevance passes unchanged | split by each branch's share | merged into the conv before it |
#
# ReLU6 is replaced, on a copy of the model, by a module with the same function bit for bit that the libraries treat
# as a ReLU (`ClippedReLU`), and DeepLift is given the rescale rule for it; no method has a special case. LRP runs
# zennit's EpsilonPlusFlat composite {cite:p}`anders2021zennit` (flat rule on the first convolution, z⁺ on the other
# convolutions, ε on the dense layer); the study used Captum's ε rule on every layer of VGG-16, which `rule="epsilon"`
# reproduces. The z⁺ rule does not conserve relevance through MobileNetV2's linear bottlenecks (no ReLU after them):
# on the bias-free backbone the input keeps 83–94 % of the logit (`tests/test_propagation.py`).
#
# The gallery shows every propagation method on the same four test images, those the most accurate run classified
# correctly first in the sample, each map divided by its own maximum |value| (one colour scale for all).

# %%
propagation_methods = [method for method in all_methods
                       if method in explain.METHODS and explain.METHODS[method].hooked and method in best_run_maps]
correct_of_best = scores.loc[(scores["run"] == best_run) & scores["correct"], "image"].unique()
gallery_images = [image for image in images if image in set(correct_of_best)][:4]
fig, axes = plt.subplots(len(propagation_methods) + 1, len(gallery_images),
                         figsize=(2.1 * len(gallery_images) + 1.6, 2.1 * (len(propagation_methods) + 1)),
                         squeeze=False)
for column, image in enumerate(gallery_images):
    axes[0, column].imshow(bench.images[image], cmap="gray", vmin=0, vmax=1)
    axes[0, column].contour(bench.masks[image], levels=[0.5], colors="cyan", linewidths=0.8)
    axes[0, column].set_title(f"image {image}\n(class {bench.labels[image]})", fontsize=9)
    for row, method in enumerate(propagation_methods, start=1):
        attribution = np.abs(best_run_maps[method][position[image]])
        peak = attribution.max()
        shown = axes[row, column].imshow(attribution / peak if peak > 0 else attribution, cmap="inferno", vmin=0,
                                         vmax=1)
        axes[row, column].contour(bench.masks[image], levels=[0.5], colors="cyan", linewidths=0.6)
        if peak == 0:
            axes[row, column].text(0.5, 0.5, "all zero", color="white", ha="center", va="center",
                                   transform=axes[row, column].transAxes)
for row, label in enumerate(["image", *propagation_methods]):
    axes[row, 0].set_ylabel(label.replace("_", " "), fontsize=9)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(shown, ax=axes, shrink=0.4, label="|attribution| / max |attribution|")
fig.suptitle(f"Propagation methods, run {best_run} (lesion mask in cyan)")
fig.savefig(out_dir / "propagation_gallery.png", dpi=110, bbox_inches="tight")

# %% [markdown]
# The methods' scores beside the control maps: the mean of every metric over the correctly classified images of
# every run, and the skill over the best control map on the headline metric, **paired by image**: per run, the mean
# of (method − best control) over the images where both have a score, averaged over runs. Its 95 % interval is a
# two-stage bootstrap that resamples runs and then images within each run, so it holds both the spread between
# models and that between images (`xaiutils.analysis.controls.paired_skill`). A map that is zero everywhere has no
# score (Guided Grad-CAM is zero wherever Grad-CAM of the last block is; the table of missing scores above counts
# them).

# %%
paired = controls.paired_skill(scores, main_metric, config["selection"], n_boot=config["n_boot"],
                               seed=config["seed"]).set_index("method")
paired.to_csv(out_dir / "paired_skill.csv")
means = selected.groupby("method")[config["metrics"]].mean()
beside = means.join(paired[["skill", "ci_low", "ci_high", "n_pairs"]].rename(
    columns={"skill": f"skill ({main_metric})", "ci_low": "skill 95% low", "ci_high": "skill 95% high"}))
beside.insert(0, "kind", ["control" if name in control_maps else
                          "propagation" if name in propagation_methods else "other" for name in beside.index])
beside = beside.loc[[*propagation_methods, *[m for m in beside.index if m not in propagation_methods]]]
beside.to_csv(out_dir / "propagation.csv")
ordered = paired.sort_values("skill")
fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(ordered) + 1.6))
kind_colour = ["lightgrey" if m in control_maps else "tab:red" if m in propagation_methods else "tab:blue"
               for m in ordered.index]
rows_y = np.arange(len(ordered))
ax.errorbar(ordered["skill"], rows_y,
            xerr=[ordered["skill"] - ordered["ci_low"], ordered["ci_high"] - ordered["skill"]],
            fmt="none", ecolor="black", capsize=2)
ax.scatter(ordered["skill"], rows_y, c=kind_colour, edgecolors="black", zorder=3)
ax.axvline(0, color="black", lw=0.8)
ax.set_yticks(rows_y, ordered.index)
ax.set_xlabel(f"{main_metric}: method minus the best control map ({paired['best_control'].iloc[0]}),\n"
              "paired by image; 95 % CI over runs and images")
for colour, label in (("tab:red", "propagation method"), ("tab:blue", "other method"), ("lightgrey", "control map")):
    ax.scatter([], [], c=colour, edgecolors="black", label=label)
ax.legend(fontsize=8, loc="lower right")
ax.set_title("Skill over the best control map")
fig.tight_layout()
fig.savefig(out_dir / "paired_skill.png", dpi=110)
scored_propagation = [m for m in propagation_methods if np.isfinite(paired["skill"].get(m, np.nan))]
glue("n_propagation_methods", len(propagation_methods))
glue("n_propagation_scored", len(scored_propagation))
top_propagation = paired.loc[scored_propagation, "skill"].idxmax() if scored_propagation else "none"
glue("top_propagation_method", top_propagation)
glue("top_propagation_skill", float(paired.loc[top_propagation, "skill"]) if scored_propagation else float("nan"))
glue("n_methods_paired_above", int(((paired["ci_low"] > 0) & ~paired.index.isin(control_maps)).sum()))
beside.round(3)

# %% [markdown]
# ## Scoring resolution
#
# Maps and masks are sum-pooled to the scoring resolution before the EMD is solved, because the exact solve grows
# fast with the number of pixels. What that costs in the scores, measured on this build's own maps: the most accurate
# run's maps of up to eight explained images, scored at the preset's resolution and at the images' native size.

# %%
native = bench.images.shape[-1]
compared = images[: min(8, len(images))]
resolution_rows = []
for method, maps in best_run_maps.items():
    usable = np.isfinite(maps[: len(compared)]).all(axis=(1, 2)) & (np.abs(maps[: len(compared)]).sum(axis=(1, 2)) > 0)
    if not usable.any():
        continue
    row = {"method": method}
    for size in dict.fromkeys([config["resolution"], native]):
        scored = metric_registry.score_maps(maps[: len(compared)][usable], bench.masks[compared][usable],
                                            metrics=["emd_score"], resolution=size)
        row[f"EMD score at {size}²"] = float(scored["emd_score"].mean())
    resolution_rows.append(row)
resolution_table = pd.DataFrame(resolution_rows).set_index("method")
if resolution_table.shape[1] == 2:
    resolution_table["difference"] = resolution_table.iloc[:, 1] - resolution_table.iloc[:, 0]
    glue("resolution_max_difference", float(resolution_table["difference"].abs().max()))
else:
    glue("resolution_max_difference", 0.0)
resolution_table.to_csv(out_dir / "resolution.csv")
resolution_table.round(4)

# %% [markdown]
# ## The distractor (variant `distractor` only)
#
# With the data variant `distractor`, every image also holds a blob that carries no class information (its shape is
# drawn whatever the class) but looks like the lesions, with the opposite contrast. Mass a map puts there explains
# nothing about the class. The table gives, for the most accurate run, the mean share of each map's mass on the
# distractor and on the lesions. Without the variant this section prints nothing.

# %%
if bench.distractor_masks is not None:
    distractor_rows = []
    for method, maps in best_run_maps.items():
        on_distractor = metric_registry.score_maps(maps, bench.distractor_masks[images],
                                                   metrics=["importance_mass_accuracy"], resolution=None, n_jobs=1)
        on_lesions = metric_registry.score_maps(maps, bench.masks[images], metrics=["importance_mass_accuracy"],
                                                resolution=None, n_jobs=1)
        distractor_rows.append({"method": method,
                                "mass on the distractor": on_distractor["importance_mass_accuracy"].mean(),
                                "mass on the lesions": on_lesions["importance_mass_accuracy"].mean()})
    distractor_table = pd.DataFrame(distractor_rows).set_index("method").sort_values("mass on the distractor")
    distractor_table.to_csv(out_dir / "distractor.csv")
    display(distractor_table.round(3))

# %% [markdown]
# ## Sanity check: do the maps depend on the model?
#
# Cascading model randomisation {cite:p}`adebayo2018sanity`: in the most accurate run, the classification head is
# re-initialised, then the blocks from the last one backwards (seeded), and after each stage every method explains the
# same test images again. Spearman's rank correlation ρ between each map and the trained model's map measures how
# much the map changed. A method whose maps keep ρ ≥ the preset's threshold after the last stage is **flagged**: its
# maps do not depend on the weights they should explain. The control maps are model-free, so they are flagged by
# construction, and show where ρ = 1 lies. The preset sets the images and stages (the `book` preset checks a few
# images and the top stages only; `study` runs the full cascade).

# %%
checked = images[: config["sanity_images"]]
# The trained model's maps of these images were computed above (the gallery's maps): the cascade starts from them.
cascade = sanity.model_randomisation(best_model, bench.images[checked], bench.labels[checked], all_methods,
                                     n_stages=config["sanity_stages"], seed=config["seed"],
                                     user_methods=user_entries,
                                     original_maps={method: maps[: len(checked)]
                                                    for method, maps in best_run_maps.items()})
cascade.assign(run=best_run).to_csv(out_dir / "sanity.csv", index=False)
sanity_summary = sanity.summarise(cascade, threshold=config["sanity_threshold"], n_boot=config["n_boot"],
                                  seed=config["seed"])
fig, ax = plt.subplots(figsize=(8, 4.2))
stage_means = cascade.groupby(["method", "stage"])["spearman"].mean().unstack("stage")
layers = cascade.drop_duplicates("stage").set_index("stage")["layer"]
for method, row in stage_means.iterrows():
    control = method in control_maps
    ax.plot(row.index, row.to_numpy(), marker="o", color="lightgrey" if control else None,
            ls="--" if control else "-", label=method, zorder=1 if control else 2)
ax.axhline(config["sanity_threshold"], color="black", lw=0.8, ls=":", label="flag threshold")
ax.set_xticks(list(layers.index), [f"{number}: {layer}" for number, layer in layers.items()])
ax.set(xlabel="cascade stage: layers re-initialised from the top down, cumulatively", ylim=(-1.05, 1.05),
       ylabel="Spearman ρ with the trained model's map\n(mean over images)",
       title=f"Model randomisation of run {best_run} ({len(checked)} images)")
ax.legend(fontsize=7, ncol=2, bbox_to_anchor=(1.02, 1), loc="upper left")
fig.tight_layout()
fig.savefig(out_dir / "sanity.png", dpi=110, bbox_inches="tight")
sanity_summary.set_index("method").round(3)

# %% [markdown]
# ## Leaderboard
#
# One row per method, registered and your own methods alike, the control maps included: the mean of each metric over
# the correctly classified images of every run with its 95 % bootstrap interval; the rank by the first metric with
# its 95 % interval (images resampled, the same for every method); the skill over the best control map (mean
# difference paired by run, 95 % interval over runs); and the sanity check above. `leaderboard.csv` in the run
# folder holds every column; `python -m xaiutils evaluate --method package.module:function` rebuilds it with your
# method, without editing the repository.

# %%
board = leaderboard.build(scores, config["metrics"], config["selection"], sanity=sanity_summary,
                          user_names=[entry["name"] for entry in user_entries], n_boot=config["n_boot"],
                          seed=config["seed"])
board.to_csv(out_dir / "leaderboard.csv", index=False)
kind_colours = {"registered": "tab:blue", "user": "tab:orange", "control": "lightgrey"}
fig, axes = plt.subplots(1, 2, figsize=(12, 0.38 * len(board) + 1.6), sharey=True)
positions = np.arange(len(board))[::-1]
colours = board["kind"].map(kind_colours).to_numpy()
flagged = board["sanity"].eq("flagged").to_numpy()
for ax, (column, label) in zip(axes, ((main_metric, f"mean {main_metric} (95 % CI)"),
                                      ("skill", f"{main_metric} minus the best control map (95 % CI over runs)")),
                               strict=True):
    low, high = board[f"{column}_ci_low"], board[f"{column}_ci_high"]
    ax.errorbar(board[column], positions, xerr=[board[column] - low, high - board[column]], fmt="none",
                ecolor="black", capsize=3)
    ax.scatter(board[column][~flagged], positions[~flagged], c=colours[~flagged], edgecolors="black", zorder=3)
    ax.scatter(board[column][flagged], positions[flagged], facecolors="white", edgecolors=colours[flagged],
               linewidths=2, zorder=3)
    ax.set_xlabel(label)
axes[1].axvline(0, color="black", lw=0.8)
axes[0].set_yticks(positions, [f"{row.method} (no score)" if np.isnan(row.rank) else
                               f"{row.method} (rank {row.rank:.0f}, {row.rank_low:.0f}–{row.rank_high:.0f})"
                               for row in board.itertuples()])
for kind, colour in kind_colours.items():
    axes[0].scatter([], [], c=colour, edgecolors="black", label=kind)
axes[0].scatter([], [], facecolors="white", edgecolors="black", linewidths=2, label="flagged by the sanity check")
axes[0].legend(fontsize=8, loc="lower right")
fig.suptitle("Leaderboard (rank with its 95 % interval; hollow: maps that do not depend on the model)")
fig.tight_layout()
fig.savefig(out_dir / "leaderboard.png", dpi=110)
shown = ["method", "kind", "rank", "rank_low", "rank_high", *config["metrics"], "skill", "skill_ci_low",
         "skill_ci_high", "sanity", "sanity_rho"]
board[shown].set_index("method").round(3)

# %% [markdown]
# ## Do the metrics agree on the ranking?
#
# Kendall's τ between the rankings of the methods (by mean score) under each pair of metrics: 1 = the same order,
# −1 = the reverse, 0 = unrelated. The 95 % intervals resample the (run, image) rows, the same rows for every method
# and metric. Methods that some metric cannot score are left out of every pair.

# %%
agreement = leaderboard.metric_agreement(scores, config["metrics"], config["selection"], n_boot=config["n_boot"],
                                         seed=config["seed"])
agreement.to_csv(out_dir / "metric_agreement.csv", index=False)
matrix = leaderboard.agreement_matrix(agreement)
fig, ax = plt.subplots(figsize=(6.2, 5))
heat = ax.imshow(matrix.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
for (row, column), value in np.ndenumerate(matrix.to_numpy()):
    ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
            color="white" if abs(value) > 0.6 else "black")
ax.set_xticks(range(len(matrix)), matrix.columns, rotation=45, ha="right")
ax.set_yticks(range(len(matrix)), matrix.index)
fig.colorbar(heat, ax=ax, label="Kendall's τ between the method rankings")
ax.set_title(f"Metric agreement ({agreement['n_methods'].iloc[0]} methods)")
fig.tight_layout()
fig.savefig(out_dir / "metric_agreement.png", dpi=110)
agreement.round(3)

# %% [markdown]
# ## Difficulty: which lesions are hard to explain?
#
# Spearman's ρ between each method's score (first metric, correctly classified images of every run) and the
# properties of the image's lesions: total area, contrast, number, distance to the brain's edge (the smallest distance
# from a lesion pixel to a pixel outside the brain, from the masks), and solidity. Positive ρ: the method scores
# better on images with more of that property. A property that does not vary in this build (the `book` preset draws
# two lesions per image) has no correlation, and the table says so.

# %%
hardness = difficulty.property_correlations(scores, main_metric, config["selection"], n_boot=config["n_boot"],
                                            seed=config["seed"])
hardness.to_csv(out_dir / "difficulty.csv", index=False)
property_grid = hardness.pivot(index="method", columns="property", values="rho").reindex(
    index=board["method"], columns=list(difficulty.PROPERTIES))
fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(property_grid) + 1.8))
heat = ax.imshow(np.ma.masked_invalid(property_grid.to_numpy()), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
ax.set_facecolor("whitesmoke")
for (row, column), value in np.ndenumerate(property_grid.to_numpy()):
    ax.text(column, row, "—" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8,
            color="white" if abs(value) > 0.6 else "black")
ax.set_xticks(range(property_grid.shape[1]), [name.replace("_", " ") for name in property_grid.columns], rotation=30,
              ha="right")
ax.set_yticks(range(property_grid.shape[0]), property_grid.index)
fig.colorbar(heat, ax=ax, label=f"Spearman ρ of {main_metric} with the property")
ax.set_title("Difficulty: score against lesion properties (—: the property does not vary)")
fig.tight_layout()
fig.savefig(out_dir / "difficulty.png", dpi=110)
with pd.option_context("display.max_colwidth", None):
    display(hardness[hardness["note"] != ""].drop_duplicates("note")[["property", "note"]])

# %%
methods_board = board[board["kind"] != "control"]
glue("leader_method", board["method"].iloc[0])
glue("leader_kind", {"control": "a control map", "user": "a user's method"}.get(board["kind"].iloc[0],
                                                                              "a registered method"))
glue("n_sanity_passed", int(methods_board["sanity"].eq("passed").sum()))
glue("n_sanity_flagged", int(methods_board["sanity"].eq("flagged").sum()))
glue("n_sanity_methods", len(methods_board))
glue("sanity_threshold", config["sanity_threshold"])
glue("sanity_stages", config["sanity_stages"])
glue("sanity_images", len(checked))
glue("median_metric_tau", agreement["tau"].median())
glue("min_metric_tau", agreement["tau"].min())
area = hardness[hardness["property"] == "lesion_area_px"]["rho"]
edge = hardness[hardness["property"] == "edge_distance_px"]["rho"]
glue("median_rho_area", area.median())
glue("median_rho_edge", edge.median())

# %% [markdown]
# ## Summary
#
# - Every run of the grid was explained with the preset's methods and control maps on the same test images; the
#   tidy table `scores.csv` (one row per run × method × image) and `aggregates.csv` (per run × method, with
#   bootstrap intervals) are in the run folder for notebook 5.
# - Maps are scored at the resolution printed above; where it is below the image size, maps and masks were
#   sum-pooled to keep exact EMD affordable (the `study` preset follows the convention of XAI-TRIS
#   {cite:p}`clark2024xaitris`).
# - In this build, {glue:text}`n_score_rows` scores were computed on {glue:text}`n_images_explained` test
#   images at {glue:text}`resolution` pixels a side. By mean {glue:text}`main_metric` on correctly classified
#   images, the best method is {glue:text}`best_method` ({glue:text}`best_method_score:.3f`) and the best
#   control map {glue:text}`best_baseline` ({glue:text}`best_baseline_score:.3f`);
#   {glue:text}`n_methods_above_baselines` of {glue:text}`n_methods_scored` methods beat every control map.
# - Against its controls: on {glue:text}`main_metric`, the best control map is {glue:text}`headline_best_control`
#   and the oracle lies {glue:text}`headline_room:.3f` above it; the method with the highest normalised skill is
#   {glue:text}`top_normalised_method` ({glue:text}`top_normalised_skill:.2f`, where 0 is the best control map and
#   1 the oracle). Scoring at the preset's resolution instead of the native size moved no method's mean EMD score by
#   more than {glue:text}`resolution_max_difference:.4f`.
# - The study's propagation methods ran on MobileNetV2 ({glue:text}`n_propagation_scored` of
#   {glue:text}`n_propagation_methods` scored), with rules for ReLU6, residual sums and BatchNorm; the best of them by
#   skill over the best control map, paired by image, is {glue:text}`top_propagation_method`
#   ({glue:text}`top_propagation_skill:.4f`). {glue:text}`n_methods_paired_above` methods beat the best control map
#   with a 95 % interval over runs and images above zero.
# - A method is only informative where it beats the control maps; notebook 5 gives each method's skill
#   over the best control map with an interval over runs.
# - The leaderboard (`leaderboard.csv`) ranks every method and control map; its top is {glue:text}`leader_method`,
#   {glue:text}`leader_kind`. In the sanity check ({glue:text}`sanity_stages` stages on {glue:text}`sanity_images`
#   images of the most accurate run), {glue:text}`n_sanity_passed` of {glue:text}`n_sanity_methods` methods changed
#   their maps when the weights were destroyed, and {glue:text}`n_sanity_flagged` kept a mean ρ of at least
#   {glue:text}`sanity_threshold` (flagged).
# - The metrics' rankings of the methods agree with a median Kendall's τ of {glue:text}`median_metric_tau:.2f` over
#   the metric pairs (lowest {glue:text}`min_metric_tau:.2f`). Across methods, the median correlation of the score
#   with the lesion area is {glue:text}`median_rho_area:.2f`, and with the lesions' distance to the brain's edge
#   {glue:text}`median_rho_edge:.2f`.
#
# **Next:** notebook 5 relates explanation performance to the pre-training source and k, correcting for accuracy.
