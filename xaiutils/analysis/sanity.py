"""Model-randomisation sanity check (Adebayo et al. 2018): do a method's maps depend on the model's weights?

The check re-initialises the model from the top down, cascading: first the classification head, then the blocks
from the last one backwards, keeping each earlier re-initialisation. After every stage the method's maps are
computed again on the same images and compared with the maps of the trained model by Spearman's rank correlation
of |map| over the pixels (per image). A method whose maps explain the model should change once the weights they
depend on are destroyed (ρ falls); one whose maps stay the same (ρ near 1) is model-independent and is flagged.
The model-free control maps (``sobel``, ``laplace``, ``random``, ``input``) are flagged by construction.

Re-initialisation is deterministic: stage ``i`` re-draws its layers' parameters with torch seeded by
``seed + i`` (``reset_parameters`` of every layer that has one; BatchNorm's running statistics are reset too).
The model given is never changed: the cascade runs on a copy.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn
from tqdm import tqdm

from xaiutils.domain import explain, plugins

# A method passes when the mean rank correlation between its maps of the trained model and of the model with the
# top ``n_stages`` stages re-initialised is below this: its maps changed more than they stayed.
DEFAULT_THRESHOLD = 0.5


def cascade_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` from the top down: ``head``, then ``blocks.N-1`` … ``blocks.0`` for models with ``blocks``
    and ``head`` (LesionNet), else the model's children in reverse order. Only stages with parameters count."""
    if hasattr(model, "blocks") and hasattr(model, "head"):
        parts = [("head", model.head)] + [(f"blocks.{index}", block)
                                          for index, block in reversed(list(enumerate(model.blocks)))]
    else:
        parts = list(reversed(list(model.named_children())))
    parts = [(name, module) for name, module in parts if any(True for _ in module.parameters())]
    if not parts:
        raise ValueError("the model has no parameters to re-initialise")
    return parts


def reinitialise(module: nn.Module, seed: int) -> int:
    """Re-draw the parameters of every layer of ``module`` that has ``reset_parameters``, torch seeded by ``seed``
    (the caller's RNG state is restored). Returns the number of layers reset."""
    reset = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in module.modules():
            if hasattr(layer, "reset_parameters") and callable(layer.reset_parameters):
                layer.reset_parameters()
                reset += 1
            if isinstance(layer, nn.modules.batchnorm._NormBase) and layer.track_running_stats:
                layer.reset_running_stats()
    return reset


def rank_correlation(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Spearman's ρ between |first[i]| and |second[i]| over pixels, per image (NaN where a map is constant)."""
    rhos = np.full(len(first), np.nan)
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        a, b = np.abs(a).ravel(), np.abs(b).ravel()
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            rhos[index] = stats.spearmanr(a, b).statistic
    return rhos


def model_randomisation(model: nn.Module, images, targets, methods, n_stages: int | None = None, seed: int = 0,
                        user_methods=None, batch_size: int = 32, progress: bool = True,
                        original_maps: dict | None = None) -> pd.DataFrame:
    """Cascading randomisation of ``model`` and the rank correlation of each method's maps with the original ones.

    ``methods``: registry names (control maps included) and/or names of ``user_methods`` (entries as in
    :func:`xaiutils.domain.plugins.parse_entries`). ``n_stages``: how many stages of :func:`cascade_stages` to run
    (``None``: all). A method that does not apply to the model gets no rows. ``original_maps``: ``{method: maps}``
    of the trained model on these images, when already computed (e.g. by notebook 4), to save one pass.
    Returns a tidy table: method, stage (1 = head re-initialised), layer (the stage's module), image (position in
    ``images``), spearman.
    """
    user = {entry["name"]: entry for entry in plugins.parse_entries(user_methods)}
    work = copy.deepcopy(model)  # the cascade destroys weights: never the caller's model
    stages = cascade_stages(work)
    if n_stages is not None:
        if int(n_stages) < 1:
            raise ValueError(f"n_stages must be >= 1, got {n_stages}")
        stages = stages[: int(n_stages)]

    def maps(method):
        return plugins.maps_of(work, images, targets, method, user=user, seed=seed, batch_size=batch_size)

    original, rows = {}, []
    for method in methods:
        if original_maps is not None and method in original_maps:
            original[method] = np.asarray(original_maps[method])
            if original[method].shape != (len(images), *np.shape(images)[-2:]):
                raise ValueError(f"original_maps[{method!r}] has shape {original[method].shape}, the images "
                                 f"{np.shape(images)}")
            continue
        try:
            original[method] = maps(method)
        except explain.NotApplicable:
            continue
    bar = tqdm(total=len(stages) * len(original), desc="model randomisation", disable=not progress)
    for number, (name, module) in enumerate(stages, start=1):
        reinitialise(module, seed + number)
        for method, reference in original.items():
            rhos = rank_correlation(reference, maps(method))
            rows.extend({"method": method, "stage": number, "layer": name, "image": image, "spearman": float(rho)}
                        for image, rho in enumerate(rhos))
            bar.update()
    bar.close()
    return pd.DataFrame(rows, columns=["method", "stage", "layer", "image", "spearman"])


def summarise(table: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD, n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """One row per method: mean ρ after the last stage run, its 95 % bootstrap interval over images, and the
    verdict: ``flagged`` when the mean ρ is at least ``threshold`` (the maps barely changed), ``passed`` when it is
    below, ``undefined`` when no ρ could be computed (constant maps)."""
    from xaiutils.analysis.evaluate import bootstrap_ci

    rows = []
    for method, group in table.groupby("method", sort=False):
        last = group[group["stage"] == group["stage"].max()]
        values = last["spearman"].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if len(finite) else float("nan")
        low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
        verdict = "undefined" if not len(finite) else ("flagged" if mean >= threshold else "passed")
        rows.append({"method": method, "sanity_rho": mean, "sanity_ci_low": low, "sanity_ci_high": high,
                     "sanity_stages": int(group["stage"].max()), "sanity_layer": last["layer"].iloc[0],
                     "sanity": verdict})
    return pd.DataFrame(rows, columns=["method", "sanity_rho", "sanity_ci_low", "sanity_ci_high", "sanity_stages",
                                       "sanity_layer", "sanity"])
