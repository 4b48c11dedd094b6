"""Inputs the Captum methods are given besides the images: reference inputs (Captum calls them ``baselines``),
superpixel feature masks, and how many copies of an image fit in one model pass."""

from __future__ import annotations

import torch


def single_baseline(inputs: torch.Tensor, baselines):
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


def baseline_distribution(inputs: torch.Tensor, baselines, n_baselines: int, generator: torch.Generator):
    """Reference inputs for the SHAP methods: given, else the zero image plus seeded U(0,1) noise images."""
    if baselines is not None:
        return torch.as_tensor(baselines, dtype=inputs.dtype, device=inputs.device)
    if n_baselines < 2:
        raise ValueError(f"n_baselines must be >= 2 for a baseline distribution, got {n_baselines}")
    noise = torch.rand((n_baselines - 1, *inputs.shape[1:]), generator=generator)
    return torch.cat([torch.zeros_like(noise[:1]), noise]).to(inputs.device, inputs.dtype)


def feature_mask(inputs: torch.Tensor, patch):
    """Square superpixel patches (a grid), one feature id per patch, shared by all channels."""
    height, width = inputs.shape[-2:]
    patch = max(1, height // 8) if patch is None else int(patch)
    if patch < 1:
        raise ValueError(f"patch must be a positive number of pixels, got {patch}")
    rows = torch.arange(height, device=inputs.device) // patch
    cols = torch.arange(width, device=inputs.device) // patch
    ids = rows[:, None] * ((width + patch - 1) // patch) + cols[None, :]
    return ids.expand(1, inputs.shape[1], height, width).contiguous()


def per_pass(batch_size: int, per_image: int) -> int:
    """Copies of each image that fit in one model pass of at most ``batch_size`` images."""
    return max(1, int(batch_size) // max(1, per_image))
