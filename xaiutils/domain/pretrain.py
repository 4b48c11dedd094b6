"""In-domain (MRI) pre-training: lesion-free slices of pseudo-subjects disjoint from the benchmark's, three tasks.

- ``level_band`` (classification): which band of axial levels a slice comes from. Labels come free from
  geometry; the network must learn coarse anatomy.
- ``tissue_segmentation`` (dense): background, CSF, grey and white matter at every pixel, from the tissue
  probability maps that nilearn ships with the MNI152 template, warped with each pseudo-subject exactly as its
  T1 slice is. Teaches local tissue boundaries and contrast.
- ``restoration`` (dense, self-supervised, in the style of Models Genesis, Zhou et al. 2021): restore a slice from
  a corrupted copy (non-linear intensity curve, local pixel shuffling, in-painting of random boxes). Teaches local
  texture and shape.

No task sees a lesion. Pseudo-subjects are drawn from their own seed stream, so none of them is one of the
benchmark's. Dense tasks put a light fully convolutional head on the backbone (:class:`DenseHead`: a 1×1
convolution on every block's output, upsampled and summed), so that every block is trained; only the blocks are
transferred to the lesion task.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch import nn
from tqdm import tqdm

from xaiutils.domain import train
from xaiutils.domain.models import check_choice
from xaiutils.domain.mri.anatomy import level_to_mm, prepare_anatomy, template_anatomy
from xaiutils.domain.mri.brain import load_mni152
from xaiutils.domain.mri.slices import Variability, sample_slices
from xaiutils.domain.synth.generate import assign_splits
from xaiutils.domain.synth.parameters import check_image_size

PRETRAIN_TASKS = ("level_band", "tissue_segmentation", "synth_segmentation", "restoration")
TASK_KINDS = {"level_band": "classification", "tissue_segmentation": "segmentation",
              "synth_segmentation": "segmentation", "restoration": "restoration"}
TISSUE_CLASSES = ("background", "csf", "grey_matter", "white_matter")


def level_bands(band: np.ndarray, n_bands: int) -> np.ndarray:
    """Band index (0 = most inferior) of each level in ``band``, in ``n_bands`` contiguous groups of equal size
    (as equal as the number of levels allows)."""
    band = np.asarray(band)
    if not 2 <= n_bands <= len(band):
        raise ValueError(f"n_bands must lie in 2..{len(band)} (the number of levels in the band), got {n_bands}")
    return np.minimum((np.arange(len(band)) * n_bands) // len(band), n_bands - 1)


def n_outputs(task: str, n_bands: int = 4) -> int:
    """Output channels of the pre-training network: classes (level band, tissues) or 1 (restored intensity)."""
    check_choice("pre-training task", task, PRETRAIN_TASKS)
    return {"level_band": n_bands, "tissue_segmentation": len(TISSUE_CLASSES),
            "synth_segmentation": len(TISSUE_CLASSES), "restoration": 1}[task]


@functools.lru_cache(maxsize=2)
def tissue_volumes(image_size: int, min_brain_fraction: float) -> tuple[np.ndarray, ...]:
    """CSF, grey- and white-matter probability maps on the grid of :func:`template_anatomy` (same crop and
    anti-aliasing). CSF is the brain mask's share not claimed by grey or white matter."""
    from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template

    t1, brain, affine = load_mni152(resolution=1)
    anatomy = template_anatomy(int(image_size), float(min_brain_fraction))
    maps = []
    for loader in (load_mni152_gm_template, load_mni152_wm_template):
        volume = np.asarray(loader(resolution=1).get_fdata(), dtype=np.float32)
        if volume.shape != t1.shape:
            raise ValueError(f"tissue map shape {volume.shape} differs from the template's {t1.shape}")
        maps.append(prepare_anatomy(volume, brain, affine, int(image_size), float(min_brain_fraction)).t1)
    grey, white = maps
    csf = np.clip(anatomy.brain - grey - white, 0.0, 1.0)
    return csf, grey, white


def corrupt(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Models-Genesis-style corruption of one slice in [0, 1]: a random monotone intensity curve, local pixel
    shuffling in small windows, and in-painting of a few random boxes inside the brain with noise."""
    out = image.astype(np.float32).copy()
    # non-linear intensity: a cubic Bézier curve through (0, 0) and (1, 1) with random inner control points
    p1, p2 = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
    t = np.linspace(0, 1, 256)
    curve_x = 3 * (1 - t) ** 2 * t * p1[0] + 3 * (1 - t) * t**2 * p2[0] + t**3
    curve_y = 3 * (1 - t) ** 2 * t * p1[1] + 3 * (1 - t) * t**2 * p2[1] + t**3
    order = np.argsort(curve_x)
    out = np.interp(out, curve_x[order], curve_y[order]).astype(np.float32)
    size = out.shape[0]
    window = max(2, size // 32)
    for _ in range(max(1, size // 4)):  # local pixel shuffling
        row, col = rng.integers(0, size - window, 2)
        patch = out[row:row + window, col:col + window].ravel()
        out[row:row + window, col:col + window] = rng.permutation(patch).reshape(window, window)
    rows, cols = np.nonzero(brain)
    for _ in range(rng.integers(1, 4)):  # in-painting: boxes of noise centred in the brain
        centre = rng.integers(len(rows))
        half = rng.integers(max(2, size // 16), max(3, size // 8), 2)
        r0, c0 = max(rows[centre] - half[0], 0), max(cols[centre] - half[1], 0)
        box = out[r0:rows[centre] + half[0], c0:cols[centre] + half[1]]
        box[...] = rng.uniform(0, 1, box.shape)
    return out


def pretrain_slices(n_subjects: int, slices_per_subject: int, image_size: int, n_bands: int = 4,
                    min_brain_fraction: float = 0.6, seed: int = 1000, split_fractions=(0.8, 0.2, 0.0),
                    variability: Variability | None = None, tissues: bool = True,
                    progress: bool = True) -> dict:
    """Lesion-free slices of pseudo-subjects of the MNI152 template, from which every task's data are derived.

    Each subject contributes ``slices_per_subject`` levels spread evenly over ``n_bands`` bands of the axial band.
    Returns a dict: ``images`` N×S×S float32, ``brains`` N×S×S bool, ``bands`` N int64, ``tissues`` N×S×S int64
    (indices into :data:`TISSUE_CLASSES`; only with ``tissues=True``) and ``metadata`` (one row per slice:
    subject, level, z, band, split by subject).
    """
    if slices_per_subject % n_bands:
        raise ValueError(f"slices_per_subject ({slices_per_subject}) must be a multiple of n_bands ({n_bands}) "
                         "so that every band is equally represented")
    check_image_size(image_size)
    anatomy = template_anatomy(int(image_size), float(min_brain_fraction))
    extra = tissue_volumes(int(image_size), float(min_brain_fraction)) if tissues else ()
    band_of_level = level_bands(anatomy.band, n_bands)
    variability = variability or Variability()
    split_seq, subject_seq = np.random.SeedSequence(int(seed)).spawn(2)
    splits = assign_splits(n_subjects, split_fractions, np.random.default_rng(split_seq))
    per_band = slices_per_subject // n_bands
    images, brains, tissue_labels, rows = [], [], [], []
    for index, subject_seed in enumerate(tqdm(subject_seq.spawn(n_subjects), desc="subjects", disable=not progress)):
        rng = np.random.default_rng(subject_seed)
        levels = np.sort(np.concatenate([
            rng.choice(anatomy.band[band_of_level == band], per_band, replace=False) for band in range(n_bands)]))
        sampled = sample_slices(anatomy, levels, int(image_size), rng, variability, extra_volumes=extra)
        images.extend(sampled[0])
        brains.extend(sampled[1])
        if tissues:
            probabilities = sampled[2].transpose(1, 0, 2, 3)  # slices × (csf, grey, white) × S × S
            background = 1.0 - np.clip(probabilities.sum(axis=1, keepdims=True), 0.0, 1.0)
            labels = np.argmax(np.concatenate([background, probabilities], axis=1), axis=1)
            tissue_labels.extend(np.where(sampled[1], labels, 0))
        for level in levels:
            rows.append({"subject": f"pretrain{index:03d}", "level": int(level),
                         "z_mm": float(level_to_mm(level, anatomy.affine)),
                         "band": int(band_of_level[np.searchsorted(anatomy.band, level)]),
                         "split": str(splits[index])})
    metadata = pd.DataFrame(rows)
    result = {"images": np.stack(images).astype(np.float32), "brains": np.stack(brains),
              "bands": metadata["band"].to_numpy(np.int64), "metadata": metadata}
    if tissues:
        result["tissues"] = np.stack(tissue_labels).astype(np.int64)
    return result


def synthesise(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A domain-randomised image of a generation-label map, in the style of SynthSeg (Billot et al. 2023): every
    label gets a random mean intensity in [0, 1] and a random texture, then a random blur (partial volume), a smooth
    multiplicative bias field and noise. Intensity alone says nothing about the tissue, so a network that segments
    these images must use shape, position and boundaries. Returns float32 in [0, 1]."""
    labels = np.asarray(labels)
    count = int(labels.max()) + 1
    means, spreads = rng.uniform(0.0, 1.0, count), rng.uniform(0.0, 0.08, count)
    image = means[labels] + spreads[labels] * rng.standard_normal(labels.shape)
    image = ndimage.gaussian_filter(image, rng.uniform(0.3, 1.2))
    size = labels.shape[0]
    coarse = rng.normal(0.0, 0.25, (4, 4))
    image = image * np.exp(ndimage.zoom(coarse, size / 4, order=3, grid_mode=True, mode="nearest")[:size, :size])
    image = image + rng.normal(0.0, rng.uniform(0.0, 0.05), labels.shape)
    low, high = np.percentile(image, (0.5, 99.5))
    return np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def pretrain_corpus(anatomies, n_subjects: int, slices_per_subject: int, image_size: int, n_bands: int = 4,
                    min_brain_fraction: float = 0.6, seed: int = 1000, split_fractions=(0.9, 0.1, 0.0),
                    variability: Variability | None = None, progress: bool = True) -> dict:
    """Lesion-free slices of ``n_subjects`` pseudo-subjects of *each* anatomy in ``anatomies``
    (:mod:`xaiutils.domain.mri.anatomies`), from which every task's data are derived.

    As :func:`pretrain_slices` (levels spread evenly over each anatomy's own ``n_bands`` bands; pseudo-subjects
    by deformation, intensity curve, bias field and noise; splits by subject), plus, for every slice, its tissue
    map (``tissues``: indices into :data:`TISSUE_CLASSES`) and generation labels (``labels``), both sampled by
    nearest neighbour at the pseudo-subject's deformed positions. ``metadata`` has a column ``anatomy``.
    """
    from xaiutils.domain.mri.anatomies import check_anatomy, load_anatomy

    anatomies = [check_anatomy(name) for name in anatomies]
    if not anatomies:
        raise ValueError("anatomies is empty; give at least one of mni152, colin27")
    if slices_per_subject % n_bands:
        raise ValueError(f"slices_per_subject ({slices_per_subject}) must be a multiple of n_bands ({n_bands}) "
                         "so that every band is equally represented")
    check_image_size(image_size)
    variability = variability or Variability()
    per_band = slices_per_subject // n_bands
    images, brains, tissues, labels, rows = [], [], [], [], []
    for anatomy_seq, name in zip(np.random.SeedSequence(int(seed)).spawn(len(anatomies)), anatomies, strict=True):
        volumes = load_anatomy(name)
        anatomy = prepare_anatomy(volumes["t1"], volumes["brain"], volumes["affine"], int(image_size),
                                  float(min_brain_fraction))
        depth = anatomy.t1.shape[2]
        crops = [volumes[key][:, :, anatomy.z_offset:anatomy.z_offset + depth] for key in ("tissues", "labels")]
        band_of_level = level_bands(anatomy.band, n_bands)
        split_seq, subject_seq = anatomy_seq.spawn(2)
        splits = assign_splits(n_subjects, split_fractions, np.random.default_rng(split_seq))
        for index, subject_seed in enumerate(tqdm(subject_seq.spawn(n_subjects), desc=f"{name} subjects",
                                                  disable=not progress)):
            rng = np.random.default_rng(subject_seed)
            levels = np.sort(np.concatenate([
                rng.choice(anatomy.band[band_of_level == band], per_band, replace=False) for band in range(n_bands)]))
            slice_images, slice_brains, slice_labels = sample_slices(anatomy, levels, int(image_size), rng,
                                                                     variability, label_volumes=crops)
            images.extend(slice_images)
            brains.extend(slice_brains)
            tissues.extend(np.where(slice_brains, slice_labels[0], 0))
            labels.extend(np.where(slice_brains, slice_labels[1], 0))
            for level in levels:
                rows.append({"anatomy": name, "subject": f"{name}-{index:04d}", "level": int(level),
                             "z_mm": float(level_to_mm(level, anatomy.affine)),
                             "band": int(band_of_level[np.searchsorted(anatomy.band, level)]),
                             "split": str(splits[index])})
    metadata = pd.DataFrame(rows)
    return {"images": np.stack(images).astype(np.float32), "brains": np.stack(brains),
            "bands": metadata["band"].to_numpy(np.int64), "tissues": np.stack(tissues).astype(np.int64),
            "labels": np.stack(labels).astype(np.int16), "metadata": metadata}


def task_baseline(task: str, inputs: np.ndarray, targets: np.ndarray, brains: np.ndarray | None = None) -> dict:
    """The trivial answer a pre-training task must beat, on held-out data: the most frequent class (level band:
    accuracy; segmentation: pixel accuracy inside the brain, ``brains`` or ``targets > 0``), or returning the
    corrupted input unchanged (restoration: mean absolute error). ``higher_is_better`` says which way is better."""
    check_choice("pre-training task", task, PRETRAIN_TASKS)
    targets = np.asarray(targets)
    if TASK_KINDS[task] == "classification":
        counts = np.bincount(targets.ravel())
        return {"metric": "accuracy", "baseline": "most frequent band", "value": float(counts.max() / counts.sum()),
                "higher_is_better": True}
    if TASK_KINDS[task] == "segmentation":
        inside = targets[brains if brains is not None else targets > 0]
        counts = np.bincount(inside.ravel())
        return {"metric": "pixel accuracy in the brain", "baseline": "most frequent tissue",
                "value": float(counts.max() / counts.sum()), "higher_is_better": True}
    return {"metric": "mean absolute error", "baseline": "the corrupted input unchanged",
            "value": float(np.abs(np.asarray(inputs) - targets).mean()), "higher_is_better": False}


def beats_baseline(value: float, baseline: dict, margin: float) -> bool:
    """Whether a task's metric ``value`` beats its ``baseline`` (:func:`task_baseline`) by ``margin``: an accuracy
    at least ``margin`` above it, or an error at most ``1 − margin`` times it."""
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must lie in [0, 1), got {margin!r}")
    if baseline["higher_is_better"]:
        return value >= baseline["value"] + margin
    return value <= (1.0 - margin) * baseline["value"]


def task_arrays(task: str, slices: dict, seed: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, targets)`` of ``task`` from :func:`pretrain_slices`: the slice and its level band, the slice
    and its tissue map, or a corrupted copy (seeded by ``seed``) and the slice."""
    check_choice("pre-training task", task, PRETRAIN_TASKS)
    if task == "level_band":
        return slices["images"], slices["bands"]
    if task == "tissue_segmentation":
        if "tissues" not in slices:
            raise ValueError("tissue_segmentation needs slices made with pretrain_slices(..., tissues=True)")
        return slices["images"], slices["tissues"]
    if task == "synth_segmentation":
        if "labels" not in slices:
            raise ValueError("synth_segmentation needs the generation labels of pretrain_corpus")
        rng = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(4)[3])
        synthetic = np.stack([synthesise(labels, rng) for labels in slices["labels"]])
        return synthetic, slices["tissues"]
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(3)[2])
    corrupted = np.stack([corrupt(image, brain, rng) for image, brain in zip(slices["images"], slices["brains"],
                                                                              strict=True)])
    return corrupted.astype(np.float32), slices["images"]


def pretrain_dataset(task: str, n_subjects: int, slices_per_subject: int, image_size: int, n_bands: int = 4,
                     min_brain_fraction: float = 0.6, seed: int = 1000, split_fractions=(0.8, 0.2, 0.0),
                     variability: Variability | None = None, progress: bool = True):
    """``(inputs, targets, metadata)`` of one pre-training ``task`` (see :func:`pretrain_slices` and
    :func:`task_arrays`). The slices themselves do not depend on ``task``."""
    check_choice("pre-training task", task, PRETRAIN_TASKS)
    slices = pretrain_slices(n_subjects, slices_per_subject, image_size, n_bands, min_brain_fraction, seed,
                             split_fractions, variability, tissues=task == "tissue_segmentation",
                             progress=progress)
    inputs, targets = task_arrays(task, slices, seed)
    return inputs, targets, slices["metadata"]


def level_band_dataset(n_subjects: int, slices_per_subject: int, image_size: int, n_bands: int = 4,
                       min_brain_fraction: float = 0.6, seed: int = 1000, split_fractions=(0.8, 0.2, 0.0),
                       variability: Variability | None = None, task: str = "level_band",
                       progress: bool = True):
    """The ``level_band`` task's data (kept for callers of the first version): see :func:`pretrain_dataset`."""
    check_choice("pre-training task", task, PRETRAIN_TASKS)
    if task != "level_band":
        raise ValueError(f"level_band_dataset makes the 'level_band' task only, got {task!r}; "
                         f"use pretrain_dataset for: {', '.join(PRETRAIN_TASKS)}")
    return pretrain_dataset(task, n_subjects, slices_per_subject, image_size, n_bands, min_brain_fraction, seed,
                            split_fractions, variability, progress)


class DenseHead(nn.Module):
    """A per-pixel prediction from every block of a :class:`~xaiutils.domain.models.LesionNet`: a 1×1 convolution on
    each block's output, upsampled bilinearly to the input size, summed (FCN-style). ``net.head`` is not used.

    ``residual=True`` adds the (grey) input to the output, so that a restoration network predicts the correction
    rather than the whole slice: the coarse block outputs alone cannot carry the slice's fine detail."""

    def __init__(self, net: nn.Module, out_channels: int, image_size: int, residual: bool = False):
        super().__init__()
        if residual and out_channels != 1:
            raise ValueError(f"residual=True adds the grey input, so out_channels must be 1, got {out_channels}")
        self.net = net
        self.residual = residual
        was_training = net.training
        net.eval()  # a one-image probe: BatchNorm in train mode refuses a 1×1 map of one image
        with torch.no_grad():
            x = net.features(torch.zeros(1, 1, image_size, image_size), stop=0)
            widths = []
            for block in net.blocks:
                x = block(x)
                widths.append(x.shape[1])
        net.train(was_training)
        self.projections = nn.ModuleList(nn.Conv2d(width, out_channels, 1) for width in widths)
        if residual:  # start as the identity (no correction): training can then only move away from it if it helps
            for projection in self.projections:
                nn.init.zeros_(projection.weight)
                nn.init.zeros_(projection.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        features = self.net.features(x, stop=0)
        out = 0
        for block, projection in zip(self.net.blocks, self.projections, strict=True):
            features = block(features)
            out = out + nn.functional.interpolate(projection(features), size=size, mode="bilinear",
                                                  align_corners=False)
        return out + x[:, :1] if self.residual else out


def fit_dense(model: DenseHead, train_data: tuple, val_data: tuple, task: str, epochs: int = 10, lr: float = 1e-3,
              batch_size: int = 32, patience: int = 5, seed: int = 0, lr_schedule: str = "onecycle",
              progress: bool = True) -> dict:
    """Train a dense pre-training model with random flips (applied to input and target alike) and early stopping
    on the validation loss (cross-entropy per pixel for ``tissue_segmentation``, mean squared error for
    ``restoration``). The best epoch's weights are restored. Returns the history, as :func:`train.fit` does;
    ``val_metric`` is the pixel accuracy inside the brain (segmentation) or the mean absolute error (restoration).
    """
    if TASK_KINDS.get(task) not in ("segmentation", "restoration"):
        dense = [name for name, kind in TASK_KINDS.items() if kind != "classification"]
        raise ValueError(f"fit_dense trains the dense tasks ({', '.join(dense)}), got {task!r}")
    check_choice("learning-rate schedule", lr_schedule, train.LR_SCHEDULES)
    x_train, x_val = train.as_tensor_images(train_data[0]), train.as_tensor_images(val_data[0])
    segmentation = TASK_KINDS[task] == "segmentation"
    y_train, y_val = dense_targets(task, train_data[1]), dense_targets(task, val_data[1])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=lr)
    steps = epochs * -(-len(x_train) // batch_size)
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
                 if lr_schedule == "onecycle" else None)
    loss_function = nn.CrossEntropyLoss() if segmentation else nn.MSELoss()
    generator = torch.Generator().manual_seed(seed)
    model = model.to(memory_format=torch.channels_last)
    history = {"epochs": [], "best_epoch": None, "stopped_early": False, "device": "cpu", "task": task}
    stopper = train.EarlyStopping(patience)
    started = time.perf_counter()
    for epoch in tqdm(range(1, epochs + 1), desc="epochs", disable=not progress, leave=False):
        model.train()
        total, seen = 0.0, 0
        for index in train.batches(len(x_train), batch_size, generator):
            flips = (torch.rand(2, len(index), generator=generator) < 0.5)[:, :, None, None, None]
            x, y = x_train[index], y_train[index]
            y = y[:, None] if segmentation else y
            x, y = (torch.where(flips[0], t.flip(-1), t) for t in (x, y))
            x, y = (torch.where(flips[1], t.flip(-2), t) for t in (x, y))
            y = y[:, 0] if segmentation else y
            optimiser.zero_grad(set_to_none=True)
            loss = loss_function(model(x.contiguous(memory_format=torch.channels_last)), y)
            loss.backward()
            optimiser.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach()) * len(index)
            seen += len(index)
        val_loss, val_metric = dense_scores(model, x_val, y_val, task, batch_size)
        history["epochs"].append({"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss,
                                  "val_metric": val_metric})
        if stopper.update(val_loss, epoch, model):
            break
    stopper.restore(model, history)
    model.to(memory_format=torch.contiguous_format)
    # exact BatchNorm statistics for the kept weights (the blocks run in eval mode once transferred and frozen),
    # unless they do worse on the validation slices than the running ones
    calibration = train.recalibrate_if_better(model, x_train, lambda m: dense_scores(m, x_val, y_val, task,
                                                                                     batch_size), batch_size)
    val_loss, val_metric = calibration[calibration["kept"]]
    history["recalibrated"] = {"val_loss": val_loss, "val_metric": val_metric, "statistics": calibration["kept"],
                               "running": calibration["running"], "exact": calibration["recalibrated"]}
    history["seconds"] = round(time.perf_counter() - started, 3)
    return history


def dense_targets(task: str, targets) -> torch.Tensor:
    """A dense task's targets as the loss and :func:`dense_scores` take them: class indices (``long``) for
    segmentation, images ``(n, 1, h, w)`` for restoration."""
    if TASK_KINDS[task] == "segmentation":
        return torch.as_tensor(np.asarray(targets)).long()
    return train.as_tensor_images(targets)


@torch.no_grad()
def dense_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, batch_size: int = 64):
    """Validation loss and metric of a dense model: (cross-entropy, pixel accuracy inside the brain) for
    segmentation, (mean squared error, mean absolute error) for restoration."""
    model.eval()
    loss = metric = 0.0
    count = 0
    for index in train.batches(len(x), batch_size):
        out = model(x[index])
        if TASK_KINDS[task] == "segmentation":
            loss += float(nn.functional.cross_entropy(out, y[index], reduction="sum")) / y[index][0].numel()
            brain = y[index] > 0
            metric += float(((out.argmax(1) == y[index]) & brain).sum() / brain.sum().clamp(min=1)) * len(index)
        else:
            loss += float(nn.functional.mse_loss(out, y[index], reduction="sum")) / y[index][0].numel()
            metric += float(nn.functional.l1_loss(out, y[index], reduction="sum")) / y[index][0].numel()
        count += len(index)
    return loss / max(count, 1), metric / max(count, 1)
