"""Class activation maps: Grad-CAM at a layer (by default the model's last block), upsampled to the input, and
Guided Grad-CAM."""

from __future__ import annotations

from xaiutils.domain.explain.base import HookedMethod, Method
from xaiutils.domain.explain.checks import NotApplicable


def cam_layer(model, layer):
    """The layer to explain: ``layer`` (a module or a dotted name), else the last of the model's ``blocks``."""
    if layer is None:
        if not hasattr(model, "blocks"):
            raise NotApplicable("grad_cam: the model has no `blocks`; pass layer= (a module or a dotted name)")
        return model.blocks[-1]
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError as error:
            raise ValueError(f"layer {layer!r} is not a submodule of the model: {error}") from error
    return layer


class GradCam(Method):
    name = "grad_cam"
    label = "Grad-CAM"
    kind = "cam"
    captum = "LayerGradCam + LayerAttribution.interpolate"
    cost = "cheap"
    passes = "1 backward"
    caveats = ("Resolution of the last block's output (VGG: input/32, so 2×2 at 64²), upsampled; coarse by "
               "construction. Non-negative (ReLU).")
    settings = {"layer": None, "relu_attributions": True, "interpolate_mode": "bilinear"}

    def attribute(self, model, inputs, targets):
        from captum.attr import LayerAttribution, LayerGradCam

        s = self.options
        cam = LayerGradCam(model, cam_layer(model, s["layer"])).attribute(
            inputs, target=targets, relu_attributions=s["relu_attributions"])
        return LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode=s["interpolate_mode"])


class GuidedGradCam(HookedMethod):
    name = "guided_grad_cam"
    label = "Guided Grad-CAM"
    kind = "cam"
    captum = "GuidedGradCam"
    cost = "cheap"
    passes = "2 backward (hooked)"
    caveats = "GuidedBackprop × upsampled Grad-CAM; inherits GuidedBackprop's input-driven edges."
    settings = {"layer": None, "interpolate_mode": "nearest"}

    def attribute(self, model, inputs, targets):
        from captum.attr import GuidedGradCam

        s = self.options
        return GuidedGradCam(model, cam_layer(model, s["layer"])).attribute(
            inputs, target=targets, interpolate_mode=s["interpolate_mode"])
