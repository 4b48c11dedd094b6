from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from xaiutils.domain.mri.anatomy import template_anatomy
from xaiutils.domain.mri.brain import otsu_threshold, otsu_thresholds_3
from xaiutils.domain.mri.slices import sample_slices
from xaiutils.domain.synth import lesions


def _draw_many(shape, n, params, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lesion = lesions.sample_lesion(shape, params, rng)
        out.append((lesion, lesions.local_mask(lesion, params.edge_softness)[1]))
    return out


def test_solidity_known_answers():
    square = np.ones((4, 4), bool)
    assert lesions.solidity(square) == pytest.approx(1.0)
    ell = np.array([[1, 0], [1, 1]], bool)  # three unit squares; hull = 2x2 square minus half a square
    assert lesions.solidity(ell) == pytest.approx(3 / 3.5)
    assert np.isnan(lesions.solidity(np.zeros((3, 3), bool)))


def test_solidity_separates_regular_from_irregular():
    params = lesions.LesionParams(radius_range=(3.0, 6.0), irregularity=0.25)
    regular = np.array([lesions.solidity(m >= 0.5) for _, m in _draw_many("regular", 150, params, 1)])
    irregular = np.array([lesions.solidity(m >= 0.5) for _, m in _draw_many("irregular", 150, params, 2)])
    auc = (regular[:, None] > irregular[None, :]).mean()
    assert auc > 0.99
    assert np.mean(regular > 0.83) > 0.97 and np.mean(irregular < 0.83) > 0.97


def test_shapes_share_the_size_distribution():
    params = lesions.LesionParams(radius_range=(4.0, 8.0), edge_softness=0.0)
    expected = np.pi * (4.0**2 + 4.0 * 8.0 + 8.0**2) / 3  # E[pi r^2] for r ~ U(4, 8)
    for shape in lesions.SHAPES:
        drawn = _draw_many(shape, 400, params, seed=3)
        areas = np.array([(m >= 0.5).sum() for _, m in drawn])
        radii = np.array([lesion.radius for lesion, _ in drawn])
        assert radii.min() >= 4.0 and radii.max() <= 8.0
        assert areas.mean() == pytest.approx(expected, rel=0.05), shape
        # each lesion's rasterised area follows its own radius
        ratio = areas / (np.pi * radii**2)
        assert np.median(ratio) == pytest.approx(1.0, abs=0.05), shape


def test_soft_mask_binarises_to_the_hard_shape():
    params = lesions.LesionParams(radius_range=(5.0, 5.0), edge_softness=2.0)
    lesion = lesions.sample_lesion("irregular", params, np.random.default_rng(0))
    grid = (31, 31)
    soft = lesions.soft_mask(lesion, grid, (15.2, 14.7), edge_softness=2.0)
    hard = lesions.soft_mask(lesion, grid, (15.2, 14.7), edge_softness=0.0)
    assert soft.dtype == np.float32 and soft.min() >= 0 and soft.max() <= 1
    np.testing.assert_array_equal(soft >= 0.5, hard >= 0.5)
    assert set(np.unique(hard)) <= {0.0, 1.0}
    assert soft.sum() == pytest.approx(hard.sum(), rel=0.1)  # the ramp is symmetric around the boundary
    assert ((soft > 0) & (soft < 1)).sum() > 0


def test_placement_inside_region_without_overlap():
    region = np.zeros((64, 64), bool)
    rows, cols = np.ogrid[:64, :64]
    region[(rows - 32) ** 2 / 28**2 + (cols - 32) ** 2 / 22**2 <= 1] = True
    params = lesions.LesionParams(n_lesions=(3, 3), radius_range=(3.0, 6.0), edge_softness=1.0, min_gap=2.0)
    rng = np.random.default_rng(7)
    for _ in range(20):
        shape = ["regular", "irregular"][int(rng.integers(2))]
        placed, label_image = lesions.place_lesions(region, [shape] * 3, params, rng)
        assert len(placed) == 3
        image, mask = lesions.draw_lesions(np.zeros((64, 64)), placed, params.edge_softness)
        assert mask.min() >= 0 and mask.max() <= 1
        assert not (mask > 0)[~region].any(), "soft support leaves the region"
        np.testing.assert_array_equal(label_image > 0, mask > 0)
        # supports of different lesions are at least min_gap apart
        for i in range(1, 4):
            distance = ndimage.distance_transform_edt(label_image != i)
            others = (label_image > 0) & (label_image != i)
            assert distance[others].min() > params.min_gap
        # contrast enters additively where the mask is
        expected = sum(lesion.contrast * (label_image == i + 1) for i, lesion in enumerate(placed))
        np.testing.assert_allclose(image, expected * mask, atol=1e-6)
        assert all(3.0 <= lesion.radius <= 6.0 for lesion in placed)


def test_lesions_that_cannot_fit_raise_naming_the_parameters():
    region = np.zeros((64, 64), bool)
    region[20:40, 20:40] = True
    too_big = lesions.LesionParams(radius_range=(30.0, 40.0))
    with pytest.raises(ValueError, match=r"radius_range=\(30.0, 40.0\)"):
        lesions.place_lesions(region, ["regular"], too_big, np.random.default_rng(0), where="test image")
    too_many = lesions.LesionParams(n_lesions=(8, 8), radius_range=(5.0, 6.0), max_redraws=3)
    with pytest.raises(ValueError, match=r"cannot place 8 non-overlapping.*n_lesions=\(8, 8\)"):
        lesions.place_lesions(region, ["regular"] * 8, too_many, np.random.default_rng(0))
    with pytest.raises(ValueError, match="region is empty"):
        lesions.place_lesions(np.zeros((8, 8), bool), ["regular"], lesions.LesionParams(), np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"radius_range": (5.0, 2.0)}, "radius_range must satisfy low <= high"),
        ({"radius_range": (0.2, 2.0)}, "radius_range must be >= 1 pixel"),
        ({"n_lesions": (0, 2)}, "n_lesions must be >= 1"),
        ({"n_lesions": 3}, "n_lesions must be a pair"),
        ({"irregularity": 1.5}, "irregularity must lie in"),
        ({"placement": "skull"}, "unknown placement 'skull'; valid placements: brain, white_matter"),
        ({"edge_softness": -1.0}, "edge_softness and min_gap must be >= 0"),
    ],
)
def test_bad_lesion_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lesions.LesionParams(**kwargs)


def test_unknown_shape_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown lesion shape 'round'; valid shapes: regular, irregular"):
        lesions.sample_lesion("round", lesions.LesionParams(), np.random.default_rng(0))


def test_otsu_and_white_matter_region():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.3, 0.03, 500), rng.normal(0.8, 0.03, 500)])
    assert 0.4 < otsu_threshold(values) < 0.7
    three = np.concatenate([rng.normal(0.1, 0.03, 300), rng.normal(0.5, 0.03, 500), rng.normal(0.9, 0.03, 400)])
    low, high = otsu_thresholds_3(three)
    assert 0.2 < low < 0.4 and 0.6 < high < 0.8
    # a phantom brain: CSF rim (dark), grey matter ring, white matter core (bright)
    rows, cols = np.ogrid[:64, :64]
    radius = np.hypot(rows - 32, cols - 32)
    brain = radius <= 28
    image = np.select([radius <= 15, radius <= 24], [0.9, 0.5], 0.1) * brain
    region = lesions.white_matter_region(image, brain)
    inner = radius <= 15
    assert (region & inner).sum() / (region | inner).sum() > 0.9


def test_white_matter_placement_stays_in_white_matter():
    anatomy = template_anatomy(64, 0.6)
    images, brains = sample_slices(anatomy, anatomy.band[[30]], 64)
    region = lesions.white_matter_region(images[0], brains[0])
    params = lesions.LesionParams(n_lesions=(2, 2), radius_range=(2.0, 3.0), placement="white_matter")
    placed, _ = lesions.place_lesions(region, ["regular", "regular"], params, np.random.default_rng(0))
    _, mask = lesions.draw_lesions(images[0], placed, params.edge_softness)
    assert (mask > 0).any() and not (mask > 0)[~region].any()
    assert images[0][mask >= 0.5].mean() > images[0][brains[0]].mean()  # white matter is the bright tissue


# ------------------------------------------------------------------------------------------- lesion appearance


def _one_lesion(contrast, texture=0.0, seed=0):
    """One hard-edged regular lesion (radius 5 px) centred in a 32² grid, with the given contrast and texture."""
    params = lesions.LesionParams(radius_range=(5.0, 5.0), edge_softness=0.0, contrast_range=(contrast, contrast),
                                  texture=texture, max_aspect=1.0)
    lesion = lesions.sample_lesion("regular", params, np.random.default_rng(seed))
    lesion.position = (16, 16)
    return lesion, params


@pytest.mark.parametrize("contrast, inside", [(-0.3, 0.2), (0.0, 0.5), (0.4, 0.9), (-0.8, 0.0)])
def test_hypo_iso_and_hyper_lesions_have_known_intensities(contrast, inside):
    """On a flat slice of 0.5: inside the mask 0.5 + contrast, but never below 0 (a magnitude image); outside
    the mask unchanged."""
    lesion, params = _one_lesion(contrast)
    image, mask = lesions.draw_lesions(np.full((32, 32), 0.5), [lesion], params.edge_softness)
    assert mask.max() == 1.0 and set(np.unique(mask)) == {0.0, 1.0}
    np.testing.assert_allclose(image[mask == 1], inside, atol=1e-6)
    np.testing.assert_array_equal(image[mask == 0], np.float32(0.5))


def test_texture_has_the_stated_spread_inside_the_lesion_only():
    lesion, params = _one_lesion(0.0, texture=0.2)
    image, mask = lesions.draw_lesions(np.full((32, 32), 0.5), [lesion], params.edge_softness)
    inside = image[mask == 1].astype(np.float64)
    assert inside.mean() == pytest.approx(0.5, abs=1e-6)  # iso-intense: the texture has mean 0 over the lesion
    assert inside.std() == pytest.approx(0.2, rel=1e-4)
    np.testing.assert_array_equal(image[mask == 0], np.float32(0.5))
    # smooth: neighbouring lesion pixels are correlated (white noise would give about 0)
    field = image - 0.5
    pairs = (mask[:, 1:] == 1) & (mask[:, :-1] == 1)
    assert np.corrcoef(field[:, 1:][pairs], field[:, :-1][pairs])[0, 1] > 0.5


def test_a_pixel_already_below_zero_is_not_raised_by_a_dark_lesion():
    lesion, params = _one_lesion(-0.3)
    image, mask = lesions.draw_lesions(np.full((32, 32), -0.05), [lesion], params.edge_softness)
    np.testing.assert_allclose(image[mask == 1], -0.05, atol=1e-7)


def test_bright_flat_lesions_are_drawn_exactly_as_before_texture_existed():
    """Without texture, a lesion draws no extra random numbers and a bright one adds contrast × mask exactly, so
    datasets made before these parameters existed keep their content hashes."""
    params = lesions.LesionParams(n_lesions=(2, 2), contrast_range=(0.3, 0.6))
    rng = np.random.default_rng(5)
    first = lesions.sample_lesion("irregular", params, rng)
    after = rng.random()
    # the draws of a lesion before texture existed: radius, aspect, angle, contrast, offset, boundary harmonics
    rng = np.random.default_rng(5)
    rng.uniform(4.0, 8.0), rng.uniform(1.0, 1.5), rng.uniform(0.0, np.pi), rng.uniform(0.3, 0.6)
    rng.uniform(-0.5, 0.5, size=2), rng.normal(size=(len(lesions.HARMONICS), 2))
    assert rng.random() == after and first.texture is None
    image = np.random.default_rng(0).uniform(-0.05, 1.0, (64, 64))
    first.position = (30, 30)
    drawn, _ = lesions.draw_lesions(image, [first], params.edge_softness)
    half, local = lesions.local_mask(first, params.edge_softness)
    expected = image.copy()
    expected[30 - half:30 + half + 1, 30 - half:30 + half + 1] += first.contrast * local
    np.testing.assert_array_equal(drawn, expected.astype(np.float32))


@pytest.mark.parametrize("override, message", [({"texture": -0.1}, "texture must be >= 0"),
                                               ({"texture_scale": 0.0}, "texture_scale > 0"),
                                               ({"texture": float("nan")}, "texture must be a finite number")])
def test_bad_texture_parameters_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        lesions.LesionParams(**override)
