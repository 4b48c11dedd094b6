"""Backbones, weight sources, the k axis and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from xaiutils.domain import models, train
from xaiutils.domain.synth.dataset import load_benchmark, make_benchmark
from xaiutils.domain.weights import MOBILENET_V2_FILE, checkpoints_dir

SMALL = {"vgg16": 0.125, "resnet18": 1.0, "mobilenet_v2": 0.25}
HAVE_MOBILENET_FILE = (checkpoints_dir() / MOBILENET_V2_FILE).is_file()


def toy_task(n: int, size: int = 32, seed: int = 0):
    """Class 0: a bright square on the left, class 1: on the right; faint noise elsewhere."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, size, size), dtype=np.float32) * 0.2
    labels = np.arange(n) % 2
    for index, label in enumerate(labels):
        column = size // 8 if label == 0 else size // 2 + size // 8
        images[index, size // 3: size // 3 + size // 4, column: column + size // 4] += 0.8
    return images, labels


def block_params(model, index):
    return {name: value.detach().clone() for name, value in model.blocks[index].state_dict().items()}


@pytest.mark.parametrize("backbone", models.BACKBONES)
def test_every_backbone_has_five_blocks_and_safe_relus(backbone):
    model = models.build_model(backbone, width=SMALL[backbone], seed=0)
    assert model.n_blocks == 5
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 2)
    relus = [module for module in model.modules() if isinstance(module, (nn.ReLU, nn.ReLU6))]
    assert relus and not any(module.inplace for module in relus)
    assert len({id(module) for module in relus}) == len(relus), "a ReLU module object appears twice"


@pytest.mark.parametrize("backbone", models.BACKBONES)
def test_conversion_from_torchvision_keeps_the_function(backbone):
    """Known answer: torchvision's model and our re-cut copy of its weights give the same logits."""
    torch.manual_seed(0)
    reference = getattr(torchvision.models, backbone)(weights=None).eval()
    ours = models.build_model(backbone, n_classes=1000, width=1.0, seed=1)
    models.load_state_checked(ours, models.from_torchvision(backbone, reference), "converted weights")
    ours.eval()
    x = torch.rand(2, 1, 64, 64)
    normalised = (x.expand(-1, 3, -1, -1) - ours.mean) / ours.std
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(normalised), rtol=1e-4, atol=1e-5)


def test_unknown_names_list_valid_choices():
    with pytest.raises(ValueError, match="unknown backbone 'alexnet'.*vgg16, resnet18, mobilenet_v2"):
        models.build_model("alexnet")
    with pytest.raises(ValueError, match="unknown source 'cifar'.*imagenet, mri, none"):
        models.prepare_model("vgg16", "cifar", 0)
    with pytest.raises(ValueError, match="unknown mode 'partial'.*transfer, finetune"):
        models.prepare_model("vgg16", "none", 0, mode="partial")
    with pytest.raises(ValueError, match=r"n_pretrained_blocks must lie in 0..5"):
        models.prepare_model("vgg16", "none", 6, width=0.125)


def test_missing_imagenet_file_fails_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        models.prepare_model("vgg16", "imagenet", 2, allow_download=False)
    message = str(error.value)
    assert "vgg16-397923af.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    with pytest.raises(ValueError, match="only at width 1.0"):
        models.imagenet_state("vgg16", width=0.5)


@pytest.mark.skipif(not HAVE_MOBILENET_FILE, reason="MobileNetV2 ImageNet file not placed (make install does it)")
def test_imagenet_transfer_keeps_k_blocks_and_reinitialises_the_rest():
    state = models.imagenet_state("mobilenet_v2", allow_download=False)
    model = models.prepare_model("mobilenet_v2", "imagenet", 2, seed=0, allow_download=False)
    for index in range(5):
        pretrained = models.block_state(state, index)
        own = model.blocks[index].state_dict()
        same = all(torch.equal(own[key], pretrained[key]) for key in own)
        assert same == (index < 2), f"block {index}: pretrained={same}"
    finetune = models.prepare_model("mobilenet_v2", "imagenet", 2, mode="finetune", seed=0, allow_download=False)
    assert all(torch.equal(finetune.blocks[4].state_dict()[key], value)
               for key, value in models.block_state(state, 4).items())


def test_frozen_blocks_are_bit_identical_after_training():
    model = models.prepare_model("resnet18", "none", 2, seed=0)  # batch norm: buffers must stay fixed too
    before = [block_params(model, index) for index in range(5)]
    images, labels = toy_task(32)
    train.fit(model, (images, labels), (images[:8], labels[:8]), epochs=2, batch_size=8, progress=False)
    for index in range(5):
        after = block_params(model, index)
        unchanged = all(torch.equal(before[index][key], after[key]) for key in after)
        assert unchanged == (index < 2), f"block {index} unchanged={unchanged}"


def test_k0_trains_every_block():
    model = models.prepare_model("vgg16", "none", 0, width=0.125, seed=0)
    assert all(parameter.requires_grad for parameter in model.parameters())
    before = [block_params(model, index) for index in range(5)]
    images, labels = toy_task(16)
    train.fit(model, (images, labels), (images, labels), epochs=1, batch_size=8, progress=False)
    for index in range(5):
        assert not torch.equal(before[index]["0.weight"], model.blocks[index].state_dict()["0.weight"])


def test_mri_source_loads_a_checkpoint_and_rejects_wrong_shapes(tmp_path):
    pretrained = models.build_model("vgg16", n_classes=4, width=0.125, seed=3)
    path = models.save_weights(pretrained, tmp_path / "mri.pt")
    model = models.prepare_model("vgg16", "mri", 3, width=0.125, seed=0, mri_checkpoint=path)
    for index in range(3):
        assert torch.equal(model.blocks[index][0].weight, pretrained.blocks[index][0].weight)
    assert not torch.equal(model.blocks[3][0].weight, pretrained.blocks[3][0].weight)
    with pytest.raises(ValueError, match="shape mismatch"):
        models.prepare_model("vgg16", "mri", 3, width=0.25, seed=0, mri_checkpoint=path)
    with pytest.raises(ValueError, match="needs mri_checkpoint"):
        models.prepare_model("vgg16", "mri", 3, width=0.125)


def test_checkpoint_round_trip_and_wrong_shape(tmp_path):
    model = models.build_model("mobilenet_v2", width=0.25, seed=0).eval()
    path = models.save_weights(model, tmp_path / "run" / "model.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"], "no temporary file may remain"
    torch.load(path, weights_only=True)  # loadable without unpickling code
    loaded = models.load_model(path, "mobilenet_v2", width=0.25)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(ValueError, match="cannot load weights file .*shape mismatch"):
        models.load_model(path, "mobilenet_v2", width=0.5)


def test_tiny_training_run_beats_chance():
    images, labels = toy_task(96, seed=1)
    test_images, test_labels = toy_task(64, seed=2)
    model = models.prepare_model("vgg16", "none", 0, width=0.125, seed=0)
    history = train.fit(model, (images, labels), (test_images[:32], test_labels[:32]), epochs=4,
                        batch_size=16, lr=1e-3, seed=0, progress=False)
    metrics = train.classification_metrics(test_labels[32:], train.predict_proba(model, test_images[32:]))
    assert metrics["accuracy"] >= 0.9, (metrics, history["epochs"])
    assert metrics["roc_auc"] >= 0.9


def test_training_is_reproducible_with_a_seed():
    images, labels = toy_task(32)
    runs = []
    for _ in range(2):
        model = models.prepare_model("vgg16", "none", 0, width=0.125, seed=5)
        history = train.fit(model, (images, labels), (images, labels), epochs=2, batch_size=8, seed=7,
                            progress=False)
        timing = ("train_seconds", "train_images_per_second")
        records = [{key: value for key, value in epoch.items() if key not in timing} for epoch in history["epochs"]]
        runs.append((records, model.blocks[0][0].weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_flip_augmentation_draws_one_of_four_flips_per_image():
    x = torch.arange(64 * 5 * 5, dtype=torch.float32).reshape(64, 1, 5, 5)  # no image equals any flip of itself
    out = train.augment_batch(x, torch.Generator().manual_seed(3))
    variants = [lambda a: a, lambda a: a.flip(-1), lambda a: a.flip(-2), lambda a: a.flip(-1).flip(-2)]
    drawn = [next(i for i, flip in enumerate(variants) if torch.equal(out[n], flip(x[n]))) for n in range(len(x))]
    assert sorted(set(drawn)) == [0, 1, 2, 3]  # 64 images: each flip occurs (chance of missing one < 1e-7)
    assert torch.equal(out, train.augment_batch(x, torch.Generator().manual_seed(3)))  # seeded
    assert not torch.equal(out, train.augment_batch(x, torch.Generator().manual_seed(4)))
    assert train.augment_batch(x, torch.Generator(), "none") is x
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'.*none, flips"):
        train.augment_batch(x, torch.Generator(), "rotate")


def test_training_with_flips_is_seeded_and_changes_training():
    images, labels = toy_task(32)

    def trained(augment):
        model = models.prepare_model("vgg16", "none", 0, width=0.125, seed=5)
        history = train.fit(model, (images, labels), (images, labels), epochs=2, batch_size=8, seed=7,
                            progress=False, augment=augment)
        return [epoch["train_loss"] for epoch in history["epochs"]], model.blocks[0][0].weight.detach().clone()

    first, again, plain = trained("flips"), trained("flips"), trained("none")
    assert first[0] == again[0] and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], plain[1])
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'"):
        trained("mixup")


def test_classification_metrics_known_answers():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    metrics = train.classification_metrics(labels, probabilities)
    assert metrics["accuracy"] == 0.75 and metrics["balanced_accuracy"] == 0.75
    assert metrics["roc_auc"] == 1.0  # every positive ranks above every negative


@pytest.mark.skipif(not HAVE_MOBILENET_FILE, reason="MobileNetV2 ImageNet file not placed (make install does it)")
def test_tiny_training_run_beats_chance_on_a_smoke_dataset(tmp_path):
    """ImageNet MobileNetV2 with every block transferred (only the head trains) on a reduced smoke dataset."""

    bench = load_benchmark(make_benchmark(tmp_path / "dataset", "smoke", seed=0, n_subjects=30,
                                          progress=False))
    train_rows, val_rows, test_rows = (bench.indices(name) for name in ("train", "val", "test"))
    model = models.prepare_model("mobilenet_v2", "imagenet", 5, seed=0, dropout=0.2, allow_download=False)
    train.fit(model, (bench.images[train_rows], bench.labels[train_rows]),
              (bench.images[val_rows], bench.labels[val_rows]), epochs=15, batch_size=32, patience=15,
              seed=0, progress=False)
    metrics = train.classification_metrics(bench.labels[test_rows], train.predict_proba(model, bench.images[test_rows]))
    # 96 balanced test images: chance is 0.5 with a standard deviation of about 0.05
    assert metrics["accuracy"] >= 0.65, metrics
    assert metrics["roc_auc"] >= 0.7, metrics


def test_normalisation_is_one_module_and_keeps_the_state_dict_keys():
    model = models.build_model("vgg16", width=0.125, seed=0).eval()
    assert {"mean", "std"} <= set(model.state_dict()) and not any("normalise" in key for key in model.state_dict())
    x = torch.rand(2, 1, 32, 32)
    sequence = model.as_sequential()
    assert isinstance(sequence[0], models.Normalise)
    assert sequence[0].mean is model.mean and sequence[0].std is model.std  # the buffers, not copies
    assert torch.equal(sequence[0](x), model.features(x, stop=0))
    with torch.no_grad():
        assert torch.equal(sequence(x), model(x))
    assert not list(sequence[0].state_dict())


def test_build_model_leaves_the_global_generator_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    seeded = models.build_model("vgg16", width=0.125, seed=0)
    assert torch.equal(torch.rand(3), expected), "build_model(seed=...) moved the caller's global generator"
    torch.manual_seed(0)  # the caller's own seeding gives the same weights
    unseeded = models.build_model("vgg16", width=0.125)
    for (name, a), b in zip(seeded.state_dict().items(), unseeded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
