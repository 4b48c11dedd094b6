"""In-domain (MRI) pre-training data: lesion-free slices labelled by the band of axial levels they come from.

The labels come free from geometry, so the task needs no annotation, yet the network must learn brain anatomy to
solve it. Pseudo-subjects are drawn from their own seed stream, so none of them is one of the benchmark's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import data

PRETRAIN_TASKS = ("level_band",)


def level_bands(band: np.ndarray, n_bands: int) -> np.ndarray:
    """Band index (0 = most inferior) of each level in ``band``, in ``n_bands`` contiguous groups of equal size
    (as equal as the number of levels allows)."""
    band = np.asarray(band)
    if not 2 <= n_bands <= len(band):
        raise ValueError(f"n_bands must lie in 2..{len(band)} (the number of levels in the band), got {n_bands}")
    return np.minimum((np.arange(len(band)) * n_bands) // len(band), n_bands - 1)


def level_band_dataset(n_subjects: int, slices_per_subject: int, image_size: int, n_bands: int = 4,
                       min_brain_fraction: float = 0.6, seed: int = 1000, split_fractions=(0.8, 0.2, 0.0),
                       variability: data.Variability | None = None, task: str = "level_band",
                       progress: bool = True):
    """Lesion-free slices of pseudo-subjects of the MNI152 template, labelled by axial level band.

    Each subject contributes ``slices_per_subject`` levels spread over the bands (balanced classes). Returns
    ``(images, labels, metadata)`` with ``metadata`` holding subject, level, band and split (by subject).
    """
    from tqdm import tqdm

    if task not in PRETRAIN_TASKS:
        raise ValueError(f"unknown pre-training task {task!r}; valid tasks: {', '.join(PRETRAIN_TASKS)}")
    if slices_per_subject % n_bands:
        raise ValueError(f"slices_per_subject ({slices_per_subject}) must be a multiple of n_bands ({n_bands}) "
                         "so that every band is equally represented")
    anatomy = data.template_anatomy(int(image_size), float(min_brain_fraction))
    band_of_level = level_bands(anatomy.band, n_bands)
    variability = variability or data.Variability()
    root = np.random.SeedSequence(int(seed))
    split_seq, subject_seq = root.spawn(2)
    splits = data.assign_splits(n_subjects, split_fractions, np.random.default_rng(split_seq))
    per_band = slices_per_subject // n_bands
    images, labels, rows = [], [], []
    for index, subject_seed in enumerate(tqdm(subject_seq.spawn(n_subjects), desc="subjects", disable=not progress)):
        rng = np.random.default_rng(subject_seed)
        levels = np.concatenate([
            rng.choice(anatomy.band[band_of_level == band], per_band, replace=False) for band in range(n_bands)])
        levels = np.sort(levels)
        slices, _ = data.sample_slices(anatomy, levels, int(image_size), rng, variability)
        for image, level in zip(slices, levels, strict=True):
            label = int(band_of_level[np.searchsorted(anatomy.band, level)])
            images.append(image)
            labels.append(label)
            rows.append({"subject": f"pretrain{index:03d}", "level": int(level),
                         "z_mm": float(data.level_to_mm(level, anatomy.affine)), "band": label,
                         "split": str(splits[index])})
    return np.stack(images).astype(np.float32), np.asarray(labels, dtype=np.int64), pd.DataFrame(rows)
