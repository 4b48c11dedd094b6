"""What a grid cell reads besides its parameters: the dataset (its card and content hash) and the MRI checkpoint,
checked before any cell starts and fingerprinted by content, so that a cell built from other inputs runs again."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xaiutils.execution.paths import default_out_dir, find_notebook

INPUTS_FILE = "inputs.json"


def grid_inputs(preset: str, parameters: Mapping[str, Any]) -> tuple[Path, Path]:
    """The dataset folder and MRI checkpoint a fine-tuning cell reads (``data_dir`` and ``mri_checkpoint``, or
    the preset's run folders of notebooks 1 and 2)."""
    data_dir = Path(parameters.get("data_dir") or default_out_dir(preset, "01_data") / "dataset")
    checkpoint = Path(parameters.get("mri_checkpoint") or default_out_dir(preset, "02_pretrain_mri") / "model.pt")
    return data_dir, checkpoint


def input_fingerprint(preset: str, parameters: Mapping[str, Any],
                      notebook: str | os.PathLike = "03_finetune") -> dict[str, Any]:
    """What a grid cell depends on besides its own parameters, by content.

    - ``dataset_hash`` and ``mri_checkpoint_sha256``: the dataset's content hash and the MRI checkpoint's SHA-256.
      Paths alone are not enough: re-running notebook 1 or 2 rewrites the same paths with other contents. The
      dataset's hash is checked against its data (:func:`~xaiutils.domain.synth.dataset.dataset_hash`), so a dataset
      changed after its card was written raises ``ValueError`` instead of passing for the old one.
    - ``finetune_config``: the fine-tuning settings after the preset is applied, so that a changed preset value
      (not only a changed papermill parameter) runs the cell again.
    - ``code_sha256``: the notebook's text and the source of ``xaiutils`` (subpackages included), so that a cell
      trained by older code is not taken for a current one.

    A missing input is recorded as ``None``.
    """
    import hashlib

    from xaiutils.domain.synth.dataset import dataset_hash  # the dataset's own card and hash (imports numpy, pandas)
    from xaiutils.foundation.config import resolve

    data_dir, checkpoint = grid_inputs(preset, parameters)
    dataset = dataset_hash(data_dir) if (data_dir / "card.json").is_file() else None
    checkpoint_hash = hashlib.sha256(checkpoint.read_bytes()).hexdigest() if checkpoint.is_file() else None
    keys = resolve("finetune", preset)
    finetune_config = resolve("finetune", preset, **{key: parameters.get(key) for key in keys})
    code = hashlib.sha256(find_notebook(notebook).read_bytes())
    package = Path(__file__).resolve().parents[1]  # xaiutils/, its subpackages included
    for source in sorted(package.rglob("*.py")):
        code.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    return {"dataset_hash": dataset, "mri_checkpoint_sha256": checkpoint_hash,
            "finetune_config": json.loads(json.dumps(finetune_config, default=str)), "code_sha256": code.hexdigest()}


def check_grid_inputs(preset: str, parameters: Mapping[str, Any], cells) -> None:
    """Before any cell starts: the dataset must exist, and the MRI checkpoint too when a cell pre-trains on MRI.
    The errors name the command that makes the missing input. (That the dataset's data match its card is checked
    by :func:`input_fingerprint`, which the grid computes before any cell starts as well.)"""
    data_dir, checkpoint = grid_inputs(preset, parameters)
    if not (data_dir / "card.json").is_file():
        raise FileNotFoundError(
            f"the grid needs a dataset, and {data_dir} holds none (card.json is missing); make it first: "
            f"python -m xaiutils run 01_data --preset {preset}"
            + ("" if parameters.get("data_dir") is None else " --out <folder> (then -p data_dir <folder>/dataset)"))
    if any(cell["source"] == "mri" for cell in cells) and not checkpoint.is_file():
        raise FileNotFoundError(
            f"the grid's 'mri' cells need the MRI checkpoint {checkpoint}, which does not exist; make it first: "
            f"python -m xaiutils run 02_pretrain_mri --preset {preset}"
            + ("" if parameters.get("mri_checkpoint") is None else " (or pass -p mri_checkpoint FILE)"))
