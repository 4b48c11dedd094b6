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
# # 2. MRI-domain pre-training: the in-domain arm, trained once and shipped with its card
#
# ## Overview
#
# One of the pre-training sources compared in this benchmark is *in-domain*: a network first trained on an MRI
# task, whose leading blocks are then transferred to the lesion task (notebook 3). A poor in-domain network would
# make the MRI arm a strawman, so this arm is built as the literature builds one: a pretext task that is
# demonstrably learned (it beats its trivial baseline on held-out slices), a real budget, several anatomies,
# and a choice between tasks by a rule stated in advance.
#
# - **Data.** Lesion-free axial slices of pseudo-subjects of two real anatomies available offline: the MNI152
#   template (an average of 152 adults, shipped with nilearn) and the Colin27 single-subject brain
#   {cite}`holmes1998colin27` with the AAL atlas {cite}`tzourio2002aal` (Debian's `mricron-data`). Every
#   pseudo-subject is a random deformation, intensity curve, bias field and noise of one of them, drawn from a seed
#   stream apart from the benchmark's, so no slice is one of the benchmark's and none holds a lesion.
# - **Three candidate tasks**, each with the trivial answer it must beat:
#   - *level band* (classification): which of four bands of axial levels a slice comes from; baseline: the most
#     frequent band.
#   - *SynthSeg-style segmentation* {cite}`billot2023synthseg`: label every pixel background, CSF, grey or white
#     matter on a *domain-randomised* image: each label of a finer map (the tissues, with grey matter split into
#     the 116 AAL regions) gets a random intensity and texture, then a random blur, bias field and noise. Intensity
#     says nothing about the tissue, so the features must come from shape and boundaries. Baseline: the most
#     frequent tissue.
#   - *restoration* (Models Genesis {cite}`zhou2021models`): restore a slice from a corrupted copy (a random
#     intensity curve, local pixel shuffling, boxes of noise). The network predicts a correction added to its
#     input and starts as the identity. Baseline: returning the corrupted input unchanged.
# - **Selection rule, stated before any result:** among the tasks that beat their baseline by `baseline_margin`
#   on validation slices, the one whose transferred blocks give the highest mean *validation* accuracy on the
#   lesion task in a `transfer` run with k = `selection_k` frozen blocks (notebook 3's fine-tuning settings, the
#   seeds in `selection_seeds`). A task that did not beat its baseline cannot be chosen. The test split is never
#   read.
#
# **Trained once, shipped.** The recipe (the `pretrain` settings of the preset) is in the repository; `python -m
# xaiutils pretrain-mri --preset book --ship` trains it (about an hour on 2 CPU cores) and writes the
# transferable blocks and a card (recipe, seeds, the corpus's hash, image-steps, wall time, hardware, curves,
# pretext metrics against their baselines, selection table, the weights' sha256) into `xaiutils/shipped/`. This
# notebook reads them, checks the weights against the card, and renders the card; it retrains only when asked
# (`retrain = True`) or when the preset's settings are not the shipped recipe's (the `smoke` preset's small
# recipe is trained here in seconds).
#
# The reference study pre-trained on real subjects; these pseudo-subjects of two anatomies, the tasks and the
# selection rule are our choices, and the budget is far below ImageNet's 1.28 million images (the table below
# gives ours).
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
# Seconds at the `book` preset (the shipped arm is read, not trained); about an hour on 2 CPU cores with
# `retrain = True`. The `study` preset (VGG-16 at 224²) trains the same recipe as a GPU job.

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from xaiutils.analysis import mri_arm
from xaiutils.book import glue
from xaiutils.domain import models, pretrain
from xaiutils.execution.paths import default_out_dir
from xaiutils.foundation.config import resolve_from
from xaiutils.foundation.files import write_atomic

# %% tags=["parameters"]
# Parameter set: "book" (the default book, 2 CPU cores), "smoke" (the tests) or "study" (the study's scale, GPU).
preset = "book"
# None: read the shipped arm when its card's recipe is this preset's settings, else train here; True: train here
# from the settings below; False: the shipped arm, or an error when its recipe differs.
retrain = None
# Backbone and width multiplier; must match the fine-tuning backbone of notebook 3 (None: preset value).
backbone = None
width = None
# Pre-training task of the `mri` source: "level_band", "tissue_segmentation", "synth_segmentation",
# "restoration", or "auto": train every task in `candidate_tasks` and keep the one chosen by the rule above (None:
# preset value).
task = None
candidate_tasks = None
# Real anatomies the pseudo-subjects come from: "mni152" (nilearn) and/or "colin27" (Debian's mricron-data, `make
# anatomy`) (None: preset value).
anatomies = None
# A task is chosen only if it beats its trivial baseline on validation slices by this margin: accuracy this much
# above the most frequent class, or an error at most (1 - margin) times that of returning the corrupted input
# (None: preset value).
baseline_margin = None
# Number of level bands (classes of the level-band task).
n_bands = None
# Pseudo-subjects per anatomy and slices per subject (a multiple of n_bands); image side in pixels.
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
if retrain not in (None, True, False):
    raise ValueError(f"retrain must be None, True or False, got {retrain!r}")
data_dir = Path(data_dir) if data_dir is not None else default_out_dir(preset, "01_data") / "dataset"
out_dir = Path(out_dir) if out_dir is not None else default_out_dir(preset, "02_pretrain_mri")
out_dir.mkdir(parents=True, exist_ok=True)
shipped = mri_arm.shipped_dir(config["backbone"], config["width"])
shipped_card = mri_arm.read_card(shipped) if (shipped / mri_arm.CARD_FILE).is_file() else None
differences = mri_arm.recipe_differences(shipped_card["recipe"], config) if shipped_card else ["no shipped arm"]
train_here = bool(retrain) or (retrain is None and bool(differences))
if retrain is False and differences:
    raise ValueError(f"retrain=False, but the shipped arm in {shipped} was not trained with these settings "
                     f"({'; '.join(differences)}); set retrain=True (or leave it None) to train them here")
print("training here from the settings below" if train_here
      else f"reading the shipped arm: xaiutils/shipped/{shipped.name}")
pd.Series({**config, "tasks": tasks}, name="value").to_frame()

# %% [markdown]
# ## Lesion-free slices of two anatomies, and the three tasks
#
# One corpus serves every task, so that the tasks differ only in what they ask of the network. Shown: slices of
# the first pseudo-subjects of each anatomy, drawn exactly as the corpus draws them, with each task's input and
# target.

# %%
examples = pretrain.pretrain_corpus(config["anatomies"], 1, config["slices_per_subject"], config["image_size"],
                                    n_bands=config["n_bands"], seed=config["seed"], progress=False)
example_data = {name: pretrain.task_arrays(name, examples, config["seed"]) for name in tasks}
shown = [int(np.flatnonzero(examples["metadata"]["anatomy"] == name)[config["slices_per_subject"] // 2])
         for name in config["anatomies"]]
columns = 1 + 2 * len(tasks)
fig, axes = plt.subplots(len(shown), columns, figsize=(2.1 * columns, 2.3 * len(shown)), layout="constrained",
                         squeeze=False)
tissue_colours = plt.get_cmap("viridis", len(pretrain.TISSUE_CLASSES))
segmentation_shown = None
for row, index in enumerate(shown):
    axes[row, 0].imshow(examples["images"][index], cmap="gray", vmin=0, vmax=1)
    axes[row, 0].set_title(f"{examples['metadata']['anatomy'].iloc[index]}, "
                           f"z = {examples['metadata']['z_mm'].iloc[index]:.0f} mm", fontsize=8)
    for column, name in enumerate(tasks):
        inputs, targets = example_data[name]
        ax_in, ax_out = axes[row, 1 + 2 * column], axes[row, 2 + 2 * column]
        ax_in.imshow(inputs[index], cmap="gray", vmin=0, vmax=1)
        ax_in.set_title(f"{name.replace('_', ' ')}: input", fontsize=8)
        if pretrain.TASK_KINDS[name] == "classification":
            ax_out.text(0.5, 0.5, f"band {targets[index]}\nof {config['n_bands']}", ha="center", va="center",
                        fontsize=11)
        elif pretrain.TASK_KINDS[name] == "segmentation":
            segmentation_shown = ax_out.imshow(targets[index], cmap=tissue_colours, vmin=-0.5,
                                               vmax=len(pretrain.TISSUE_CLASSES) - 0.5)
        else:
            ax_out.imshow(targets[index], cmap="gray", vmin=0, vmax=1)
        ax_out.set_title(f"{name.replace('_', ' ')}: target", fontsize=8)
for ax in axes.ravel():
    ax.set_axis_off()
if segmentation_shown is not None:
    bar = fig.colorbar(segmentation_shown, ax=axes[:, -1], ticks=range(len(pretrain.TISSUE_CLASSES)), shrink=0.6)
    bar.ax.set_yticklabels([name.replace("_", " ") for name in pretrain.TISSUE_CLASSES], fontsize=8)
fig.suptitle("Pre-training tasks on lesion-free slices (grey intensities scaled to [0, 1])")
fig.savefig(out_dir / "pretraining_tasks.png", dpi=120)

# %% [markdown]
# ## The arm: trained here, or read from the repository
#
# Either way the folder ends up holding `blocks.pt` (the transferable blocks, weights only) and `card.json`, and
# `model.pt`, the same blocks, which notebook 3 reads as the `mri` source. The weights are checked against the
# card's sha256 before they are used.

# %%
if train_here:
    card = mri_arm.pretrain_mri(preset, out_dir, data_dir, **{key: value for key, value in config.items()})
else:
    for name in (mri_arm.BLOCKS_FILE, mri_arm.PRETEXT_HEAD_FILE, mri_arm.CARD_FILE):
        if (shipped / name).is_file():
            write_atomic(out_dir / name, (shipped / name).read_bytes())
    card = mri_arm.read_card(out_dir)
write_atomic(out_dir / "model.pt", (out_dir / mri_arm.BLOCKS_FILE).read_bytes())
facts = pd.Series({
    "anatomies": ", ".join(card["corpus"]["anatomies"]),
    "pseudo-subjects": card["corpus"]["pseudo_subjects"],
    "slices (train / validation)": f"{card['corpus']['slices']} ({card['corpus']['train_slices']} / "
                                   f"{card['corpus']['val_slices']})",
    "corpus sha256": card["corpus"]["sha256"][:16] + "…",
    **{f"image-steps, {name.replace('_', ' ')}": f"{task['image_steps']:,}" for name, task in card["tasks"].items()},
    **{f"training time, {name.replace('_', ' ')}": f"{task['seconds'] / 60:.0f} min"
       for name, task in card["tasks"].items()},
    "wall time of the whole recipe": f"{card['wall_seconds'] / 60:.0f} min",
    "hardware": f"{card['hardware']['processor']}, {card['hardware']['cpu_count']} cores, torch "
                f"{card['hardware']['torch']}" + (f", {card['hardware']['cuda']}" if card["hardware"]["cuda"] else ""),
    "blocks.pt sha256": card["blocks"]["sha256"][:16] + "…",
    "for comparison: ImageNet (ILSVRC-2012) training images": "1,281,167",
}, name="value").to_frame()
display(facts)

# %%
fig, axes = plt.subplots(2, len(card["tasks"]), figsize=(max(4.3 * len(card["tasks"]), 6.0), 6.6), squeeze=False)
for column, (name, task_card) in enumerate(card["tasks"].items()):
    curves = pd.DataFrame(task_card["epochs"])
    metric = task_card["metric"]
    ax = axes[0, column]
    ax.plot(curves["epoch"], curves["train_loss"], marker="o", ms=3, label="train")
    ax.plot(curves["epoch"], curves["val_loss"], marker="o", ms=3, label="validation")
    ax.axvline(task_card["best_epoch"], color="grey", ls=":", label="best epoch (kept)")
    loss_name = "mean squared error" if pretrain.TASK_KINDS[name] == "restoration" else "cross-entropy"
    ax.set(xlabel="epoch", ylabel=f"{loss_name} loss", title=name.replace("_", " "))
    ax.legend(fontsize=7)
    ax = axes[1, column]
    values = curves["val_accuracy"] if "val_accuracy" in curves else curves["val_metric"]
    ax.plot(curves["epoch"], values, marker="o", ms=3, color="tab:orange", label="validation")
    ax.axhline(metric["baseline"]["value"], color="black", ls="--", lw=1,
               label=f"baseline: {metric['baseline']['baseline']}")
    ax.set(xlabel="epoch", ylabel=f"validation {metric['baseline']['metric']}")
    ax.legend(fontsize=7)
fig.suptitle("Pretext curves from the card\n(top: each task's loss; bottom: its metric against the trivial baseline)")
fig.tight_layout()
fig.savefig(out_dir / "pretext_curves.png", dpi=120)

# %% [markdown]
# ## The chosen pretext, checked again on new pseudo-subjects
#
# The card's numbers are the training run's. The shipped network (its blocks and its pretext head) runs here on
# slices of pseudo-subjects it has never seen, drawn with another seed than the recipe's, and is compared with the
# trivial baseline on the same slices.

# %%
recheck = mri_arm.check_pretext(out_dir, card, n_subjects=2, seed=config["seed"] + 1)
display(pd.Series(recheck, name="value").to_frame())
glue("recheck_summary", f"{recheck['metric']} {recheck['value']:.3f} on {recheck['slices']} new slices, against "
                        f"{recheck['baseline']:.3f} for the trivial baseline")

# %% [markdown]
# ## Each task against its baseline, and the choice
#
# For each task, the first k = `selection_k` blocks were transferred, frozen, and the rest trained on the lesion
# task's *training* split exactly as a grid cell of notebook 3 would be; the score is the accuracy on the
# *validation* split, averaged over the selection seeds.

# %%
table = card["selection"]["table"]
chosen = card["selection"]["chosen_task"]
comparison = pd.DataFrame({
    "pretext metric (validation)": [card["tasks"][name]["metric"]["baseline"]["metric"] for name in table],
    "value": [row["pretext"] for row in table.values()],
    "trivial baseline": [card["tasks"][name]["metric"]["baseline"]["baseline"] for name in table],
    "baseline value": [row["baseline"] for row in table.values()],
    f"beats it by {card['recipe']['baseline_margin']}": [row["beats_baseline"] for row in table.values()],
    f"lesion val. accuracy, k = {card['recipe']['selection_k']}": [row["mean_val_accuracy"] for row in table.values()],
    "chosen": [name == chosen for name in table],
}, index=pd.Index(list(table), name="task"))
comparison.to_csv(out_dir / "task_comparison.csv")
display(comparison.round(4))

# %%
selection = pd.DataFrame(card["selection"]["rows"])
ranking = selection.groupby("task", sort=False)["val_accuracy"].mean()
fig, ax = plt.subplots(figsize=(6.5, 3.4))
positions = np.arange(len(ranking))
ax.bar(positions, ranking.values, color=["tab:orange" if name == chosen else "tab:grey" for name in ranking.index])
for position, name in zip(positions, ranking.index, strict=True):
    values = selection.loc[selection["task"] == name, "val_accuracy"]
    ax.scatter(np.full(len(values), position), values, color="black", zorder=3, s=12)
ax.axhline(0.5, color="black", ls="--", lw=1, label="chance")
ax.set(xticks=positions, xticklabels=[name.replace("_", " ") for name in ranking.index], ylim=(0, 1.02),
       ylabel="lesion-task validation accuracy",
       title=f"Selection: transfer with k = {card['recipe']['selection_k']} frozen blocks (orange: chosen)")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out_dir / "task_selection.png", dpi=120)

# %%
write_atomic(out_dir / "model.json", json.dumps({"source": "mri", "card": mri_arm.CARD_FILE,
                                                 "chosen_task": chosen}, indent=1) + "\n")
glue("chosen_task", chosen.replace("_", " "))
glue("chosen_val_accuracy", float(ranking[chosen]))
glue("n_tasks", len(table))
glue("selection_k", card["recipe"]["selection_k"])
glue("task_summary", "; ".join(f"{name.replace('_', ' ')} {value:.2f}" for name, value in ranking.items()))
glue("n_learned", sum(row["beats_baseline"] for row in table.values()))
glue("pretrain_slices", f"{card['corpus']['slices']:,}")
glue("pretrain_anatomies", ", ".join(card["corpus"]["anatomies"]))
glue("pretrain_image_steps", f"{min(task['image_steps'] for task in card['tasks'].values()):,}")
glue("arm_trained_here", "trained in this build" if train_here else "read from the repository (shipped)")

# %% [markdown]
# ## Summary
#
# - The `mri` arm of this build was {glue:text}`arm_trained_here`: {glue:text}`n_tasks` lesion-free MRI task(s),
#   each trained for at least {glue:text}`pretrain_image_steps` image-steps on {glue:text}`pretrain_slices`
#   slices of pseudo-subjects of {glue:text}`pretrain_anatomies`. {glue:text}`n_learned` of them beat their
#   trivial baseline by the stated margin.
# - Transferred with k = {glue:text}`selection_k` frozen blocks, they gave these validation accuracies on the
#   lesion task: {glue:text}`task_summary`. By the rule fixed in advance the `mri` source is
#   **{glue:text}`chosen_task`** ({glue:text}`chosen_val_accuracy:.2f`); its blocks, `model.pt` in the run folder,
#   are the `mri` source of notebook 3. Checked again on new pseudo-subjects, its pretext scores
#   {glue:text}`recheck_summary`.
# - Choices that are ours, not the reference study's: pseudo-subjects of two anatomies instead of real subjects,
#   the three tasks, the budget (far below ImageNet's 1.28 million images), the training settings in the
#   configuration table, and the selection rule.
#
# **Next:** notebook 3 fine-tunes on the lesion task after ImageNet, MRI or no pre-training, beside frozen random
# blocks (`random`), the control of the source axis.
