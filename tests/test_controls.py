"""Metrics read against their controls (xaiutils.analysis.controls): the oracle table of model-free maps, the
criterion "the image is not an oracle", the metric ranges and the normalised skill, on examples with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xaiutils.analysis import controls


def _squares(n=4, size=16, dark=False):
    """Images holding one 4×4 lesion square each inside a brain-like disc of value 0.6: bright lesions (value 1.0)
    or dark ones (value 0.0); masks are the hard squares."""
    rows, cols = np.mgrid[:size, :size]
    disc = (rows - size / 2 + 0.5) ** 2 + (cols - size / 2 + 0.5) ** 2 <= (size / 2 - 1) ** 2
    images = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.float32)
    for index in range(n):
        top = 4 + index % 4
        masks[index, top:top + 4, 5:9] = 1.0
        images[index][disc] = 0.6
        images[index][masks[index] == 1] = 0.0 if dark else 1.0
    return images, masks


def test_oracle_table_bright_lesions_make_the_image_an_oracle():
    images, masks = _squares()
    table = controls.oracle_table(images, masks)
    assert list(table.index) == ["input", "sobel", "laplace", "random", controls.ORACLE]
    # the brightest pixels are exactly the lesion: the image wins the pointing game, ranks the lesion first
    assert table.loc["input", "pointing_game"] == 1.0
    assert table.loc["input", "roc_auc"] == pytest.approx(1.0)
    # mass in the lesion: 16 pixels of 1.0 against the disc's other pixels of 0.6
    disc_pixels = int((images[0] > 0).sum())
    assert table.loc["input", "importance_mass_accuracy"] == pytest.approx(16 / (16 + 0.6 * (disc_pixels - 16)))
    assert (table.loc[controls.ORACLE] == 1.0).all()
    assert controls.image_is_oracle(table) == {"pointing_game": True, "roc_auc": True}
    assert table.attrs["n_images"] == 4


def test_oracle_table_dark_lesions_fail_the_image_and_keep_the_edges():
    images, masks = _squares(dark=True)
    table = controls.oracle_table(images, masks)
    # the lesion is the darkest part of the disc: never the maximum, ranked below every other disc pixel
    assert table.loc["input", "pointing_game"] == 0.0
    assert table.loc["input", "importance_mass_accuracy"] == 0.0
    assert table.loc["input", "roc_auc"] < 0.5
    assert controls.image_is_oracle(table) == {"pointing_game": False, "roc_auc": False}
    # the lesion's border is an edge: Sobel ranks lesion pixels above the flat interior of the disc
    assert table.loc["sobel", "roc_auc"] > 0.6
    # random maps sit near chance; seeded, so the same seed gives the same table
    assert abs(table.loc["random", "roc_auc"] - 0.5) < 0.1
    pd.testing.assert_frame_equal(table, controls.oracle_table(images, masks))


def test_oracle_table_refuses_bad_input():
    images, masks = _squares()
    with pytest.raises(ValueError, match="unknown control map"):
        controls.oracle_table(images, masks, maps=["input", "saliency"])
    with pytest.raises(ValueError, match="same number of images"):
        controls.oracle_table(images[:3], masks)
    with pytest.raises(ValueError, match="no 'input' row"):
        controls.image_is_oracle(pd.DataFrame({"pointing_game": [1.0]}, index=["sobel"]))


def _score_table(method_by_run, control_by_run, random_by_run, images_per_run=3):
    """A tidy score table (run × method × image) in which every image of a run scores the run's value, all images
    correct; plus oracle scores of 1.0 per image (metric ``importance_mass_accuracy``)."""
    rows = []
    for run, (method, control, chance) in enumerate(zip(method_by_run, control_by_run, random_by_run, strict=True)):
        for image in range(images_per_run):
            for name, value in (("saliency", method), ("input", control), ("random", chance)):
                rows.append({"run": f"r{run}", "method": name, "image": image, "correct": True,
                             "importance_mass_accuracy": value})
    oracle = pd.DataFrame({"importance_mass_accuracy": np.ones(images_per_run)})
    return pd.DataFrame(rows), oracle


def test_normalised_skill_known_answers():
    scores, oracle = _score_table([0.75, 0.75, 0.75], [0.5, 0.5, 0.5], [0.2, 0.2, 0.2])
    skill = controls.normalised_skill(scores, oracle, "importance_mass_accuracy").set_index("method")
    # halfway between the best control (0.5) and the oracle (1.0); the same in every run, so no spread
    assert skill.loc["saliency", "skill"] == pytest.approx(0.5)
    assert skill.loc["saliency", ["ci_low", "ci_high"]].tolist() == pytest.approx([0.5, 0.5])
    assert skill.loc["input", "skill"] == 0.0 and skill.loc["saliency", "best_control"] == "input"
    assert skill.loc["random", "skill"] == pytest.approx((0.2 - 0.5) / 0.5)
    # runs that differ: mean gain over mean room, with an interval that holds it
    scores, oracle = _score_table([0.6, 0.8, 0.7], [0.5, 0.5, 0.5], [0.2, 0.2, 0.2])
    row = controls.normalised_skill(scores, oracle, "importance_mass_accuracy").set_index("method").loc["saliency"]
    assert row["skill"] == pytest.approx(0.4)
    assert row["ci_low"] < 0.4 < row["ci_high"] and row["n_runs"] == 3


def test_metric_ranges_give_chance_best_control_and_oracle():
    scores, oracle = _score_table([0.6, 0.8, 0.7], [0.5, 0.4, 0.6], [0.1, 0.2, 0.3])
    ranges = controls.metric_ranges(scores, oracle, ["importance_mass_accuracy"]).loc["importance_mass_accuracy"]
    assert ranges["best_control"] == "input"
    assert ranges["best_control_score"] == pytest.approx(0.5) and ranges["random"] == pytest.approx(0.2)
    assert ranges["oracle"] == 1.0 and ranges["room"] == pytest.approx(0.5)


def test_metric_ranges_follow_a_lower_is_better_metric():
    scores, oracle = _score_table([3.0, 3.0], [5.0, 5.0], [9.0, 9.0])
    scores = scores.rename(columns={"importance_mass_accuracy": "emd_distance"})
    oracle = pd.DataFrame({"emd_distance": np.zeros(3)})
    ranges = controls.metric_ranges(scores, oracle, ["emd_distance"]).loc["emd_distance"]
    assert ranges["best_control"] == "input" and ranges["room"] == pytest.approx(-5.0)
    skill = controls.normalised_skill(scores, oracle, "emd_distance").set_index("method")
    assert skill.loc["saliency", "skill"] == pytest.approx(0.4)  # (3 - 5) / (0 - 5): closer to the oracle


def test_controls_need_control_maps_and_every_oracle_image():
    scores, oracle = _score_table([0.6], [0.5], [0.2])
    with pytest.raises(ValueError, match="no control maps"):
        controls.normalised_skill(scores[scores["method"] == "saliency"], oracle, "importance_mass_accuracy")
    with pytest.raises(ValueError, match=r"lack image\(s\) \[2\]"):
        controls.metric_ranges(scores, oracle.iloc[:2], ["importance_mass_accuracy"])


def test_paired_skill_known_answers():
    # the method beats the best control by 0.25 on every image of every run: no spread at either stage
    scores, _ = _score_table([0.75, 0.75, 0.75], [0.5, 0.5, 0.5], [0.2, 0.2, 0.2])
    skill = controls.paired_skill(scores, "importance_mass_accuracy").set_index("method")
    assert skill.loc["saliency", "skill"] == pytest.approx(0.25)
    assert skill.loc["saliency", ["ci_low", "ci_high"]].tolist() == pytest.approx([0.25, 0.25])
    assert skill.loc["input", ["skill", "ci_low", "ci_high"]].tolist() == [0.0, 0.0, 0.0]
    assert skill.loc["random", "skill"] == pytest.approx(-0.3) and skill.loc["saliency", "n_pairs"] == 9
    # images that differ within runs widen the interval, which holds the mean of the run means
    scores.loc[(scores["method"] == "saliency") & (scores["image"] == 0), "importance_mass_accuracy"] = 0.95
    row = controls.paired_skill(scores, "importance_mass_accuracy", n_boot=400).set_index("method").loc["saliency"]
    assert row["skill"] == pytest.approx((0.45 + 0.25 + 0.25) / 3)
    assert row["ci_low"] < row["skill"] < row["ci_high"] and row["ci_low"] >= 0.25 - 1e-12
    # pairing: an image the method could not score drops out of its pairs only
    scores.loc[(scores["method"] == "saliency") & (scores["image"] == 0), "importance_mass_accuracy"] = np.nan
    row = controls.paired_skill(scores, "importance_mass_accuracy").set_index("method").loc["saliency"]
    assert row["skill"] == pytest.approx(0.25) and row["n_pairs"] == 6


def test_paired_skill_follows_a_lower_is_better_metric():
    scores, _ = _score_table([3.0, 3.0], [5.0, 5.0], [9.0, 9.0])
    scores = scores.rename(columns={"importance_mass_accuracy": "emd_distance"})
    skill = controls.paired_skill(scores, "emd_distance").set_index("method")
    assert skill.loc["saliency", "skill"] == pytest.approx(2.0)  # 2 closer than the control: a positive skill
    assert skill.loc["saliency", "best_control"] == "input"
