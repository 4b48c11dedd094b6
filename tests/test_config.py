"""The presets: frozen dataclasses per step (xaiutils.foundation.config) and the dicts notebooks read
(config.resolve)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from xaiutils.execution.params import check_parameter_types, notebook_parameter_defaults, read_notebook
from xaiutils.execution.paths import find_notebook
from xaiutils.foundation import config
from xaiutils.foundation.config import resolve, resolve_from


def test_preset_values_and_overrides():
    smoke = resolve("overview", "smoke")
    assert smoke == {"min_brain_fraction": 0.6, "n_slices_shown": 8}
    changed = resolve("overview", "smoke", min_brain_fraction=0.9, n_slices_shown=None)
    assert changed["min_brain_fraction"] == 0.9
    assert changed["n_slices_shown"] == smoke["n_slices_shown"], "None must keep the preset's value"


def test_presets_cannot_be_changed_through_what_they_hand_out():
    grid = resolve("grid", "book")
    grid["seeds"].append(99)
    grid["n_pretrained_blocks"]["mri"].clear()
    assert resolve("grid", "book")["seeds"] == [0, 1, 2]
    assert resolve("grid", "book")["n_pretrained_blocks"]["mri"] == [2, 3, 5]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.BOOK.grid.workers = 5  # type: ignore[misc]


def test_derived_presets_keep_smoke_values_they_do_not_restate():
    # book and study are smoke with named changes: a value they do not change is smoke's
    assert config.BOOK.data.placement == config.SMOKE.data.placement == "brain"
    assert config.BOOK.finetune.mode == config.SMOKE.finetune.mode == "transfer"
    assert config.STUDY.finetune.mode == "transfer_finetune"  # restated: the study runs the AnB+ protocol
    assert config.BOOK.data.n_subjects == 160 and config.SMOKE.data.n_subjects == 48
    assert config.STUDY.data.image_size == 224 and config.STUDY.finetune.backbone == "vgg16"


def test_regression_formula_is_a_preset_value():
    # the interaction needs every source at several k: only the study's grid has that
    assert config.STUDY.regression.formula == "score ~ accuracy + C(source) * k"
    assert config.SMOKE.regression.formula == config.BOOK.regression.formula == "score ~ accuracy + C(source) + k"
    for preset in config.PRESETS.values():
        grid = preset.grid
        sources_at_several_k = [source for source in grid.sources if len(grid.n_pretrained_blocks[source]) > 1]
        if "* k" in preset.regression.formula:  # a slope in k per source, compared between at least two sources
            assert len(sources_at_several_k) >= 2


def test_explain_lists_agree_with_the_registry():
    from xaiutils.domain import explain

    assert list(config.CONTROL_MAPS) == explain.control_map_names()
    costly = set(explain.methods_by_cost("costly"))
    assert set(config.DEFAULT_METHODS) <= set(explain.METHODS) - costly - set(config.CONTROL_MAPS)
    assert config.SMOKE.explain.methods == config.BOOK.explain.methods == [*config.DEFAULT_METHODS,
                                                                           *config.CONTROL_MAPS]
    # The book runs the study's list but for the sampling-heavy methods, which the study runs on a subset.
    study_methods = set(config.STUDY.explain.methods)
    assert study_methods - set(config.BOOK.explain.methods) == costly & study_methods
    assert config.BOOK.explain.n_test_images >= 24
    for preset in config.PRESETS.values():
        unknown = set(preset.explain.methods) - set(explain.METHODS)
        assert not unknown, f"preset lists unregistered methods {unknown}"


def test_list_names_of_the_last_release_are_gone():
    assert not hasattr(config, "BASELINE_METHODS") and not hasattr(config, "CHEAP_METHODS")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve("explain", "smoke")  # the current names do not warn


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; valid presets: book, smoke, study"):
        resolve("overview", "huge")


def test_unknown_step_and_parameter_are_named():
    with pytest.raises(ValueError, match=r"unknown step 'nope'.*valid steps: .*overview"):
        resolve("nope", "smoke")
    with pytest.raises(ValueError, match=r"'colour'.*valid parameters: min_brain_fraction, n_slices_shown"):
        resolve("overview", "smoke", colour="red")


def test_resolve_from_needs_every_parameter_of_the_step():
    assert resolve_from("overview", "smoke", {"min_brain_fraction": 0.7, "n_slices_shown": None,
                                              "unrelated": 1}) == {"min_brain_fraction": 0.7,
                                                                   "n_slices_shown": 8}
    with pytest.raises(ValueError, match=r"no value for parameter\(s\) 'n_slices_shown' of step 'overview'"):
        resolve_from("overview", "smoke", {"min_brain_fraction": None})


@pytest.mark.parametrize("notebook", sorted(config.NOTEBOOK_STEPS))
def test_notebook_parameters_are_its_steps_fields(notebook):
    """Each notebook's parameters: preset, its steps' fields (default None: the preset's value), and the listed
    inputs, outputs and switches; so `-p NAME VALUE` works for every preset key of the step."""
    defaults = notebook_parameter_defaults(read_notebook(find_notebook(notebook)))
    fields = [name for step in config.NOTEBOOK_STEPS[notebook]
              for name in config.SMOKE.step(step).parameter_names()]
    extras = config.NOTEBOOK_EXTRA_PARAMETERS[notebook]
    assert set(defaults) == {"preset", *fields, *extras}
    assert defaults["preset"] == "book"
    assert {name: defaults[name] for name in fields} == dict.fromkeys(fields), "preset keys must default to None"


def test_every_data_key_is_a_notebook_parameter(tmp_path):
    # the parameter check of `python -m xaiutils run` accepts every preset key of notebook 1, e.g. noise
    notebook = read_notebook(find_notebook("01_data"))
    check_parameter_types(notebook, {"noise": 0.0, "split_fractions": [0.5, 0.25, 0.25]}, "smoke")
    with pytest.raises(ValueError, match="noise"):
        check_parameter_types(notebook, {"noise": "loud"}, "smoke")


def test_renamed_data_parameters_are_refused_under_their_old_names():
    # "source" and "task" (the data step's volume_source and lesion_task until the last release) are unknown now
    with pytest.raises(ValueError, match="unknown parameter.*'source'.*valid parameters"):
        resolve("data", "smoke", source="ixi")
    with pytest.raises(ValueError, match="unknown parameter.*'task'"):
        resolve("data", "smoke", task="presence")


