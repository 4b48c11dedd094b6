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
            "source": "mni152",
            "n_subjects": 24,
            "slices_per_subject": 12,
            "image_size": 64,
            "min_brain_fraction": 0.6,
            "task": "shape",
            "split_fractions": (0.6, 0.2, 0.2),
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
