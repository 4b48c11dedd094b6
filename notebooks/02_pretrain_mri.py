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
# # 2. MRI-domain pre-training
#
# ## Overview
#
# One of the three pre-training sources compared in this benchmark is *in-domain*: a network first trained on an
# MRI task, whose leading blocks are then transferred to the lesion task (notebook 3). This notebook trains that
# network. Its task needs no annotation: from a lesion-free axial slice, predict **which band of axial levels**
# it comes from (the band of notebook 0 cut into equal parts). Solving it requires learning brain anatomy, which
# is what the transferred blocks should carry.
#
# The slices come from pseudo-subjects drawn from their own seed stream, so none of them is a subject of the
# benchmark dataset (notebook 1). Like the benchmark's, they are the MNI152 template under simulated
# inter-subject variability. The reference study pre-trained on a different, real MRI task; this task and its
# size are our choices.
#
# ## Prerequisites
#
# | Concept | Importance |
# | --- | --- |
# | [Notebook 0](00_overview) (the axial band) | helpful |
# | Training a CNN classifier with PyTorch | helpful |
#
# ## Time to run
#
# About a minute on 2 CPU cores at the `smoke` preset; the `study` preset (VGG-16) needs a GPU. The measured time
# of the latest build is in {doc}`../book/reproducing`.

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from xaiutils import models, presets, pretrain, runs, train
from xaiutils.book import glue

# %% tags=["parameters"]
# Parameter set: "smoke" (CPU, minutes) or "study" (the reference study's scale, GPU).
preset = "smoke"
# Backbone and width multiplier; must match the fine-tuning backbone of notebook 3 (None: preset value).
backbone = None
width = None
# Pre-training task: "level_band" (axial level band of the slice).
task = None
# Number of level bands (classes).
n_bands = None
# Pseudo-subjects and slices per subject (a multiple of n_bands); image side in pixels.
n_subjects = None
slices_per_subject = None
image_size = None
# Optimisation: epochs (upper bound; early stopping on validation loss), learning rate, batch size, patience.
epochs = None
lr = None
batch_size = None
patience = None
# Seed for the pseudo-subjects, the initialisation, the data order and dropout.
seed = None
# Run folder (None: runs/<preset>/02_pretrain_mri in the checkout).
out_dir = None

# %%
config = presets.resolve(
    "pretrain", preset, backbone=backbone, width=width, task=task, n_bands=n_bands, n_subjects=n_subjects,
    slices_per_subject=slices_per_subject, image_size=image_size, epochs=epochs, lr=lr, batch_size=batch_size,
    patience=patience, seed=seed,
)
out_dir = Path(out_dir) if out_dir is not None else runs.default_out_dir(preset, "02_pretrain_mri")
out_dir.mkdir(parents=True, exist_ok=True)
pd.Series(config, name="value").to_frame()

# %% [markdown]
# ## Lesion-free slices labelled by level band

# %%
images, labels, slices = pretrain.level_band_dataset(
    config["n_subjects"], config["slices_per_subject"], config["image_size"], n_bands=config["n_bands"],
    seed=config["seed"], task=config["task"],
)
band_edges = slices.groupby("band")["z_mm"].agg(["min", "max"])
train_rows = np.flatnonzero(slices["split"] == "train")
val_rows = np.flatnonzero(slices["split"] == "val")
print(f"{len(images)} slices from {slices['subject'].nunique()} pseudo-subjects: "
      f"{len(train_rows)} train, {len(val_rows)} validation")
band_edges.rename(columns={"min": "lowest z (mm)", "max": "highest z (mm)"})

# %%
fig, axes = plt.subplots(2, config["n_bands"], figsize=(2.4 * config["n_bands"], 5.6), layout="constrained")
for band in range(config["n_bands"]):
    examples = np.flatnonzero(labels == band)[:2]
    for row, index in enumerate(examples):
        ax = axes[row, band]
        ax.imshow(images[index], cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(f"band {band}, z = {slices['z_mm'].iloc[index]:.0f} mm", fontsize=9)
fig.suptitle("Pre-training task: which axial level band does a slice come from? (intensities scaled to [0, 1])")
fig.savefig(out_dir / "level_bands.png", dpi=120)

# %% [markdown]
# ## Training from random initialisation

# %%
model = models.build_model(config["backbone"], n_classes=config["n_bands"], width=config["width"],
                           seed=config["seed"])
history = train.fit(
    model, (images[train_rows], labels[train_rows]), (images[val_rows], labels[val_rows]),
    epochs=config["epochs"], lr=config["lr"], batch_size=config["batch_size"], patience=config["patience"],
    seed=config["seed"],
)
probabilities = train.predict_proba(model, images[val_rows])
val_metrics = train.classification_metrics(labels[val_rows], probabilities)
print(f"best epoch {history['best_epoch']} of {len(history['epochs'])}, {history['seconds']:.0f} s on "
      f"{history['device']}; validation accuracy {val_metrics['accuracy']:.3f} "
      f"(chance {1 / config['n_bands']:.3f})")

# %%
curves = pd.DataFrame(history["epochs"])
predicted = probabilities.argmax(axis=1)
confusion = np.zeros((config["n_bands"], config["n_bands"]), int)
np.add.at(confusion, (labels[val_rows], predicted), 1)
fig, (ax_loss, ax_acc, ax_conf) = plt.subplots(1, 3, figsize=(13, 3.8))
ax_loss.plot(curves["epoch"], curves["train_loss"], marker="o", label="train")
ax_loss.plot(curves["epoch"], curves["val_loss"], marker="o", label="validation")
ax_loss.axvline(history["best_epoch"], color="grey", ls=":", label="best epoch (kept)")
ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
ax_loss.legend(fontsize=8)
ax_acc.plot(curves["epoch"], curves["train_accuracy"], marker="o", label="train")
ax_acc.plot(curves["epoch"], curves["val_accuracy"], marker="o", label="validation")
ax_acc.axhline(1 / config["n_bands"], color="grey", ls="--", label="chance")
ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="Accuracy")
ax_acc.legend(fontsize=8)
shown = ax_conf.imshow(confusion, cmap="Blues")
ax_conf.set(xlabel="predicted band", ylabel="true band", title="Validation confusion matrix",
            xticks=range(config["n_bands"]), yticks=range(config["n_bands"]))
for (row, col), count in np.ndenumerate(confusion):
    ax_conf.text(col, row, str(count), ha="center", va="center", fontsize=8)
fig.colorbar(shown, ax=ax_conf, label="slices")
fig.tight_layout()

# %% [markdown]
# ## The checkpoint: the `mri` pre-training source
#
# The weights are saved alone (`model.pt`, loadable with `torch.load(..., weights_only=True)`), next to a JSON
# sidecar with the configuration, the learning curves and the validation metrics. Notebook 3 reads them as the
# `mri` source.

# %%
model_config = {**config, "model": models.model_name(config["backbone"], config["width"]),
                "n_classes": config["n_bands"], "preset": preset}
train.write_run(out_dir, model, model_config, history, {"val": val_metrics})
print(json.dumps({"checkpoint": "model.pt", **val_metrics}, indent=1))
glue("val_accuracy", val_metrics["accuracy"])
glue("chance_accuracy", 1 / config["n_bands"])
glue("n_bands", config["n_bands"])

# %% [markdown]
# ## Summary
#
# - A network of the fine-tuning backbone was trained from scratch to tell apart axial level bands of
#   lesion-free slices. It reached a validation accuracy of {glue:text}`val_accuracy:.2f` on
#   {glue:text}`n_bands` bands, where chance is {glue:text}`chance_accuracy:.2f`.
# - Its weights, in the run folder as `model.pt`, are the `mri` pre-training source of notebook 3.
# - Choices that are ours, not the reference study's: the level-band task, the pseudo-subjects of one template
#   anatomy, the number of slices, and the training settings in the configuration table above.
#
# **Next:** notebook 3 fine-tunes on the lesion task after ImageNet, MRI or no pre-training.
