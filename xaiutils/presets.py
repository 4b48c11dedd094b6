"""The benchmark's parameter sets as plain dicts, for notebooks: ``resolve(step, preset, **overrides)``.

The presets themselves are frozen dataclasses in :mod:`xaiutils.config` (one per step, ``book`` and ``study``
derived from ``smoke``); this module is the dict-shaped door to them that the notebooks use::

    cfg = resolve("data", preset="smoke", image_size=96)   # smoke values, one override

``None`` means "take the preset's value", which lets a notebook's papermill parameters default to ``None``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from . import config as config_module
from .config import CONTROL_MAPS as _CONTROL_MAPS
from .config import DEFAULT_METHODS as _DEFAULT_METHODS
from .config import PRESETS as _PRESETS
from .config import Preset, preset_names, step_config

__all__ = ["PRESETS", "preset_names", "resolve", "resolve_from"]


def resolve(step: str, preset: str = "smoke", **overrides: Any) -> dict[str, Any]:
    """Return the parameters of ``step`` under ``preset``, with every non-``None`` override applied.

    Raises ``ValueError`` naming the bad preset, step or parameter and listing the valid ones.
    """
    return step_config(step, preset, **overrides).as_dict()


def resolve_from(step: str, preset: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`resolve` with the overrides read from ``parameters`` (a notebook's ``globals()``): one value per
    parameter of ``step``, ``None`` meaning the preset's. A parameter missing from ``parameters`` is an error, so a
    notebook cannot silently lack one of its step's parameters."""
    names = config_module.get_preset(preset).step(step).parameter_names()
    missing = [name for name in names if name not in parameters]
    if missing:
        raise ValueError(f"no value for parameter(s) {', '.join(map(repr, missing))} of step {step!r}; "
                         f"every parameter of the step must be given (None: the preset's value)")
    return resolve(step, preset, **{name: parameters[name] for name in names})


def _as_dicts(preset: Preset) -> dict[str, dict[str, Any]]:
    return {step: preset.step(step).as_dict() for step in Preset.step_names()}


# ``{preset: {step: {parameter: value}}}``, a read-only snapshot of :data:`xaiutils.config.PRESETS` for code that
# looks values up by name; changing it changes nothing (use ``resolve`` overrides, or ``dataclasses.replace``).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {name: _as_dicts(preset) for name, preset in _PRESETS.items()}

_RENAMED = {"CHEAP_METHODS": ("xaiutils.config.DEFAULT_METHODS", _DEFAULT_METHODS),
            "BASELINE_METHODS": ("xaiutils.config.CONTROL_MAPS", _CONTROL_MAPS)}


def __getattr__(name: str):
    """The names these lists had before :mod:`xaiutils.config`: they work for one release, with a warning."""
    if name in _RENAMED:
        new_name, value = _RENAMED[name]
        warnings.warn(f"xaiutils.presets.{name} is deprecated; use {new_name}", DeprecationWarning, stacklevel=2)
        return list(value)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
