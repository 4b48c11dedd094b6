"""The benchmark dataset in memory (:class:`Benchmark`) and its content hash, the identity a dataset card
records and every later step checks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xaiutils.domain.synth.parameters import SPLITS


@dataclass
class Benchmark:
    """A benchmark dataset: arrays in memory (``path`` set when read from or written to disk).

    Unpacks as ``images, masks, labels, metadata, card = benchmark``.
    """

    images: np.ndarray  # N×H×W float32
    masks: np.ndarray  # N×H×W float32 in [0, 1]; binarise at 0.5
    labels: np.ndarray  # N int64
    metadata: pd.DataFrame  # one row per image
    card: dict[str, Any]
    brain_masks: np.ndarray  # N×H×W bool
    lesions: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per lesion
    # N×H×W float32 in [0, 1], the class-independent distractors (variant "distractor" only; None otherwise)
    distractor_masks: np.ndarray | None = None
    path: Path | None = None

    def __iter__(self):
        return iter((self.images, self.masks, self.labels, self.metadata, self.card))

    def __len__(self) -> int:
        return len(self.labels)

    def indices(self, split: str | None = None) -> np.ndarray:
        """Row indices of ``split`` (all rows for ``None``)."""
        if split is None:
            return np.arange(len(self))
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        return np.flatnonzero(self.metadata["split"].to_numpy() == split)


def content_hash(bench: Benchmark) -> str:
    """sha256 over the arrays' bytes (with dtype and shape) and a canonical CSV of the metadata and lesion
    tables; file timestamps and the card do not enter it."""
    digest = hashlib.sha256()
    # distractor masks only where there are any, so that datasets without them keep their hashes
    names = ("images", "masks", "brain_masks", "labels") + (() if bench.distractor_masks is None
                                                             else ("distractor_masks",))
    for name in names:
        array = np.ascontiguousarray(getattr(bench, name))
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    for table in (bench.metadata, bench.lesions):
        digest.update(table.to_csv(index=False, float_format="%.10g", lineterminator="\n").encode())
    return digest.hexdigest()

