"""Reading a run folder, explaining and scoring a run, and the selection, aggregation and bootstrap of the
per-image score table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from xaiutils.analysis import evaluate
from xaiutils.domain.synth.dataset import load_benchmark, make_benchmark
from xaiutils.execution.run_record import PREDICTION_COLUMNS, RunRecord, prediction_table


def tidy_table() -> pd.DataFrame:
    """Two runs × one method × four images with known scores; image 3 is wrong for run b."""
    rows = []
    for run, wrong in (("a", set()), ("b", {3})):
        for image in range(4):
            rows.append({"run": run, "source": "imagenet", "n_pretrained_blocks": 1, "seed": 0, "method": "m",
                         "is_baseline": False, "image": image, "score": float(image), "correct": image not in wrong})
    return pd.DataFrame(rows)


def test_correct_for_all_and_selection():
    table = evaluate.add_correct_for_all(tidy_table())
    assert table.groupby("image")["correct_all"].first().tolist() == [True, True, True, False]
    assert len(evaluate.select(table, "correct")) == 7
    assert len(evaluate.select(table, "correct_all")) == 6
    assert len(evaluate.select(table, "all")) == 8
    with pytest.raises(ValueError, match="unknown selection 'best'.*correct, correct_all, all"):
        evaluate.select(table, "best")


def test_aggregate_means_over_selected_images():
    table = evaluate.add_correct_for_all(tidy_table())
    result = evaluate.aggregate(table, "score", selection="correct").set_index("run")
    assert result.loc["a", "mean"] == 1.5 and result.loc["b", "mean"] == 1.0
    assert result.loc["b", "n_images"] == 3
    strict = evaluate.aggregate(table, "score", selection="correct_all").set_index("run")
    assert strict.loc["a", "mean"] == 1.0


def test_bootstrap_is_reproducible_and_brackets_the_mean():
    values = np.random.default_rng(0).normal(2.0, 1.0, size=200)
    first = evaluate.bootstrap_ci(values, n_boot=500, seed=4)
    assert first == evaluate.bootstrap_ci(values, n_boot=500, seed=4)
    assert first != evaluate.bootstrap_ci(values, n_boot=500, seed=5)
    assert first[0] < values.mean() < first[1]
    # the standard error of the mean is 1/sqrt(200) ≈ 0.07: a 95 % interval is about ±0.14 wide
    assert 0.2 < first[1] - first[0] < 0.4
    assert np.isnan(evaluate.bootstrap_ci([1.0, np.nan])[0])


def test_test_images_are_a_balanced_seeded_sample():
    class Bench:
        labels = np.array([0, 1] * 20)
        metadata = None

        def indices(self, split):
            return np.arange(10, 40)

    picked = evaluate.test_images(Bench(), 10, seed=1)
    assert len(picked) == 10 and set(picked) <= set(range(10, 40))
    assert np.bincount(Bench.labels[picked]).tolist() == [5, 5]
    assert np.array_equal(picked, evaluate.test_images(Bench(), 10, seed=1))
    assert len(evaluate.test_images(Bench(), None)) == 30


def even_images_correct(rows, labels) -> np.ndarray:
    """Class probabilities under which exactly the images with an even index are classified correctly."""
    predicted = np.where(rows % 2 == 0, labels, 1 - labels)
    return np.stack([1 - predicted, predicted], axis=1).astype(np.float32) * 0.8 + 0.1


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """A small real dataset and a grid folder of two untrained runs, written as notebook 3 writes them
    (:class:`RunRecord`); their predictions call exactly the even test images correct."""
    from xaiutils.domain import models

    root = tmp_path_factory.mktemp("grid")
    data_dir = make_benchmark(root / "dataset", "smoke", progress=False, n_subjects=3, slices_per_subject=2,
                              image_size=32, radius_range=(2.0, 3.0))
    bench = load_benchmark(data_dir)
    test_rows = bench.indices("test")
    labels = bench.labels[test_rows]
    for seed in (0, 1):
        model = models.build_model("vgg16", width=0.125, seed=seed, dropout=0.0)
        config = RunRecord.run_config({"backbone": "vgg16", "width": 0.125}, "none", 0, seed, "smoke",
                                      bench.card["content_hash"])
        predictions = prediction_table({"test": (test_rows, labels, even_images_correct(test_rows, labels))})
        history = {"epochs": [], "best_epoch": 1, "seconds": 0.0}
        metrics = {"val": {"accuracy": 0.5}, "test": {"accuracy": float(predictions["correct"].mean())}}
        RunRecord(config, history, metrics, predictions).write(root / "grid" / f"none-k0-s{seed}", model)
    return root, data_dir, bench


def test_load_run_gives_back_the_run_record_and_the_model(tiny_grid):
    from xaiutils.domain import models

    root, _, bench = tiny_grid
    model, sidecar, predictions = evaluate.load_run(root / "grid" / "none-k0-s1")
    assert sidecar == RunRecord.read(root / "grid" / "none-k0-s1", predictions=False).sidecar()
    assert sidecar["config"]["model"] == "vgg16-w0.125" and sidecar["config"]["seed"] == 1
    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    assert predictions["image"].tolist() == bench.indices("test").tolist()
    assert predictions["correct"].tolist() == (predictions["image"] % 2 == 0).tolist()
    assert not model.training
    expected = models.build_model("vgg16", width=0.125, seed=1, dropout=0.0).state_dict()
    assert sorted(model.state_dict()) == sorted(expected)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in expected.items())


def test_explain_run_scores_each_method_on_each_image_and_returns_the_maps_when_asked(tiny_grid):
    root, _, bench = tiny_grid
    images = evaluate.test_images(bench, 4, seed=0)
    methods, metric_names = ["saliency", "input"], ["emd_score", "importance_mass_accuracy"]
    table, maps = evaluate.explain_run(root / "grid" / "none-k0-s0", bench, images, methods, metric_names,
                                       resolution=16, n_jobs=1, keep_maps=True, progress=False)
    assert len(table) == len(methods) * len(images)
    assert table["method"].tolist() == [method for method in methods for _ in images]
    assert table["image"].tolist() == list(images) * len(methods)
    assert table["is_baseline"].tolist() == [False] * len(images) + [True] * len(images)
    assert table["correct"].tolist() == [image % 2 == 0 for image in images] * len(methods)
    assert (table["run"] == "none-k0-s0").all() and (table["model"] == "vgg16-w0.125").all()
    assert (table["source"] == "none").all() and (table["seed"] == 0).all()
    assert set(evaluate.LESION_COLUMNS) <= set(table.columns)
    assert np.array_equal(table["label"].to_numpy(), np.tile(bench.labels[images], len(methods)))
    assert table[metric_names].notna().all().all()
    assert sorted(maps) == sorted(methods)
    assert maps["saliency"].shape == (len(images), *bench.images.shape[1:])
    # without keep_maps no maps are held, and the scores are the same
    again = evaluate.explain_run(root / "grid" / "none-k0-s0", bench, images, methods, metric_names,
                                 resolution=16, n_jobs=1, progress=False)
    assert again.maps is None
    pd.testing.assert_frame_equal(again.table, table)


def test_explain_run_refuses_images_the_run_did_not_predict(tiny_grid):
    root, _, bench = tiny_grid
    train_image = bench.indices("train")[:1]
    with pytest.raises(ValueError, match="has no prediction for some of the requested images"):
        evaluate.explain_run(root / "grid" / "none-k0-s0", bench, train_image, ["input"], ["emd_score"],
                             resolution=16, n_jobs=1, progress=False)


def test_explain_grid_gives_the_same_scores_in_two_worker_processes(tiny_grid):
    root, data_dir, bench = tiny_grid
    images = evaluate.test_images(bench, 4, seed=0)
    methods, metric_names = ["saliency", "input"], ["emd_score", "importance_mass_accuracy"]
    runs = ["none-k0-s0", "none-k0-s1"]
    here, maps_here = evaluate.explain_grid(root / "grid", runs, data_dir, images, methods, metric_names, workers=1,
                                            maps_for="none-k0-s1", resolution=16, progress=False)
    apart, maps_apart = evaluate.explain_grid(root / "grid", runs, data_dir, images, methods, metric_names,
                                              workers=2, maps_for="none-k0-s1", resolution=16, progress=False)
    assert list(here["run"].unique()) == runs and len(here) == 2 * 2 * len(images)
    assert list(apart["run"]) == list(here["run"]) and list(apart["image"]) == list(here["image"])
    # Threaded kernels may round differently; the input control map involves no model and is identical.
    np.testing.assert_allclose(apart[metric_names].to_numpy(float), here[metric_names].to_numpy(float), atol=1e-5)
    assert sorted(maps_here) == sorted(maps_apart) == sorted(methods)
    np.testing.assert_allclose(maps_apart["saliency"], maps_here["saliency"], rtol=1e-4, atol=1e-7)
    assert here.loc[here["method"] == "saliency", "correct"].tolist() == [image % 2 == 0 for image in images] * 2
