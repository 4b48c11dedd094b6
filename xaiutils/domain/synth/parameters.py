"""The ``data`` configuration of the benchmark: checked once before any work, and turned into the objects the
generators take (:class:`~xaiutils.domain.synth.lesions.LesionParams`,
:class:`~xaiutils.domain.mri.slices.Variability`) and into
the volume source (the MNI152 template, the fetched IXI folder or a folder of T1 volumes).

The configuration key is ``source`` (as in the presets and notebook 1); the idea is called the *volume source*
here, to tell it apart from the source of pre-trained weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from xaiutils.domain.mri.fetch import ixi_folder
from xaiutils.domain.mri.slices import Variability
from xaiutils.domain.synth.lesions import LesionParams

TASKS = ("shape", "presence")
# "distractor": every image also gets one blob that carries no class information (its shape is drawn at random,
# whatever the class) but looks like a lesion (the smallest lesion radius, the same contrast magnitude as the image's
# lesions, opposite sign); it is outside the ground-truth mask and its own mask is kept as ``distractor_masks``.
VARIANTS = ("none", "distractor")
SPLITS = ("train", "val", "test")
CLASS_NAMES = {"shape": ("regular", "irregular"), "presence": ("no lesion", "lesion")}
TEMPLATE_SOURCE = "mni152"
IXI_SOURCE = "ixi"
# Largest image side (pixels). Memory grows with its square: the array cache holds every image, mask and brain
# (3 arrays of n_images × size² values), and attribution holds, per image, a map per method plus the many perturbed
# or interpolated copies of the image that the methods batch (integrated gradients, SmoothGrad, occlusion). At
# 4096 pixels three images already took 4.8 GB; 512 keeps the study's 224 (VGG-16's input) with room to spare.
MAX_IMAGE_SIZE = 512


def check_image_size(value: Any, name: str = "image_size") -> int:
    """``value`` as a pixel count within 16..:data:`MAX_IMAGE_SIZE`; ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 16 <= value <= MAX_IMAGE_SIZE:
        raise ValueError(f"{name} must be at least 16 pixels and at most {MAX_IMAGE_SIZE}, got {value!r} (memory grows "
                         f"with its square: the array cache and the attribution maps; the study preset uses 224)")
    return int(value)


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate a resolved ``data`` configuration; return it with tuples normalised. Raises ``ValueError``
    naming the bad value (and listing valid choices) before any work is done."""
    cfg = dict(config)
    if cfg["lesion_task"] not in TASKS:
        raise ValueError(f"unknown lesion_task {cfg['lesion_task']!r}; valid choices: {', '.join(TASKS)}")
    for name in ("n_subjects", "slices_per_subject", "image_size"):
        value = cfg[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    check_image_size(cfg["image_size"])
    fractions = tuple(float(f) for f in cfg["split_fractions"])
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"split_fractions must be {len(SPLITS)} non-negative numbers ({', '.join(SPLITS)}) summing to 1, "
            f"got {cfg['split_fractions']!r}"
        )
    for split, fraction in zip(SPLITS, fractions, strict=True):
        if not 0 < fraction < 1:
            raise ValueError(
                f"split_fractions gives the {split} split {fraction:g}; each of {', '.join(SPLITS)} must lie "
                f"strictly between 0 and 1 (every split needs at least one subject: notebook 3 validates on val and "
                f"notebook 4 explains test images), summing to 1, e.g. [0.6, 0.2, 0.2]; got {cfg['split_fractions']!r}")
    needed = sum(f > 0 for f in fractions)
    if cfg["n_subjects"] < needed:
        raise ValueError(f"n_subjects={cfg['n_subjects']} is too few for {needed} non-empty splits")
    cfg["split_fractions"] = fractions
    if not isinstance(cfg["seed"], (int, np.integer)) or isinstance(cfg["seed"], bool) or cfg["seed"] < 0:
        raise ValueError(f"seed must be a non-negative integer, got {cfg['seed']!r}")
    if cfg.get("variant", "none") not in VARIANTS:
        raise ValueError(f"unknown variant {cfg.get('variant')!r}; valid choices: {', '.join(VARIANTS)}")
    params = lesion_params_from_config(cfg)
    variability_from_config(cfg)
    volume_source = cfg["volume_source"]
    if not isinstance(volume_source, (str, os.PathLike)):
        raise ValueError(f"volume_source must be {TEMPLATE_SOURCE!r}, {IXI_SOURCE!r} or a folder, "
                         f"got {volume_source!r}")
    # as the lesion generator reads them (checked: whole lesion counts, finite numbers), so the card records
    # exactly the values used
    cfg["n_lesions"], cfg["radius_range"] = params.n_lesions, params.radius_range
    cfg["lesion_contrast"] = params.contrast_range
    return cfg


def lesion_params_from_config(cfg: dict[str, Any]) -> LesionParams:
    """The lesion parameters of a ``data`` configuration."""
    return LesionParams(
        n_lesions=tuple(cfg["n_lesions"]),
        radius_range=tuple(cfg["radius_range"]),
        max_aspect=float(cfg["max_aspect"]),
        irregularity=float(cfg["irregularity"]),
        contrast_range=tuple(cfg["lesion_contrast"]),
        texture=float(cfg.get("lesion_texture", 0.0)),
        texture_scale=float(cfg.get("texture_scale", 1.5)),
        edge_softness=float(cfg["edge_softness"]),
        min_gap=float(cfg["min_gap"]),
        placement=cfg["placement"],
    )


def variability_from_config(cfg: dict[str, Any]) -> Variability:
    """The pseudo-subject variability of a ``data`` configuration."""
    return Variability(*(float(cfg[name]) for name in (
        "deformation_mm", "rotation_deg", "scale_jitter", "contrast_jitter", "bias_field", "noise")))


def resolve_volume_source(source: str | os.PathLike) -> str | Path:
    """The volume source of the configuration key ``volume_source``: ``"mni152"`` stays as it is; ``"ixi"`` becomes the
    fetched IXI folder; anything else is a folder."""
    if str(source) == TEMPLATE_SOURCE:
        return TEMPLATE_SOURCE
    if str(source) == IXI_SOURCE:
        return ixi_folder(must_exist=True)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"unknown volume_source {str(source)!r}: not {TEMPLATE_SOURCE!r}, not {IXI_SOURCE!r} and not an existing "
            "folder of T1 NIfTI volumes"
        )
    return folder


def describe_volume_source(volume_source: str | Path) -> dict[str, Any]:
    """What the dataset card says about the volume source (its ``source`` entry)."""
    if volume_source == TEMPLATE_SOURCE:
        return {
            "kind": "pseudo-subjects",
            "name": "MNI152 2009 T1 template (nilearn)",
            "note": "every subject is the same template anatomy under a random smooth deformation, intensity "
                    "curve, bias field and noise: simulated variability of one anatomy, not real subjects",
        }
    return {"kind": "folder", "name": Path(volume_source).name, "note": "real T1 volumes, one per subject"}

