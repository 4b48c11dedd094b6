"""Model-randomisation sanity check: model-independent maps are flagged, a gradient method on a trained model passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xaiutils.analysis import sanity


class Tiny(nn.Module):
    """Blocks and a head, as LesionNet: the cascade re-initialises the head, then the blocks from the last."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()),
                                     nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, 2))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def blobs(n: int, seed: int):
    """16² noise images with one bright 3×3 blob; the class is the half (left 0, right 1) that holds it."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.3, size=(n, 1, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 2, size=n)
    for image, label in zip(images, labels, strict=True):
        row, col = rng.integers(1, 13), rng.integers(1, 5) + 8 * label
        image[0, row:row + 3, col:col + 3] = 1.0
    return torch.as_tensor(images), torch.as_tensor(labels)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = Tiny()
    images, labels = blobs(256, seed=0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        for start in range(0, 256, 32):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(images[start:start + 32]), labels[start:start + 32]).backward()
            optimiser.step()
    test_images, test_labels = blobs(64, seed=1)
    with torch.no_grad():
        accuracy = (model.eval()(test_images).argmax(1) == test_labels).float().mean().item()
    assert accuracy >= 0.9, f"the tiny model did not learn its task (test accuracy {accuracy:.2f})"
    return model, test_images[:8], test_labels[:8]


def test_cascade_order_and_seeded_reinitialisation():
    model = Tiny()
    assert [name for name, _ in sanity.cascade_stages(model)] == ["head", "blocks.1", "blocks.0"]
    first, second = Tiny(), Tiny()
    sanity.reinitialise(first.head, seed=5)
    sanity.reinitialise(second.head, seed=5)
    assert torch.equal(first.head[1].weight, second.head[1].weight)
    sanity.reinitialise(second.head, seed=6)
    assert not torch.equal(first.head[1].weight, second.head[1].weight)


def test_input_is_flagged_and_saliency_passes_on_a_trained_model(trained):
    model, images, labels = trained
    before = {key: value.clone() for key, value in model.state_dict().items()}
    table = sanity.model_randomisation(model, images, labels, ["saliency", "input", "random"], n_stages=None,
                                       seed=0, progress=False)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())  # a copy was cascaded
    assert sorted(table["stage"].unique()) == [1, 2, 3] and len(table) == 3 * 3 * len(images)
    summary = sanity.summarise(table, n_boot=200).set_index("method")
    # The input map never looks at the model, and the seeded random map neither: their maps are unchanged (ρ = 1).
    assert summary.loc["input", "sanity_rho"] == pytest.approx(1.0)
    assert summary.loc["input", "sanity"] == "flagged" and summary.loc["random", "sanity"] == "flagged"
    # Gradients of the trained model are destroyed with its weights.
    assert summary.loc["saliency", "sanity"] == "passed"
    assert summary.loc["saliency", "sanity_rho"] < sanity.DEFAULT_THRESHOLD
    # Deterministic: the same seed gives the same correlations.
    again = sanity.model_randomisation(model, images, labels, ["saliency"], n_stages=2, seed=0, progress=False)
    np.testing.assert_array_equal(again["spearman"].to_numpy(),
                                  table.query("method == 'saliency' and stage <= 2")["spearman"].to_numpy())


def test_rank_correlation_known_answers():
    ramp = np.arange(16, dtype=float).reshape(1, 4, 4)
    assert sanity.rank_correlation(ramp, ramp**2)[0] == pytest.approx(1.0)
    assert sanity.rank_correlation(ramp, -(15 - ramp))[0] == pytest.approx(-1.0)  # |·| is compared
    assert np.isnan(sanity.rank_correlation(ramp, np.zeros_like(ramp))[0])
