"""Attribution methods (Captum) and model-free baselines behind one entry point, :func:`attribute`.

:data:`METHODS` maps a name to a :class:`MethodSpec`: the Captum class, its default settings, a cost class, whether
it needs a baseline, whether it is stochastic, and its caveats. Every method — Captum's and the model-free
baselines ``sobel``, ``laplace``, ``random`` and ``input`` — returns a float32 N×H×W map for N×1×H×W LesionNet
inputs, reduced over channels by summing absolute values (``signed=True`` sums the signed values instead).

Hook-based methods (DeepLift, DeepLiftShap, GuidedBackprop, Deconvolution, Guided Grad-CAM, LRP) give silently
wrong results on shared activation modules and on activations Captum has no rule for, so :func:`attribute` checks
the model first and raises :class:`NotApplicable` (a ``ValueError``) with the reason; callers record the method as
not applicable for that backbone. In-place ReLUs are not an error: the attribution runs on a copy of the model
rebuilt with separate non-in-place ReLUs (:func:`xaiutils.models.replace_relus`), the caller's model is untouched.
"""

from __future__ import annotations

import contextlib
import copy
import operator
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch import nn

from .models import replace_relus


class NotApplicable(ValueError):
    """The method cannot give a correct attribution for this model; the message says why."""


@dataclass(frozen=True)
class MethodSpec:
    """One registered method. ``settings`` are the defaults that ``attribute(**settings)`` may override."""

    name: str
    label: str
    kind: str  # "gradient", "propagation", "cam", "perturbation", "baseline"
    captum: str | None
    cost: str  # "none", "cheap", "moderate", "costly"
    passes: str
    needs_baseline: bool
    stochastic: bool
    caveats: str
    settings: dict[str, Any] = field(default_factory=dict)


COST_CLASSES = ("none", "cheap", "moderate", "costly")
HOOKED_ACTIVATIONS = ("deeplift", "deeplift_shap", "guided_backprop", "deconvolution", "guided_grad_cam", "lrp")
ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
                    nn.Softmax, nn.LogSoftmax)
FUNCTIONAL_ACTIVATIONS = {"relu", "relu_", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish",
                          "hardswish", "hardsigmoid", "hardtanh", "sigmoid", "tanh", "softplus", "softmax"}
RESHAPES = {"flatten", "view", "reshape", "expand", "repeat", "contiguous", "size", "getattr", "getitem", "squeeze",
            "unsqueeze"}


# ------------------------------------------------------------------------------------------------ model checks


def _leaf_modules(model: nn.Module):
    return [(name, module) for name, module in model.named_modules() if not list(module.children())]


def _call_counts(model: nn.Module, probe: torch.Tensor) -> dict[str, int]:
    """How often each leaf module runs in one forward pass (shared modules run more than once)."""
    counts, handles = {}, []
    for name, module in _leaf_modules(model):
        counts[name] = 0
        handles.append(module.register_forward_hook(lambda *_, key=name: counts.__setitem__(key, counts[key] + 1)))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return counts


def _traced_parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """LesionNet's forward has an input check fx cannot trace; its blocks and head carry all the layers."""
    if hasattr(model, "blocks") and hasattr(model, "head"):
        return [(f"blocks.{index}", block) for index, block in enumerate(model.blocks)] + [("head", model.head)]
    return [("model", model)]


def _functional_ops(model: nn.Module) -> list[str] | None:
    """Names of functions/methods called in forward outside modules (``None`` when torch.fx cannot trace it)."""
    import torch.fx

    found = []
    for prefix, part in _traced_parts(model):
        try:
            graph = torch.fx.symbolic_trace(part).graph
        except Exception:  # noqa: BLE001 - any tracing failure means "could not check"
            return None
        for node in graph.nodes:
            if node.op in ("call_function", "call_method"):
                target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "?")
                if node.target in (operator.getitem,):
                    target = "getitem"
                found.append(f"{target} (in {prefix})")
    return found


def check_applicable(model: nn.Module, method: str, probe: torch.Tensor | None = None) -> None:
    """Raise :class:`NotApplicable` if ``method`` cannot give a correct attribution for ``model``.

    ``probe``: one input (1×C×H×W) used to detect activation modules that run more than once per forward pass.
    """
    name = resolve_method(method)
    if name not in HOOKED_ACTIVATIONS or model is None:
        return
    leaves = _leaf_modules(model)
    if probe is not None:
        counts = _call_counts(model, probe)
        hooked = (*ACTIVATION_TYPES, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)  # DeepLift hooks max-pooling too
        shared = [key for key, module in leaves
                  if counts.get(key, 0) > 1 and (name == "lrp" or isinstance(module, hooked))]
        if shared:
            raise NotApplicable(f"{name}: module(s) {shared[:4]} run more than once per forward pass; Captum's hooks "
                                "need one module per position (rebuild the model with separate modules)")
    if name in ("deeplift", "deeplift_shap"):
        from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

        supported = tuple(SUPPORTED_NON_LINEAR)
        rule = "Captum's DeepLift has no rule for"
    elif name == "lrp":
        supported = None
    else:
        supported = (nn.ReLU,)
        rule = f"{METHODS[name].label} only modifies the backward pass of nn.ReLU, not of"
    if supported is not None:
        unsupported = sorted({type(module).__name__ for _, module in leaves
                              if isinstance(module, ACTIVATION_TYPES) and type(module) not in supported})
        if unsupported:
            raise NotApplicable(f"{name}: {rule} {', '.join(unsupported)} activations "
                                "(they would pass plain gradients, silently)")
        ops = _functional_ops(model) or []
        functional = [op for op in ops if op.split(" ")[0] in FUNCTIONAL_ACTIVATIONS]
        if functional:
            raise NotApplicable(f"{name}: functional activations {functional[:4]} in forward are invisible to "
                                "Captum's module hooks")
        return
    from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS

    known = (*SUPPORTED_LAYERS_WITH_RULES, *SUPPORTED_NON_LINEAR_LAYERS, *LRP_PASS_THROUGH)
    missing = {}
    for key, module in leaves:
        if type(module) not in known and not hasattr(module, "rule"):
            missing.setdefault(type(module).__name__, key)
    if missing:
        import captum

        where = ", ".join(f"{kind} (e.g. {key})" for kind, key in missing.items())
        raise NotApplicable(f"lrp: Captum {captum.__version__}'s LRP has no rule for {where}")
    ops = _functional_ops(model)
    if ops is None:
        raise NotApplicable("lrp: could not trace the model with torch.fx to check for operations outside modules")
    foreign = [op for op in ops if op.split(" ")[0] not in RESHAPES]
    if foreign:
        raise NotApplicable(f"lrp: operations outside modules {foreign[:4]} (e.g. residual additions) get no LRP "
                            "rule, so relevance is not conserved; Captum needs them as modules (Addition_Module)")


# ------------------------------------------------------------------------------------------------ Captum runners

LRP_PASS_THROUGH = (nn.Flatten, nn.Identity)  # pure reshapes: the epsilon rule passes relevance through unchanged


class _Normalise(nn.Module):
    """LesionNet's grey → 3 channels → (x − mean)/std step as a module, so LRP can give it a rule.

    Inline in ``LesionNet.forward`` it is invisible to LRP: relevance at the first conv would come back through
    its gradient (÷ std) instead of an LRP rule. As a module with the epsilon rule it is treated as the linear
    layer it is, and with ε → 0 LRP on a ReLU network equals gradient × input on the grey image.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.mean, self.std = model.mean, model.std

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std


def _lrp_network(model: nn.Module) -> nn.Module:
    """The same layers as one sequence with the normalisation as a module (for LesionNet), else the model."""
    if all(hasattr(model, key) for key in ("blocks", "head", "mean", "std")):
        return nn.Sequential(_Normalise(model), *model.blocks, model.head)
    return model


def _grad_cam_layer(model: nn.Module, layer):
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


def _single_baseline(inputs: torch.Tensor, baselines):
    """One reference image for every input: zeros (black) unless a number or a 1×C×H×W tensor is given."""
    if baselines is None:
        return torch.zeros_like(inputs)
    if isinstance(baselines, (int, float)):
        return torch.full_like(inputs, float(baselines))
    baselines = torch.as_tensor(baselines, dtype=inputs.dtype, device=inputs.device)
    if baselines.ndim != 4 or baselines.shape[0] != 1 or baselines.shape[1:] != inputs.shape[1:]:
        raise ValueError(f"baselines must be a number or one image of shape {(1, *inputs.shape[1:])}, "
                         f"got {tuple(baselines.shape)}")
    return baselines.expand_as(inputs)


def _distribution(inputs: torch.Tensor, baselines, n_baselines: int, generator: torch.Generator):
    """Baseline distribution for the SHAP methods: given, else the zero image plus seeded U(0,1) noise images."""
    if baselines is not None:
        return torch.as_tensor(baselines, dtype=inputs.dtype, device=inputs.device)
    if n_baselines < 2:
        raise ValueError(f"n_baselines must be >= 2 for a baseline distribution, got {n_baselines}")
    noise = torch.rand((n_baselines - 1, *inputs.shape[1:]), generator=generator)
    return torch.cat([torch.zeros_like(noise[:1]), noise]).to(inputs.device, inputs.dtype)


def _feature_mask(inputs: torch.Tensor, patch):
    """Square superpixel patches (a grid), one feature id per patch, shared by all channels."""
    height, width = inputs.shape[-2:]
    patch = max(1, height // 8) if patch is None else int(patch)
    if patch < 1:
        raise ValueError(f"patch must be a positive number of pixels, got {patch}")
    rows = torch.arange(height, device=inputs.device) // patch
    cols = torch.arange(width, device=inputs.device) // patch
    ids = rows[:, None] * ((width + patch - 1) // patch) + cols[None, :]
    return ids.expand(1, inputs.shape[1], height, width).contiguous()


def _per_pass(batch_size: int, per_image: int) -> int:
    """Copies of each image that fit in one model pass of at most ``batch_size`` images."""
    return max(1, int(batch_size) // max(1, per_image))


def _chunk_size(name: str, settings, batch_size: int) -> int:
    """Images per call of the Captum method, so that no model pass exceeds ``batch_size`` images.

    Methods without an internal batching knob of their own (the SHAP ones) evaluate every image with all its
    samples at once, so fewer images go in per call.
    """
    if name == "deeplift":  # Captum runs inputs and baselines through the model together
        return max(1, int(batch_size) // 2)
    if name == "deeplift_shap":
        count = settings["n_baselines"] if settings["baselines"] is None else len(settings["baselines"])
        return max(1, int(batch_size) // (2 * int(count)))
    if name == "gradient_shap":
        return max(1, int(batch_size) // int(settings["n_samples"]))
    return int(batch_size)


def _run(model, inputs, targets, name, settings, generator, batch_size):
    import captum.attr as ca

    s = settings
    images = inputs.shape[0]
    if name == "saliency":
        return ca.Saliency(model).attribute(inputs, target=targets, abs=False)
    if name == "input_x_gradient":
        return ca.InputXGradient(model).attribute(inputs, target=targets)
    if name == "integrated_gradients":
        return ca.IntegratedGradients(model).attribute(
            inputs, baselines=_single_baseline(inputs, s["baselines"]), target=targets, n_steps=s["n_steps"],
            method=s["integration"], internal_batch_size=s["internal_batch_size"] or int(batch_size))
    if name == "smoothgrad":
        return ca.NoiseTunnel(ca.Saliency(model)).attribute(
            inputs, nt_type="smoothgrad", nt_samples=s["nt_samples"], stdevs=s["stdevs"], target=targets, abs=False,
            nt_samples_batch_size=s["nt_samples_batch_size"] or _per_pass(batch_size, images))
    if name == "deeplift":
        return ca.DeepLift(model, eps=s["eps"]).attribute(
            inputs, baselines=_single_baseline(inputs, s["baselines"]), target=targets)
    if name == "deeplift_shap":
        return ca.DeepLiftShap(model).attribute(
            inputs, baselines=_distribution(inputs, s["baselines"], s["n_baselines"], generator), target=targets)
    if name == "gradient_shap":
        return ca.GradientShap(model).attribute(
            inputs, baselines=_distribution(inputs, s["baselines"], s["n_baselines"], generator), target=targets,
            n_samples=s["n_samples"], stdevs=s["stdevs"])
    if name == "guided_backprop":
        return ca.GuidedBackprop(model).attribute(inputs, target=targets)
    if name == "deconvolution":
        return ca.Deconvolution(model).attribute(inputs, target=targets)
    if name == "grad_cam":
        cam = ca.LayerGradCam(model, _grad_cam_layer(model, s["layer"])).attribute(
            inputs, target=targets, relu_attributions=s["relu_attributions"])
        return ca.LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode=s["interpolate_mode"])
    if name == "guided_grad_cam":
        return ca.GuidedGradCam(model, _grad_cam_layer(model, s["layer"])).attribute(
            inputs, target=targets, interpolate_mode=s["interpolate_mode"])
    if name == "lrp":
        from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES
        from captum.attr._utils.lrp_rules import EpsilonRule

        network = _lrp_network(model)
        ruled = [module for _, module in _leaf_modules(network) if not hasattr(module, "rule") and (
            isinstance(module, (*LRP_PASS_THROUGH, _Normalise)) or type(module) in SUPPORTED_LAYERS_WITH_RULES)]
        try:
            for module in ruled:
                module.rule = EpsilonRule(epsilon=s["epsilon"])
            return ca.LRP(network).attribute(inputs, target=targets)
        finally:  # Captum removes the rules after a successful call; this covers a failing one
            for module in ruled:
                if hasattr(module, "rule"):
                    del module.rule
    if name == "occlusion":
        window = max(2, inputs.shape[-1] // 8) if s["window"] is None else int(s["window"])
        stride = max(1, window // 2) if s["stride"] is None else int(s["stride"])
        channels = inputs.shape[1]
        return ca.Occlusion(model).attribute(
            inputs, sliding_window_shapes=(channels, window, window), strides=(channels, stride, stride),
            baselines=s["baselines"] if s["baselines"] is not None else 0.0, target=targets,
            perturbations_per_eval=s["perturbations_per_eval"] or _per_pass(batch_size, images))
    # the costly sampling methods: one example at a time, as Captum recommends for LIME/KernelSHAP
    mask = _feature_mask(inputs, s["patch"])
    baselines = s["baselines"] if s["baselines"] is not None else 0.0
    if name == "lime":
        explainer = ca.Lime(model, interpretable_model=s["interpretable_model"])
    elif name == "kernel_shap":
        explainer = ca.KernelShap(model)
    else:
        explainer = ca.ShapleyValueSampling(model)
    maps = []
    for index in range(inputs.shape[0]):
        maps.append(explainer.attribute(
            inputs[index:index + 1], target=targets[index:index + 1], baselines=baselines, feature_mask=mask,
            n_samples=s["n_samples"], perturbations_per_eval=s["perturbations_per_eval"] or int(batch_size)))
    return torch.cat(maps)


# ------------------------------------------------------------------------------------------------ baselines


def _baseline_map(images: np.ndarray, name: str, signed: bool, rng: np.random.Generator) -> np.ndarray:
    """Model-free maps from the images alone (N×C×H×W in, N×C×H×W out), per channel."""
    if name == "input":
        return images if signed else np.abs(images)
    if name == "random":
        return rng.uniform(-1.0 if signed else 0.0, 1.0, size=images.shape)
    out = np.empty_like(images, dtype=np.float64)
    for index in np.ndindex(*images.shape[:2]):
        image = images[index].astype(np.float64)
        if name == "sobel":
            out[index] = np.hypot(ndimage.sobel(image, axis=0), ndimage.sobel(image, axis=1))
        else:  # laplace
            laplacian = ndimage.laplace(image)
            out[index] = laplacian if signed else np.abs(laplacian)
    return out


# ------------------------------------------------------------------------------------------------ registry


def _spec(name, label, kind, captum, cost, passes, needs_baseline, stochastic, caveats, **settings):
    return MethodSpec(name, label, kind, captum, cost, passes, needs_baseline, stochastic, caveats, settings)


_SAMPLING = dict(patch=None, baselines=None, perturbations_per_eval=None)
METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    _spec("saliency", "Saliency", "gradient", "Saliency", "cheap", "1 backward", False, False,
          "Raw gradient (Simonyan et al. 2014): local sensitivity, noisy; not an attribution of the output."),
    _spec("input_x_gradient", "InputXGradient", "gradient", "InputXGradient", "cheap", "1 backward", False, False,
          "Gradient × input: zero wherever the input is zero (black background), whatever the model does there."),
    _spec("integrated_gradients", "IntegratedGradients", "gradient", "IntegratedGradients", "moderate",
          "n_steps backward", True, False,
          "Path integral from the baseline (zeros = black, which is also the MRI background); completeness holds "
          "up to the quadrature error of n_steps.",
          baselines=None, n_steps=50, integration="gausslegendre", internal_batch_size=None),
    _spec("smoothgrad", "SmoothGrad", "gradient", "NoiseTunnel(Saliency)", "moderate", "nt_samples backward", False,
          True, "Mean gradient over Gaussian-noised copies (stdevs on the [0, 1] input scale); seeded.",
          nt_samples=25, stdevs=0.15, nt_samples_batch_size=None),
    _spec("deeplift", "DeepLift", "propagation", "DeepLift", "cheap", "1 backward (hooked)", True, False,
          "Rescale rule. Captum's max-pool rule does not conserve the output difference exactly (nonzero "
          "convergence delta on VGG); needs one non-in-place module per activation (checked).",
          baselines=None, eps=1e-10),
    _spec("deeplift_shap", "DeepLiftShap", "propagation", "DeepLiftShap", "moderate", "n_baselines backward (hooked)",
          True, True, "DeepLift averaged over a baseline distribution: ours is the zero image plus seeded U(0,1) "
          "noise images unless `baselines` is given (e.g. training images).", baselines=None, n_baselines=8),
    _spec("gradient_shap", "GradientShap", "gradient", "GradientShap", "moderate", "n_samples backward", True, True,
          "Expected gradients over random baselines and path points (seeded); same baseline distribution as "
          "DeepLiftShap.", baselines=None, n_baselines=8, n_samples=20, stdevs=0.0),
    _spec("guided_backprop", "GuidedBackprop", "propagation", "GuidedBackprop", "cheap", "1 backward (hooked)", False,
          False, "Largely class-insensitive, reconstructs image edges (Adebayo et al. 2018); ReLU models only."),
    _spec("deconvolution", "Deconvolution", "propagation", "Deconvolution", "cheap", "1 backward (hooked)", False,
          False, "Like GuidedBackprop, largely input-driven rather than model-driven; ReLU models only."),
    _spec("grad_cam", "Grad-CAM", "cam", "LayerGradCam + LayerAttribution.interpolate", "cheap", "1 backward",
          False, False, "Resolution of the last block's output (VGG: input/32, so 2×2 at 64²), upsampled; "
          "coarse by construction. Non-negative (ReLU).",
          layer=None, relu_attributions=True, interpolate_mode="bilinear"),
    _spec("guided_grad_cam", "Guided Grad-CAM", "cam", "GuidedGradCam", "cheap", "2 backward (hooked)", False, False,
          "GuidedBackprop × upsampled Grad-CAM; inherits GuidedBackprop's input-driven edges.",
          layer=None, interpolate_mode="nearest"),
    _spec("lrp", "LRP-ε", "propagation", "LRP (EpsilonRule)", "cheap", "2 forward + 1 backward (hooked)", False,
          False, "Epsilon rule on every layer, the input normalisation included (ε = 1e-9, Captum's default: nearly "
          "LRP-0, which on ReLU networks equals gradient × input). Only for plain sequential models whose layers "
          "all have rules: residual additions and ReLU6 make it not applicable.",
          epsilon=1e-9),
    _spec("occlusion", "Occlusion", "perturbation", "Occlusion", "moderate", "(H/stride)² forward", True, False,
          "Output drop when a window is set to the baseline (0); window = H/8, stride = window/2 by default: "
          "resolution limited by the window.", window=None, stride=None, baselines=None,
          perturbations_per_eval=None),
    _spec("lime", "LIME", "perturbation", "Lime", "costly", "n_samples forward + a Lasso fit", True, True,
          "Lasso (α = 0.01) surrogate on a grid of square superpixels (patch = H/8: 64 features); resolution "
          "limited to the patches; seeded sampling.", n_samples=200, interpretable_model=None, **_SAMPLING),
    _spec("kernel_shap", "KernelSHAP", "perturbation", "KernelShap", "costly", "n_samples forward + a linear fit",
          True, True, "Shapley-kernel weighted regression on the superpixel grid; seeded sampling.",
          n_samples=200, **_SAMPLING),
    _spec("shapley_value_sampling", "ShapleyValueSampling", "perturbation", "ShapleyValueSampling", "costly",
          "n_samples × (features + 1) forward", True, True,
          "Permutation sampling of Shapley values on the superpixel grid (64 features → 65 passes per "
          "permutation).", n_samples=10, **_SAMPLING),
    _spec("sobel", "Sobel", "baseline", None, "none", "no model", False, False,
          "Model-free: image gradient magnitude (edges). Lesion borders are edges, so it is a strong baseline."),
    _spec("laplace", "Laplace", "baseline", None, "none", "no model", False, False,
          "Model-free: absolute Laplacian of the image (edges and blobs)."),
    _spec("random", "Random", "baseline", None, "none", "no model", False, True,
          "Model-free: seeded uniform noise; the chance level of every score."),
    _spec("input", "Input", "baseline", None, "none", "no model", False, False,
          "Model-free: the image itself (absolute): bright tissue scores, lesions only by contrast."),
)}
BASELINES = tuple(name for name, spec in METHODS.items() if spec.kind == "baseline")


def _normalise_name(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch not in "-_ ")


_ALIASES = {_normalise_name(key): key for key in METHODS}
_ALIASES |= {_normalise_name(spec.label): key for key, spec in METHODS.items()}
_ALIASES[_normalise_name("LRP")] = "lrp"


def resolve_method(method: str) -> str:
    """Canonical name of ``method`` (case, ``-``, ``_`` and spaces ignored: ``Grad-CAM`` → ``grad_cam``)."""
    key = _ALIASES.get(_normalise_name(method))
    if key is None:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    return key


def method_names(include_costly: bool = False, include_baselines: bool = True) -> list[str]:
    """Registered method names, without the costly sampling methods unless asked (they belong to large presets)."""
    return [name for name, spec in METHODS.items()
            if (include_costly or spec.cost != "costly") and (include_baselines or spec.kind != "baseline")]


def method_table() -> pd.DataFrame:
    """The methods side by side (cost, baseline, stochasticity, caveats, default settings), for the book.

    ``auto`` settings are derived at call time: baselines are zeros (the SHAP methods: zeros plus seeded noise),
    windows and patches are H/8, batching knobs follow ``batch_size``.
    """
    rows = []
    for name, spec in METHODS.items():
        defaults = ", ".join(f"{key}={'auto' if value is None else value}" for key, value in spec.settings.items())
        rows.append({"method": name, "label": spec.label, "kind": spec.kind, "captum": spec.captum or "—",
                     "cost": spec.cost, "passes per image": spec.passes, "needs baseline": spec.needs_baseline,
                     "stochastic": spec.stochastic, "defaults": defaults, "caveats": spec.caveats})
    return pd.DataFrame(rows).set_index("method")


# ------------------------------------------------------------------------------------------------ entry point


def _as_images(images) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be N×1×H×W (or N×H×W, N×3×H×W), got shape {tuple(images.shape)}")
    if not torch.is_floating_point(images):
        images = images.float()
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf")
    return images


def _as_targets(targets, count: int) -> torch.Tensor:
    raw = torch.as_tensor(np.asarray(targets) if not torch.is_tensor(targets) else targets)
    if raw.dtype == torch.bool or raw.is_complex() or (
            raw.is_floating_point() and not bool(torch.all(torch.isfinite(raw) & (raw == raw.round())))):
        shown = raw.reshape(-1)[:5].tolist() if raw.numel() > 1 else raw.item()
        raise ValueError(f"targets must be class indices (whole numbers), got {shown!r}")
    targets = raw.long().reshape(-1)
    if targets.numel() == 1:
        targets = targets.expand(count)
    if targets.numel() != count:
        raise ValueError(f"got {targets.numel()} targets for {count} images")
    return targets


def _reduce(attribution: torch.Tensor | np.ndarray, signed: bool) -> np.ndarray:
    attribution = attribution.detach().cpu().numpy() if torch.is_tensor(attribution) else attribution
    reduced = attribution.sum(axis=1) if signed else np.abs(attribution).sum(axis=1)
    return reduced.astype(np.float32)


def _has_inplace_relu(model: nn.Module) -> bool:
    return any(isinstance(module, (nn.ReLU, nn.ReLU6)) and module.inplace for module in model.modules())


def attribute(model: nn.Module | None, images, targets, method: str, batch_size: int = 32, device=None, *,
              signed: bool = False, seed: int = 0, progress: bool = False, **settings) -> np.ndarray:
    """Attribution maps of ``method`` for ``images`` (N×1×H×W in [0, 1]) and ``targets`` → float32 N×H×W.

    Maps are reduced over channels by the sum of absolute values, or of signed values with ``signed=True``.
    ``batch_size`` bounds the images the model sees in one pass (memory): methods that evaluate many copies of
    each image (IntegratedGradients, SmoothGrad, the SHAP methods, Occlusion, LIME) split their work so that
    no pass exceeds it, unless their own batching setting is given or one image alone needs more (GradientShap
    runs n_samples copies of an image together, DeepLiftShap 2 × n_baselines).
    ``settings`` override the method's defaults (see ``METHODS[name].settings``). Stochastic methods are seeded
    with ``seed`` (torch's, numpy's and Python's global RNG states are restored afterwards): the same seed and
    batch size give the same maps. ``device``: where to run (default: where the model's parameters are; another
    device runs a copy). The model runs in eval mode; its training mode is restored afterwards. Model-free
    baselines ignore ``model`` and ``targets``. Raises :class:`NotApplicable` when the method cannot be correct
    for the model.
    """
    name = resolve_method(method)
    spec = METHODS[name]
    unknown = sorted(set(settings) - set(spec.settings))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for {name}; valid: {', '.join(spec.settings) or 'none'}")
    options = {**spec.settings, **settings}
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = _as_images(images)
    if spec.kind == "baseline":
        rng = np.random.default_rng(seed)
        return _reduce(_baseline_map(images.numpy(), name, signed, rng), signed)
    if model is None:
        raise ValueError(f"method {name} needs a model")
    targets = _as_targets(targets, images.shape[0])

    parameter = next(model.parameters(), None)
    own_device = parameter.device if parameter is not None else torch.device("cpu")
    device = own_device if device is None else torch.device(device)
    if device.type == own_device.type and device.index is None:
        device = own_device  # "cuda" means the model's own CUDA device
    if images.shape[0] == 0:
        return np.zeros((0, *images.shape[-2:]), dtype=np.float32)
    if parameter is not None and parameter.is_floating_point():
        images = images.to(parameter.dtype)
    work = model
    if device != own_device or (name in HOOKED_ACTIVATIONS and _has_inplace_relu(model)):
        if isinstance(options.get("layer"), nn.Module):  # the same layer, found again in the copy
            names = {id(module): key for key, module in model.named_modules()}
            if id(options["layer"]) not in names:
                raise ValueError("layer is not a submodule of the model")
            options["layer"] = names[id(options["layer"])]
        work = copy.deepcopy(model).to(device)
        replace_relus(work)
    was_training = work.training
    work.eval()
    # On the CPU, convolutions run faster in channels-last memory format (one book run, 13 methods on 8 images, one
    # thread: 29 s against 38.5 s; the maps differ by rounding only). The model is handed back in the default format.
    channels_last = device.type == "cpu"
    if channels_last:
        work.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            outputs = work(images[:1].to(device))
        if targets.min() < 0 or targets.max() >= outputs.shape[1]:
            raise ValueError(f"targets must lie in 0..{outputs.shape[1] - 1}, got {targets.unique().tolist()}")
        check_applicable(work, name, images[:1].to(device))
        maps = []
        with _seeded(seed, device), full_fp32(device):
            generator = torch.Generator().manual_seed(seed)
            chunk = _chunk_size(name, options, batch_size)
            for start in _progress(range(0, images.shape[0], chunk), progress, name):
                # Gradient methods need it; Captum would set it itself, warning once per call.
                inputs = images[start:start + chunk].to(device).clone().requires_grad_()
                batch_targets = targets[start:start + chunk].to(device)
                attribution = _run(work, inputs, batch_targets, name, options, generator, batch_size)
                maps.append(_reduce(attribution, signed))
    finally:
        if work is model:
            model.train(was_training)
            if channels_last:
                model.to(memory_format=torch.contiguous_format)
    return np.concatenate(maps)


@contextlib.contextmanager
def full_fp32(device: torch.device):
    """Run CUDA convolutions and matrix products in full fp32 (TF32 off), restoring the caller's settings after.

    PyTorch lets cuDNN run fp32 convolutions in TF32 by default. On an H100 that moved integrated-gradients maps of
    VGG-16 at width/8 (8 slices at 64²) by up to 9.9 % of their maximum compared with the CPU, against 0.29 % in
    full fp32 (``benchmarks/gpu_attribution_precision.py``); the maps are what the benchmark scores, so they are
    computed at the precision the CPU uses.
    Training keeps its bf16 autocast.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Seed every RNG Captum draws from (torch; numpy's and Python's global ones for GradientShap's baseline and
    path-point choices), and restore them afterwards so the caller's random streams are not disturbed."""
    numpy_state, python_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed)  # noqa: NPY002 - Captum uses the legacy global generator
            random.seed(seed)
            yield
    finally:
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)


def _progress(iterable, enabled: bool, name: str):
    from tqdm import tqdm

    return tqdm(iterable, desc=name, disable=not enabled)
