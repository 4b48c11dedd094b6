"""Model quirks handled before a propagation method runs, so that the methods themselves need no special cases.

ReLU6 (MobileNetV2): Captum's hook-based methods modify the backward pass of ``nn.ReLU`` modules only, and its
DeepLift has no rule for ``nn.ReLU6``. :class:`ClippedReLU` is ReLU6 as a subclass of ``nn.ReLU``: the same forward
(``hardtanh(x, 0, 6)``, bit for bit), so GuidedBackprop, Deconvolution and Guided Grad-CAM apply their ReLU rule to
it with the clip kept (the gradient that reaches their hook is already zero above 6), and DeepLift gets the rescale
rule for it while a call runs (:func:`deeplift_rules`). We chose a module the libraries already recognise over
rewriting ReLU6 as ``relu(x) − relu(x − 6)``: that rewrite changes DeepLift's multipliers and adds a subtraction
outside modules, which LRP cannot see.

Residual sums and BatchNorm (LRP): zennit's canonizers. :func:`lrp_canonizers` merges every BatchNorm into the
convolution before it (exactly: the merged network computes the original function) and turns the residual additions
of MobileNetV2 and ResNet blocks into ``zennit.layer.Sum`` modules, which its composites give a rule.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional

from xaiutils.domain.models import BasicBlock


class ClippedReLU(nn.ReLU):
    """``min(max(x, 0), 6)``: ReLU6's function as an ``nn.ReLU``, for libraries that recognise ReLU modules by type."""

    def __init__(self, inplace: bool = False):
        super().__init__(inplace=False)  # hooked methods need a non-in-place module (in-place is refused anyway)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.hardtanh(x, 0.0, 6.0)  # what F.relu6 computes

    def extra_repr(self) -> str:
        return "clip=6"


def has_relu6(model: nn.Module) -> bool:
    return any(type(module) is nn.ReLU6 for module in model.modules())


def clip_relu6(module: nn.Module) -> nn.Module:
    """Replace every ``nn.ReLU6`` below ``module`` by a :class:`ClippedReLU` (in place; returns ``module``)."""
    for name, child in module.named_children():
        if type(child) is nn.ReLU6:
            setattr(module, name, ClippedReLU())
        else:
            clip_relu6(child)
    return module


@contextlib.contextmanager
def deeplift_rules():
    """Captum's DeepLift looks rules up by exact module type: give :class:`ClippedReLU` the rescale rule (the one
    Captum applies to every elementwise non-linearity) while the call runs, and take it away afterwards."""
    from captum.attr._core import deep_lift  # the table is private in Captum 0.9.0; tests/test_propagation.py pins it

    table = deep_lift.SUPPORTED_NON_LINEAR
    added = ClippedReLU not in table
    if added:
        table[ClippedReLU] = deep_lift.nonlinear
    try:
        yield
    finally:
        if added:
            table.pop(ClippedReLU, None)


# ------------------------------------------------------------------------------------------------ zennit canonizers


def _exact_merge():
    """zennit 0.5.1's MergeBatchNorm leaves ``eps`` in the BatchNorm it turns into the identity, which then divides by
    sqrt(1 + eps): the merged MobileNetV2 (52 BatchNorms) drifts from the original by about 1e-4 relative. This
    mix-in sets ``eps`` to 0 while merged and restores it afterwards."""
    from zennit.canonizers import MergeBatchNorm

    class ExactMerge(MergeBatchNorm):
        def register(self, linears, batch_norm):
            self.saved_eps = batch_norm.eps
            super().register(linears, batch_norm)
            batch_norm.eps = 0.0

        def remove(self):
            super().remove()
            self.batch_norm.eps = self.saved_eps

    return ExactMerge


def _canonizer_classes():
    from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
    from zennit.layer import Sum

    exact = _exact_merge()

    class SequentialMerge(exact, SequentialMergeBatchNorm):
        """A BatchNorm right after a convolution among the model's leaves in definition order: MobileNetV2's and the
        ResNet stem's sequences, and our ResNet :class:`BasicBlock`, which defines conv1, bn1, conv2, bn2 in that
        order for this reason (tests/test_propagation.py checks that the merged network computes the original)."""

    def inverted_residual_forward(self, x):
        if not self.use_res_connect:
            return self.conv(x)
        return self.canonizer_sum(torch.stack([x, self.conv(x)], dim=-1))

    def basic_block_forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.canonizer_sum(torch.stack([identity, out], dim=-1)))

    def residual_sums(name, module):
        from torchvision.models.mobilenetv2 import InvertedResidual

        for kind, forward in ((InvertedResidual, inverted_residual_forward), (BasicBlock, basic_block_forward)):
            if isinstance(module, kind):
                return {"forward": forward.__get__(module), "canonizer_sum": Sum()}
        return None

    class ResidualSums(AttributeCanonizer):
        """The residual additions as ``Sum`` modules (relevance split in proportion to each branch's share)."""

        def __init__(self):
            super().__init__(residual_sums)

    return SequentialMerge, ResidualSums


def lrp_canonizers() -> list:
    """zennit canonizers for every backbone of the presets: exact BatchNorm merges and residual sums as modules."""
    return [cls() for cls in _canonizer_classes()]


def residual_blocks(model: nn.Module) -> int:
    """How many residual additions :func:`lrp_canonizers` turns into modules in ``model``."""
    from torchvision.models.mobilenetv2 import InvertedResidual

    return sum(1 for module in model.modules()
               if isinstance(module, BasicBlock) or (isinstance(module, InvertedResidual) and module.use_res_connect))
