"""The method base class, the registry its subclasses fill, and :func:`attribute`, the one entry point.

A method is one subclass of :class:`Method`: its metadata as class attributes, its attribution as
:meth:`Method.attribute`, its applicability check as :meth:`Method.check` and its images per call as
:meth:`Method.chunk_size`. Defining the class registers it under its ``name`` (in definition order): nothing else
needs editing. A plain Captum wrapper subclasses :class:`CaptumMethod` and declares only the Captum class and its
arguments; the model-free control maps subclass :class:`ControlMap` instead.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from xaiutils.domain.explain.canonical import ClippedReLU, clip_relu6, has_relu6
from xaiutils.domain.explain.checks import DEEPLIFT_NON_LINEAR, check_activations, check_shared_modules
from xaiutils.domain.explain.runtime import (
    as_images,
    as_targets,
    full_fp32,
    has_inplace_relu,
    progress_bar,
    reduce_channels,
    seeded,
)
from xaiutils.domain.models import replace_relus

CAPTUM_NOTICES = ("Setting forward, backward hooks and attributes on non-linear",
                  "Setting backward hooks on ReLU activations")

COST_CLASSES = ("none", "cheap", "moderate", "costly")
KINDS = ("gradient", "propagation", "cam", "perturbation", "control")  # "control": the model-free control maps
METHODS: dict[str, type[Method]] = {}  # name → class, in registration order
_ALIASES: dict[str, str] = {}  # normalised name or label → name
_REQUIRED = ("name", "label", "kind", "cost", "passes", "caveats")


def _normalise_name(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch not in "-_ ")


class Method:
    """One attribution method. Subclasses set the class attributes below and implement :meth:`attribute`.

    An instance is one call's worth of work: ``options`` are the defaults in ``settings`` updated with the
    caller's, ``batch_size`` bounds the images of one model pass, ``generator`` is seeded by ``attribute(seed=)``.
    """

    name: ClassVar[str]  # registry key, e.g. "integrated_gradients"
    label: ClassVar[str]  # shown in tables, e.g. "IntegratedGradients"; also accepted by resolve_method
    kind: ClassVar[str]  # one of KINDS
    captum: ClassVar[str | None] = None  # the Captum class(es) used, as shown in the table
    cost: ClassVar[str]  # one of COST_CLASSES
    passes: ClassVar[str]  # model passes per image, in words
    needs_baseline: ClassVar[bool] = False  # takes a reference input (Captum's ``baselines``)
    stochastic: ClassVar[bool] = False
    caveats: ClassVar[str]
    settings: ClassVar[dict[str, Any]] = {}  # defaults that attribute(**settings) may override; None means "auto"
    hooked: ClassVar[bool] = False  # Captum hooks activation modules: in-place ReLUs are rebuilt on a copy first
    model_free: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # intermediate base classes have no name of their own and are not registered
            register(cls)

    def __init__(self, options: dict[str, Any] | None = None, batch_size: int = 32,
                 generator: torch.Generator | None = None):
        self.options = {**self.settings, **(options or {})}
        self.batch_size = int(batch_size)
        self.generator = generator

    @classmethod
    def check(cls, model: nn.Module, probe: torch.Tensor | None) -> None:
        """Raise :class:`NotApplicable` if the method cannot be correct for ``model`` (``probe``: one input)."""

    def chunk_size(self) -> int:
        """Images per :meth:`attribute` call, so that no model pass exceeds ``batch_size`` images."""
        return self.batch_size

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Attributions (N×C×H×W, like ``inputs``) of ``model``'s ``targets`` logits for ``inputs``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement attribute()")


class CaptumMethod(Method):
    """A plain Captum wrapper: the class ``captum`` names in ``captum.attr``, built on the model alone and called
    with the inputs, the targets and ``captum_arguments``. One :meth:`attribute` for every such method; a subclass
    declares the Captum class and its arguments only."""

    captum: ClassVar[str]
    captum_arguments: ClassVar[dict[str, Any]] = {}  # keyword arguments of the Captum class's attribute()

    def attribute(self, model, inputs, targets):
        import captum.attr

        return getattr(captum.attr, self.captum)(model).attribute(inputs, target=targets, **self.captum_arguments)


class HookedMethod(Method):
    """A method whose Captum class hooks activation modules: it needs one non-in-place module per activation,
    and modifies the backward pass of ``supported`` activation types only. ReLU6 is supported through
    :class:`~xaiutils.domain.explain.canonical.ClippedReLU`: :func:`attribute` runs these methods on a copy whose
    ReLU6 modules are ClippedReLUs (the same function, an ``nn.ReLU`` to Captum)."""

    hooked = True
    supported: ClassVar[tuple[type[nn.Module], ...]] = (nn.ReLU, nn.ReLU6, ClippedReLU)

    @classmethod
    def rule(cls) -> str:
        """The start of the message for an unsupported activation type."""
        return f"{cls.label} only modifies the backward pass of nn.ReLU (and ReLU6), not of"

    @classmethod
    def check(cls, model, probe):
        check_shared_modules(model, probe, cls.name, every_leaf=False)
        check_activations(model, cls.name, cls.supported, cls.rule())


class DeepLiftRules(HookedMethod):
    """DeepLift and DeepLiftShap: Captum's rules cover more activation types than ReLU."""

    supported = (*DEEPLIFT_NON_LINEAR, nn.ReLU6, ClippedReLU)  # ReLU6: the rescale rule (canonical.deeplift_rules)

    @classmethod
    def rule(cls) -> str:
        return "Captum's DeepLift has no rule for"


class ControlMap(Method):
    """A model-free map computed from the images alone (a control for every score); no model, no targets."""

    kind = "control"
    cost = "none"
    passes = "no model"
    model_free = True

    def control_map(self, images: np.ndarray, signed: bool, rng: np.random.Generator) -> np.ndarray:
        """N×C×H×W images → N×C×H×W map (reduced over channels afterwards)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement control_map()")


# ------------------------------------------------------------------------------------------------ registry


def register(cls: type[Method]) -> type[Method]:
    """Add ``cls`` to :data:`METHODS` (done by defining the subclass); refuses missing metadata and name clashes."""
    missing = [key for key in _REQUIRED if not hasattr(cls, key)]
    if missing:
        raise TypeError(f"method class {cls.__name__} lacks {', '.join(missing)}")
    if cls.kind not in KINDS:
        raise ValueError(f"unknown kind {cls.kind!r} for {cls.name}; valid choices: {', '.join(KINDS)}")
    if cls.cost not in COST_CLASSES:
        raise ValueError(f"unknown cost {cls.cost!r} for {cls.name}; valid choices: {', '.join(COST_CLASSES)}")
    keys = {_normalise_name(key) for key in (cls.name, cls.label)}
    clashes = sorted(key for key in keys if _ALIASES.get(key, cls.name) != cls.name)
    if cls.name in METHODS or clashes:
        raise ValueError(f"method {cls.name!r} clashes with registered method(s): "
                         f"{sorted({_ALIASES[key] for key in clashes} | ({cls.name} & METHODS.keys()))}")
    cls.settings = dict(cls.settings)
    METHODS[cls.name] = cls
    _ALIASES.update(dict.fromkeys(keys, cls.name))
    return cls


def unregister(name: str) -> type[Method]:
    """Remove a registered method (e.g. one a test defined); returns its class."""
    cls = METHODS.pop(resolve_method(name))
    for key in [key for key, value in _ALIASES.items() if value == cls.name]:
        del _ALIASES[key]
    return cls


def resolve_method(method: str) -> str:
    """Canonical name of ``method`` (case, ``-``, ``_`` and spaces ignored: ``Grad-CAM`` → ``grad_cam``)."""
    key = _ALIASES.get(_normalise_name(method))
    if key is None:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    return key


def check_methods(methods) -> list[str]:
    """``methods`` as given, once every name is known to the registry and names no method twice (aliases count as
    their method: ``[saliency, Saliency]`` is a duplicate). A method listed twice would be scored twice and narrow
    the leaderboard's intervals, so it is refused, naming the duplicates, before any work."""
    if isinstance(methods, str) or not all(isinstance(method, str) for method in methods):
        raise ValueError(f"methods must be a list of method names, got {methods!r}; valid methods: "
                         f"{', '.join(METHODS)}")
    methods = list(methods)
    canonical = [resolve_method(method) for method in methods]
    repeated = {name: [given for given, key in zip(methods, canonical, strict=True) if key == name]
                for name in dict.fromkeys(canonical) if canonical.count(name) > 1}
    if repeated:
        listed = "; ".join(f"{name} ({', '.join(map(repr, given))})" for name, given in repeated.items())
        raise ValueError(f"methods list a method more than once: {listed}; each method is scored once, so list it "
                         f"once (got {methods})")
    return methods


def methods_by_cost(*costs: str) -> list[str]:
    """Names of the registered methods in the given cost classes (all, without any), in registry order."""
    for cost in costs:
        if cost not in COST_CLASSES:
            raise ValueError(f"unknown cost {cost!r}; valid choices: {', '.join(COST_CLASSES)}")
    return [name for name, cls in METHODS.items() if not costs or cls.cost in costs]


def control_map_names() -> list[str]:
    """Names of the model-free control maps (sobel, laplace, random, input), in registry order."""
    return [name for name, cls in METHODS.items() if cls.model_free]


def method_table() -> pd.DataFrame:
    """The methods side by side (cost, baseline, stochasticity, caveats, default settings), for the book.

    ``auto`` settings are derived at call time: baselines are zeros (the SHAP methods: zeros plus seeded noise),
    windows and patches are H/8, batching knobs follow ``batch_size``.
    """
    rows = []
    for name, cls in METHODS.items():
        defaults = ", ".join(f"{key}={'auto' if value is None else value}" for key, value in cls.settings.items())
        rows.append({"method": name, "label": cls.label, "kind": cls.kind, "captum": cls.captum or "—",
                     "cost": cls.cost, "passes per image": cls.passes, "needs baseline": cls.needs_baseline,
                     "stochastic": cls.stochastic, "defaults": defaults, "caveats": cls.caveats})
    return pd.DataFrame(rows).set_index("method")


# ------------------------------------------------------------------------------------------------ entry point


def check_applicable(model: nn.Module, method: str, probe: torch.Tensor | None = None) -> None:
    """Raise :class:`NotApplicable` if ``method`` cannot give a correct attribution for ``model``.

    ``probe``: one input (1×C×H×W) used to detect activation modules that run more than once per forward pass.
    """
    cls = METHODS[resolve_method(method)]
    if model is not None:
        cls.check(model, probe)


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
    control maps ignore ``model`` and ``targets``. Raises :class:`NotApplicable` when the method cannot be correct
    for the model.
    """
    name = resolve_method(method)
    cls = METHODS[name]
    unknown = sorted(set(settings) - set(cls.settings))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for {name}; valid: {', '.join(cls.settings) or 'none'}")
    options = {**cls.settings, **settings}
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = as_images(images)
    if cls.model_free:
        rng = np.random.default_rng(seed)
        return reduce_channels(cls(options).control_map(images.numpy(), signed, rng), signed)
    if model is None:
        raise ValueError(f"method {name} needs a model")
    targets = as_targets(targets, images.shape[0])

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
    if device != own_device or (cls.hooked and (has_inplace_relu(model) or has_relu6(model))):
        if isinstance(options.get("layer"), nn.Module):  # the same layer, found again in the copy
            names = {id(module): key for key, module in model.named_modules()}
            if id(options["layer"]) not in names:
                raise ValueError("layer is not a submodule of the model")
            options["layer"] = names[id(options["layer"])]
        work = copy.deepcopy(model).to(device)
        replace_relus(work)
        if cls.hooked:
            clip_relu6(work)
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
        cls.check(work, images[:1].to(device))
        maps = []
        with seeded(seed, device), full_fp32(device), warnings.catch_warnings():
            # Captum announces on every call that it sets hooks on the activations; that is what these methods
            # are, and the notice (with the site-packages path in it) filled the built book's cells.
            for notice in CAPTUM_NOTICES:
                warnings.filterwarnings("ignore", message=notice, category=UserWarning)
            runner = cls(options, batch_size, torch.Generator().manual_seed(seed))
            chunk = runner.chunk_size()
            for start in progress_bar(range(0, images.shape[0], chunk), progress, name):
                # Gradient methods need it; Captum would set it itself, warning once per call.
                inputs = images[start:start + chunk].to(device).clone().requires_grad_()
                batch_targets = targets[start:start + chunk].to(device)
                maps.append(reduce_channels(runner.attribute(work, inputs, batch_targets), signed))
    finally:
        if work is model:
            model.train(was_training)
            if channels_last:
                model.to(memory_format=torch.contiguous_format)
    return np.concatenate(maps)
