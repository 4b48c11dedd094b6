"""Propagation methods: modified backward passes through hooked modules, checked for applicability first. DeepLift,
GuidedBackprop and Deconvolution are Captum's; LRP is zennit's. ReLU6 and residual sums are handled in
:mod:`.canonical`, not here."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from xaiutils.domain.explain.base import CaptumMethod, DeepLiftRules, HookedMethod
from xaiutils.domain.explain.canonical import deeplift_rules, lrp_canonizers, residual_blocks
from xaiutils.domain.explain.checks import MAX_POOLS, check_lrp_layers, check_shared_modules
from xaiutils.domain.explain.references import baseline_distribution, single_baseline
from xaiutils.domain.models import LesionNet, Normalise


class DeepLift(DeepLiftRules):
    name = "deeplift"
    label = "DeepLift"
    kind = "propagation"
    captum = "DeepLift"
    cost = "cheap"
    passes = "1 backward (hooked)"
    needs_baseline = True
    caveats = ("Rescale rule (ReLU6 too). Captum's max-pool rule does not conserve the output difference exactly "
               "(nonzero convergence delta on VGG); needs one non-in-place module per activation (checked).")
    settings = {"baselines": None, "eps": 1e-10}

    def chunk_size(self):
        """Captum runs inputs and baselines through the model together."""
        return max(1, self.batch_size // 2)

    def attribute(self, model, inputs, targets):
        from captum.attr import DeepLift

        s = self.options
        with deeplift_rules():
            return DeepLift(model, eps=s["eps"]).attribute(
                inputs, baselines=single_baseline(inputs, s["baselines"]), target=targets)


class DeepLiftShap(DeepLiftRules):
    name = "deeplift_shap"
    label = "DeepLiftShap"
    kind = "propagation"
    captum = "DeepLiftShap"
    cost = "moderate"
    passes = "n_baselines backward (hooked)"
    needs_baseline = True
    stochastic = True
    caveats = ("DeepLift averaged over a baseline distribution: ours is the zero image plus seeded U(0,1) noise "
               "images unless `baselines` is given (e.g. training images).")
    settings = {"baselines": None, "n_baselines": 8}

    def chunk_size(self):
        """Captum runs every image with all its baselines, and their inputs, in one pass."""
        s = self.options
        count = s["n_baselines"] if s["baselines"] is None else len(s["baselines"])
        return max(1, self.batch_size // (2 * int(count)))

    def attribute(self, model, inputs, targets):
        from captum.attr import DeepLiftShap

        s = self.options
        with deeplift_rules():
            return DeepLiftShap(model).attribute(
                inputs, baselines=baseline_distribution(inputs, s["baselines"], s["n_baselines"], self.generator),
                target=targets)


class GuidedBackprop(CaptumMethod, HookedMethod):
    name = "guided_backprop"
    label = "GuidedBackprop"
    kind = "propagation"
    captum = "GuidedBackprop"
    cost = "cheap"
    passes = "1 backward (hooked)"
    caveats = ("Largely class-insensitive, reconstructs image edges (Adebayo et al. 2018); ReLU and ReLU6 models "
               "(the clip at 6 kept).")


class Deconvolution(CaptumMethod, HookedMethod):
    name = "deconvolution"
    label = "Deconvolution"
    kind = "propagation"
    captum = "Deconvolution"
    cost = "cheap"
    passes = "1 backward (hooked)"
    caveats = ("Like GuidedBackprop, largely input-driven rather than model-driven; ReLU and ReLU6 models (its rule "
               "ignores the forward pass of both).")


class LRP(HookedMethod):
    """Layer-wise relevance propagation with zennit, its authors' library: a composite of rules by layer type, after
    canonizers that merge BatchNorm into the convolutions and make residual additions modules
    (:func:`~xaiutils.domain.explain.canonical.lrp_canonizers`).

    Relevance starts at the target logit (its value, as in Captum) and is propagated to the normalised three-channel
    input of the backbone; the input normalisation is a per-pixel affine map, through which relevance passes
    unchanged, and the three copies of the grey pixel are summed. Rules (``rule``):

    - ``epsilon_plus_flat`` (default): zennit's EpsilonPlusFlat, the composite the LRP authors recommend for CNNs
      (Montavon et al. 2019, Kohlbrenner et al. 2020): flat rule on the first convolution, z⁺ on the others, ε on
      dense layers.
    - ``epsilon``: the ε rule on every convolution and dense layer, the rule the reference study used (Captum's LRP
      on VGG-16); with ε → 0 it is LRP-0, which on ReLU networks equals gradient × input.

    Both: activations (ReLU, ReLU6) pass relevance on unchanged, residual sums and average pooling split it in
    proportion to the inputs' contributions, max pooling gives it to the maximum.

    EpsilonPlusFlat does not conserve relevance exactly on MobileNetV2: z⁺ on a linear bottleneck (no ReLU after it)
    drops what its negative inputs contributed. On the bias-free book backbone the input keeps 83-94 % of the logit
    (tests/test_propagation.py); ``rule="epsilon"`` with ε → 0 conserves it.
    """

    name = "lrp"
    label = "LRP"
    kind = "propagation"
    captum = "zennit 0.5 (EpsilonPlusFlat)"
    cost = "cheap"
    passes = "1 forward + 1 backward (hooked)"
    caveats = ("zennit composite EpsilonPlusFlat (flat first layer, z+ convolutions, epsilon dense) after exact "
               "BatchNorm merging and residual sums as modules; relevance at the normalised input. rule='epsilon' "
               "gives the study's epsilon rule on every layer.")
    settings = {"rule": "epsilon_plus_flat", "epsilon": 1e-6}
    RULES = ("epsilon_plus_flat", "epsilon")
    KNOWN_LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                    *MAX_POOLS, nn.Dropout, nn.Flatten, nn.Identity, Normalise)

    @classmethod
    def check(cls, model, probe):
        check_shared_modules(model, probe, cls.name, every_leaf=True)
        check_lrp_layers(model, cls.KNOWN_LAYERS, residual_blocks(model))

    def composite(self):
        from zennit.composites import EpsilonPlusFlat, LayerMapComposite, layer_map_base
        from zennit.rules import Epsilon
        from zennit.types import Convolution
        from zennit.types import Linear as AnyLinear

        rule, epsilon = self.options["rule"], float(self.options["epsilon"])
        if rule not in self.RULES:
            raise ValueError(f"unknown LRP rule {rule!r}; valid choices: {', '.join(self.RULES)}")
        if rule == "epsilon_plus_flat":
            return EpsilonPlusFlat(epsilon=epsilon, canonizers=lrp_canonizers())
        return LayerMapComposite(
            layer_map=[*layer_map_base(epsilon), (Convolution, Epsilon(epsilon=epsilon)),
                       (AnyLinear, Epsilon(epsilon=epsilon))],
            canonizers=lrp_canonizers())

    def attribute(self, model, inputs, targets):
        from zennit.attribution import Gradient

        if isinstance(model, LesionNet):
            network = nn.Sequential(*model.blocks, model.head)
            with torch.no_grad():
                start = model.features(inputs, stop=0)
        else:
            network, start = model, inputs
        start = start.detach().requires_grad_()

        def relevance_of_target(output):  # the target logit's value, zero elsewhere
            return output * functional.one_hot(targets, output.shape[1]).to(output.dtype)

        with Gradient(model=network, composite=self.composite()) as attributor:
            _, relevance = attributor(start, relevance_of_target)
        if relevance.shape[1] != inputs.shape[1]:  # grey input, repeated to three channels by the normalisation
            relevance = relevance.sum(dim=1, keepdim=True)
        return relevance
