"""Known answers for the explanation-performance metrics and the exact EMD behind the EMD score."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest

from xaiutils.domain import metrics
from xaiutils.domain.emd import emd_dense, emd_support, pooling_matrix, sum_pool


def disk(shape, center, radius):
    rows, cols = np.indices(shape)
    return ((rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2).astype(np.float64)


def point(shape, where):
    image = np.zeros(shape)
    image[where] = 1.0
    return image


def dense_emd_reference(attribution, lesion_mask):
    """The XAI-TRIS formulation, written out here: full pixel-grid cost matrix, every pixel a node."""
    height, width = attribution.shape
    coordinates = [[row, col] for row in range(height) for col in range(width)]
    cost = ot.dist(np.array(coordinates, dtype=float), np.array(coordinates, dtype=float), metric="euclidean")
    source = np.abs(attribution).ravel() / np.abs(attribution).sum()
    target = (lesion_mask >= 0.5).ravel().astype(float)
    return ot.emd2(source, target / target.sum(), cost, numItermax=10_000_000)


def random_pair(rng, size):
    attribution = rng.normal(size=(size, size)) * (rng.random((size, size)) > 0.3)  # signed, with exact zeros
    lesion_mask = disk((size, size), rng.integers(2, size - 2, 2), rng.uniform(1.5, size / 4))
    return attribution, lesion_mask


def test_map_equal_to_mask_scores_perfectly():
    lesion_mask = disk((32, 32), (12, 20), 5)
    for name in metrics.METRICS:
        assert metrics.METRICS[name].function(lesion_mask, lesion_mask) == pytest.approx(1.0, abs=1e-12), name
    assert metrics.emd_score(lesion_mask, lesion_mask, resolution=None) == pytest.approx(1.0, abs=1e-12)
    assert metrics.emd_distance(lesion_mask, lesion_mask) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("source", "target", "distance"), [
    ((10, 5), (10, 10), 5.0),  # horizontal
    ((4, 4), (7, 8), 5.0),  # the 3-4-5 diagonal
    ((0, 0), (23, 23), 23 * math.sqrt(2)),
])
def test_single_pixels_d_apart_have_emd_d(source, target, distance):
    shape = (24, 24)
    attribution, lesion_mask = point(shape, source), point(shape, target)
    assert emd_support(attribution, lesion_mask).distance == pytest.approx(distance, abs=1e-12)
    assert emd_dense(attribution, lesion_mask).distance == pytest.approx(distance, abs=1e-12)
    assert metrics.emd_distance(attribution, lesion_mask) == pytest.approx(distance, abs=1e-12)
    score = metrics.emd_score(attribution, lesion_mask)
    assert score == pytest.approx(1.0 - distance / math.hypot(*shape), abs=1e-12)


def test_emd_is_measured_on_the_scoring_grid():
    """At 128² scored at 64², pixels 10 apart on the block grid are 5 pooled pixels apart; D is the 64² diagonal."""
    attribution, lesion_mask = point((128, 128), (20, 20)), point((128, 128), (20, 30))
    assert metrics.emd_distance(attribution, lesion_mask, resolution=64) == pytest.approx(5.0, abs=1e-12)
    assert metrics.emd_distance(attribution, lesion_mask, resolution=None) == pytest.approx(10.0, abs=1e-12)
    assert metrics.emd_score(attribution, lesion_mask) == pytest.approx(1 - 5 / math.hypot(64, 64), abs=1e-12)


def test_emd_mass_split_known_answer():
    """Half the mass on the mask pixel and half 4 pixels away: EMD = 2."""
    attribution = point((16, 16), (8, 8)) + point((16, 16), (8, 12))
    assert metrics.emd_distance(attribution, point((16, 16), (8, 8))) == pytest.approx(2.0, abs=1e-12)


@pytest.mark.parametrize("size", [12, 16])
def test_emd_score_equals_dense_pot_computation(size):
    rng = np.random.default_rng(size)
    for _ in range(4):
        attribution, lesion_mask = random_pair(rng, size)
        expected = 1.0 - dense_emd_reference(attribution, lesion_mask) / math.hypot(size, size)
        assert metrics.emd_score(attribution, lesion_mask) == pytest.approx(expected, abs=1e-9)
        magnitude = np.abs(attribution)
        assert emd_dense(magnitude, lesion_mask).distance == pytest.approx(
            emd_support(magnitude, lesion_mask).distance, abs=1e-9)


def test_iteration_limit_is_flagged_not_reported():
    rng = np.random.default_rng(1)
    attribution, lesion_mask = random_pair(rng, 16)
    value, reason = metrics.emd_score(attribution, lesion_mask, num_iter_max=2, return_reason=True)
    assert math.isnan(value)
    assert "optimality" in reason and "num_iter_max=2" in reason
    table = metrics.score_maps(attribution[None], lesion_mask[None], num_iter_max=2, n_jobs=1)
    assert math.isnan(table.loc[0, "emd_score"])
    assert table.loc[0, "reason"].startswith("emd_score: EMD solver did not reach optimality")
    assert table.loc[0, "importance_mass_accuracy"] > 0  # the other metrics are unaffected
    assert not math.isnan(metrics.emd_score(attribution, lesion_mask))  # the default limit suffices


def test_uniform_map_scores_chance():
    lesion_mask = disk((20, 30), (10, 12), 4)
    share = lesion_mask.sum() / lesion_mask.size
    uniform = np.full(lesion_mask.shape, 0.7)
    assert metrics.importance_mass_accuracy(uniform, lesion_mask) == pytest.approx(share, abs=1e-12)
    assert metrics.topk_precision(uniform, lesion_mask) == pytest.approx(share, abs=1e-12)
    assert metrics.pointing_game(uniform, lesion_mask) == pytest.approx(share, abs=1e-12)
    assert metrics.roc_auc(uniform, lesion_mask) == pytest.approx(0.5, abs=1e-12)


def test_topk_precision_and_pointing_game_known_answers():
    lesion_mask = np.zeros((8, 8))
    lesion_mask[0, :4] = 1  # k = 4
    attribution = np.zeros((8, 8))
    attribution[0, :3] = [5, 4, 3]  # three of the top four inside
    attribution[5, 3] = -10  # the largest |a|, outside (5 rows below the mask): signs do not matter
    assert metrics.topk_precision(attribution, lesion_mask) == pytest.approx(0.75)
    assert metrics.relevance_rank_accuracy(attribution, lesion_mask) == pytest.approx(0.75)
    assert metrics.pointing_game(attribution, lesion_mask) == 0.0
    assert metrics.pointing_game(attribution, lesion_mask, tolerance=4) == 0.0
    assert metrics.pointing_game(attribution, lesion_mask, tolerance=5) == 1.0
    attribution[5, 3] = 0
    assert metrics.pointing_game(attribution, lesion_mask) == 1.0
    assert metrics.importance_mass_accuracy(attribution, lesion_mask) == pytest.approx(1.0)


def test_topk_precision_matches_sorting_without_ties():
    rng = np.random.default_rng(3)
    attribution, lesion_mask = random_pair(rng, 20)
    attribution = attribution + rng.normal(scale=1e-3, size=attribution.shape)  # no ties
    k = int(lesion_mask.sum())
    top = np.argsort(-np.abs(attribution).ravel())[:k]
    assert metrics.topk_precision(attribution, lesion_mask) == pytest.approx(lesion_mask.ravel()[top].mean())


def test_roc_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    attribution, lesion_mask = random_pair(rng, 24)
    expected = roc_auc_score(lesion_mask.ravel() >= 0.5, np.abs(attribution).ravel())
    assert metrics.roc_auc(attribution, lesion_mask) == pytest.approx(expected, abs=1e-12)


def test_soft_masks_are_binarised_at_one_half():
    soft = np.zeros((10, 10))
    soft[2, 2], soft[2, 3], soft[7, 7] = 1.0, 0.5, 0.49
    assert metrics.importance_mass_accuracy(point((10, 10), (2, 3)), soft) == 1.0
    assert metrics.importance_mass_accuracy(point((10, 10), (7, 7)), soft) == 0.0


def test_batches_return_vectors_and_degenerate_items_give_nan_with_reason():
    shape = (16, 16)
    good = disk(shape, (8, 8), 3)
    nan_map = good.copy()
    nan_map[0, 0] = np.nan
    inf_map = good.copy()
    inf_map[1, 1] = np.inf
    maps = [good, np.zeros(shape), nan_map, inf_map, good, np.ones((8, 8))]
    masks = [good, good, good, good, np.zeros(shape), good]
    table = metrics.score_maps(maps, masks, n_jobs=1)
    assert list(table.columns) == [*metrics.METRICS, "reason"]
    assert table.loc[0, "reason"] == "" and (table.loc[0, list(metrics.METRICS)] == 1.0).all()
    expected = ["map is all zero", "map has NaN or inf", "map has NaN or inf", "mask is empty", "shape mismatch"]
    for row, words in enumerate(expected, start=1):
        assert table.loc[row, list(metrics.METRICS)].isna().all(), row
        assert words in table.loc[row, "reason"], (row, table.loc[row, "reason"])
    values, reasons = metrics.importance_mass_accuracy(maps, masks, return_reason=True)
    assert values[0] == 1.0 and np.isnan(values[1:]).all()
    assert reasons[0] == "" and all(reasons[1:])
    stacked = metrics.topk_precision(np.stack([good, np.zeros(shape)]), np.stack([good, good]))
    assert stacked.shape == (2,) and stacked[0] == 1.0 and np.isnan(stacked[1])


def test_full_mask_makes_roc_auc_undefined_only():
    full = np.ones((6, 6))
    table = metrics.score_maps(np.random.default_rng(0).random((1, 6, 6)), full[None], n_jobs=1)
    assert math.isnan(table.loc[0, "roc_auc"]) and "roc_auc: mask covers the whole image" in table.loc[0, "reason"]
    assert table.loc[0, "importance_mass_accuracy"] == pytest.approx(1.0)


def test_caller_errors_raise():
    with pytest.raises(ValueError, match=r"\(2, 8, 8\).*\(3, 8, 8\)"):
        metrics.score_maps(np.ones((2, 8, 8)), np.ones((3, 8, 8)))
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(8, 9\)"):
        metrics.emd_score(np.ones((8, 8)), np.ones((8, 9)))
    with pytest.raises(ValueError, match="valid metrics: emd_score"):
        metrics.score_maps(np.ones((1, 8, 8)), np.ones((1, 8, 8)), metrics=("emd", "roc_auc"))


@pytest.mark.parametrize(("size", "resolution"), [((64, 64), 16), ((50, 50), 16), ((37, 45), 10), ((12, 20), 16)])
def test_sum_pooling_preserves_mass(size, resolution):
    rng = np.random.default_rng(5)
    stack = rng.random((3, *size))
    pooled = sum_pool(stack, resolution)
    assert pooled.shape == (3, min(size[0], resolution), min(size[1], resolution))
    np.testing.assert_allclose(pooled.sum(axis=(1, 2)), stack.sum(axis=(1, 2)), rtol=1e-12)


def test_sum_pooling_is_block_summation_when_the_size_divides():
    image = np.arange(64.0).reshape(8, 8)
    expected = np.array([[image[r:r + 2, c:c + 2].sum() for c in range(0, 8, 2)] for r in range(0, 8, 2)])
    np.testing.assert_array_equal(sum_pool(image, 4), expected)
    weights = pooling_matrix(5, 2)  # 2.5 pixels per cell: the middle pixel is split in half
    np.testing.assert_allclose(weights, [[1, 1, 0.5, 0, 0], [0, 0, 0.5, 1, 1]])


def test_parallel_scoring_equals_serial():
    rng = np.random.default_rng(6)
    pairs = [random_pair(rng, 24) for _ in range(6)]
    maps, masks = np.stack([a for a, _ in pairs]), np.stack([m for _, m in pairs])
    maps[2] = 0.0  # a degenerate one travels through the workers too
    serial = metrics.score_maps(maps, masks, n_jobs=1)
    parallel = metrics.score_maps(maps, masks, n_jobs=2)
    assert serial.loc[2, "reason"] == "map is all zero"
    assert serial.equals(parallel)


def test_registry_declares_direction_and_range():
    rng = np.random.default_rng(7)
    attribution, lesion_mask = random_pair(rng, 16)
    for name, spec in metrics.METRICS.items():
        assert spec.higher_is_better is True, name
        low, high = spec.range
        assert low <= spec.function(attribution, lesion_mask) <= high, name
    table = metrics.metric_table()  # the book's table: one row per registered metric, in registry order
    assert list(table.index) == list(metrics.METRICS)
    assert table.loc["emd_score", "range"] == "[0, 1]" and table["higher is better"].all()
