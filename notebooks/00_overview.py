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
# # 0. The anatomy behind the benchmark
#
# ## Overview
#
# Every image in this benchmark is an axial slice of a T1-weighted brain MRI into which synthetic lesions are
# drawn later (notebook 1). By default the anatomy comes from the **MNI152 2009 T1 template** that `nilearn`
# ships inside its package, so the whole book runs offline, on Binder and on Colab. This notebook loads that
# template and its brain mask, shows which band of axial levels the benchmark draws its slices from, and records
# the software versions of the run.
#
# ## Prerequisites
#
# | Concept | Importance |
# | --- | --- |
# | MRI volumes as 3-D arrays with an affine to millimetres (RAS+) | helpful |
# | `nibabel` / `nilearn` images | helpful |
#
# ## Time to run
#
# A few seconds on a laptop CPU; no GPU, no download.

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from xaiutils.domain.mri.anatomy import axial_band, brain_area_per_level, level_to_mm
from xaiutils.domain.mri.brain import load_mni152
from xaiutils.execution.paths import default_out_dir
from xaiutils.foundation.config import resolve_from
from xaiutils.foundation.files import write_atomic
from xaiutils.foundation.versions import versions

# %% tags=["parameters"]
# Parameter set: "book" (the default book, 2 CPU cores), "smoke" (the tests) or "study" (the study's scale, GPU).
preset = "book"
# Keep axial slices whose brain area is at least this fraction of the largest slice's (None: preset value).
min_brain_fraction = None
# How many slices of the band to draw in the gallery (None: preset value).
n_slices_shown = None
# Run folder for this notebook's outputs (None: runs/<preset>/00_overview in the checkout).
out_dir = None

# %%
config = resolve_from("overview", preset, globals())
out_dir = Path(out_dir) if out_dir is not None else default_out_dir(preset, "00_overview")
out_dir.mkdir(parents=True, exist_ok=True)
config

# %% [markdown]
# ## The template and its brain mask
#
# The template is one average anatomy at 1 mm isotropic resolution. Its brain mask tells where lesions may be
# placed and which slices contain enough brain to be useful.

# %%
t1, brain_mask, affine = load_mni152(resolution=1)
band = axial_band(brain_mask, config["min_brain_fraction"])
band_mm = level_to_mm(band, affine)
area_cm2 = brain_area_per_level(brain_mask) * abs(affine[0, 0] * affine[1, 1]) / 100.0
all_mm = level_to_mm(np.arange(brain_mask.shape[2]), affine)
print(f"template shape {t1.shape} voxels, voxel size {abs(affine[0, 0]):.0f} mm")
print(f"axial band: {len(band)} levels, z = {band_mm[0]:.0f} … {band_mm[-1]:.0f} mm (MNI)")

# %%
fig, (ax_area, ax_sag) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
ax_area.plot(all_mm, area_cm2, color="black")
ax_area.axvspan(band_mm[0], band_mm[-1], color="tab:orange", alpha=0.3, label="slice band used")
ax_area.axhline(config["min_brain_fraction"] * area_cm2.max(), color="tab:orange", ls="--", lw=1,
                label=f"{config['min_brain_fraction']:.0%} of the largest area")
ax_area.set(xlabel="axial level z (mm, MNI)", ylabel="brain area in slice (cm²)",
            title="Brain area per axial level")
ax_area.legend(loc="upper left", fontsize=8)

mid_x = t1.shape[0] // 2
extent = [affine[1, 3], affine[1, 3] + t1.shape[1] * affine[1, 1], affine[2, 3], affine[2, 3] + t1.shape[2]]
ax_sag.imshow(t1[mid_x].T, cmap="gray", origin="lower", extent=extent)
for z in (band_mm[0], band_mm[-1]):
    ax_sag.axhline(z, color="tab:orange", lw=1.5)
ax_sag.set(xlabel="y (mm, posterior → anterior)", ylabel="z (mm, inferior → superior)",
           title="Mid-sagittal slice with the band's limits")
fig.tight_layout()
fig.savefig(out_dir / "axial_band.png", dpi=120)

# %% [markdown]
# ## Slices from the band, with the brain mask outlined
#
# These are the kinds of images the classifiers will see, before resampling and before lesions are drawn.
# Intensities share one grey scale across panels.

# %%
shown = band[np.linspace(0, len(band) - 1, config["n_slices_shown"]).round().astype(int)]
n_cols = 4
n_rows = int(np.ceil(len(shown) / n_cols))
fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 3.0 * n_rows), squeeze=False)
vmax = np.percentile(t1[brain_mask], 99.5)
for ax, level in zip(axes.flat, shown, strict=False):
    image = ax.imshow(t1[:, :, level].T, cmap="gray", origin="lower", vmin=0, vmax=vmax)
    ax.contour(brain_mask[:, :, level].T, levels=[0.5], colors="tab:cyan", linewidths=0.8)
    ax.set_title(f"z = {level_to_mm(level, affine):.0f} mm", fontsize=9)
    ax.set_axis_off()
for ax in axes.flat[len(shown):]:
    ax.set_axis_off()
fig.colorbar(image, ax=axes, shrink=0.6, label="T1 intensity (template units)")
fig.suptitle("Axial slices of the MNI152 template; cyan: brain mask")
fig.savefig(out_dir / "band_slices.png", dpi=120)

# %% [markdown]
# ## Software versions
#
# Every run folder records the versions it ran with, so a number can be traced to the code that produced it.

# %%
software = versions()
pd.Series(software, name="version").to_frame()

# %%
summary = {
    "preset": preset,
    **config,
    "band_levels": [int(band[0]), int(band[-1])],
    "band_mm": [float(band_mm[0]), float(band_mm[-1])],
    "n_band_levels": int(len(band)),
    "versions": software,
}
write_atomic(out_dir / "overview.json", json.dumps(summary, indent=2) + "\n")

# %% [markdown]
# ## Summary
#
# - The default anatomy is the MNI152 2009 T1 template shipped with `nilearn`: a single anatomy. Notebook 1
#   simulates inter-subject variability from it (random smooth deformations, intensity and bias-field changes,
#   noise); this is our choice, not the reference study's data, which used real subjects' scans.
# - Slices come from the band of axial levels printed above, where each slice holds at least the chosen
#   fraction of the largest slice's brain area.
# - The versions table and `overview.json` in the run folder record what this run used.
#
# **Next:** notebook 1 turns these slices into the benchmark dataset with lesions and ground-truth masks.
