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
# # 1. Data: brain-MRI slices with synthetic lesions
#
# ## Overview
#
# The benchmark needs images whose class-relevant pixels are known exactly. We take real T1-weighted brain-MRI
# anatomy, cut axial slices from it, and draw synthetic lesions into the brain. Only the lesions carry
# information about the class, so each image's lesion mask is a **ground-truth explanation**: an attribution
# method explains a correct classifier well when its map falls on the mask.
#
# - **Task `shape`** (default): class 0 has *regular* lesions (smooth ellipses), class 1 *irregular* lesions (the
#   same ellipses with a noise-deformed boundary). Both classes draw lesion count, size, aspect ratio and contrast
#   from the same distributions, and every image carries lesions, so every image has a non-empty ground truth.
# - **Task `presence`**: lesions versus no lesions.
#
# **Where the anatomy comes from.** By default it is the MNI152 2009 T1 template {cite:p}`fonov2011mni` shipped
# inside `nilearn` {cite:p}`abraham2014nilearn`, so this notebook runs offline. A template is *one* anatomy: our
# **pseudo-subjects are simulated variability of that one anatomy**, not different people. Each is the template
# under a random smooth (B-spline) deformation with a small rotation and scaling, a random intensity curve, a
# smooth bias field and Rician noise, all drawn from the seed. The reference study
# {cite:p}`oliveira2024benchmarking` used slices of real subjects' scans; with `volume_source` set to a folder of T1
# NIfTI volumes (or to `"ixi"` after `xaiutils.domain.mri.fetch.fetch_ixi()` has downloaded the IXI collection) this
# notebook uses real subjects instead, one volume per subject.
#
# **Lesion appearance.** Lesions are drawn **hypo-intense** (darker than the tissue they replace) by default, with
# a smooth random texture. In T1-weighted MRI, focal lesions are more often dark or iso-intense than bright
# (multiple-sclerosis "black holes", tumour cores, infarcts). It also matters for the benchmark: with bright lesions,
# the brightest pixel of every image lay in a lesion, so the image itself was a near-perfect explanation (it won the
# pointing game on every image) and every method that multiplies by the input inherited that. The default data are
# chosen so that **the image is not an oracle** (section "Is the image an explanation by itself?" below), a criterion
# stated before any method was scored. Hyper-intense lesions (`lesion_contrast` above 0) and iso-intense ones (near 0,
# visible by texture and edges only) remain a parameter away.
#
# **Our choices.** Image sizes, numbers of subjects and slices, lesion count, radius range, contrast, edge
# softness, irregularity and the pseudo-subject variability are our choices, set in `xaiutils.foundation.config` and
# overridable below. They are not the reference study's values, which we do not have.
#
# ## Prerequisites
#
# | Concept | Importance |
# | --- | --- |
# | Notebook 0 (`00_overview`): the template, its brain mask and the band of axial levels | necessary |
# | Ground-truth explanations (why a known mask lets us score attribution maps) | helpful |
# | Subject-wise data splits (why no subject may appear in two splits) | helpful |
#
# ## Time to run
#
# About a minute on 2 CPU cores at the `book` preset; minutes at the `study` preset, still without a GPU. The measured
# time of the latest build is in {doc}`../book/reproducing`.

# %%
import json
import time
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from xaiutils.analysis.controls import IMAGE_NOT_ORACLE, ORACLE, image_is_oracle, oracle_table
from xaiutils.book import glue
from xaiutils.domain.mri.anatomy import level_to_mm, template_anatomy
from xaiutils.domain.mri.slices import sample_slices
from xaiutils.domain.synth.dataset import load_benchmark, make_benchmark
from xaiutils.domain.synth.lesions import SHAPES, draw_lesions, local_mask, place_lesions, sample_lesion, solidity
from xaiutils.domain.synth.parameters import SPLITS, lesion_params_from_config, variability_from_config
from xaiutils.execution.paths import default_out_dir
from xaiutils.foundation.config import resolve_from
from xaiutils.foundation.files import write_atomic

# %% tags=["parameters"]
# Parameter set: "book" (the default book, 2 CPU cores), "smoke" (the tests) or "study" (the study's scale, GPU).
preset = "book"
# Volumes: "mni152" (pseudo-subjects from nilearn's template), "ixi" (IXI T1, fetched beforehand with
# xaiutils.domain.mri.fetch.fetch_ixi()), or a folder of T1 NIfTI volumes (None: preset value, "mni152").
volume_source = None
# Number of (pseudo-)subjects; with a folder, a random subset of this size (None: preset value).
n_subjects = None
# Distinct axial levels drawn per subject from the band with enough brain (None: preset value).
slices_per_subject = None
# Side of the square images in pixels (None: preset value, 64 for book and smoke, 224 for study).
image_size = None
# Axial band: levels whose brain area is at least this fraction of the largest level's (None: preset value).
min_brain_fraction = None
# "shape": regular vs irregular lesions; "presence": lesions vs none (None: preset value, "shape").
lesion_task = None
# Lesions per image as an inclusive range [low, high] (None: preset value).
n_lesions = None
# Equivalent lesion radius sqrt(area / pi) in pixels, [low, high] (None: preset value).
radius_range = None
# Lesions are ellipses whose aspect ratio is drawn from [1, max_aspect] (None: preset value).
max_aspect = None
# Additive lesion intensity, in units of the slice's brain intensity range, [low, high]: negative values give
# hypo-intense (dark) lesions, near 0 iso-intense ones, positive hyper-intense (bright) ones (None: preset value).
lesion_contrast = None
# SD of a smooth random texture inside each lesion, same units; 0 gives uniform lesions (None: preset value).
lesion_texture = None
# Correlation length of that texture: Gaussian sigma in pixels (None: preset value).
texture_scale = None
# Width in pixels of the lesion masks' soft edge; 0 gives hard edges (None: preset value).
edge_softness = None
# Smallest gap in pixels between two lesions of one image (None: preset value).
min_gap = None
# RMS relative modulation of the irregular lesions' boundary radius (None: preset value).
irregularity = None
# Where lesions may go: "brain" (inside the brain mask) or "white_matter" (None: preset value, "brain").
placement = None
# "none", or "distractor": every image also gets one class-independent blob (random shape, the lesions' contrast
# with the opposite sign) that is not part of the ground truth (None: preset value, "none").
variant = None
# Pseudo-subjects (volume_source "mni152" only), the simulated variability of one anatomy (None: preset values):
# SD of the B-spline deformation in mm, in-plane rotation drawn from +- rotation_deg, isotropic scaling from
# 1 +- scale_jitter, SD of the log gamma of the intensity curve, SD of the smooth log bias field, and the Rician
# noise SD relative to bright brain tissue.
deformation_mm = None
rotation_deg = None
scale_jitter = None
contrast_jitter = None
bias_field = None
noise = None
# Subject-wise split fractions [train, val, test] (None: preset value).
split_fractions = None
# Seed of everything random in this notebook (None: preset value, 0).
seed = None
# Run folder for this notebook's outputs (None: runs/<preset>/01_data in the checkout).
out_dir = None

# %%
config = resolve_from("data", preset, globals())
out_dir = Path(out_dir) if out_dir is not None else default_out_dir(preset, "01_data")
out_dir.mkdir(parents=True, exist_ok=True)
dataset_dir = out_dir / "dataset"
pd.Series({key: str(value) for key, value in config.items()}, name="value").to_frame()

# %% [markdown]
# ## Pseudo-subjects: one anatomy, simulated variability
#
# The same axial level of the template and of four pseudo-subjects. Differences in shape, brightness, shading
# and noise are what the deformation, intensity curve, bias field and noise produce; the anatomy underneath is
# always the template's. (With real volumes as the source, this figure shows the template alone for reference.)

# %%
size = int(config["image_size"])
template = template_anatomy(size, float(config["min_brain_fraction"]))
level = template.band[len(template.band) // 2]
variability = variability_from_config(config)
shown = [sample_slices(template, [level], size)[0][0]]
pseudo_seeds = np.random.SeedSequence(int(config["seed"])).spawn(4)
if config["volume_source"] == "mni152":
    shown += [sample_slices(template, [level], size, np.random.default_rng(s), variability)[0][0]
              for s in pseudo_seeds]
titles = ["template", *[f"pseudo-subject {i + 1}" for i in range(len(shown) - 1)]]
fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 3.0), squeeze=False)
for ax, image, title in zip(axes[0], shown, titles, strict=True):
    im = ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="intensity (brain-scaled)")
fig.suptitle(f"Axial level z = {level_to_mm(level, template.affine):.0f} mm (MNI), {size}² pixels")
fig.savefig(out_dir / "pseudo_subjects.png", dpi=120)

# %% [markdown]
# ## The two lesion shapes
#
# Each lesion is drawn from an equivalent radius `r` (area π r²), an aspect ratio and an orientation; irregular
# lesions add smooth random lobes to the boundary and are rescaled to the same expected area. *Solidity* (area
# over convex-hull area) is 1 for convex shapes and drops with dents, so it separates the two shapes; it is a
# check on the generators, not a feature the classifier is given. Contours mark the mask binarised at 0.5.

# %%
params = lesion_params_from_config(config)
rng = np.random.default_rng(int(config["seed"]))
fig, axes = plt.subplots(2, 5, figsize=(11, 5.4))
for row, shape in enumerate(SHAPES):
    for column, ax in enumerate(axes[row]):
        lesion = sample_lesion(shape, params, rng)
        half, mask = local_mask(lesion, params.edge_softness)
        extent = [-half - 0.5, half + 0.5, half + 0.5, -half - 0.5]
        im = ax.imshow(mask, cmap="magma", vmin=0, vmax=1, extent=extent)
        ax.contour(np.arange(-half, half + 1), np.arange(-half, half + 1), mask, levels=[0.5], colors="cyan",
                   linewidths=0.8)
        ax.set_title(f"{shape}, r = {lesion.radius:.1f} px\nsolidity {solidity(mask >= 0.5):.2f}",
                     fontsize=8)
        ax.set_xlabel("column offset (pixels)", fontsize=7)
        if column == 0:
            ax.set_ylabel("row offset (pixels)", fontsize=7)
        ax.tick_params(labelsize=6)
fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7, label="soft mask value")
fig.savefig(out_dir / "lesion_shapes.png", dpi=120)

# %% [markdown]
# ## Lesion appearance
#
# One slice with irregular lesions drawn hyper-intense, iso-intense (texture only), hypo-intense, and with this run's
# appearance (the lesions are placed anew in each panel). A lesion adds `(contrast + texture) × soft mask` to the
# slice, in units of the slice's brain intensity range, and no lesion pixel is made negative (a magnitude image has
# none). One grey scale for all panels.

# %%
appearance_rng = np.random.default_rng(int(config["seed"]) + 1)
appearance_slice = shown[0]
appearance_brain = sample_slices(template, [level], size)[1][0]
appearances = [("hyper-intense", (0.5, 0.5), 0.0), ("iso-intense, texture 0.15", (0.0, 0.0), 0.15),
               ("hypo-intense", (-0.5, -0.5), 0.0),
               (f"this run: contrast {tuple(params.contrast_range)}, texture {params.texture:g}",
                params.contrast_range, params.texture)]
fig, axes = plt.subplots(1, len(appearances), figsize=(2.8 * len(appearances), 3.1), layout="constrained")
for ax, (title, contrast, texture) in zip(axes, appearances, strict=True):
    look = replace(params, contrast_range=tuple(contrast), texture=texture, n_lesions=(2, 2))
    placed, _ = place_lesions(appearance_brain, ["irregular", "irregular"], look, appearance_rng)
    drawn, drawn_mask = draw_lesions(appearance_slice, placed, look.edge_softness)
    im = ax.imshow(drawn, cmap="gray", vmin=0, vmax=1.3)
    ax.contour(drawn_mask, levels=[0.5], colors="red", linewidths=0.6)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label="intensity (brain-scaled)")
fig.suptitle("Lesion appearance (red: mask binarised at 0.5)")
fig.savefig(out_dir / "lesion_appearance.png", dpi=120)

# %% [markdown]
# ## Generating the dataset
#
# `xaiutils.domain.synth.dataset.make_benchmark` draws the slices, places the lesions (inside the brain mask, not
# overlapping,
# every pixel of a lesion's soft edge included), splits the subjects into train/validation/test with balanced
# classes, and writes everything atomically into one folder: NIfTI stacks for neuroimaging viewers, a NumPy
# array cache for training, a metadata table with one row per image, a per-lesion table, and a dataset card with
# the parameters, seed, software versions and a content hash. The same parameters and seed give the same hash.

# %%
started = time.perf_counter()
make_benchmark(dataset_dir, preset, overwrite=True, **config)
seconds = time.perf_counter() - started
bench = load_benchmark(dataset_dir, verify=True)
images, masks, labels, metadata, card = bench
print(f"{len(bench)} images of {size}² pixels from {card['n_subjects']} subjects in {seconds:.1f} s "
      f"({len(bench) / seconds:.0f} images/s, files included)")
print(f"content hash: {card['content_hash']}")
print(f"volume source: {card['source']['name']} ({card['source']['note']})")
glue("n_images", len(bench))
glue("n_subjects", card["n_subjects"])
glue("image_size", size)
glue("content_hash", card["content_hash"][:12])

# %% [markdown]
# ## Examples per class
#
# Red contours: lesion masks binarised at 0.5; cyan: the brain mask. Each row is one class.

# %%
class_names = card["class_names"]
n_cols = 6
fig, axes = plt.subplots(2, n_cols, figsize=(2.2 * n_cols, 5.0), squeeze=False)
pick = np.random.default_rng(int(config["seed"]))
for label, name in enumerate(class_names):
    rows = np.flatnonzero(labels == label)
    for ax, index in zip(axes[label], np.sort(pick.choice(rows, min(n_cols, len(rows)), replace=False)),
                         strict=False):
        im = ax.imshow(images[index], cmap="gray", vmin=0, vmax=max(1.0, float(np.percentile(images, 99.9))))
        ax.contour(bench.brain_masks[index], levels=[0.5], colors="tab:cyan", linewidths=0.5)
        if masks[index].max() >= 0.5:
            ax.contour(masks[index], levels=[0.5], colors="red", linewidths=0.8)
        meta = metadata.iloc[index]
        ax.set_title(f"{name}\n{meta['subject']}, z = {meta['z_mm']:.0f} mm", fontsize=8)
        ax.set_axis_off()
fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7, label="intensity (brain-scaled)")
fig.savefig(out_dir / "examples.png", dpi=120)

# %% [markdown]
# ## Is the image an explanation by itself?
#
# Before any model is trained, model-free maps are scored against the test split's masks: the image itself
# (`input`), its edges (`sobel`, `laplace`), noise (`random`) and, as the ceiling, the mask itself. If the image alone
# found the lesions, a benchmark could not tell an explanation of the model from a copy of the image. **The criterion
# of the default data, fixed before any method was scored:** the `input` map wins the pointing game on at most 30 % of
# the images and has a ROC-AUC of at most 0.75. Edge maps keep some skill, since a visible lesion has edges; later
# notebooks report every method next to them.

# %%
test_rows = bench.indices("test")
controls_table = oracle_table(images[test_rows], masks[test_rows], seed=int(config["seed"]))
exceeded = image_is_oracle(controls_table)
criterion = " and ".join(f"{metric} ≤ {limit:g}" for metric, limit in IMAGE_NOT_ORACLE.items())
verdict = ("meets" if not any(exceeded.values()) else "does NOT meet")
print(f"{len(test_rows)} test images. The input map {verdict} the criterion ({criterion}): pointing game "
      f"{controls_table.loc['input', 'pointing_game']:.3f}, ROC-AUC {controls_table.loc['input', 'roc_auc']:.3f}")
glue("input_pointing_game", float(controls_table.loc["input", "pointing_game"]))
glue("input_roc_auc", float(controls_table.loc["input", "roc_auc"]))
glue("image_criterion", verdict)
glue("best_edge_auc", float(controls_table.loc[["sobel", "laplace"], "roc_auc"].max()))
write_atomic(out_dir / "control_maps.csv", controls_table.to_csv())
controls_table.rename(index={ORACLE: "mask (oracle, the ceiling)"}).rename(columns={
    "pointing_game": "pointing game", "roc_auc": "ROC-AUC", "importance_mass_accuracy": "mass in lesions (IMA)"
}).round(3)

# %% [markdown]
# ## Lesion properties per class
#
# The classes should differ in lesion *shape* only. Lesion area (per image, all lesions together) and contrast
# follow the same distributions in both classes, while solidity separates them. With the `presence` task only the
# class with lesions appears here.

# %%
with_lesions = metadata[metadata["n_lesions"] > 0]
properties = [("lesion_area_mm2", "lesion area per image (mm²)"), ("contrast", "mean lesion contrast (a.u.)"),
              ("solidity", "mean lesion solidity")]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for ax, (column, label) in zip(axes, properties, strict=True):
    bins = np.linspace(with_lesions[column].min(), with_lesions[column].max(), 25)
    for name in class_names:
        group = with_lesions[with_lesions["class_name"] == name]
        if len(group):
            ax.hist(group[column], bins=bins, alpha=0.6, label=name)
    ax.set(xlabel=label, ylabel="images")
    ax.legend(fontsize=8)
fig.suptitle("Lesion properties per class")
fig.tight_layout()
fig.savefig(out_dir / "lesion_properties.png", dpi=120)
with_lesions.groupby("class_name")[["n_lesions", "lesion_area_px", "lesion_area_mm2", "contrast", "solidity"]].agg(
    ["mean", "std"]).round(3)

# %% [markdown]
# ## Splits
#
# Subjects, not slices, are split, so no subject's anatomy appears in two splits; within each split the classes
# are balanced.

# %%
counts = (metadata.groupby(["split", "class_name"]).size().unstack("class_name")
          .reindex(index=list(SPLITS), columns=class_names).fillna(0).astype(int))
subjects = metadata.groupby("split")["subject"].nunique().reindex(list(SPLITS))
fig, ax = plt.subplots(figsize=(6, 3.4))
counts.plot.bar(ax=ax, rot=0)
for position, split in enumerate(SPLITS):
    ax.annotate(f"{subjects[split]} subjects", (position, counts.loc[split].max()), ha="center",
                va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
ax.set(xlabel="split", ylabel="images", title="Images per split and class")
ax.legend(title="class")
ax.set_ylim(0, counts.to_numpy().max() * 1.15)
fig.tight_layout()
fig.savefig(out_dir / "splits.png", dpi=120)
assert metadata.groupby("subject")["split"].nunique().max() == 1, "a subject appears in two splits"
counts.assign(subjects=subjects)

# %% [markdown]
# The metadata table has one row per image; later notebooks join scores to it by the `image` column.

# %%
metadata.head()

# %%
summary = {"preset": preset, "dataset": "dataset", "seconds": round(seconds, 2),
           "content_hash": card["content_hash"], "n_images": len(bench), "counts": card["counts"]}
write_atomic(out_dir / "data_summary.json", json.dumps(summary, indent=2) + "\n")

# %% [markdown]
# ## Summary
#
# - This run made {glue:text}`n_images` images of {glue:text}`image_size` pixels a side from
#   {glue:text}`n_subjects` subjects; its content hash begins with {glue:text}`content_hash`.
# - The dataset folder `dataset/` in this run folder holds the images, soft lesion masks (binarise at 0.5),
#   brain masks, labels and metadata; its card records the parameters, seed, versions and content hash. Later
#   notebooks read it from `runs/<preset>/01_data/dataset`.
# - With the default source the subjects are pseudo-subjects: simulated variability of one template anatomy,
#   not real people. Real volumes can replace them through the `volume_source` parameter.
# - Lesions are hypo-intense by default, and the image is not an oracle: the `input` map's pointing game is
#   {glue:text}`input_pointing_game:.2f` and its ROC-AUC {glue:text}`input_roc_auc:.2f` on the test split, so this
#   run {glue:text}`image_criterion` the criterion (≤ 0.3 and ≤ 0.75). Edge maps reach a ROC-AUC of
#   {glue:text}`best_edge_auc:.2f`: methods are judged against them in notebook 4.
# - The classes differ in lesion shape only; size and contrast distributions match, and a simple shape statistic
#   (solidity) separates them, so the task is learnable from the lesion pixels alone.
# - Sizes, lesion parameters and pseudo-subject variability are our choices, not the reference study's.
