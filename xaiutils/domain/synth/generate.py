"""Benchmark synthesis, in :func:`synthesize`: volumes → axial slices over a band of levels with enough brain,
resampled to ``image_size`` and scaled robustly within the brain → lesions drawn (:mod:`.lesions`) →
subject-wise splits with balanced classes. All randomness comes from the configuration's seed, through one
``SeedSequence`` spawned per purpose and per subject, so the same configuration gives the same content hash."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm import tqdm

from xaiutils.domain.mri.anatomy import axial_band, level_to_mm, prepare_anatomy, template_anatomy
from xaiutils.domain.mri.nifti import find_volumes, load_volume
from xaiutils.domain.mri.slices import sample_slices
from xaiutils.domain.synth import lesions as lesion_lib
from xaiutils.domain.synth import parameters
from xaiutils.domain.synth.benchmark import Benchmark, content_hash
from xaiutils.foundation.versions import versions


def assign_splits(n_subjects: int, fractions, rng: np.random.Generator) -> np.ndarray:
    """Split name per subject (shuffled): counts by largest remainder, at least one subject in every split with
    a positive fraction."""
    fractions = np.asarray(fractions, dtype=float)
    counts = np.floor(fractions * n_subjects).astype(int)
    for index in np.argsort(-(fractions * n_subjects - counts), kind="stable")[: n_subjects - counts.sum()]:
        counts[index] += 1
    for index in np.flatnonzero((fractions > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        counts[donor] -= 1
        counts[index] += 1
    names = np.repeat(np.array(parameters.SPLITS), counts)
    return names[rng.permutation(n_subjects)]


def _balanced_labels(count: int, extra: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.array([0, 1] * (count // 2) + ([extra] if count % 2 else []), dtype=np.int64)
    return labels[rng.permutation(count)]


def _place_with_distractor(region, shapes, params, rng, where):
    """Lesions of ``shapes``, then one class-independent distractor at least ``min_gap`` away from them: its shape
    drawn at random whatever the class, the smallest lesion radius (so that it fits beside the lesions in the small
    slices at the top of the brain), and the lesions' mean contrast with the opposite sign (an image without lesions:
    its own draw, sign flipped). A slice too crowded for the distractor gets its lesions redrawn.
    Returns ``(lesions, [distractor])``."""
    small = replace(params, radius_range=(params.radius_range[0], params.radius_range[0]), max_redraws=1)
    for _ in range(params.max_redraws):
        lesions, _ = lesion_lib.place_lesions(region, shapes, params, rng, where=where)
        free = np.asarray(region, dtype=bool).copy()
        if lesions:
            _, support = lesion_lib.draw_lesions(np.zeros(free.shape), lesions, params.edge_softness)
            free &= ndimage.distance_transform_edt(support <= 0) > params.min_gap
        try:
            blob, _ = lesion_lib.place_lesions(free, [lesion_lib.SHAPES[int(rng.integers(2))]], small, rng, where=where)
        except ValueError:
            continue
        blob[0].contrast = -float(np.mean([lesion.contrast for lesion in lesions] if lesions else [blob[0].contrast]))
        return lesions, blob
    raise ValueError(f"cannot place a distractor beside the lesions of {where} after {params.max_redraws} redraws "
                     f"(n_lesions={params.n_lesions}, radius_range={params.radius_range}); use fewer or smaller "
                     "lesions, or variant='none'")


def synthesize(config: dict[str, Any], progress: bool = True) -> Benchmark:
    """Build the benchmark in memory from a resolved ``data`` configuration (see ``presets``)."""
    cfg = parameters.check_config(config)
    params = parameters.lesion_params_from_config(cfg)
    size = int(cfg["image_size"])
    per_subject = int(cfg["slices_per_subject"])
    volume_source = parameters.resolve_volume_source(cfg["volume_source"])
    root = np.random.SeedSequence(int(cfg["seed"]))
    split_seq, subject_seq, choice_seq = root.spawn(3)

    if volume_source == parameters.TEMPLATE_SOURCE:
        n_subjects = int(cfg["n_subjects"])
        subjects = [f"pseudo{index:03d}" for index in range(n_subjects)]
        files = [None] * n_subjects
        template = template_anatomy(size, float(cfg["min_brain_fraction"]))
        if per_subject > len(template.band):
            raise ValueError(
                f"slices_per_subject={per_subject} exceeds the {len(template.band)} levels of the axial band "
                f"(min_brain_fraction={cfg['min_brain_fraction']})"
            )
        vary = parameters.variability_from_config(cfg)
    else:
        found = find_volumes(volume_source)
        if len(found) > cfg["n_subjects"]:
            chosen = np.sort(np.random.default_rng(choice_seq).choice(len(found), cfg["n_subjects"], replace=False))
            found = [found[i] for i in chosen]
        elif len(found) < cfg["n_subjects"]:
            warnings.warn(f"{volume_source} holds {len(found)} volumes; using all of them (n_subjects="
                          f"{cfg['n_subjects']})", stacklevel=2)
        needed = sum(f > 0 for f in cfg["split_fractions"])
        if len(found) < needed:
            raise ValueError(f"{volume_source} holds {len(found)} volume(s), too few for {needed} non-empty splits")
        subjects = [f.subject for f in found]
        files = found
        n_subjects = len(found)
        vary = None

    splits = assign_splits(n_subjects, cfg["split_fractions"], np.random.default_rng(split_seq))
    rank_in_split = np.zeros(n_subjects, int)
    for name in parameters.SPLITS:
        members = np.flatnonzero(splits == name)
        rank_in_split[members] = np.arange(len(members))
    class_names = parameters.CLASS_NAMES[cfg["lesion_task"]]
    with_distractor = cfg.get("variant", "none") == "distractor"
    images, masks, brains, labels, rows, lesion_rows, distractors = [], [], [], [], [], [], []
    subject_seeds = subject_seq.spawn(n_subjects)
    for index in tqdm(range(n_subjects), desc="subjects", disable=not progress):
        rng = np.random.default_rng(subject_seeds[index])
        if files[index] is None:
            anatomy = template
            levels = np.sort(rng.choice(anatomy.band, per_subject, replace=False))
        else:
            volume = load_volume(files[index])
            band = axial_band(volume.brain_mask, float(cfg["min_brain_fraction"]))
            if per_subject > len(band):
                raise ValueError(f"slices_per_subject={per_subject} exceeds the {len(band)} levels of the axial "
                                 f"band of {files[index].path}")
            levels = np.sort(rng.choice(band, per_subject, replace=False))
            anatomy = prepare_anatomy(volume.t1, volume.brain_mask, volume.affine, size,
                                      float(cfg["min_brain_fraction"]), levels=levels)
        slice_images, slice_brains = sample_slices(anatomy, levels, size, rng, vary)
        subject_labels = _balanced_labels(per_subject, int(rank_in_split[index] % 2), rng)
        pixel_mm = anatomy.pixel_mm(size)
        for image, brain, level, label in zip(slice_images, slice_brains, levels, subject_labels, strict=True):
            where = f"subject {subjects[index]}, level {int(level)}"
            if cfg["lesion_task"] == "shape":
                shape = lesion_lib.SHAPES[label]
                count = int(rng.integers(params.n_lesions[0], params.n_lesions[1] + 1))
            elif label == 1:
                shape = lesion_lib.SHAPES[int(rng.integers(2))]
                count = int(rng.integers(params.n_lesions[0], params.n_lesions[1] + 1))
            else:
                shape, count = "none", 0
            region = brain if params.placement == "brain" else lesion_lib.white_matter_region(image, brain)
            if with_distractor:
                placed, blob = _place_with_distractor(region, [shape] * count, params, rng, where)
                image, distractor = lesion_lib.draw_lesions(image, blob, params.edge_softness)
                distractors.append(distractor)
            else:
                placed, _ = lesion_lib.place_lesions(region, [shape] * count, params, rng, where=where)
            drawn, mask = lesion_lib.draw_lesions(image, placed, params.edge_softness)
            binary = mask >= 0.5
            n_image = len(images)
            table = lesion_lib.lesion_table_rows(placed, params.edge_softness)
            for row in table:
                lesion_rows.append({"image": n_image, **row})
            centroid = ndimage.center_of_mass(binary) if binary.any() else (np.nan, np.nan)
            rows.append({
                "image": n_image,
                "subject": subjects[index],
                "level": int(level),
                "z_mm": float(level_to_mm(level, anatomy.affine)),
                "split": str(splits[index]),
                "label": int(label),
                "class_name": class_names[label],
                "shape": shape,
                "n_lesions": len(placed),
                "lesion_area_px": int(binary.sum()),
                "lesion_area_mm2": float(binary.sum() * pixel_mm**2),
                "contrast": float(np.mean([p.contrast for p in placed])) if placed else np.nan,
                "solidity": float(np.mean([r["solidity"] for r in table])) if table else np.nan,
                "centroid_row": float(centroid[0]),
                "centroid_col": float(centroid[1]),
                "brain_area_px": int(brain.sum()),
                "pixel_mm": float(pixel_mm),
                **({"distractor_area_px": int((distractors[-1] >= 0.5).sum())} if with_distractor else {}),
            })
            images.append(drawn)
            masks.append(mask)
            brains.append(brain)
            labels.append(int(label))

    metadata = pd.DataFrame(rows)
    lesion_table = pd.DataFrame(lesion_rows, columns=[
        "image", "lesion", "shape", "center_row", "center_col", "radius_px", "aspect", "angle_deg", "contrast",
        "area_px", "solidity"])
    bench = Benchmark(
        images=np.stack(images).astype(np.float32),
        masks=np.stack(masks).astype(np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        metadata=metadata,
        card={},
        brain_masks=np.stack(brains).astype(bool),
        lesions=lesion_table,
        distractor_masks=np.stack(distractors).astype(np.float32) if with_distractor else None,
    )
    counts = metadata.groupby(["split", "class_name"]).size()
    bench.card = {
        "name": "xaiutils MRI lesion benchmark",
        "task": cfg["lesion_task"],
        "class_names": list(class_names),
        "n_images": len(bench),
        "n_subjects": n_subjects,
        "image_size": size,
        "seed": int(cfg["seed"]),
        "parameters": {key: (list(v) if isinstance(v, tuple) else v) for key, v in cfg.items()},
        "source": parameters.describe_volume_source(volume_source),
        "counts": {split: {name: int(counts.get((split, name), 0)) for name in class_names}
                   for split in parameters.SPLITS},
        "content_hash": content_hash(bench),
        "versions": versions(),
        "conventions": {
            "images": "N×H×W float32, slice seen from above: anterior at the top, subject's left on the left; "
                      "intensities scaled per slice so the brain's 0.5th/99.5th percentiles map to 0/1, then "
                      "lesions added",
            "masks": "N×H×W float32 in [0, 1] with soft edges; binarise at 0.5 for scoring",
            "brain_masks": "N×H×W bool",
            "labels": f"0 = {class_names[0]}, 1 = {class_names[1]}",
            **({"distractor_masks": "N×H×W float32 in [0, 1]: one class-independent blob per image (random shape, "
                                    "the image's lesion contrast with the opposite sign), not part of the ground "
                                    "truth"} if with_distractor else {}),
        },
    }
    return bench

