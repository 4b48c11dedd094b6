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
# # 2. MRI-domain pre-training: three in-domain tasks, one chosen by a criterion fixed in advance
#
# ## Overview
#
# One of the three pre-training sources compared in this benchmark is *in-domain*: a network first trained on an
# MRI task, whose leading blocks are then transferred to the lesion task (notebook 3). Which MRI task is a choice,
# and a poor one would make the MRI arm a strawman. This notebook trains the backbone on three lesion-free tasks,
# each with the same slices, epochs and optimiser:
#
# - **level band** (classification): from an axial slice, predict which band of axial levels it comes from. The
#   labels come free from geometry; solving it needs coarse anatomy.
# - **tissue segmentation** (dense): label every pixel background, CSF, grey or white matter. The targets are the
#   tissue probability maps that nilearn ships with the MNI152 template, warped with each pseudo-subject exactly
#   as its T1 slice is (CSF is the brain mask's share not claimed by grey or white matter). Needs local tissue
#   contrast and boundaries.
# - **restoration** (dense, self-supervised, in the style of Models Genesis {cite}`zhou2021models`): restore a
#   slice from a corrupted copy (a random monotone intensity curve, local pixel shuffling, boxes of noise). Needs
#   local texture and shape.
#
# Dense tasks put a light fully convolutional head on the backbone (a 1×1 convolution on each block's output,
# upsampled and summed), so that every block is trained; only the blocks are transferred. The restoration head
# adds the corrupted input to its output (it predicts the correction): the coarse block outputs alone cannot
# carry a slice's fine detail, and without it the network restored worse than doing nothing.
#
# **The criterion, fixed before any result was seen.** The default `mri` source is the task whose transferred
# blocks give the highest *validation* accuracy on the lesion task in a `transfer` run with k = 3 pre-trained,
# frozen blocks (the middle of the grid's k axis), with the fine-tuning settings of notebook 3 and the seeds in
# `selection_seeds` (mean over seeds; a tie goes to the task listed first). The test split is never used here.
#
# The slices come from pseudo-subjects drawn from their own seed stream, so none of them is a subject of the
# benchmark dataset (notebook 1). The reference study pre-trained on a different, real MRI task; these tasks,
# their size and the selection rule are our choices.
#
# ## Prerequisites
#
# | Concept | Importance |
# | --- | --- |
# | [Notebook 0](00_overview) (the axial band), [notebook 1](01_data) (the lesion dataset) | helpful |
# | Training a CNN with PyTorch; transfer learning | helpful |
#
# ## Time to run
#
# A few minutes on 2 CPU cores at the default `book` preset; the `study` preset (VGG-16) needs a GPU. The
# measured time of the latest build is in {doc}`../book/reproducing`.

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from xaiutils.analysis import task_selection
from xaiutils.book import glue
from xaiutils.domain import models, pretrain
from xaiutils.execution.paths import default_out_dir
from xaiutils.foundation.config import resolve, resolve_from
from xaiutils.foundation.files import write_atomic

# %% tags=["parameters"]
# Parameter set: "book" (the default book, 2 CPU cores), "smoke" (the tests) or "study" (the study's scale, GPU).
preset = "book"
# Backbone and width multiplier; must match the fine-tuning backbone of notebook 3 (None: preset value).
backbone = None
width = None
# Pre-training task of the `mri` source: "level_band", "tissue_segmentation", "restoration", or "auto": train
# every task in `candidate_tasks` and keep the one chosen by the criterion above (None: preset value).
task = None
candidate_tasks = None
# Number of level bands (classes of the level-band task).
n_bands = None
# Pseudo-subjects and slices per subject (a multiple of n_bands); image side in pixels.
n_subjects = None
slices_per_subject = None
image_size = None
# Optimisation: epochs (upper bound; early stopping on validation loss), learning rate, batch size, patience,
# learning-rate schedule ("constant" or "onecycle").
epochs = None
lr = None
batch_size = None
patience = None
lr_schedule = None
# Seed for the pseudo-subjects, the initialisation, the data order and dropout.
seed = None
# Selection: k of the transfer runs and their seeds.
selection_k = None
selection_seeds = None
# Pre-training and transfer runs done at once, each in its own process with cpu_count // workers threads.
workers = None
# The lesion dataset of notebook 1 (train and validation splits only) (None: the preset's run folder).
data_dir = None
# Run folder (None: runs/<preset>/02_pretrain_mri in the checkout).
out_dir = None

# %%
config = resolve_from("pretrain", preset, globals())
tasks = list(config["candidate_tasks"]) if config["task"] == "auto" else [config["task"]]
for name in tasks:
    models.check_choice("pre-training task", name, pretrain.PRETRAIN_TASKS)
finetune_config = resolve("finetune", preset)
data_dir = Path(data_dir) if data_dir is not None else default_out_dir(preset, "01_data") / "dataset"
out_dir = Path(out_dir) if out_dir is not None else default_out_dir(preset, "02_pretrain_mri")
out_dir.mkdir(parents=True, exist_ok=True)
pd.Series({**config, "tasks trained": tasks}, name="value").to_frame()

# %% [markdown]
# ## Lesion-free slices and the three tasks
#
# One set of slices serves every task, so that the tasks differ only in what they ask of the network.

# %%
slices = pretrain.pretrain_slices(
    config["n_subjects"], config["slices_per_subject"], config["image_size"], n_bands=config["n_bands"],
    seed=config["seed"], tissues="tissue_segmentation" in tasks,
)
table = slices["metadata"]
train_rows = np.flatnonzero(table["split"] == "train")
val_rows = np.flatnonzero(table["split"] == "val")
task_data = {name: pretrain.task_arrays(name, slices, config["seed"]) for name in tasks}
print(f"{len(table)} slices from {table['subject'].nunique()} pseudo-subjects: "
      f"{len(train_rows)} train, {len(val_rows)} validation")

# %%
examples = [int(val_rows[i]) for i in np.linspace(0, len(val_rows) - 1, 3).astype(int)]
fig, axes = plt.subplots(len(examples), 1 + 2 * len(tasks), figsize=(2.1 * (1 + 2 * len(tasks)), 2.3 * len(examples)),
                         layout="constrained", squeeze=False)
tissue_colours = plt.get_cmap("viridis", len(pretrain.TISSUE_CLASSES))
for row, index in enumerate(examples):
    axes[row, 0].imshow(slices["images"][index], cmap="gray", vmin=0, vmax=1)
    axes[row, 0].set_title(f"slice, z = {table['z_mm'].iloc[index]:.0f} mm", fontsize=8)
    for column, name in enumerate(tasks):
        inputs, targets = task_data[name]
        ax_in, ax_out = axes[row, 1 + 2 * column], axes[row, 2 + 2 * column]
        ax_in.imshow(inputs[index], cmap="gray", vmin=0, vmax=1)
        ax_in.set_title(f"{name}: input", fontsize=8)
        if name == "level_band":
            ax_out.text(0.5, 0.5, f"band {targets[index]}\nof {config['n_bands']}", ha="center", va="center",
                        fontsize=11)
        elif name == "tissue_segmentation":
            shown = ax_out.imshow(targets[index], cmap=tissue_colours, vmin=-0.5,
                                  vmax=len(pretrain.TISSUE_CLASSES) - 0.5)
        else:
            ax_out.imshow(targets[index], cmap="gray", vmin=0, vmax=1)
        ax_out.set_title(f"{name}: target", fontsize=8)
for ax in axes.ravel():
    ax.set_axis_off()
if "tissue_segmentation" in tasks:
    bar = fig.colorbar(shown, ax=axes[:, -1], ticks=range(len(pretrain.TISSUE_CLASSES)), shrink=0.6)
    bar.ax.set_yticklabels([name.replace("_", " ") for name in pretrain.TISSUE_CLASSES], fontsize=8)
fig.suptitle("Pre-training tasks on lesion-free slices (grey intensities scaled to [0, 1])")
fig.savefig(out_dir / "pretraining_tasks.png", dpi=120)

# %% [markdown]
# ## Pre-training each task from random initialisation
#
# Same slices, epochs, learning rate, schedule and batch size for every task; early stopping on each task's own
# validation loss. After training, the BatchNorm statistics are re-estimated exactly over the training slices:
# after a short schedule at a high learning rate they lag the final weights, and the transferred blocks run
# frozen, in eval mode, with those statistics.

# %%
histories, task_metrics, selection_rows = task_selection.train_and_select(
    tasks, task_data, train_rows, val_rows, config, finetune_config, out_dir, data_dir, preset,
    workers=config["workers"],
)
for name in tasks:
    history, metric = histories[name], task_metrics[name]
    print(f"{name}: best epoch {history['best_epoch']} of {len(history['epochs'])}, {history['seconds']:.0f} s; "
          f"{metric['metric']} {metric['value']:.3f}")

# %%
fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
for ax, name in zip(axes[0], tasks, strict=True):
    curves = pd.DataFrame(histories[name]["epochs"])
    ax.plot(curves["epoch"], curves["train_loss"], marker="o", label="train")
    ax.plot(curves["epoch"], curves["val_loss"], marker="o", label="validation")
    ax.axvline(histories[name]["best_epoch"], color="grey", ls=":", label="best epoch (kept)")
    loss_name = "mean squared error" if name == "restoration" else "cross-entropy"
    ax.set(xlabel="epoch", ylabel=f"{loss_name} loss", title=name.replace("_", " "))
    ax.legend(fontsize=8)
fig.suptitle("Pre-training learning curves (each task's own loss)")
fig.tight_layout()

# %% [markdown]
# ## Choosing the `mri` source by the criterion stated above
#
# For each task, the first k = `selection_k` blocks were transferred, frozen, and the rest trained on the lesion
# task's *training* split exactly as a grid cell of notebook 3 would be (these transfer runs ran in the cell
# above, as soon as each task's checkpoint was written); the score is the accuracy on the *validation* split.

# %%
selection = pd.DataFrame(selection_rows)
ranking = selection.groupby("task", sort=False)["val_accuracy"].mean()
chosen = ranking.idxmax() if config["task"] == "auto" else config["task"]  # idxmax: the first task on a tie
comparison = pd.DataFrame({
    "pre-training metric": [task_metrics[name]["metric"] for name in ranking.index],
    "value": [task_metrics[name]["value"] for name in ranking.index],
    f"lesion val. accuracy, k = {config['selection_k']} (mean over seeds)": ranking.values,
}, index=ranking.index.rename("task"))
display(comparison.round(3))

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.4))
positions = np.arange(len(ranking))
ax.bar(positions, ranking.values, color=["tab:orange" if name == chosen else "tab:grey" for name in ranking.index])
for position, name in zip(positions, ranking.index, strict=True):
    values = selection.loc[selection["task"] == name, "val_accuracy"]
    ax.scatter(np.full(len(values), position), values, color="black", zorder=3, s=12)
ax.axhline(0.5, color="black", ls="--", lw=1, label="chance")
ax.set(xticks=positions, xticklabels=[name.replace("_", " ") for name in ranking.index], ylim=(0, 1.02),
       ylabel="lesion-task validation accuracy",
       title=f"Selection: transfer with k = {config['selection_k']} frozen blocks (orange: chosen)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out_dir / "task_selection.png", dpi=120)

# %% [markdown]
# ## The checkpoint: the `mri` pre-training source
#
# The chosen task's weights are copied to `model.pt` in the run folder (weights only, loadable with
# `torch.load(..., weights_only=True)`), next to `model.json` with its configuration, learning curves, metrics and
# the selection table. Notebook 3 reads them as the `mri` source; every task's own checkpoint stays under
# `tasks/<task>/`.

# %%
sidecar = json.loads((out_dir / "tasks" / chosen / "model.json").read_text())
sidecar["selection"] = {"criterion": f"mean validation accuracy of the lesion task, transfer with k = "
                                     f"{config['selection_k']}, seeds {list(config['selection_seeds'])}",
                        "chosen_task": chosen, "rows": selection_rows}
write_atomic(out_dir / "model.json", json.dumps(sidecar, indent=2, default=float) + "\n")
write_atomic(out_dir / "model.pt", (out_dir / "tasks" / chosen / "model.pt").read_bytes())
glue("chosen_task", chosen.replace("_", " "))
glue("chosen_val_accuracy", float(ranking[chosen]))
glue("n_tasks", len(tasks))
glue("selection_k", config["selection_k"])
glue("task_summary", "; ".join(f"{name.replace('_', ' ')} {value:.2f}" for name, value in ranking.items()))

# %% [markdown]
# ## Summary
#
# - The backbone was pre-trained on {glue:text}`n_tasks` lesion-free MRI task(s) with equal data, epochs and
#   optimiser. Transferred with k = {glue:text}`selection_k` frozen blocks, they gave these validation accuracies
#   on the lesion task: {glue:text}`task_summary`.
# - By the criterion fixed in advance, the `mri` source of this build is **{glue:text}`chosen_task`**
#   ({glue:text}`chosen_val_accuracy:.2f`). Its weights, `model.pt` in the run folder, are the `mri` source of
#   notebook 3.
# - Choices that are ours, not the reference study's: the three tasks, the pseudo-subjects of one template
#   anatomy, the number of slices, the training settings in the configuration table, and the selection rule.
#
# **Next:** notebook 3 fine-tunes on the lesion task after ImageNet, MRI or no pre-training.
