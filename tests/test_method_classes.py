"""Adding a method means adding one class: a tiny method defined here is registered, listed and run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xaiutils.domain import explain


@pytest.fixture
def doubled_input():
    """Twice the input, a method defined in this file (removed from the registry afterwards)."""

    class DoubledInput(explain.Method):
        name = "doubled_input"
        label = "Doubled input"
        kind = "gradient"
        captum = None
        cost = "cheap"
        passes = "1 forward"
        caveats = "A test method: the input times a factor, whatever the model."
        settings = {"factor": 2.0}

        def attribute(self, model, inputs, targets):
            model(inputs)  # runs the model like any method
            return inputs.detach() * self.options["factor"]

    yield DoubledInput
    if "doubled_input" in explain.METHODS:
        explain.unregister("doubled_input")


def test_a_method_class_is_registered_listed_and_run(doubled_input):
    assert explain.METHODS["doubled_input"] is doubled_input
    assert list(explain.METHODS)[-1] == "doubled_input"
    assert explain.resolve_method("Doubled-Input") == "doubled_input"
    assert "doubled_input" in explain.methods_by_cost("cheap")
    row = explain.method_table().loc["doubled_input"]
    assert row["label"] == "Doubled input" and row["captum"] == "—" and row["defaults"] == "factor=2.0"

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 2))
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = explain.attribute(model, images, [0, 1, 0], "doubled_input")
    np.testing.assert_array_equal(maps, 2 * images[:, 0].numpy())
    np.testing.assert_array_equal(explain.attribute(model, images, 0, "doubled_input", factor=-1.0, signed=True),
                                  -images[:, 0].numpy())

    explain.unregister("doubled_input")
    assert "doubled_input" not in explain.METHODS and "doubled_input" not in explain.method_table().index
    with pytest.raises(ValueError, match="unknown method 'doubled_input'"):
        explain.resolve_method("doubled_input")


def test_metadata_is_checked_when_the_class_is_defined():
    with pytest.raises(ValueError, match="clashes with registered method.*saliency"):
        class Again(explain.Method):
            name = "saliency_again"
            label = "Saliency"
            kind = "gradient"
            cost = "cheap"
            passes = "1 backward"
            caveats = ""

    with pytest.raises(ValueError, match="unknown cost 'free'.*valid choices: none, cheap, moderate, costly"):
        class Free(explain.Method):
            name = "free"
            label = "Free"
            kind = "gradient"
            cost = "free"
            passes = "none"
            caveats = ""

    with pytest.raises(TypeError, match="lacks passes, caveats"):
        class Sparse(explain.Method):
            name = "sparse"
            label = "Sparse"
            kind = "gradient"
            cost = "cheap"

    assert not {"saliency_again", "free", "sparse"} & set(explain.METHODS)


def test_a_control_map_class_needs_no_model():
    class Ones(explain.ControlMap):
        name = "ones"
        label = "Ones"
        caveats = "A test control map."

        def control_map(self, images, signed, rng):
            return np.ones_like(images)

    try:
        assert explain.control_map_names()[-1] == "ones"
        assert explain.method_table().loc["ones", "kind"] == "control"
        np.testing.assert_array_equal(explain.attribute(None, np.zeros((2, 1, 4, 4)), None, "ones"),
                                      np.ones((2, 4, 4), dtype=np.float32))
    finally:
        explain.unregister("ones")


def test_plain_captum_wrappers_share_one_attribute_body():
    from xaiutils.domain.explain import METHODS, CaptumMethod

    plain = {name for name, cls in METHODS.items() if issubclass(cls, CaptumMethod)}
    assert plain == {"saliency", "input_x_gradient", "guided_backprop", "deconvolution"}
    for name in plain:
        assert "attribute" not in vars(METHODS[name]), f"{name} repeats the attribute body of CaptumMethod"
    assert METHODS["saliency"].captum_arguments == {"abs": False}
    assert METHODS["guided_backprop"].hooked  # still a HookedMethod: its applicability check is kept
