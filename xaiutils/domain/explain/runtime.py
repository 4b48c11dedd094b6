"""What surrounds every call of a method: inputs checked and converted, maps reduced over channels, and the random
and precision state set for the call and restored after it."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch
from torch import nn


def as_images(images) -> torch.Tensor:
    """``images`` as a float N×C×H×W tensor (N×H×W gets a channel axis), finite, with one or three channels."""
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


def as_targets(targets, count: int) -> torch.Tensor:
    """Class indices as a long tensor of ``count`` entries (one number is used for every image)."""
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


def reduce_channels(attribution: torch.Tensor | np.ndarray, signed: bool) -> np.ndarray:
    """N×C×H×W → float32 N×H×W: the sum over channels of absolute values (of signed values with ``signed``)."""
    attribution = attribution.detach().cpu().numpy() if torch.is_tensor(attribution) else attribution
    reduced = attribution.sum(axis=1) if signed else np.abs(attribution).sum(axis=1)
    return reduced.astype(np.float32)


def has_inplace_relu(model: nn.Module) -> bool:
    return any(isinstance(module, (nn.ReLU, nn.ReLU6)) and module.inplace for module in model.modules())


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
def seeded(seed: int, device: torch.device):
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


def progress_bar(iterable, enabled: bool, name: str):
    from tqdm import tqdm

    return tqdm(iterable, desc=name, disable=not enabled)
