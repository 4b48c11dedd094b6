"""What a fine-tuning run folder holds, written and read in one place.

Notebook 3 writes a run folder through :class:`RunRecord`; the grid collects ``accuracy.csv`` from the records
(:meth:`RunRecord.grid_row`), and notebook 4 and :mod:`xaiutils.analysis.evaluate` read them back. The folder holds:

- ``predictions.csv``: one row per validation and test image, columns :data:`PREDICTION_COLUMNS`;
- ``model.pt``: the weights alone (:func:`xaiutils.domain.models.save_weights`), loadable with ``weights_only=True``;
- ``model.json``: the sidecar, ``{"config", "history", "metrics"}`` as two-space JSON. It is written last and
  atomically, so a folder holding it is a finished run.

``config`` holds the fine-tuning settings and then :data:`RUN_KEYS` (:meth:`RunRecord.run_config`); ``history``
is what :func:`xaiutils.domain.train.fit` returns; ``metrics`` maps a split to
:func:`xaiutils.domain.train.classification_metrics`. Pre-training runs (notebook 2) use the same two files without
predictions. torch and pandas are imported only when a model or a table is read or written, so the grid, which
reads sidecars alone, stays light.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xaiutils.foundation.files import write_atomic

MODEL_FILE = "model.pt"
SIDECAR_FILE = "model.json"
PREDICTIONS_FILE = "predictions.csv"
PREDICTION_COLUMNS = ("image", "split", "label", "prob_class1", "predicted", "correct")
PREDICTED_SPLITS = ("val", "test")
# What a fine-tuning run adds to its settings in ``config``, in this order.
RUN_KEYS = ("source", "n_pretrained_blocks", "seed", "model", "preset", "dataset_hash")


def prediction_table(parts: Mapping[str, tuple[Any, Any, Any]]):
    """The ``predictions.csv`` table: for each split ``name: (images, labels, probabilities)``, in order, one row
    per image (dataset index, split, true label, probability of class 1, predicted class), and ``correct``."""
    import pandas as pd

    frames = [pd.DataFrame({"image": images, "split": name, "label": labels, "prob_class1": probabilities[:, 1],
                            "predicted": probabilities.argmax(axis=1)})
              for name, (images, labels, probabilities) in parts.items()]
    table = pd.concat(frames, ignore_index=True)
    table["correct"] = table["predicted"] == table["label"]
    return table


# How a damaged file of a run folder is made again: notebook 3 writes the folder; the grid reruns a damaged cell.
_REGENERATE = ("regenerate the run folder with notebook 3: python -m xaiutils grid (with the grid's preset) reruns "
               "a cell whose files were damaged, or delete the folder and run the grid again")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_predictions(path: str | os.PathLike):
    """``predictions.csv`` as a table; a missing, empty or unreadable file is refused naming it and how to
    regenerate it."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (a run's per-image predictions); {_REGENERATE}")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is damaged: it is empty ({path.stat().st_size} bytes, no header row); "
                         f"{_REGENERATE}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path} is damaged: not a readable CSV table ({_first_line(error)}); {_REGENERATE}") from None
    missing = [column for column in PREDICTION_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{path} is damaged: it lacks the column(s) {', '.join(missing)} (a run's predictions have "
                         f"{', '.join(PREDICTION_COLUMNS)}); {_REGENERATE}")
    return table


@dataclass
class RunRecord:
    """The content of one run folder: ``config``, ``history`` and ``metrics`` (the sidecar ``model.json``) and
    the per-image ``predictions`` (``predictions.csv``; ``None`` where a run has none or it was not read)."""

    config: dict[str, Any]
    history: dict[str, Any]
    metrics: dict[str, Any]
    predictions: Any = None  # pandas.DataFrame

    @staticmethod
    def run_config(settings: Mapping[str, Any], source: str, n_pretrained_blocks: int, seed: int, preset: str,
                   dataset_hash: str | None) -> dict[str, Any]:
        """``config`` of a fine-tuning run: the resolved ``settings`` (backbone, width, optimisation …), then
        :data:`RUN_KEYS`."""
        from xaiutils.domain.models import model_name

        return {**settings, "source": source, "n_pretrained_blocks": n_pretrained_blocks, "seed": seed,
                "model": model_name(settings["backbone"], settings["width"]), "preset": preset,
                "dataset_hash": dataset_hash}

    @classmethod
    def evaluated(cls, model, bench, config: Mapping[str, Any], history: Mapping[str, Any],
                  splits=PREDICTED_SPLITS) -> RunRecord:
        """The record of a trained ``model``: its metrics and predictions on ``splits`` of ``bench`` (a
        :class:`xaiutils.domain.synth.benchmark.Benchmark`), each split predicted in one pass."""
        from xaiutils.domain.train import classification_metrics, predict_proba

        metrics, parts = {}, {}
        for name in splits:
            rows = bench.indices(name)
            probabilities = predict_proba(model, bench.images[rows])
            metrics[name] = classification_metrics(bench.labels[rows], probabilities)
            parts[name] = (rows, bench.labels[rows], probabilities)
        return cls(dict(config), dict(history), metrics, prediction_table(parts))

    def sidecar(self) -> dict[str, Any]:
        """The content of ``model.json``."""
        return {"config": self.config, "history": self.history, "metrics": self.metrics}

    def write(self, out_dir: str | os.PathLike, model=None) -> Path:
        """Write the run folder ``out_dir``: ``predictions.csv`` (when there are predictions), ``model.pt`` (when
        ``model`` is given) and, last, ``model.json``. Every file goes through a temporary name."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.predictions is not None:
            missing = [column for column in PREDICTION_COLUMNS if column not in self.predictions.columns]
            if missing:
                raise ValueError(f"predictions lack the column(s) {', '.join(missing)}; a run's predictions have "
                                 f"{', '.join(PREDICTION_COLUMNS)} (see prediction_table)")
            write_atomic(out_dir / PREDICTIONS_FILE, self.predictions.to_csv(index=False).encode())
        if model is not None:
            from xaiutils.domain.models import save_weights

            save_weights(model, out_dir / MODEL_FILE)
        write_atomic(out_dir / SIDECAR_FILE, json.dumps(self.sidecar(), indent=2, default=float) + "\n")
        return out_dir

    @classmethod
    def read(cls, run_dir: str | os.PathLike, predictions: bool = True) -> RunRecord:
        """The record of the run folder ``run_dir``; ``predictions=False`` reads the sidecar alone."""
        run_dir = Path(run_dir)
        sidecar_path = run_dir / SIDECAR_FILE
        if not sidecar_path.is_file():
            raise FileNotFoundError(f"{run_dir} holds no finished run ({SIDECAR_FILE} is missing); run notebook 3 "
                                    f"for it (python -m xaiutils grid), or give a run folder it wrote")
        try:
            sidecar = json.loads(sidecar_path.read_text())
        except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
            raise ValueError(f"{sidecar_path} is damaged: not valid JSON ({_first_line(error)}); "
                             f"{_REGENERATE}") from None
        missing = [key for key in ("config", "history", "metrics")
                   if not isinstance(sidecar, dict) or key not in sidecar]
        if missing:
            raise ValueError(f"{sidecar_path} is damaged: it lacks {', '.join(missing)} (a run's {SIDECAR_FILE} holds "
                             f"config, history and metrics); {_REGENERATE}")
        table = None
        if predictions:
            table = read_predictions(run_dir / PREDICTIONS_FILE)
        return cls(sidecar["config"], sidecar["history"], sidecar["metrics"], table)

    def load_model(self, run_dir: str | os.PathLike):
        """The model of ``run_dir`` (its ``model.pt``), rebuilt from this record's backbone and width, in eval
        mode."""
        from xaiutils.domain.models import load_model

        return load_model(Path(run_dir) / MODEL_FILE, self.config["backbone"], width=self.config["width"])

    def grid_row(self) -> dict[str, Any]:
        """The columns of ``accuracy.csv`` this run gives, after those of its grid cell: model, the test metrics
        (``test_<name>``), validation accuracy, best epoch and training seconds."""
        return {"model": self.config.get("model"),
                **{f"test_{key}": value for key, value in self.metrics["test"].items()},
                "val_accuracy": self.metrics["val"]["accuracy"],
                "best_epoch": self.history["best_epoch"], "train_seconds": self.history["seconds"]}
