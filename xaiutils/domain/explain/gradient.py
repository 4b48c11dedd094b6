"""Gradient methods: plain gradients, and gradients averaged over noise or a path from reference inputs."""

from __future__ import annotations

from xaiutils.domain.explain.base import CaptumMethod, Method
from xaiutils.domain.explain.references import baseline_distribution, per_pass, single_baseline


class Saliency(CaptumMethod):
    name = "saliency"
    label = "Saliency"
    kind = "gradient"
    captum = "Saliency"
    cost = "cheap"
    passes = "1 backward"
    caveats = "Raw gradient (Simonyan et al. 2014): local sensitivity, noisy; not an attribution of the output."
    captum_arguments = {"abs": False}


class InputXGradient(CaptumMethod):
    name = "input_x_gradient"
    label = "InputXGradient"
    kind = "gradient"
    captum = "InputXGradient"
    cost = "cheap"
    passes = "1 backward"
    caveats = "Gradient × input: zero wherever the input is zero (black background), whatever the model does there."


class IntegratedGradients(Method):
    name = "integrated_gradients"
    label = "IntegratedGradients"
    kind = "gradient"
    captum = "IntegratedGradients"
    cost = "moderate"
    passes = "n_steps backward"
    needs_baseline = True
    caveats = ("Path integral from the baseline (zeros = black, which is also the MRI background); completeness "
               "holds up to the quadrature error of n_steps.")
    settings = {"baselines": None, "n_steps": 50, "integration": "gausslegendre", "internal_batch_size": None}

    def attribute(self, model, inputs, targets):
        from captum.attr import IntegratedGradients

        s = self.options
        return IntegratedGradients(model).attribute(
            inputs, baselines=single_baseline(inputs, s["baselines"]), target=targets, n_steps=s["n_steps"],
            method=s["integration"], internal_batch_size=s["internal_batch_size"] or self.batch_size)


class SmoothGrad(Method):
    name = "smoothgrad"
    label = "SmoothGrad"
    kind = "gradient"
    captum = "NoiseTunnel(Saliency)"
    cost = "moderate"
    passes = "nt_samples backward"
    stochastic = True
    caveats = "Mean gradient over Gaussian-noised copies (stdevs on the [0, 1] input scale); seeded."
    settings = {"nt_samples": 25, "stdevs": 0.15, "nt_samples_batch_size": None}

    def attribute(self, model, inputs, targets):
        from captum.attr import NoiseTunnel, Saliency

        s = self.options
        return NoiseTunnel(Saliency(model)).attribute(
            inputs, nt_type="smoothgrad", nt_samples=s["nt_samples"], stdevs=s["stdevs"], target=targets, abs=False,
            nt_samples_batch_size=s["nt_samples_batch_size"] or per_pass(self.batch_size, inputs.shape[0]))


class GradientShap(Method):
    name = "gradient_shap"
    label = "GradientShap"
    kind = "gradient"
    captum = "GradientShap"
    cost = "moderate"
    passes = "n_samples backward"
    needs_baseline = True
    stochastic = True
    caveats = ("Expected gradients over random baselines and path points (seeded); same baseline distribution as "
               "DeepLiftShap.")
    settings = {"baselines": None, "n_baselines": 8, "n_samples": 20, "stdevs": 0.0}

    def chunk_size(self):
        """Captum runs n_samples copies of each image in one pass, with no batching knob of its own."""
        return max(1, self.batch_size // int(self.options["n_samples"]))

    def attribute(self, model, inputs, targets):
        from captum.attr import GradientShap

        s = self.options
        return GradientShap(model).attribute(
            inputs, baselines=baseline_distribution(inputs, s["baselines"], s["n_baselines"], self.generator),
            target=targets, n_samples=s["n_samples"], stdevs=s["stdevs"])
