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
# # 3. Transfer-learning fine-tuning: pre-training source × number of pre-trained blocks
#
# ## Overview
#
# The reference study's two design axes are *where* the pre-trained weights come from and *how many* leading
# layers carry them. Here the backbone is cut into five blocks (for VGG-16: its five convolutional blocks, each
# ending in max-pooling); `n_pretrained_blocks = k` leading blocks receive pre-trained weights and are frozen.
# In the default `transfer` mode the blocks after `k` and the classifier head are re-initialised and trained on
# the lesion task; in `finetune` mode every block starts pre-trained and only the first `k` are frozen. Sources:
#
# - `imagenet`: torchvision's ImageNet weights (out-of-domain);
# - `mri`: the in-domain network of notebook 2;
# - `none`: random initialisation (with `transfer`, k = 0 is the same as `none`).
#
# This notebook works in two ways. With `grid = True` (the default, and what the book shows) it runs the whole
# grid source × k × seed of the chosen preset, each cell as its own papermill run of this same notebook with
# `grid = False`, skipping cells already finished, and then compares the runs. With `grid = False` it trains the
# one model given by `source`, `n_pretrained_blocks` and `seed`. The same grid runs from the command line:
# `python -m xaiutils grid --preset book`. Two cells train side by side at the `book` preset (`workers`).
#
# ## Prerequisites
#
# | Concept | Importance |
# | --- | --- |
# | [Notebook 1](01_data) (the dataset) and [notebook 2](02_pretrain_mri) (the `mri` source) | necessary |
# | Transfer learning, freezing layers | helpful |
#
# ## Time to run
#
# About ten minutes for the `book` grid (30 runs, 9 of them the `random` control) on 2 CPU cores, and two more for
# the comparison of protocols; the `study` grid (VGG-16, several seeds) is a GPU job. The measured time of the
# latest build is in {doc}`../book/reproducing`.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from xaiutils.book import glue
from xaiutils.domain import models, train
from xaiutils.domain.synth.dataset import load_benchmark
from xaiutils.execution.grid import run_grid
from xaiutils.execution.paths import default_out_dir
from xaiutils.execution.run_record import RunRecord
from xaiutils.foundation.config import check_override, resolve

# %% tags=["parameters"]
# Parameter set: "book" (the default book, 2 CPU cores), "smoke" (the tests) or "study" (the study's scale, GPU).
preset = "book"
# True: run the preset's whole grid (source × k × seed) and compare; False: train the one model below.
grid = True
# Pre-training source of this run: "imagenet", "mri", "none", or "random" (frozen random blocks, the control)
# (grid = False only).
source = "imagenet"
# Number of leading blocks that carry pre-trained weights and are frozen (0..5) (grid = False only).
n_pretrained_blocks = 3
# Seed for initialisation, data order and dropout (grid = False only).
seed = 0
# Backbone, width multiplier, mode ("transfer": the first k blocks pre-trained and frozen; "finetune": every block
# pre-trained, the first k frozen; "transfer_finetune": the first k pre-trained and trained too, at lr times
# transferred_lr_factor) and optimisation (None: preset value).
backbone = None
width = None
mode = None
epochs = None
lr = None
batch_size = None
patience = None
dropout = None
weight_decay = None
# Training-time augmentation: "none" or "flips" (random left-right / up-down flips) (None: preset value).
augment = None
# Learning-rate schedule: "constant" or "onecycle" (warm-up, then cosine annealing) (None: preset value).
lr_schedule = None
transferred_lr_factor = None
# Grid cells trained at once, each with cpu_count / workers threads (grid = True only) (None: preset value).
workers = None
# Inputs: the dataset of notebook 1 and the checkpoint of notebook 2 (None: the preset's run folders).
data_dir = None
mri_checkpoint = None
# Run folder (None: runs/<preset>/03_finetune in the checkout).
out_dir = None

# %%
overrides = {"backbone": backbone, "width": width, "mode": mode, "epochs": epochs, "lr": lr,
             "batch_size": batch_size, "patience": patience, "dropout": dropout, "weight_decay": weight_decay,
             "augment": augment, "lr_schedule": lr_schedule, "transferred_lr_factor": transferred_lr_factor}
config = resolve("finetune", preset, **overrides)
data_dir = Path(data_dir) if data_dir is not None else default_out_dir(preset, "01_data") / "dataset"
mri_checkpoint = (Path(mri_checkpoint) if mri_checkpoint is not None
                  else default_out_dir(preset, "02_pretrain_mri") / "model.pt")
out_dir = Path(out_dir) if out_dir is not None else default_out_dir(preset, "03_finetune")
out_dir.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## One model (`grid = False`)
#
# Skipped when the notebook runs the whole grid.

# %%
if not grid:
    check_override("03_finetune", "seed", seed)  # before any work: a seed NumPy and torch both take
    bench = load_benchmark(data_dir)
    split = {name: bench.indices(name) for name in ("train", "val", "test")}
    model = models.prepare_model(
        config["backbone"], source, n_pretrained_blocks, mode=config["mode"], width=config["width"],
        dropout=config["dropout"], seed=seed, mri_checkpoint=mri_checkpoint if source == "mri" else None,
    )
    history = train.fit(
        model, (bench.images[split["train"]], bench.labels[split["train"]]),
        (bench.images[split["val"]], bench.labels[split["val"]]),
        epochs=config["epochs"], lr=config["lr"], batch_size=config["batch_size"], patience=config["patience"],
        weight_decay=config["weight_decay"], seed=seed, augment=config["augment"],
        lr_schedule=config["lr_schedule"], transferred_lr_factor=config["transferred_lr_factor"],
    )
    # the run folder (predictions.csv, model.pt, model.json) that the grid and notebook 4 read: RunRecord
    run_config = RunRecord.run_config(config, source, n_pretrained_blocks, seed, preset, bench.card["content_hash"])
    record = RunRecord.evaluated(model, bench, run_config, history)
    record.write(out_dir, model)
    print(f"{source}, k = {n_pretrained_blocks}, seed {seed}: test accuracy {record.metrics['test']['accuracy']:.3f}, "
          f"best epoch {history['best_epoch']}, {history['seconds']:.0f} s on {history['device']}")

# %%
if not grid:
    curves = pd.DataFrame(history["epochs"])
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for column, label in (("train_loss", "train"), ("val_loss", "validation")):
        ax_loss.plot(curves["epoch"], curves[column], marker="o", label=label)
    for column, label in (("train_accuracy", "train"), ("val_accuracy", "validation")):
        ax_acc.plot(curves["epoch"], curves[column], marker="o", label=label)
    ax_loss.axvline(history["best_epoch"], color="grey", ls=":", label="best epoch (kept)")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.axhline(0.5, color="grey", ls="--", label="chance")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="Accuracy")
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=8)
    fig.suptitle(f"Learning curves: {source}, k = {n_pretrained_blocks}, seed {seed}")
    fig.tight_layout()

# %% [markdown]
# ## The grid (`grid = True`)
#
# Each cell of the grid is a run folder `grid/<source>-k<k>-s<seed>/` holding the executed notebook, the
# weights (`model.pt`), the sidecar (`model.json`) and the per-image predictions that notebook 4 needs.
# A finished cell is not run again while its parameters, the preset's fine-tuning settings, its inputs (dataset
# and MRI checkpoint, by content) and the code (this notebook and `xaiutils`) stay the same; `inputs.json` in the
# cell's folder records them.

# %%
if grid:
    passed = {key: value for key, value in overrides.items() if value is not None}
    passed.update({"data_dir": str(data_dir.absolute()), "mri_checkpoint": str(mri_checkpoint.absolute())})
    accuracy = run_grid(preset, out_dir=out_dir / "grid", parameters=passed, workers=workers)
    grid_spec = resolve("grid", preset)
    print(f"{len(accuracy)} runs; executed now: {accuracy.attrs['executed'] or 'none (all finished before)'}")
    display_columns = ["source", "n_pretrained_blocks", "seed", "model", "test_accuracy",
                       "test_balanced_accuracy", "test_roc_auc", "best_epoch", "train_seconds"]
    display(accuracy[display_columns].round(3))
    best = accuracy.sort_values("test_accuracy", ascending=False).iloc[0]
    glue("n_runs", len(accuracy))
    glue("best_run", best["run"])
    glue("best_accuracy", best["test_accuracy"])
    # "near chance": within 0.05 of a coin flip on the balanced test split
    glue("n_near_chance", int((accuracy["test_accuracy"] <= 0.55).sum()))
    glue("backbone_name", accuracy["model"].iloc[0])
    glue("n_seeds", accuracy["seed"].nunique())
    # the target of the default book: every "none" and every pre-trained k <= 3 run learns the task (test accuracy
    # >= 0.85); the frozen random blocks of the control are not expected to
    learnable = accuracy[(accuracy["source"] == "none") | ((accuracy["n_pretrained_blocks"] <= 3)
                                                           & accuracy["source"].isin(["imagenet", "mri"]))]
    glue("min_accuracy_k_le_3", learnable["test_accuracy"].min())
    glue("n_below_target", int((learnable["test_accuracy"] < 0.85).sum()))
    glue("n_learnable", len(learnable))

# %%
if grid:
    colours = {"imagenet": "tab:blue", "mri": "tab:orange", "none": "tab:grey", "random": "tab:green"}
    fig, ax = plt.subplots(figsize=(7, 4))
    for run_name in accuracy["run"]:
        record = RunRecord.read(out_dir / "grid" / run_name, predictions=False)
        curves = pd.DataFrame(record.history["epochs"])
        ax.plot(curves["epoch"], curves["val_loss"], color=colours[record.config["source"]], alpha=0.8,
                lw=0.5 + 0.4 * record.config["n_pretrained_blocks"])
    for name, colour in colours.items():
        ax.plot([], [], color=colour, label=name)
    ax.set(xlabel="epoch", ylabel="validation cross-entropy loss",
           title="Learning curves of every grid run (line width grows with k)")
    ax.legend(title="source", fontsize=8)
    fig.tight_layout()

# %%
if grid:
    fig, ax = plt.subplots(figsize=(7, 4))
    offsets = {"imagenet": -0.12, "mri": 0.0, "none": 0.0, "random": 0.12}
    for name, group in accuracy.groupby("source"):
        ax.scatter(group["n_pretrained_blocks"] + offsets[name], group["test_accuracy"], color=colours[name],
                   label=f"{name} (each point a seed)", zorder=3)
        means = group.groupby("n_pretrained_blocks")["test_accuracy"].mean()
        ax.plot(means.index + offsets[name], means.values, color=colours[name], alpha=0.6)
    ax.axhline(0.5, color="black", ls="--", lw=1, label="chance")
    ax.set(xlabel="number of pre-trained, frozen blocks k", ylabel="test accuracy", ylim=(0, 1.02),
           xticks=range(0, 6), title=f"Accuracy by pre-training source and k ({accuracy['model'].iloc[0]})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy_by_source_and_k.png", dpi=120)

# %% [markdown]
# ## Another protocol: transferred blocks fine-tuned too (AnB+)
#
# The grid freezes the transferred blocks. The other common protocol {cite}`yosinski2014transferable` transfers
# the same blocks and trains them too, at a lower learning rate (`transferred_lr_factor` times the rest's). The
# cells listed in the preset's `anb_plus_cells` are trained again in that mode, with every other setting and the
# seed unchanged, and compared with their grid cell. They are not explained in notebook 4.

# %%
grid_spec = resolve("grid", preset)
if grid and grid_spec["anb_plus_cells"]:
    bench = load_benchmark(data_dir)
    split = {name: bench.indices(name) for name in ("train", "val", "test")}
    protocol_rows = []
    for cell in grid_spec["anb_plus_cells"]:
        cell_source, cell_k, cell_seed = cell.rsplit("-", 2)
        cell_k, cell_seed = int(cell_k[1:]), int(cell_seed[1:])
        anb_model = models.prepare_model(
            config["backbone"], cell_source, cell_k, mode="transfer_finetune", width=config["width"],
            dropout=config["dropout"], seed=cell_seed,
            mri_checkpoint=mri_checkpoint if cell_source == "mri" else None)
        anb_history = train.fit(
            anb_model, (bench.images[split["train"]], bench.labels[split["train"]]),
            (bench.images[split["val"]], bench.labels[split["val"]]), epochs=config["epochs"], lr=config["lr"],
            batch_size=config["batch_size"], patience=config["patience"], weight_decay=config["weight_decay"],
            seed=cell_seed, augment=config["augment"], lr_schedule=config["lr_schedule"],
            transferred_lr_factor=config["transferred_lr_factor"], progress=False)
        anb_accuracy = train.classification_metrics(
            bench.labels[split["test"]], train.predict_proba(anb_model, bench.images[split["test"]]))["accuracy"]
        frozen_accuracy = float(accuracy.set_index("run").loc[cell, "test_accuracy"])
        protocol_rows.append({"cell": cell, f"{config['mode']} (grid)": frozen_accuracy,
                              "transfer_finetune (AnB+)": anb_accuracy,
                              "difference": anb_accuracy - frozen_accuracy,
                              "seconds": anb_history["seconds"]})
    protocols = pd.DataFrame(protocol_rows).set_index("cell")
    protocols.to_csv(out_dir / "protocol_comparison.csv")
    display(protocols.round(3))
    glue("anb_plus_summary", "; ".join(f"{cell}: {row['transfer_finetune (AnB+)']:.2f} against "
                                       f"{row[config['mode'] + ' (grid)']:.2f}" for cell, row in protocols.iterrows()))
elif grid:
    print("The preset lists no anb_plus_cells: no comparison of protocols.")

# %% [markdown]
# ## The sources against frozen random blocks
#
# Frozen *random* blocks are the floor of the source axis {cite}`yosinski2014transferable,raghu2019transfusion`:
# a pre-trained source helps only where its blocks beat random ones frozen at the same k. Mean test accuracy over
# the seeds per source and k, and each pre-trained source's difference from `random` at that k.

# %%
if grid and "random" in set(accuracy["source"]):
    by_k = accuracy.pivot_table(index="n_pretrained_blocks", columns="source", values="test_accuracy", aggfunc="mean")
    pretrained = [name for name in ("imagenet", "mri") if name in by_k.columns]
    for name in pretrained:
        by_k[f"{name} − random"] = by_k[name] - by_k["random"]
    by_k = by_k.drop(index=[k for k in by_k.index if k == 0], errors="ignore")
    by_k.to_csv(out_dir / "sources_against_random.csv")
    display(by_k.round(3))
    low_k = by_k[by_k.index <= 3]
    for name in pretrained:
        glue(f"{name}_minus_random_k_le_3", ", ".join(f"k = {k}: {value:+.3f}"
                                                       for k, value in low_k[f"{name} − random"].items()))
        glue(f"{name}_beats_random_k_le_3", "yes" if (low_k[f"{name} − random"] > 0).all() else "no")
        mean_low = accuracy[(accuracy["source"] == name) & (accuracy["n_pretrained_blocks"] <= 3)]["test_accuracy"]
        glue(f"{name}_mean_accuracy_k_le_3", float(mean_low.mean()))
elif grid:
    print("This grid has no `random` source: nothing to compare with.")

# %% [markdown]
# ## Summary
#
# - With `grid = True` this notebook ran (or reused) every cell of the preset's grid and collected
#   `grid/accuracy.csv`: test accuracy, balanced accuracy and ROC-AUC per source, k and seed. In this build:
#   {glue:text}`n_runs` runs of {glue:text}`backbone_name` with {glue:text}`n_seeds` seed(s); the most
#   accurate is {glue:text}`best_run` at {glue:text}`best_accuracy:.2f` test accuracy, and
#   {glue:text}`n_near_chance` runs are within 0.05 of chance.
#   Of the {glue:text}`n_learnable` runs with `none` or k ≤ 3, {glue:text}`n_below_target` stayed below a test
#   accuracy of 0.85 (the lowest: {glue:text}`min_accuracy_k_le_3:.2f`); runs at the largest k keep almost every
#   block frozen and may honestly fail.
# - Against frozen random blocks (the `random` control) at k ≤ 3: `mri` − `random`
#   {glue:text}`mri_minus_random_k_le_3` (above at every k: {glue:text}`mri_beats_random_k_le_3`; mean `mri`
#   accuracy at k ≤ 3: {glue:text}`mri_mean_accuracy_k_le_3:.2f`); `imagenet` − `random`
#   {glue:text}`imagenet_minus_random_k_le_3`.
# - The other protocol (AnB+: transferred blocks fine-tuned at a lower rate), test accuracy against the grid's
#   frozen cell: {glue:text}`anb_plus_summary`.
# - At the `book` preset the backbone is MobileNetV2 (the ImageNet weights available offline) on 64² slices with
#   three seeds per cell; the `study` preset runs VGG-16 at the study's image size, as the reference study did.
# - Choices that are ours: the block cut of each backbone, freezing the transferred blocks, Adam with a
#   one-cycle schedule and early stopping on validation loss, and the optimisation and augmentation settings of
#   the preset (random flips of the training images).
#
# **Next:** notebook 4 explains these models and scores the explanations against the lesion masks.
