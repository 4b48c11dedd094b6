"""RunRecord: the run folder notebook 3 writes (predictions.csv, model.pt, model.json) and everyone reads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from xaiutils.domain import models, train
from xaiutils.execution.run_record import PREDICTION_COLUMNS, RUN_KEYS, RunRecord, prediction_table


class TinyBench:
    """What RunRecord.evaluated reads of a benchmark: images, labels and the split indices."""

    def __init__(self, n: int = 12, size: int = 32):
        rng = np.random.default_rng(0)
        self.images = rng.random((n, size, size)).astype(np.float32)
        self.labels = np.array([0, 1] * (n // 2))
        self.split = np.array(["train"] * (n // 3) + ["val"] * (n // 3) + ["test"] * (n - 2 * (n // 3)))

    def indices(self, split):
        return np.flatnonzero(self.split == split)


def old_notebook_cell(out_dir, model, bench, run_config, history):
    """What notebook 3 wrote before RunRecord, line for line: the reference of the byte-identity test."""
    split = {name: bench.indices(name) for name in ("train", "val", "test")}
    metrics, predictions = {}, []
    for name in ("val", "test"):
        probabilities = train.predict_proba(model, bench.images[split[name]])
        metrics[name] = train.classification_metrics(bench.labels[split[name]], probabilities)
        predictions.append(pd.DataFrame({
            "image": split[name], "split": name, "label": bench.labels[split[name]],
            "prob_class1": probabilities[:, 1], "predicted": probabilities.argmax(axis=1),
        }))
    predictions = pd.concat(predictions, ignore_index=True)
    predictions["correct"] = predictions["predicted"] == predictions["label"]
    out_dir.mkdir(parents=True)
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    models.save_weights(model, out_dir / "model.pt")
    sidecar = {"config": run_config, "history": history, "metrics": metrics}
    (out_dir / "model.json").write_text(json.dumps(sidecar, indent=2, default=float) + "\n")


@pytest.fixture(scope="module")
def trained():
    """A tiny model, its run config and history, as notebook 3 has them before it writes the run folder."""
    bench = TinyBench()
    model = models.build_model("mobilenet_v2", width=0.5, seed=0, dropout=0.0)
    history = train.fit(model, (bench.images[bench.indices("train")], bench.labels[bench.indices("train")]),
                        (bench.images[bench.indices("val")], bench.labels[bench.indices("val")]), epochs=1,
                        batch_size=4, seed=0, progress=False)
    settings = {"backbone": "mobilenet_v2", "width": 0.5, "mode": "transfer", "epochs": 1}
    run_config = RunRecord.run_config(settings, "none", 0, 0, "smoke", "abc123")
    return bench, model, run_config, history


def test_the_files_are_byte_identical_to_what_notebook_3_wrote_before(trained, tmp_path):
    bench, model, run_config, history = trained
    old_notebook_cell(tmp_path / "old", model, bench, run_config, history)
    record = RunRecord.evaluated(model, bench, run_config, history)
    record.write(tmp_path / "new", model)
    for name in ("predictions.csv", "model.pt", "model.json"):
        assert (tmp_path / "new" / name).read_bytes() == (tmp_path / "old" / name).read_bytes(), name
    assert sorted(path.name for path in (tmp_path / "new").iterdir()) == ["model.json", "model.pt",
                                                                          "predictions.csv"]


def test_run_config_puts_the_run_keys_after_the_settings():
    config = RunRecord.run_config({"backbone": "vgg16", "width": 0.125, "lr": 0.1}, "mri", 3, 2, "book", "h")
    assert list(config) == ["backbone", "width", "lr", *RUN_KEYS]
    assert config["model"] == "vgg16-w0.125" and config["n_pretrained_blocks"] == 3 and config["seed"] == 2
    assert RunRecord.run_config({"backbone": "vgg16", "width": 1.0}, "none", 0, 0, "smoke", None)["model"] == "vgg16"


def test_write_then_read_gives_the_record_back(trained, tmp_path):
    bench, model, run_config, history = trained
    record = RunRecord.evaluated(model, bench, run_config, history)
    record.write(tmp_path / "run", model)
    back = RunRecord.read(tmp_path / "run")
    assert back.sidecar() == json.loads(json.dumps(record.sidecar(), default=float))
    assert list(back.predictions.columns) == list(PREDICTION_COLUMNS)
    pd.testing.assert_frame_equal(back.predictions, record.predictions, check_dtype=False)
    assert back.predictions["split"].tolist() == ["val"] * 4 + ["test"] * 4
    assert RunRecord.read(tmp_path / "run", predictions=False).predictions is None
    loaded = back.load_model(tmp_path / "run")
    assert not loaded.training
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in model.state_dict().items())


def test_the_sidecar_format_and_a_record_without_model_or_predictions(tmp_path):
    metrics = {"val": {"accuracy": np.float32(0.5)}, "test": {"accuracy": 0.75, "roc_auc": float("nan")}}
    record = RunRecord({"model": "fake"}, {"best_epoch": 2, "seconds": 1.5}, metrics)
    record.write(tmp_path / "run")
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["model.json"]
    text = (tmp_path / "run" / "model.json").read_text()
    assert text.startswith('{\n  "config": {\n    "model": "fake"\n  },\n  "history": {') and text.endswith("}\n")
    assert '"roc_auc": NaN' in text
    assert RunRecord.read(tmp_path / "run", predictions=False).grid_row() == {
        "model": "fake", "test_accuracy": 0.75, "test_roc_auc": pytest.approx(float("nan"), nan_ok=True),
        "val_accuracy": 0.5, "best_epoch": 2, "train_seconds": 1.5}
    assert list(record.grid_row()) == ["model", "test_accuracy", "test_roc_auc", "val_accuracy", "best_epoch",
                                       "train_seconds"]


def test_prediction_table_columns_and_formatting():
    probabilities = np.array([[0.25, 0.75], [0.9, 0.1], [0.5, 0.5]], dtype=np.float32)
    table = prediction_table({"val": (np.array([4]), np.array([1]), probabilities[:1]),
                              "test": (np.array([7, 9]), np.array([1, 0]), probabilities[1:])})
    assert table.to_csv(index=False) == ("image,split,label,prob_class1,predicted,correct\n"
                                         "4,val,1,0.75,1,True\n"
                                         "7,test,1,0.1,0,False\n"
                                         "9,test,0,0.5,0,True\n")


def test_clear_errors_for_a_folder_without_a_run_and_predictions_without_a_column(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no finished run .model.json is missing"):
        RunRecord.read(tmp_path)
    partial = pd.DataFrame({"image": [1], "correct": [True]})
    with pytest.raises(ValueError, match="predictions lack the column.s. split, label, prob_class1, predicted"):
        RunRecord({}, {}, {}, partial).write(tmp_path / "run")
    assert not (tmp_path / "run" / "model.json").exists()
