"""Perturbation methods: the output's response to masked windows (Occlusion) or superpixels (LIME, KernelSHAP,
Shapley value sampling)."""

from __future__ import annotations

import torch

from xaiutils.domain.explain.base import Method
from xaiutils.domain.explain.references import feature_mask, per_pass

_SAMPLING = {"patch": None, "baselines": None, "perturbations_per_eval": None}


class Occlusion(Method):
    name = "occlusion"
    label = "Occlusion"
    kind = "perturbation"
    captum = "Occlusion"
    cost = "moderate"
    passes = "(H/stride)² forward"
    needs_baseline = True
    caveats = ("Output drop when a window is set to the baseline (0); window = H/8, stride = window/2 by default: "
               "resolution limited by the window.")
    settings = {"window": None, "stride": None, "baselines": None, "perturbations_per_eval": None}

    def attribute(self, model, inputs, targets):
        from captum.attr import Occlusion

        s = self.options
        window = max(2, inputs.shape[-1] // 8) if s["window"] is None else int(s["window"])
        stride = max(1, window // 2) if s["stride"] is None else int(s["stride"])
        channels = inputs.shape[1]
        return Occlusion(model).attribute(
            inputs, sliding_window_shapes=(channels, window, window), strides=(channels, stride, stride),
            baselines=s["baselines"] if s["baselines"] is not None else 0.0, target=targets,
            perturbations_per_eval=s["perturbations_per_eval"] or per_pass(self.batch_size, inputs.shape[0]))


class SuperpixelSampling(Method):
    """The costly sampling methods on a grid of square superpixels: one example at a time, as Captum recommends
    for LIME and KernelSHAP."""

    kind = "perturbation"
    cost = "costly"
    needs_baseline = True
    stochastic = True

    def explainer(self, model):
        """The Captum attribution object."""
        raise NotImplementedError

    def attribute(self, model, inputs, targets):
        s = self.options
        mask = feature_mask(inputs, s["patch"])
        baselines = s["baselines"] if s["baselines"] is not None else 0.0
        explainer = self.explainer(model)
        maps = []
        for index in range(inputs.shape[0]):
            maps.append(explainer.attribute(
                inputs[index:index + 1], target=targets[index:index + 1], baselines=baselines, feature_mask=mask,
                n_samples=s["n_samples"], perturbations_per_eval=s["perturbations_per_eval"] or self.batch_size))
        return torch.cat(maps)


class Lime(SuperpixelSampling):
    name = "lime"
    label = "LIME"
    captum = "Lime"
    passes = "n_samples forward + a Lasso fit"
    caveats = ("Lasso (α = 0.01) surrogate on a grid of square superpixels (patch = H/8: 64 features); resolution "
               "limited to the patches; seeded sampling.")
    settings = {"n_samples": 200, "interpretable_model": None, **_SAMPLING}

    def explainer(self, model):
        from captum.attr import Lime

        return Lime(model, interpretable_model=self.options["interpretable_model"])


class KernelShap(SuperpixelSampling):
    name = "kernel_shap"
    label = "KernelSHAP"
    captum = "KernelShap"
    passes = "n_samples forward + a linear fit"
    caveats = "Shapley-kernel weighted regression on the superpixel grid; seeded sampling."
    settings = {"n_samples": 200, **_SAMPLING}

    def explainer(self, model):
        from captum.attr import KernelShap

        return KernelShap(model)


class ShapleyValueSampling(SuperpixelSampling):
    name = "shapley_value_sampling"
    label = "ShapleyValueSampling"
    captum = "ShapleyValueSampling"
    passes = "n_samples × (features + 1) forward"
    caveats = ("Permutation sampling of Shapley values on the superpixel grid (64 features → 65 passes per "
               "permutation).")
    settings = {"n_samples": 10, **_SAMPLING}

    def explainer(self, model):
        from captum.attr import ShapleyValueSampling

        return ShapleyValueSampling(model)
