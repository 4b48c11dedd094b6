"""The fast exact EMD solver (xaiutils.domain.emd_fast) against POT, its certificate, and its fallback to POT."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from xaiutils.domain import emd as emd_module
from xaiutils.domain import emd_fast, metrics
from xaiutils.domain.emd import emd_support

pytestmark = pytest.mark.skipif(not emd_fast.AVAILABLE, reason="numba not installed")


def blobs_mask(rng, size):
    """1–4 disk-shaped lesions."""
    rows, cols = np.indices((size, size))
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(1, 5)):
        center, radius = rng.uniform(2, size - 2, 2), rng.uniform(1.0, size / 6)
        mask |= (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2
    if not mask.any():
        mask[size // 2, size // 2] = True
    return mask


def signed_map(rng, size, kind):
    """Signed maps of three kinds: gradient-like noise, smooth CAM-like, blocky occlusion-like (with zeros)."""
    if kind == 0:
        return rng.normal(size=(size, size)) * (rng.random((size, size)) > 0.3)
    if kind == 1:
        return ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 8) + 0.01 * rng.normal(size=(size, size))
    blocks = rng.normal(size=(size // 4 + 1, size // 4 + 1))
    return np.kron(blocks, np.ones((4, 4)))[:size, :size] * (rng.random((size // 4 + 1,) * 2) > 0.4).repeat(4, 0)[
        :size].repeat(4, 1)[:, :size]


def random_cases(count, seed=0):
    rng = np.random.default_rng(seed)
    for index in range(count):
        size = int(rng.integers(16, 25))
        attribution = signed_map(rng, size, index % 3)
        if not np.any(attribution):
            attribution[0, 0] = 1.0
        yield attribution, blobs_mask(rng, size)


def test_offset_table_matches_cdist_bit_for_bit():
    from scipy.spatial.distance import cdist

    table = emd_fast.offset_cost_table(7, 5)
    points = np.indices((7, 5)).reshape(2, -1).T
    expected = cdist(points.astype(float), points.astype(float))
    got = table[points[:, None, 0] - points[None, :, 0] + 6, points[:, None, 1] - points[None, :, 1] + 4]
    assert np.array_equal(got, expected)


def test_fast_solver_agrees_with_pot_on_random_maps():
    """240 signed maps of 16²–24² (|a| is transported), masks of 1–4 blobs: identical to POT within 1e-9."""
    worst, fallbacks = 0.0, 0
    for attribution, mask in random_cases(240):
        source, target = np.abs(attribution), mask.astype(float)
        fast = emd_support(source, target, solver="fast")
        reference = emd_support(source, target, solver="pot")
        assert reference.solver == "pot" and fast.optimal and reference.optimal
        assert fast.solver in ("fast-certified", "pot-fallback")
        fallbacks += fast.solver == "pot-fallback"
        worst = max(worst, abs(fast.distance - reference.distance))
    assert worst <= 1e-9
    assert fallbacks == 0


def test_known_answers_through_the_fast_solver():
    shape = (24, 24)
    source, target = np.zeros(shape), np.zeros(shape)
    source[4, 4], target[7, 8] = 1.0, 1.0
    result = emd_support(source, target, solver="fast")
    assert result.solver == "fast-certified"
    assert result.distance == pytest.approx(5.0, abs=1e-12)
    source = np.zeros((16, 16))
    source[8, 8] = source[8, 12] = 1.0
    target = np.zeros((16, 16))
    target[8, 8] = 1.0
    assert emd_support(source, target, solver="fast").distance == pytest.approx(2.0, abs=1e-12)


def test_certificate_checks_every_pair():
    rng = np.random.default_rng(3)
    attribution, mask = next(random_cases(1, seed=5))
    source = np.abs(attribution) / np.abs(attribution).sum()
    target = mask / mask.sum()
    good = emd_fast.solve(source, target, max_paths=10**9)
    assert good["certified"] and good["min_reduced"] >= -1e-12 * good["max_cost"]
    assert abs(good["gap"]) <= 1e-9 and abs(good["gap_ctransform"]) <= 1e-9
    bad = emd_fast.solve(source, target, max_paths=10**9, corrupt_dual=1e-3 * (1 + rng.random()))
    assert not bad["certified"] and "dual infeasible" in bad["reason"]


def test_forced_certificate_failure_takes_the_pot_fallback(monkeypatch):
    attribution, mask = next(random_cases(1, seed=11))
    source, target = np.abs(attribution), mask.astype(float)
    expected = emd_support(source, target, solver="pot").distance
    original = emd_fast.solve
    monkeypatch.setattr(emd_fast, "solve", lambda *args, **kwargs: original(*args, corrupt_dual=0.5, **kwargs))
    result = emd_support(source, target, solver="fast")
    assert result.solver == "pot-fallback"
    assert result.certificate.startswith("certificate failed: ") and "dual infeasible" in result.certificate
    assert result.optimal and result.distance == expected


def test_path_limit_falls_back_and_iteration_limit_still_flagged(monkeypatch):
    attribution, mask = next(random_cases(1, seed=2))
    source, target = np.abs(attribution), mask.astype(float)
    result = emd_support(source, target, num_iter_max=2, solver="fast")
    assert result.solver == "pot-fallback" and "certificate failed" in result.certificate
    assert not result.optimal and math.isnan(result.distance)
    monkeypatch.setattr(emd_module, "DEFAULT_SOLVER", "fast")  # the metrics use the module's default
    value, reason = metrics.emd_score(attribution, mask.astype(float), num_iter_max=2, return_reason=True)
    assert math.isnan(value) and "num_iter_max=2" in reason
    assert metrics.emd_score(attribution, mask.astype(float)) == pytest.approx(
        1 - emd_support(source, target, solver="pot").distance / math.hypot(*mask.shape), abs=1e-12)


def test_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="unknown EMD solver"):
        emd_support(np.ones((4, 4)), np.eye(4), solver="sinkhorn")
