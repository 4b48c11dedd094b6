"""The exact EMD as a Quantus metric, called through Quantus itself (installed for the tests: requirements-test.txt)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_environment import pins  # the tests folder is on sys.path under pytest (rootdir import mode)

ROOT = Path(__file__).resolve().parent.parent
SIZE = 16


def exact_emd():
    pytest.importorskip("quantus", reason="Quantus is test-only: make test installs requirements-test.txt")
    from xaiutils.quantus_metric import ExactEMD

    return ExactEMD


def call(a_batch, s_batch, **options):
    """Through Quantus's own entry point: Metric.__call__ runs its preprocessing, then our evaluate_batch."""
    ExactEMD = exact_emd()  # noqa: N806 - a class
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 2))
    x_batch = np.random.default_rng(0).random((len(a_batch), 1, SIZE, SIZE)).astype(np.float32)
    return ExactEMD(**options)(model=model, x_batch=x_batch, y_batch=np.zeros(len(a_batch), dtype=int),
                               a_batch=a_batch, s_batch=s_batch)


def test_test_requirements_are_exact_pins_that_leave_the_book_pins_alone():
    book = pins((ROOT / "requirements.txt").read_text().splitlines())
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements-test.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    test = pins(lines)
    assert len(test) == len(lines), f"requirements-test.txt lines that are not exact pins: {lines}"
    assert test["quantus"] == "0.6.0"
    assert not set(test) & set(book), f"re-pinned book packages: {sorted(set(test) & set(book))}"
    assert "--no-deps -r requirements-test.txt" in (ROOT / "Makefile").read_text()


def test_declares_quantus_metric_properties():
    import quantus

    metric = exact_emd()()
    assert isinstance(metric, quantus.Metric)
    assert metric.score_direction == quantus.helpers.enums.ScoreDirection.HIGHER
    assert metric.score_range == (0.0, 1.0)


def test_map_equal_to_the_mask_scores_one():
    mask = np.zeros((2, 1, SIZE, SIZE))
    mask[0, 0, 3:7, 4:9] = 1
    mask[1, 0, 10:12, 2:14] = 1
    scores = call(mask.copy(), mask)
    np.testing.assert_allclose(scores, [1.0, 1.0], atol=1e-12)


@pytest.mark.parametrize(("source", "sink"), [((5, 5), (5, 9)), ((2, 3), (10, 9)), ((0, 0), (15, 15))])
def test_one_pixel_d_away_scores_one_minus_d_over_the_diagonal(source, sink):
    a_batch, s_batch = np.zeros((1, 1, SIZE, SIZE)), np.zeros((1, 1, SIZE, SIZE))
    a_batch[0, 0, source[0], source[1]] = 3.7  # any positive mass: only the distribution counts
    s_batch[0, 0, sink[0], sink[1]] = 1
    distance = math.dist(source, sink)
    (score,) = call(a_batch, s_batch, resolution=None)
    assert score == pytest.approx(1 - distance / math.hypot(SIZE, SIZE), abs=1e-12)


def test_an_all_zero_map_is_nan_not_a_guess():
    # Quantus refuses a batch whose maps are all zero; one zero map among others reaches the metric, which says NaN.
    a_batch, s_batch = np.zeros((2, 1, SIZE, SIZE)), np.zeros((2, 1, SIZE, SIZE))
    s_batch[:, 0, 4, 4] = 1
    a_batch[1, 0, 4, 4] = 1
    first, second = call(a_batch, s_batch)
    assert math.isnan(first) and second == pytest.approx(1.0)
