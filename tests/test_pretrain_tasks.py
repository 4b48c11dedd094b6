"""The in-domain pre-training tasks: tissue maps follow each pseudo-subject, corruption and restoration heads."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from xaiutils.domain import models, pretrain
from xaiutils.domain.synth.dataset import make_benchmark
from xaiutils.foundation.config import resolve


@pytest.fixture(scope="module")
def slices():
    return pretrain.pretrain_slices(4, 8, 32, n_bands=4, seed=5, progress=False)


def test_tissue_labels_lie_in_the_brain_and_hold_every_tissue(slices):
    tissues, brains = slices["tissues"], slices["brains"]
    assert tissues.shape == slices["images"].shape and tissues.dtype == np.int64
    assert np.all(tissues[~brains] == 0), "outside the brain every pixel is background"
    inside = tissues[brains]
    assert (inside > 0).mean() > 0.9, "inside the brain almost every pixel is a tissue"
    assert set(np.unique(inside)) >= {1, 2, 3}, "CSF, grey and white matter all occur"
    # white matter is brighter than grey matter on T1: the labels line up with the intensities
    images = slices["images"]
    assert images[tissues == 3].mean() > images[tissues == 2].mean() > images[tissues == 1].mean()


def test_tasks_share_the_slices_and_are_reproducible(slices):
    again = pretrain.pretrain_slices(4, 8, 32, n_bands=4, seed=5, progress=False)
    for key in ("images", "tissues", "bands"):
        assert np.array_equal(slices[key], again[key])
    band_inputs, bands = pretrain.task_arrays("level_band", slices)
    seg_inputs, _ = pretrain.task_arrays("tissue_segmentation", slices)
    assert np.array_equal(band_inputs, seg_inputs) and np.bincount(bands).tolist() == [8, 8, 8, 8]
    corrupted, clean = pretrain.task_arrays("restoration", slices, seed=5)
    corrupted_again, _ = pretrain.task_arrays("restoration", slices, seed=5)
    assert np.array_equal(corrupted, corrupted_again) and np.array_equal(clean, slices["images"])
    assert np.abs(corrupted - clean).mean() > 0.01, "the corruption changes the slices"
    with pytest.raises(ValueError, match="unknown pre-training task 'age'; valid choices: level_band"):
        pretrain.task_arrays("age", slices)


def test_level_band_data_are_unchanged_by_the_new_tasks():
    """The first task's data come from the same seed stream as before the other tasks were added."""
    images, labels, table = pretrain.level_band_dataset(4, 8, 32, n_bands=4, seed=5, progress=False)
    slices = pretrain.pretrain_slices(4, 8, 32, n_bands=4, seed=5, tissues=False, progress=False)
    assert np.array_equal(images, slices["images"]) and np.array_equal(labels, slices["bands"])


def test_a_restoration_network_starts_as_the_identity():
    """The residual head's projections start at zero: before training, the network returns the corrupted input,
    the trivial baseline it must beat, exactly."""
    net = models.build_model("mobilenet_v2", n_classes=1, width=0.5, seed=0)
    head = pretrain.DenseHead(net, 1, 32, residual=True).eval()
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(head(x), x)
    with pytest.raises(ValueError, match="out_channels must be 1"):
        pretrain.DenseHead(net, 4, 32, residual=True)


@pytest.mark.parametrize("task", ["tissue_segmentation"])
def test_dense_pretraining_lowers_its_loss_and_leaves_a_transferable_backbone(slices, task, tmp_path):
    inputs, targets = pretrain.task_arrays(task, slices, seed=5)
    torch.manual_seed(0)  # the backbone's weights, then the dense head's, from one seeded stream
    net = models.build_model("mobilenet_v2", n_classes=pretrain.n_outputs(task), width=0.5)
    head = pretrain.DenseHead(net, pretrain.n_outputs(task), 32, residual=task == "restoration")
    # At 3e-3 for 3 epochs the restoration loss of the last epoch was above the first's on forced AVX2 code paths
    # (2.55 against 2.11; make test-isa): one epoch's mean over 3 batches of 8 is noisy. At 1e-3 the best later
    # epoch is 19-33 % below the first on native, AVX2 and generic code paths. (Restoration starts as the identity,
    # see above; whether it beats it is tested at the smoke scale of the recipe, tests/test_mri_arm.py.)
    history = pretrain.fit_dense(head, (inputs[:24], targets[:24]), (inputs[24:], targets[24:]), task, epochs=5,
                                 lr=1e-3, batch_size=8, patience=5, progress=False)
    losses = [epoch["train_loss"] for epoch in history["epochs"]]
    assert min(losses[1:]) < 0.9 * losses[0], losses
    models.save_weights(net, tmp_path / "model.pt")
    transferred = models.prepare_model("mobilenet_v2", "mri", 3, width=0.5, mri_checkpoint=tmp_path / "model.pt")
    state = net.state_dict()
    assert all(torch.equal(value, state[f"blocks.2.{key}"])
               for key, value in transferred.blocks[2].state_dict().items())


def test_train_and_select_in_two_processes_matches_one_and_writes_every_task(slices, tmp_path):
    from xaiutils.analysis import task_selection

    data_dir = make_benchmark(tmp_path / "dataset", "smoke", progress=False, n_subjects=3, slices_per_subject=2,
                              image_size=32, radius_range=(2.0, 3.0))
    config = {**resolve("pretrain", "smoke"), "image_size": 32, "width": 0.25, "epochs": 1,
              "batch_size": 16, "selection_k": 2, "selection_seeds": [0, 1]}
    finetune_config = {**resolve("finetune", "smoke"), "width": 0.25, "epochs": 1, "batch_size": 16}
    table = slices["metadata"]
    train_rows, val_rows = (np.flatnonzero(table["split"] == name) for name in ("train", "val"))
    tasks = ["tissue_segmentation", "level_band"]
    task_data = {name: pretrain.task_arrays(name, slices, 5) for name in tasks}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as in each of the two worker processes
    try:
        results = [task_selection.train_and_select(tasks, task_data, train_rows, val_rows, config, finetune_config,
                                                   tmp_path / f"out{workers}", data_dir, "smoke", workers=workers,
                                                   progress=False) for workers in (1, 2)]
    finally:
        torch.set_num_threads(threads)
    (histories, metrics, rows), (histories2, metrics2, rows2) = results
    assert [(row["task"], row["seed"]) for row in rows2] == [(task, seed) for task in tasks for seed in (0, 1)]
    for name in tasks:
        assert (tmp_path / "out2" / "tasks" / name / "model.pt").is_file()
        assert metrics2[name]["value"] == metrics[name]["value"]
        assert [epoch["val_loss"] for epoch in histories2[name]["epochs"]] == [
            epoch["val_loss"] for epoch in histories[name]["epochs"]]
    assert [row["val_accuracy"] for row in rows2] == [row["val_accuracy"] for row in rows]
