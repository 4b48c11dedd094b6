"""Named parameter sets: one ``preset`` argument switches scale, every single value can still be overridden.

Each preset is split by pipeline step (``data``, ``overview`` …), so a notebook asks only for its own section::

    cfg = resolve("data", preset="smoke", image_size=96)   # smoke values, one override

``None`` means "take the preset's value", which lets a notebook's papermill parameters default to ``None``.
"""

from __future__ import annotations

import copy
from typing import Any

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # CPU, small images, a few hundred slices: the whole book builds in minutes on 2 cores.
    "smoke": {
        "overview": {
            "min_brain_fraction": 0.6,  # keep axial slices holding >= 60 % of the largest slice's brain area
            "n_slices_shown": 8,
        },
        "data": {
            # volumes: "mni152" (pseudo-subjects from nilearn's template), "ixi" (fetched IXI T1), or a folder
            "source": "mni152",
            "n_subjects": 48,
            "slices_per_subject": 16,  # distinct axial levels per subject, drawn from the band
            "image_size": 64,  # pixels per side
            "min_brain_fraction": 0.6,  # axial band: slices with >= 60 % of the largest slice's brain area
            "task": "shape",  # "shape": regular vs irregular lesions; "presence": lesions vs none
            "n_lesions": (1, 2),  # lesions per image (inclusive)
            "radius_range": (4.0, 8.0),  # equivalent lesion radius, pixels
            "max_aspect": 1.5,  # ellipse aspect ratio drawn from [1, max_aspect]
            "irregularity": 0.4,  # RMS relative boundary modulation of irregular lesions
            "lesion_contrast": (0.3, 0.6),  # additive offset, in units of the slice's brain intensity range
            "edge_softness": 1.0,  # soft-edge ramp width, pixels (0: hard edges)
            "min_gap": 1.0,  # pixels between lesions
            "placement": "brain",  # "brain" or "white_matter"
            # pseudo-subjects (source "mni152" only): simulated variability of one anatomy
            "deformation_mm": 5.0,  # SD of the B-spline deformation's control-point coefficients (mm)
            "rotation_deg": 5.0,  # in-plane rotation drawn from +- this
            "scale_jitter": 0.05,  # isotropic scaling drawn from 1 +- this
            "contrast_jitter": 0.15,  # SD of log gamma of the intensity curve
            "bias_field": 0.2,  # SD of the B-spline coefficients of the smooth log bias field
            "noise": 0.02,  # Rician noise SD, relative to bright brain tissue
            "split_fractions": (0.6, 0.2, 0.2),  # train, val, test (by subject)
            "seed": 0,
        },
    },
    # The reference study's scale: VGG-16 at 224², thousands of images: a GPU job.
    "study": {
        "overview": {
            "min_brain_fraction": 0.6,
            "n_slices_shown": 12,
        },
        "data": {
            "source": "mni152",
            "n_subjects": 200,
            "slices_per_subject": 20,
            "image_size": 224,
            "min_brain_fraction": 0.6,
            "task": "shape",
            "n_lesions": (1, 2),
            "radius_range": (14.0, 28.0),  # the smoke radii scaled by 224 / 64
            "max_aspect": 1.5,
            "irregularity": 0.4,
            "lesion_contrast": (0.3, 0.6),
            "edge_softness": 3.0,
            "min_gap": 3.0,
            "placement": "brain",
            "deformation_mm": 5.0,
            "rotation_deg": 5.0,
            "scale_jitter": 0.05,
            "contrast_jitter": 0.15,
            "bias_field": 0.2,
            "noise": 0.02,
            "split_fractions": (0.6, 0.2, 0.2),
            "seed": 0,
        },
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def resolve(step: str, preset: str = "smoke", **overrides: Any) -> dict[str, Any]:
    """Return the parameters of ``step`` under ``preset``, with every non-``None`` override applied.

    Raises ``ValueError`` naming the bad preset, step or parameter and listing the valid ones.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(preset_names())}")
    sections = PRESETS[preset]
    if step not in sections:
        raise ValueError(f"unknown step {step!r} in preset {preset!r}; valid steps: {', '.join(sorted(sections))}")
    params = copy.deepcopy(sections[step])
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for step {step!r}; "
            f"valid parameters: {', '.join(sorted(params))}"
        )
    params.update({key: value for key, value in overrides.items() if value is not None})
    return params


# Model steps (notebooks 2 and 3, and the grid). Kept apart from the data sections above so that each step's
# parameters read together.
PRESETS["smoke"].update({
    # Notebook 2: in-domain pre-training on lesion-free slices of pseudo-subjects disjoint from the benchmark's.
    "pretrain": {
        "backbone": "mobilenet_v2",  # the backbone whose ImageNet weights can be had offline
        "width": 1.0,
        # "auto": train every candidate task and keep the one chosen by the criterion of notebook 2
        "task": "level_band",
        "candidate_tasks": ["level_band"],
        "n_bands": 4,
        "n_subjects": 24,
        "slices_per_subject": 16,
        "image_size": 64,
        "epochs": 20,
        "lr": 1e-3,
        "batch_size": 32,
        # Trained from scratch, the BatchNorm running statistics lag the weights: validation accuracy sits at
        # chance for the first ~7 epochs while training accuracy climbs, so a shorter patience stops too early.
        "patience": 10,
        "lr_schedule": "constant",
        "seed": 1000,  # a seed stream apart from the benchmark's, so pseudo-subjects differ
        "selection_k": 3,  # the candidate tasks are compared by a transfer run with k frozen blocks …
        "selection_seeds": [0],  # … and these seeds (validation accuracy on the lesion task)
        "workers": 1,  # pre-training and transfer runs done at once, each in its own process
    },
    # Notebook 3: one fine-tuning run (one grid cell).
    "finetune": {
        "backbone": "mobilenet_v2",
        "width": 1.0,
        "mode": "transfer",  # "transfer": blocks after k re-initialised; "finetune": all start pre-trained
        # Blocks trained from scratch need a few epochs before validation moves off chance (BatchNorm statistics
        # lag the weights, as in notebook 2), and their validation loss is noisy: a short patience restores an
        # epoch-1 model at chance.
        "epochs": 40,
        "lr": 1e-3,
        "batch_size": 32,
        "patience": 12,
        "dropout": 0.2,
        "weight_decay": 0.0,
        # Random left-right / up-down flips of the training images. Without them the few hundred training slices
        # are memorised by the runs that train most blocks from scratch (training accuracy > 0.9, validation at
        # chance).
        "augment": "flips",
        "lr_schedule": "constant",
    },
    "grid": {
        "sources": ["imagenet", "mri", "none"],
        # transfer mode: k = 0 means no pre-trained block, so "none" is run at k = 0 only
        "n_pretrained_blocks": {"imagenet": [1, 3, 5], "mri": [1, 3, 5], "none": [0]},
        "seeds": [0],
        "workers": 1,  # cells trained at once (runs.run_grid); results do not depend on it
    },
})
PRESETS["study"].update({
    "pretrain": {
        "backbone": "vgg16",
        "width": 1.0,
        "task": "auto",
        "candidate_tasks": ["level_band", "tissue_segmentation", "restoration"],
        "n_bands": 4,
        "n_subjects": 200,
        "slices_per_subject": 20,
        "image_size": 224,
        "epochs": 30,
        "lr": 1e-4,
        "batch_size": 32,
        "patience": 5,
        "lr_schedule": "constant",
        "seed": 1000,
        "selection_k": 3,
        "selection_seeds": [0],
        "workers": 1,
    },
    "finetune": {
        "backbone": "vgg16",
        "width": 1.0,
        "mode": "transfer",
        "epochs": 30,
        "lr": 1e-4,
        "batch_size": 32,
        "patience": 5,
        "dropout": 0.5,
        "weight_decay": 0.0,
        "augment": "none",
        "lr_schedule": "constant",
    },
    "grid": {
        "sources": ["imagenet", "mri", "none"],
        "n_pretrained_blocks": {"imagenet": [1, 2, 3, 4, 5], "mri": [1, 2, 3, 4, 5], "none": [0]},
        "seeds": [0, 1, 2],
        "workers": 1,
    },
})


# The default book (`make book`): 2 CPU cores, the whole build within 30 minutes, models that learn the task, and
# 3 seeds per grid cell so that the regression has 21 clusters. Derived from smoke; what differs is said why.
PRESETS["book"] = copy.deepcopy(PRESETS["smoke"])
PRESETS["book"]["data"].update({
    # 2,560 slices: with a few hundred, the blocks trained from scratch did not learn; more did not fit the 30
    # minutes of the book (a grid cell costs 70-120 s on one core, most of it proportional to the number of images).
    "n_subjects": 160,
    # 70 % of the subjects for training (1,792 slices): with 60 % (1,536), a `none` run reached 0.81 on the test
    # split; 384 validation and 384 test slices remain.
    "split_fractions": (0.7, 0.15, 0.15),
    # Two lesions per image and a stronger boundary modulation: MobileNetV2 trained from scratch for 6 epochs
    # reached a validation accuracy of 0.82 with (2, 2) lesions at irregularity 0.4, and 0.93 at 0.6
    # (benchmarks: see the Reproducing chapter). The task stays a shape task: sizes are drawn alike per class.
    "n_lesions": (2, 2),
    "irregularity": 0.6,
})
PRESETS["book"]["pretrain"].update({
    # Three in-domain tasks, one chosen on validation data by the rule stated in notebook 2, with the same slices,
    # epochs and optimiser each.
    "task": "auto",
    "candidate_tasks": ["level_band", "tissue_segmentation", "restoration"],
    "n_subjects": 64,
    "epochs": 6,
    "lr": 3e-3,
    "batch_size": 64,
    "patience": 6,
    "lr_schedule": "onecycle",
    # Three tasks and their transfer runs, two at a time with one thread each (on 2 cores, about 1.7 times the
    # images per second of one process with two threads).
    "workers": 2,
})
PRESETS["book"]["finetune"].update({
    # One-cycle schedule (warm-up, then cosine annealing) over a fixed budget: blocks trained from scratch learn
    # in a few epochs instead of sitting at chance while BatchNorm statistics settle.
    "epochs": 4,
    "lr": 3e-3,
    "batch_size": 64,
    "patience": 4,
    "lr_schedule": "onecycle",
})
# Two cells side by side with one thread each train faster on 2 cores than one cell with two threads. k = 2, 3, 5:
# with k = 1 the runs trained all but MobileNetV2's first stage, as slowly as from scratch (about 155 s each on
# one thread), which put the grid over the book's 30 minutes.
PRESETS["book"]["grid"].update({"n_pretrained_blocks": {"imagenet": [2, 3, 5], "mri": [2, 3, 5], "none": [0]},
                                "seeds": [0, 1, 2], "workers": 2})


# Notebook 4: explanations scored against the lesion masks.
CHEAP_METHODS = ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "gradient_shap", "deeplift",
                 "guided_backprop", "grad_cam", "occlusion"]
BASELINE_METHODS = ["sobel", "laplace", "random", "input"]
PRESETS["smoke"]["explain"] = {
    "methods": CHEAP_METHODS + BASELINE_METHODS,
    "metrics": ["emd_score", "importance_mass_accuracy", "topk_precision", "pointing_game", "roc_auc"],
    "n_test_images": 24,  # class-balanced sample of the test split, the same for every run
    "n_images_costly": 8,  # LIME / KernelSHAP / Shapley sampling run on this many of them
    "resolution": 32,  # scoring resolution (sum-pooled); exact EMD at 64² would take ~10× longer on the CPU
    "selection": "correct",  # "correct" (per run), "correct_all" (correct for every run) or "all"
    "n_boot": 1000,
    "seed": 0,
    "workers": 1,  # runs explained at once, each in its own process (1: here, scoring spread over the cores)
    # Model-randomisation sanity check (xaiutils.sanity), on the most accurate run only: the first sanity_images of
    # the explained images, the top sanity_stages stages re-initialised (head, then blocks from the last); a method
    # whose maps keep a mean rank correlation >= sanity_threshold with the trained model's maps is flagged.
    "sanity_images": 2,
    "sanity_stages": 2,
    "sanity_threshold": 0.5,
}
# 8 test images per run: explaining 21 runs on 16 images each took 531 s of the book's 30 minutes. Two runs at once,
# one thread each: 12.5 s a run with two threads in one process, at batches of 8 images.
PRESETS["book"]["explain"] = {**PRESETS["smoke"]["explain"], "n_test_images": 8, "workers": 2,
                              # the sanity check's share of the book's 30 minutes: measured in the Reproducing chapter
                              "sanity_images": 2, "sanity_stages": 2}
PRESETS["study"]["explain"] = {
    "methods": CHEAP_METHODS + ["deeplift_shap", "deconvolution", "guided_grad_cam", "lrp", "lime", "kernel_shap"]
    + BASELINE_METHODS,
    "metrics": ["emd_score", "importance_mass_accuracy", "topk_precision", "pointing_game", "roc_auc"],
    "n_test_images": 1000,
    "n_images_costly": 100,  # perturbation methods cost thousands of forward passes per image: a subset
    "resolution": 64,  # the convention of the sibling benchmark XAI-TRIS
    "selection": "correct",
    "n_boot": 1000,
    "seed": 0,
    "workers": 1,
    "sanity_images": 32,
    "sanity_stages": 6,  # VGG-16: the head and the five conv blocks, the full cascade
    "sanity_threshold": 0.5,
}


# Notebook 5: explanation performance against pre-training, corrected for accuracy.
for _name in PRESETS:
    PRESETS[_name]["regression"] = {
        "metric": "emd_score",
        "selection": "correct",
        # The smoke and book grids run "none" at k = 0 only, so the source × k interaction is not estimable there.
        "formula": "score ~ accuracy + C(source) * k" if _name == "study" else "score ~ accuracy + C(source) + k",
        "n_boot": 1000,
        "seed": 0,
    }
