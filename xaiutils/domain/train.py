"""Fine-tuning loop: cross-entropy, Adam, early stopping on validation loss, seeds for order, init and dropout.

Data are in-memory arrays (N×H×W float32 images, N int labels): the benchmark's datasets fit in memory at every
preset, and moving them to the device once keeps the GPU fed (the data path is a slice of a device tensor).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from xaiutils.domain.models import check_choice

# Training-time augmentation. "flips": each image is flipped left-right and/or up-down with probability 1/2
# each, drawn per batch; lesion shape (the class) does not change under a flip.
AUGMENTATIONS = ("none", "flips")
# Learning-rate schedules. "onecycle": warm-up to ``lr`` over the first 30 % of the steps of ``epochs`` epochs, then
# cosine annealing towards zero (torch's OneCycleLR); with early stopping the schedule still spans ``epochs``.
LR_SCHEDULES = ("constant", "onecycle")
# The outputs of frozen blocks are computed once and reused in every epoch when they take at most this many bytes
# (all four flipped versions of the training images with "flips": the flips form a group, so this is exact).
CACHE_MAX_BYTES = 3 * 2**30


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_tensor_images(images) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise ValueError(f"images must be N×H×W or N×C×H×W, got shape {tuple(images.shape)}")
    return images


def batches(n: int, batch_size: int, generator: torch.Generator | None = None, device=None):
    """Index batches over ``n`` items: shuffled with ``generator``, in order without.

    The order is drawn on the CPU (so a seed gives the same order on any device) and, with ``device``, moved
    there once, so that a training step does not wait on a small host-to-device copy.
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    if device is not None:
        order = order.to(device)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def augment_batch(x: torch.Tensor, generator: torch.Generator, mode: str = "flips") -> torch.Tensor:
    """Augment a batch (N×C×H×W) with draws from the CPU ``generator``, so a seed gives the same batch anywhere."""
    check_choice("augmentation", mode, AUGMENTATIONS)
    if mode == "none":
        return x
    flips = (torch.rand(2, len(x), generator=generator) < 0.5).to(x.device)[:, :, None, None, None]
    x = torch.where(flips[0], x.flip(-1), x)
    return torch.where(flips[1], x.flip(-2), x)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing on the CPU (CPU autocast is slower here and changes results)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict_proba(model: nn.Module, images, batch_size: int = 64, device=None) -> np.ndarray:
    """Class probabilities (N×C) in eval mode."""
    device = select_device(device)
    model = model.to(device).eval()
    channels_last = device.type == "cpu"  # about twice as fast on the CPU; handed back in the default format
    if channels_last:
        model.to(memory_format=torch.channels_last)
    x = as_tensor_images(images)
    out = []
    try:
        for index in batches(len(x), batch_size):
            with autocast(device):
                logits = model(x[index].to(device))
            out.append(torch.softmax(logits.float(), dim=1).cpu())
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
    return torch.cat(out).numpy() if out else np.zeros((0, getattr(model, "n_classes", 2)), dtype=np.float32)


def classification_metrics(labels, probabilities) -> dict[str, float]:
    """Accuracy, balanced accuracy and (binary or one-vs-rest macro) ROC-AUC."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    result = {
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
    }
    try:
        if probabilities.shape[1] == 2:
            result["roc_auc"] = float(roc_auc_score(labels, probabilities[:, 1]))
        else:
            result["roc_auc"] = float(roc_auc_score(labels, probabilities, multi_class="ovr",
                                                    labels=np.arange(probabilities.shape[1])))
    except ValueError:  # one class only in labels: AUC undefined
        result["roc_auc"] = float("nan")
    return result


class EarlyStopping:
    """Early stopping on a validation loss: keeps a copy of the weights of the best epoch and says when
    ``patience`` epochs have passed without improvement (by more than 1e-6)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_loss, self.best_epoch, self.best_state_, self.waited_ = float("inf"), None, None, 0
        self.stopped_early_ = False

    def update(self, val_loss: float, epoch: int, model: nn.Module) -> bool:
        """Record one epoch; ``True`` when training should stop."""
        if val_loss < self.best_loss - 1e-6:
            self.best_loss, self.best_epoch, self.waited_ = val_loss, epoch, 0
            self.best_state_ = copy.deepcopy(model.state_dict())
            return False
        self.waited_ += 1
        self.stopped_early_ = self.waited_ >= self.patience
        return self.stopped_early_

    def restore(self, model: nn.Module, history: dict) -> None:
        """Load the best epoch's weights into ``model`` and note the best epoch and early stop in ``history``."""
        if self.best_state_ is not None:
            model.load_state_dict(self.best_state_)
        history["best_epoch"], history["stopped_early"] = self.best_epoch, self.stopped_early_


def flip_variants(x: torch.Tensor) -> torch.Tensor:
    """The four images of each of ``x`` under the flip group: 4×N×C×H×W in the order identity, left-right,
    up-down, both, i.e. variant ``lr + 2·ud`` (the order :func:`augment_batch` draws its flips in)."""
    return torch.stack([x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)])


def draw_flip_variants(n: int, generator: torch.Generator) -> torch.Tensor:
    """Variant index (0–3) per image, from the same draws as :func:`augment_batch` with ``mode="flips"``."""
    flips = (torch.rand(2, n, generator=generator) < 0.5).long()
    return flips[0] + 2 * flips[1]


@torch.no_grad()
def frozen_features(model: nn.Module, x: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """Outputs of the model's frozen leading blocks (in eval mode, as in training) for every image of ``x``."""
    parts = []
    for index in batches(len(x), max(batch_size, 64)):
        with autocast(device):
            parts.append(model.features(x[index], stop=model.frozen_blocks).float())
    return torch.cat(parts)


class FlipFeatureCache:
    """The frozen blocks' outputs for the four flipped versions of the training images, computed when a batch
    first draws them.

    Over e epochs an image is drawn in 1 − (3/4)^e of its four versions on average (68 % at 4 epochs), so the
    versions never drawn are never computed. Each output is that of the whole image under its flip, whatever the
    batch it was computed in (the frozen blocks run in eval mode).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, batch_size: int, device):
        self.model, self.x, self.batch_size, self.device = model, x, batch_size, device
        with torch.no_grad():
            shape = model.features(x[:1], stop=model.frozen_blocks).shape[1:]
        self.features_ = torch.empty((4, len(x), *shape), device=device)
        self.computed_ = torch.zeros((4, len(x)), dtype=torch.bool, device=device)

    def get(self, variants: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Outputs for image ``index[i]`` under flip ``variants[i]`` (see :func:`flip_variants`)."""
        missing = ~self.computed_[variants, index]
        if missing.any():
            new_variants, new_index = variants[missing], index[missing]
            images = flip_variants(self.x[new_index])[new_variants, torch.arange(len(new_index))]
            self.features_[new_variants, new_index] = frozen_features(self.model, images, self.batch_size,
                                                                      self.device)
            self.computed_[new_variants, new_index] = True
        return self.features_[variants, index]


def cache_bytes(model: nn.Module, x: torch.Tensor, n_variants: int) -> int:
    """Bytes that the frozen blocks' outputs for ``n_variants`` versions of every image of ``x`` would take."""
    with torch.no_grad():
        one = model.features(x[:1], stop=model.frozen_blocks)
    return one.numel() * 4 * len(x) * n_variants


@contextlib.contextmanager
def seeded_training(seed: int, device: torch.device) -> Iterator[None]:
    """Within the block, torch's global generator is seeded with ``seed`` (``torch.manual_seed``: dropout masks)
    and, on CUDA, cuDNN's benchmark mode is on (fixed input size: cuDNN picks its fastest kernels). Afterwards the
    caller's state is back: the CPU generator's (and, training on a GPU, that GPU's) and the benchmark setting."""
    benchmark = torch.backends.cudnn.benchmark
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            yield
    finally:
        torch.backends.cudnn.benchmark = benchmark


def fit(model: nn.Module, train: tuple, val: tuple, epochs: int = 10, lr: float = 1e-3, batch_size: int = 32,
        patience: int = 3, weight_decay: float = 0.0, seed: int = 0, device=None, progress: bool = True,
        augment: str = "none", lr_schedule: str = "constant", cache_frozen: bool | None = None,
        transferred_lr_factor: float = 1.0) -> dict:
    """Train ``model`` on ``train = (images, labels)``, early-stopping on the loss over ``val``.

    The weights of the epoch with the lowest validation loss are restored at the end. ``seed`` fixes the data
    order, the augmentation draws (``augment``, one of :data:`AUGMENTATIONS`; training batches only) and dropout;
    initialisation is seeded where the model is built. ``lr_schedule`` is one of :data:`LR_SCHEDULES`.

    When the model's leading blocks are frozen (:meth:`LesionNet.freeze`), their outputs are computed once, for
    the training images (with ``augment="flips"``, each flipped version the first time it is drawn:
    :class:`FlipFeatureCache`) and the validation images, and the trainable rest is trained on them: the same
    model and the same draws, without recomputing frozen blocks in every epoch. ``cache_frozen=None`` does so
    when the cache takes at most :data:`CACHE_MAX_BYTES`; ``False`` never. On the CPU the model runs in
    channels-last memory format while it trains (faster convolutions) and is handed back in the default format.
    Returns the history: per-epoch losses and accuracies, the best epoch, whether training stopped early, whether
    frozen outputs were cached, the device and the wall time.

    A model whose first blocks were transferred and are trained too (``model.transferred_blocks``, mode
    ``transfer_finetune`` of :func:`~xaiutils.domain.models.prepare_model`) trains them at ``lr`` ×
    ``transferred_lr_factor`` (Yosinski et al.'s AnB+), the rest at ``lr``; the schedule scales both alike.
    """
    if not 0.0 < transferred_lr_factor <= 1.0:
        raise ValueError(f"transferred_lr_factor must lie in (0, 1], got {transferred_lr_factor!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    check_choice("augmentation", augment, AUGMENTATIONS)
    check_choice("learning-rate schedule", lr_schedule, LR_SCHEDULES)
    device = select_device(device)
    x_train, y_train = as_tensor_images(train[0]).to(device), torch.as_tensor(np.asarray(train[1])).long().to(device)
    x_val, y_val = as_tensor_images(val[0]).to(device), torch.as_tensor(np.asarray(val[1])).long().to(device)
    if len(x_train) != len(y_train) or len(x_val) != len(y_val):
        raise ValueError("images and labels differ in length")
    model = model.to(device)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (all blocks frozen and no head?)")
    channels_last = device.type == "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    start = getattr(model, "frozen_blocks", 0)
    n_variants = 4 if augment == "flips" else 1
    if cache_frozen is None:
        cache_frozen = start > 0 and cache_bytes(model, x_train, n_variants) <= CACHE_MAX_BYTES
    cache_frozen = bool(cache_frozen and start > 0)
    if cache_frozen:
        model.train()  # frozen blocks stay in eval mode (LesionNet.train)
        if augment == "flips":
            flip_cache = FlipFeatureCache(model, x_train, batch_size, device)
        else:
            x_train = frozen_features(model, x_train, batch_size, device)[None]
        x_val = frozen_features(model, x_val, batch_size, device)
    slow_blocks = list(getattr(model, "blocks", []))[:getattr(model, "transferred_blocks", 0)]
    transferred = {id(parameter) for block in slow_blocks for parameter in block.parameters()}
    groups = [{"params": [p for p in trainable if id(p) not in transferred], "lr": lr},
              {"params": [p for p in trainable if id(p) in transferred], "lr": lr * transferred_lr_factor}]
    groups = [group for group in groups if group["params"]]
    optimiser = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(y_train) // batch_size)
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=[group["lr"] for group in groups],
                                                     total_steps=epochs * steps_per_epoch)
                 if lr_schedule == "onecycle" else None)
    loss_function = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)  # data order and augmentation draws

    def forward(inputs):
        return model.forward_from(inputs, start) if cache_frozen else model(inputs)

    history = {"epochs": [], "best_epoch": None, "stopped_early": False, "device": str(device),
               "frozen_outputs_cached": cache_frozen, "lr_schedule": lr_schedule}
    stopper = EarlyStopping(patience)
    started = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc="epochs", disable=not progress, leave=False)
    with seeded_training(seed, device):
        for epoch in bar:
            model.train()
            # Running sums stay on the device: no host synchronisation inside the step loop.
            total = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            epoch_started = time.perf_counter()
            for index in batches(len(y_train), batch_size, generator, device):
                optimiser.zero_grad(set_to_none=True)
                if not cache_frozen:
                    x = augment_batch(x_train[index], generator, augment)  # "none" draws nothing, returns the batch
                elif augment == "flips":
                    x = flip_cache.get(draw_flip_variants(len(index), generator).to(device), index)
                else:
                    x = x_train[0, index]
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(device):
                    logits = forward(x)
                    loss = loss_function(logits.float(), y_train[index])
                loss.backward()
                optimiser.step()
                if scheduler is not None:
                    scheduler.step()
                total += loss.detach() * len(index)
                correct += (logits.detach().argmax(1) == y_train[index]).sum()
                seen += len(index)
            train_loss, train_accuracy = float(total) / seen, int(correct) / seen  # synchronises
            train_seconds = time.perf_counter() - epoch_started
            val_loss, val_accuracy = evaluate_loss(model, x_val, y_val, batch_size, device,
                                                   start=start if cache_frozen else 0)
            record = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
                      "val_loss": val_loss, "val_accuracy": val_accuracy, "train_seconds": round(train_seconds, 4),
                      "train_images_per_second": round(seen / train_seconds, 2)}
            history["epochs"].append(record)
            bar.set_postfix(train_loss=f"{record['train_loss']:.3f}", val_loss=f"{val_loss:.3f}")
            if stopper.update(val_loss, epoch, model):
                break
    stopper.restore(model, history)
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    history["seconds"] = round(time.perf_counter() - started, 3)
    return history


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images, batch_size: int = 64, device=None) -> nn.Module:
    """Re-estimate every trainable BatchNorm layer's running statistics as plain averages over the batches of
    ``images`` (with equal batches, the mean is exactly the images' mean).

    During training the running statistics are exponential averages of batches taken while the weights moved;
    after a short, high-learning-rate schedule they lag the final weights, and the network in eval mode (how it
    is evaluated, and how its blocks run when frozen and transferred) can be far off the network in train mode.
    One pass over the training images in train mode, averaging every batch alike ("precise BN"), fixes them;
    frozen blocks are left as they are. Returns the model in eval mode.
    """
    device = select_device(device)
    layers = [module for module in model.modules()
              if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats]
    frozen = {id(module) for block in list(getattr(model, "blocks", []))[: getattr(model, "frozen_blocks", 0)]
              for module in block.modules()}
    layers = [layer for layer in layers if id(layer) not in frozen]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over every batch of the pass
    model.to(device).train()
    x = as_tensor_images(images)
    try:
        for index in batches(len(x), batch_size):
            model(x[index].to(device))
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return model.eval()


@torch.no_grad()
def evaluate_loss(model, x, y, batch_size, device, start: int = 0) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode; ``start > 0``: ``x`` holds the outputs of the first
    ``start`` blocks (see :meth:`LesionNet.forward_from`)."""
    model.eval()
    total, correct = 0.0, 0
    for index in batches(len(x), batch_size, device=device):
        with autocast(device):
            logits = (model.forward_from(x[index], start) if start else model(x[index])).float()
        total += float(nn.functional.cross_entropy(logits, y[index], reduction="sum"))
        correct += int((logits.argmax(1) == y[index]).sum())
    return total / max(len(x), 1), correct / max(len(x), 1)


def recalibrate_if_better(model: nn.Module, images, score, batch_size: int = 64) -> dict:
    """:func:`recalibrate_batchnorm`, kept only when it does not make the model worse on validation data.

    ``score(model)`` returns ``(validation loss, metric)`` of the model in eval mode. Precise statistics usually
    help (running averages lag weights that moved fast), but on a network whose late layers carry channels of
    near-zero variance the exact statistics can be far worse than the running ones. Returns ``{"running": (loss,
    metric), "recalibrated": (loss, metric), "kept": "running" | "recalibrated"}``; the model is left in eval mode
    with the kept statistics.
    """
    import copy

    model.eval()
    running = tuple(float(value) for value in score(model))
    saved = copy.deepcopy(model.state_dict())
    recalibrate_batchnorm(model, images, batch_size)
    recalibrated = tuple(float(value) for value in score(model))
    kept = "recalibrated" if recalibrated[0] <= running[0] else "running"
    if kept == "running":
        model.load_state_dict(saved)
    model.eval()
    return {"running": running, "recalibrated": recalibrated, "kept": kept}
