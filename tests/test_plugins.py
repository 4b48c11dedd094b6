"""Your own explanation method: the contract's checks, and the one command that puts it on the leaderboard."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest
import test_evaluate  # the tests folder is on sys.path under pytest (rootdir import mode)
import torch
from torch import nn

from xaiutils.__main__ import main
from xaiutils.analysis import evaluate
from xaiutils.domain import metrics, plugins

tiny_grid = test_evaluate.tiny_grid

# A user's module: a gradient method with a keyword setting, and methods that break the contract in each way.
USER_MODULE = textwrap.dedent(
    """\
    import torch


    def scaled_gradient(model, images, target, scale=1.0):
        images = images.clone().requires_grad_()
        model(images).gather(1, target[:, None]).sum().backward()
        return scale * images.grad.abs()[:, 0]


    def nan_maps(model, images, target):
        maps = images[:, 0].clone()
        maps[0, 0, 0] = float("nan")
        return maps


    def wrong_shape(model, images, target):
        return images[:, 0, :-1, :]


    def wrong_batch(model, images, target):
        return images[:1, 0]


    def integer_maps(model, images, target):
        return (images[:, 0] > 0.5).int()


    def changes_weights(model, images, target):
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        return images[:, 0]


    def switches_to_train(model, images, target):
        model.train()
        return images[:, 0]


    def crashes(model, images, target):
        raise RuntimeError("out of ideas")
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``mypkg.mymod`` importable from here, as a package on the path; its file is also given by path."""
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mymod.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return package / "mymod.py"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_specs_parse_to_plain_entries(user_module):
    entries = plugins.parse_entries(["mypkg.mymod:scaled_gradient", f"byfile={user_module}:scaled_gradient",
                                     {"spec": "mypkg.mymod:scaled_gradient", "name": "x2", "settings": {"scale": 2}}])
    assert [entry["name"] for entry in entries] == ["scaled_gradient", "byfile", "x2"]
    assert entries[1]["spec"] == f"{user_module.resolve()}:scaled_gradient"
    assert entries[2]["settings"] == {"scale": 2}
    assert plugins.parse_entries(entries) == entries  # what workers receive parses to itself
    with pytest.raises(ValueError, match="taken by the registry's method 'saliency'"):
        plugins.parse_entries(["Saliency=mypkg.mymod:scaled_gradient"])
    with pytest.raises(ValueError, match="two user methods are named 'a'"):
        plugins.parse_entries(["a=mypkg.mymod:nan_maps", "a=mypkg.mymod:wrong_shape"])
    with pytest.raises(ValueError, match="must end in ':function'"):
        plugins.parse_entries(["mypkg.mymod"])
    with pytest.raises(ValueError, match="cannot import module 'mypkg.nothere'"):
        plugins.load(plugins.parse_entries(["mypkg.nothere:f"])[0])
    with pytest.raises(ValueError, match="has no function 'missing'.*scaled_gradient"):
        plugins.load(plugins.parse_entries(["mypkg.mymod:missing"])[0])
    with pytest.raises(ValueError, match="cannot be called as method"):
        plugins.load(plugins.parse_entries([{"spec": "mypkg.mymod:nan_maps", "settings": {"sigma": 1}}])[0])


@pytest.mark.parametrize(("function", "message"), [
    ("nan_maps", "returned maps with NaN values"),
    ("wrong_shape", r"returned maps of shape \(3, 7, 8\); valid: 3×8×8"),
    ("wrong_batch", "returned 1 maps for a batch of 3 images"),
    ("integer_maps", "returned maps of dtype torch.int32"),
    ("changes_weights", r"changes the model's weights or buffers \(blocks.0.0.weight\)"),
    ("switches_to_train", "changes the model's train/eval mode"),
    ("crashes", "failed on a batch of 3 images: RuntimeError: out of ideas"),
])
def test_a_method_that_breaks_the_contract_is_refused_in_one_line(user_module, function, message):
    model = Net()
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    entry = plugins.parse_entries([f"mypkg.mymod:{function}"])[0]
    with pytest.raises(plugins.InvalidMethod, match=message) as refused:
        plugins.validate([entry], model, images, [0, 1, 0])
    assert "\n" not in str(refused.value) and f"'{function}'" in str(refused.value)
    assert model.training  # the caller's mode is back
    if function != "changes_weights":
        assert all(torch.equal(value, weights[key]) for key, value in model.state_dict().items())


def test_user_maps_are_reduced_like_the_registry_and_seeded(user_module):
    model = Net().eval()
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    entry = plugins.parse_entries([{"spec": "mypkg.mymod:scaled_gradient", "settings": {"scale": 3.0}}])[0]
    maps = plugins.attribute(model, images, [0, 1, 1], entry, batch_size=2)
    saliency = plugins.maps_of(model, images, [0, 1, 1], "saliency")
    assert maps.dtype == np.float32 and maps.shape == (3, 8, 8)
    np.testing.assert_allclose(maps, 3.0 * saliency, rtol=1e-5, atol=1e-8)


def test_one_command_puts_a_new_method_on_the_leaderboard(tiny_grid, user_module, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "1")  # serial scoring: a process pool costs more than a few tiny maps
    root, data_dir, bench = tiny_grid
    grid = root / "grid"
    pd.DataFrame({"run": ["none-k0-s0", "none-k0-s1"], "test_accuracy": [0.5, 0.75]}).to_csv(
        grid / "accuracy.csv", index=False)
    out = tmp_path / "board"
    metric_names = ["emd_score", "importance_mass_accuracy"]
    options = ["--preset", "smoke", "--grid-dir", str(grid), "--data-dir", str(data_dir), "--out", str(out),
               "-p", "methods", "[saliency, input, sobel]", "-p", "metrics", f"[{', '.join(metric_names)}]",
               "-p", "n_test_images", "4", "-p", "resolution", "16", "-p", "selection", "all",
               "-p", "n_boot", "50", "-p", "sanity_images", "2", "-p", "sanity_stages", "2"]
    assert main(["evaluate", "--method", "mine=mypkg.mymod:scaled_gradient", "--setting", "scale", "2.5",
                 *options]) == 0
    board = pd.read_csv(out / "leaderboard.csv").set_index("method")
    assert sorted(board.index) == ["input", "mine", "saliency", "sobel"]
    assert board.loc["mine", "kind"] == "user" and board.loc["input", "kind"] == "control"
    assert board.loc["input", "sanity"] == "flagged" and board.loc["sobel", "sanity"] == "flagged"

    # The same scores computed directly: the user's function on every run, scored by xaiutils.domain.metrics.
    images = evaluate.test_images(bench, 4, seed=0)
    direct = []
    for run in ("none-k0-s0", "none-k0-s1"):
        model, _, _ = evaluate.load_run(grid / run)
        x = torch.as_tensor(bench.images[images][:, None]).requires_grad_()
        model.eval()(x).gather(1, torch.as_tensor(bench.labels[images]).long()[:, None]).sum().backward()
        maps = 2.5 * x.grad.abs()[:, 0].numpy()
        direct.append(metrics.score_maps(maps, bench.masks[images], metrics=metric_names, resolution=16, n_jobs=1))
    direct = pd.concat(direct)
    for metric in metric_names:
        assert board.loc["mine", metric] == pytest.approx(direct[metric].mean(), rel=1e-6)
    # Every metric is scale-free, so 2.5 × |gradient| scores exactly what saliency (|gradient|) scores.
    assert board.loc["mine", "emd_score"] == pytest.approx(board.loc["saliency", "emd_score"], rel=1e-6)
    scores = pd.read_csv(out / "scores.csv")
    assert {"edge_distance_px", "n_lesions", "contrast", "lesion_area_px"} <= set(scores.columns)
    assert "mine" in capsys.readouterr().out


def test_the_command_refuses_a_bad_method_before_scoring(tiny_grid, user_module, tmp_path, capsys, monkeypatch):
    root, data_dir, _ = tiny_grid
    grid = root / "grid"
    pd.DataFrame({"run": ["none-k0-s0", "none-k0-s1"], "test_accuracy": [0.5, 0.75]}).to_csv(
        grid / "accuracy.csv", index=False)

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored before the method was validated")

    monkeypatch.setattr(metrics, "score_maps", no_scoring)
    out = tmp_path / "board"
    code = main(["evaluate", "--method", f"{user_module}:nan_maps", "--preset", "smoke", "--grid-dir", str(grid),
                 "--data-dir", str(data_dir), "--out", str(out), "-p", "methods", "[saliency]"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0
    assert error.startswith("error: method 'nan_maps' returned maps with NaN values")
    assert not out.exists()
