"""The lesion generators, now in :mod:`xaiutils.synth.lesions` (Otsu's thresholds in :mod:`xaiutils.mri.brain`).

This module re-exports their names so that ``from xaiutils import lesions`` and ``lesions.sample_lesion`` keep
working.
"""

from .mri.brain import otsu_threshold, otsu_thresholds_3
from .synth.lesions import (
    HARMONICS,
    PLACEMENTS,
    SHAPES,
    Lesion,
    LesionParams,
    draw_lesions,
    lesion_table_rows,
    local_mask,
    place_lesions,
    sample_lesion,
    soft_mask,
    solidity,
    white_matter_region,
)

__all__ = [
    "HARMONICS", "PLACEMENTS", "SHAPES", "Lesion", "LesionParams", "draw_lesions", "lesion_table_rows",
    "local_mask", "otsu_threshold", "otsu_thresholds_3", "place_lesions", "sample_lesion", "soft_mask", "solidity",
    "white_matter_region",
]
