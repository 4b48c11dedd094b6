"""Whether a method can be correct for a model: the checks behind :class:`NotApplicable`.

Hook-based methods (DeepLift, DeepLiftShap, GuidedBackprop, Deconvolution, Guided Grad-CAM, LRP) give silently
wrong results on shared activation modules, on activations they have no rule for, and on operations outside
modules. The checks count the calls of every leaf module in one forward pass and trace the forward with torch.fx.

Captum keeps its DeepLift table of supported layers private (``captum.attr._core``), so it is restated here from
Captum 0.9.0; ``tests/test_explain.py`` compares it with Captum's, so an upgrade that changes it fails a test
instead of changing the checks silently.
"""

from __future__ import annotations

import operator

import torch
from torch import nn

from xaiutils.domain.models import LesionNet


class NotApplicable(ValueError):
    """The method cannot give a correct attribution for this model; the message says why."""


ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
                    nn.Softmax, nn.LogSoftmax)
FUNCTIONAL_ACTIVATIONS = {"relu", "relu_", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish",
                          "hardswish", "hardsigmoid", "hardtanh", "sigmoid", "tanh", "softplus", "softmax"}
RESHAPES = {"flatten", "view", "reshape", "expand", "repeat", "contiguous", "size", "getattr", "getitem", "squeeze",
            "unsqueeze"}
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
# Captum 0.9.0: captum.attr._core.deep_lift.SUPPORTED_NON_LINEAR (its keys)
DEEPLIFT_NON_LINEAR = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, *MAX_POOLS, nn.Softmax)


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, module) for name, module in model.named_modules() if not list(module.children())]


def call_counts(model: nn.Module, probe: torch.Tensor) -> dict[str, int]:
    """How often each leaf module runs in one forward pass (shared modules run more than once)."""
    counts, handles = {}, []
    for name, module in leaf_modules(model):
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
    """The parts traced one by one: LesionNet's forward has an input check fx cannot trace, its blocks and head
    carry all the layers."""
    if isinstance(model, LesionNet):
        return [(f"blocks.{index}", block) for index, block in enumerate(model.blocks)] + [("head", model.head)]
    return [("model", model)]


def functional_ops(model: nn.Module) -> list[str] | None:
    """Names of functions/methods called in forward outside modules (``None`` when torch.fx cannot trace it)."""
    import torch.fx

    from xaiutils.domain.explain.canonical import ClippedReLU

    class Tracer(torch.fx.Tracer):  # ClippedReLU is a module with a rule, like the torch.nn activations
        def is_leaf_module(self, module, qualified_name):
            return isinstance(module, ClippedReLU) or super().is_leaf_module(module, qualified_name)

    found = []
    for prefix, part in _traced_parts(model):
        try:
            graph = Tracer().trace(part)
        except Exception:  # noqa: BLE001 - any tracing failure means "could not check"
            return None
        for node in graph.nodes:
            if node.op in ("call_function", "call_method"):
                target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "?")
                if node.target in (operator.getitem,):
                    target = "getitem"
                found.append(f"{target} (in {prefix})")
    return found


def check_shared_modules(model: nn.Module, probe: torch.Tensor | None, name: str, every_leaf: bool) -> None:
    """Captum's hooks need one module per position: refuse activation (and max-pooling) modules that run more
    than once per forward pass, or any leaf module at all with ``every_leaf`` (LRP)."""
    if probe is None:
        return
    counts = call_counts(model, probe)
    hooked = (*ACTIVATION_TYPES, *MAX_POOLS)  # DeepLift hooks max-pooling too
    shared = [key for key, module in leaf_modules(model)
              if counts.get(key, 0) > 1 and (every_leaf or isinstance(module, hooked))]
    if shared:
        raise NotApplicable(f"{name}: module(s) {shared[:4]} run more than once per forward pass; Captum's hooks "
                            "need one module per position (rebuild the model with separate modules)")


def check_activations(model: nn.Module, name: str, supported: tuple, rule: str) -> None:
    """Refuse activation modules whose exact type is not in ``supported``, and functional activations."""
    unsupported = sorted({type(module).__name__ for _, module in leaf_modules(model)
                          if isinstance(module, ACTIVATION_TYPES) and type(module) not in supported})
    if unsupported:
        raise NotApplicable(f"{name}: {rule} {', '.join(unsupported)} activations "
                            "(they would pass plain gradients, silently)")
    ops = functional_ops(model) or []
    functional = [op for op in ops if op.split(" ")[0] in FUNCTIONAL_ACTIVATIONS]
    if functional:
        raise NotApplicable(f"{name}: functional activations {functional[:4]} in forward are invisible to "
                            "Captum's module hooks")


def check_lrp_layers(model: nn.Module, known: tuple, residual_sums: int) -> None:
    """Refuse layers the LRP composites have no rule for, and operations outside modules other than the
    ``residual_sums`` additions the canonizers turn into modules (relevance would not be conserved)."""
    missing = {}
    for key, module in leaf_modules(model):
        if not isinstance(module, known):
            missing.setdefault(type(module).__name__, key)
    if missing:
        where = ", ".join(f"{kind} (e.g. {key})" for kind, key in missing.items())
        raise NotApplicable(f"lrp: no LRP rule for {where}")
    ops = functional_ops(model)
    if ops is None:
        raise NotApplicable("lrp: could not trace the model with torch.fx to check for operations outside modules")
    foreign = [op for op in ops if op.split(" ")[0] not in RESHAPES]
    additions = [op for op in foreign if op.split(" ")[0] in ("add", "iadd")]
    if len(foreign) != len(additions) or len(additions) != residual_sums:
        raise NotApplicable(f"lrp: operations outside modules {foreign[:4]} get no LRP rule, so relevance is not "
                            f"conserved ({residual_sums} residual additions of MobileNetV2 and ResNet blocks are "
                            "handled; others must be modules)")
