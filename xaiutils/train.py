"""Fine-tuning loop: cross-entropy, Adam, early stopping on validation loss, seeds for order, init and dropout.

Data are in-memory arrays (N×H×W float32 images, N int labels): the benchmark's datasets fit in memory at every
preset, and moving them to the device once keeps the GPU fed (the data path is a slice of a device tensor).
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .models import check_choice, save_weights

# Training-time augmentation. "flips": each image is flipped left-right and/or up-down with probability 1/2
# each, drawn per batch; lesion shape (the class) does not change under a flip.
AUGMENTATIONS = ("none", "flips")


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
    x = as_tensor_images(images)
    out = []
    for index in batches(len(x), batch_size):
        with autocast(device):
            logits = model(x[index].to(device))
        out.append(torch.softmax(logits.float(), dim=1).cpu())
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


def fit(model: nn.Module, train: tuple, val: tuple, epochs: int = 10, lr: float = 1e-3, batch_size: int = 32,
        patience: int = 3, weight_decay: float = 0.0, seed: int = 0, device=None, progress: bool = True,
        augment: str = "none") -> dict:
    """Train ``model`` on ``train = (images, labels)``, early-stopping on the loss over ``val``.

    The weights of the epoch with the lowest validation loss are restored at the end. ``seed`` fixes the data
    order, the augmentation draws (``augment``, one of :data:`AUGMENTATIONS`; training batches only) and dropout;
    initialisation is seeded where the model is built. Returns the history: per-epoch losses and accuracies, the
    best epoch, whether training stopped early, the device and the wall time.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    check_choice("augmentation", augment, AUGMENTATIONS)
    device = select_device(device)
    x_train, y_train = as_tensor_images(train[0]).to(device), torch.as_tensor(np.asarray(train[1])).long().to(device)
    x_val, y_val = as_tensor_images(val[0]).to(device), torch.as_tensor(np.asarray(val[1])).long().to(device)
    if len(x_train) != len(y_train) or len(x_val) != len(y_val):
        raise ValueError("images and labels differ in length")
    model = model.to(device)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (all blocks frozen and no head?)")
    optimiser = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
    loss_function = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout masks
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels

    history = {"epochs": [], "best_epoch": None, "stopped_early": False, "device": str(device)}
    best_loss, best_state, waited = float("inf"), None, 0
    started = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc="epochs", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        # Running sums stay on the device: no host synchronisation inside the step loop.
        total = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        epoch_started = time.perf_counter()
        for index in batches(len(x_train), batch_size, generator, device):
            optimiser.zero_grad(set_to_none=True)
            x = augment_batch(x_train[index], generator, augment)  # "none" draws nothing and returns the batch
            with autocast(device):
                logits = model(x)
                loss = loss_function(logits.float(), y_train[index])
            loss.backward()
            optimiser.step()
            total += loss.detach() * len(index)
            correct += (logits.detach().argmax(1) == y_train[index]).sum()
            seen += len(index)
        train_loss, train_accuracy = float(total) / seen, int(correct) / seen  # synchronises
        train_seconds = time.perf_counter() - epoch_started
        val_loss, val_accuracy = evaluate_loss(model, x_val, y_val, batch_size, device)
        record = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
                  "val_loss": val_loss, "val_accuracy": val_accuracy, "train_seconds": round(train_seconds, 4),
                  "train_images_per_second": round(seen / train_seconds, 2)}
        history["epochs"].append(record)
        bar.set_postfix(train_loss=f"{record['train_loss']:.3f}", val_loss=f"{val_loss:.3f}")
        if val_loss < best_loss - 1e-6:
            best_loss, waited, history["best_epoch"] = val_loss, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= patience:
                history["stopped_early"] = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    history["seconds"] = round(time.perf_counter() - started, 3)
    return history


@torch.no_grad()
def evaluate_loss(model, x, y, batch_size, device) -> tuple[float, float]:
    model.eval()
    total, correct = 0.0, 0
    for index in batches(len(x), batch_size, device=device):
        with autocast(device):
            logits = model(x[index]).float()
        total += float(nn.functional.cross_entropy(logits, y[index], reduction="sum"))
        correct += int((logits.argmax(1) == y[index]).sum())
    return total / max(len(x), 1), correct / max(len(x), 1)


def write_run(out_dir: str | os.PathLike, model: nn.Module, config: dict, history: dict, metrics: dict) -> Path:
    """Write ``model.pt`` (weights only) and ``model.json`` (config, history, metrics) into ``out_dir``.

    The sidecar is written last, through a temporary name: a folder with ``model.json`` is a finished run.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, out_dir / "model.pt")
    sidecar = {"config": config, "history": history, "metrics": metrics}
    partial = out_dir / f"model.json.partial-{os.getpid()}"
    partial.write_text(json.dumps(sidecar, indent=2, default=float) + "\n")
    os.replace(partial, out_dir / "model.json")
    return out_dir
