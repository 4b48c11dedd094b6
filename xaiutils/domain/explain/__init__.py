"""Attribution methods (Captum) and model-free control maps behind one entry point, :func:`attribute`.

Every method is a class (:class:`Method`) holding its metadata, its Captum call, its applicability check and its
chunk size; defining the class registers it in :data:`METHODS` (name → class). Every method — Captum's and the
control maps ``sobel``, ``laplace``, ``random`` and ``input`` — returns a float32 N×H×W map for N×1×H×W LesionNet
inputs, reduced over channels by summing absolute values (``signed=True`` sums the signed values instead).
"Baseline" is kept for what Captum means by it: a reference input (``needs_baseline``, the ``baselines`` setting).

Hook-based methods (DeepLift, DeepLiftShap, GuidedBackprop, Deconvolution, Guided Grad-CAM, LRP) give silently
wrong results on shared activation modules and on activations Captum has no rule for, so :func:`attribute` checks
the model first and raises :class:`NotApplicable` (a ``ValueError``) with the reason; callers record the method as
not applicable for that backbone. In-place ReLUs are not an error: the attribution runs on a copy of the model
rebuilt with separate non-in-place ReLUs (:func:`xaiutils.domain.models.replace_relus`), the caller's model is
untouched.

Modules: :mod:`.base` (base classes, registry, :func:`attribute`), :mod:`.checks` (applicability),
:mod:`.runtime` (inputs, reduction, RNG and precision state), :mod:`.references` (Captum's reference inputs and
feature masks), and the methods by kind: :mod:`.gradient`, :mod:`.propagation`, :mod:`.cam`,
:mod:`.perturbation`, :mod:`.control`.
"""

from __future__ import annotations

import importlib

from xaiutils.domain.explain.base import (
    COST_CLASSES,
    KINDS,
    METHODS,
    CaptumMethod,
    ControlMap,
    HookedMethod,
    Method,
    attribute,
    check_applicable,
    check_methods,
    control_map_names,
    method_table,
    methods_by_cost,
    register,
    resolve_method,
    unregister,
)
from xaiutils.domain.explain.checks import NotApplicable
from xaiutils.domain.explain.runtime import as_images as _as_images
from xaiutils.domain.explain.runtime import as_targets as _as_targets
from xaiutils.domain.explain.runtime import full_fp32
from xaiutils.domain.explain.runtime import reduce_channels as _reduce
from xaiutils.domain.explain.runtime import seeded as _seeded

__all__ = ["COST_CLASSES", "KINDS", "METHODS", "CaptumMethod", "ControlMap", "HookedMethod", "Method", "NotApplicable",
           "attribute", "check_applicable", "check_methods", "control_map_names", "full_fp32", "method_table",
           "methods_by_cost",
           "register", "resolve_method", "unregister"]
_PRIVATE_FOR_PLUGINS = (_as_images, _as_targets, _reduce, _seeded)  # xaiutils.domain.plugins uses these names



def _import_methods() -> None:
    """Defining the method classes registers them, in this order: the order of METHODS and of the book's table."""
    for module in ("gradient", "propagation", "cam", "perturbation", "control"):
        importlib.import_module(f".{module}", __name__)


_import_methods()
