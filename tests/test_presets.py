from __future__ import annotations

import pytest

from xaiutils import presets


def test_preset_values_and_overrides():
    smoke = presets.resolve("overview", "smoke")
    assert smoke == presets.PRESETS["smoke"]["overview"]
    changed = presets.resolve("overview", "smoke", min_brain_fraction=0.9, n_slices_shown=None)
    assert changed["min_brain_fraction"] == 0.9
    assert changed["n_slices_shown"] == smoke["n_slices_shown"], "None must keep the preset's value"
    # resolve() returns a copy: changing it leaves the preset alone
    changed["n_slices_shown"] = -1
    assert presets.PRESETS["smoke"]["overview"]["n_slices_shown"] != -1


def test_presets_share_their_parameter_names():
    smoke, study = presets.PRESETS["smoke"], presets.PRESETS["study"]
    assert set(smoke) == set(study)
    for step in smoke:
        assert set(smoke[step]) == set(study[step]), f"step {step!r} has different parameters per preset"


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*smoke, study"):
        presets.resolve("overview", "huge")


def test_unknown_step_and_parameter_are_named():
    with pytest.raises(ValueError, match=r"unknown step 'nope'.*valid steps: .*overview"):
        presets.resolve("nope", "smoke")
    with pytest.raises(ValueError, match=r"'colour'.*valid parameters: min_brain_fraction, n_slices_shown"):
        presets.resolve("overview", "smoke", colour="red")
