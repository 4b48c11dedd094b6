"""Selection, aggregation and bootstrap of the per-image score table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xaiutils import evaluate


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
