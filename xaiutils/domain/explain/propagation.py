"""Propagation methods: Captum's modified backward passes through hooked modules (DeepLift, GuidedBackprop,
Deconvolution, LRP), checked for applicability first."""

from __future__ import annotations

from xaiutils.domain.explain.base import CaptumMethod, DeepLiftRules, HookedMethod
from xaiutils.domain.explain.checks import (
    LRP_LAYERS_WITH_RULES,
    LRP_PASS_THROUGH,
    check_lrp_rules,
    check_shared_modules,
    leaf_modules,
)
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
    caveats = ("Rescale rule. Captum's max-pool rule does not conserve the output difference exactly (nonzero "
               "convergence delta on VGG); needs one non-in-place module per activation (checked).")
    settings = {"baselines": None, "eps": 1e-10}

    def chunk_size(self):
        """Captum runs inputs and baselines through the model together."""
        return max(1, self.batch_size // 2)

    def attribute(self, model, inputs, targets):
        from captum.attr import DeepLift

        s = self.options
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
    caveats = "Largely class-insensitive, reconstructs image edges (Adebayo et al. 2018); ReLU models only."


class Deconvolution(CaptumMethod, HookedMethod):
    name = "deconvolution"
    label = "Deconvolution"
    kind = "propagation"
    captum = "Deconvolution"
    cost = "cheap"
    passes = "1 backward (hooked)"
    caveats = "Like GuidedBackprop, largely input-driven rather than model-driven; ReLU models only."


class LRPEpsilon(HookedMethod):
    """LRP-ε on every layer. For a :class:`LesionNet` it runs on :meth:`LesionNet.as_sequential`, so that the input
    normalisation is a module with a rule: as the linear layer it is, with ε → 0 LRP on a ReLU network equals
    gradient × input on the grey image."""

    name = "lrp"
    label = "LRP-ε"
    kind = "propagation"
    captum = "LRP (EpsilonRule)"
    cost = "cheap"
    passes = "2 forward + 1 backward (hooked)"
    caveats = ("Epsilon rule on every layer, the input normalisation included (ε = 1e-9, Captum's default: nearly "
               "LRP-0, which on ReLU networks equals gradient × input). Only for plain sequential models whose "
               "layers all have rules: residual additions and ReLU6 make it not applicable.")
    settings = {"epsilon": 1e-9}

    @classmethod
    def check(cls, model, probe):
        check_shared_modules(model, probe, cls.name, every_leaf=True)
        check_lrp_rules(model)

    def attribute(self, model, inputs, targets):
        from captum.attr import LRP

        # Captum 0.9.0 exports no public path to its rule classes; LRP needs instances of its PropagationRule.
        from captum.attr._utils.lrp_rules import EpsilonRule

        network = model.as_sequential() if isinstance(model, LesionNet) else model
        ruled = [module for _, module in leaf_modules(network) if not hasattr(module, "rule") and (
            isinstance(module, (*LRP_PASS_THROUGH, Normalise)) or type(module) in LRP_LAYERS_WITH_RULES)]
        try:
            for module in ruled:
                module.rule = EpsilonRule(epsilon=self.options["epsilon"])
            return LRP(network).attribute(inputs, target=targets)
        finally:  # Captum removes the rules after a successful call; this covers a failing one
            for module in ruled:
                if hasattr(module, "rule"):
                    del module.rule
