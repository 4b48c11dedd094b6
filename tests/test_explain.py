"""The method registry and ``attribute()``: shapes, known answers, seeds, and NotApplicable where it must be."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from xaiutils.domain import explain
from xaiutils.domain.explain import METHODS, NotApplicable, attribute
from xaiutils.domain.models import build_model, replace_relus

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Captum's "setting hooks" notices

FEW_SAMPLES = {"lime": {"n_samples": 20}, "kernel_shap": {"n_samples": 20}, "shapley_value_sampling": {"n_samples": 1},
               "integrated_gradients": {"n_steps": 8}, "smoothgrad": {"nt_samples": 4}, "occlusion": {"window": 8}}


@pytest.fixture(scope="module")
def tiny_vgg():
    with torch.random.fork_rng(devices=[]):  # the weights of build_model(seed=0), then the biases drawn after them
        torch.manual_seed(0)
        model = build_model("vgg16", width=0.125)
        for module in model.modules():  # non-zero biases make the known-answer checks meaningful
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.bias, 0.0, 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))


TARGETS = torch.tensor([0, 1])


class Grey(nn.Module):
    """A torchvision network on grey input: the channel is repeated to three."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        return self.network(x.expand(-1, 3, -1, -1))


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_finite_maps_or_not_applicable(method, tiny_vgg, images):
    try:
        maps = attribute(tiny_vgg, images, TARGETS, method, **FEW_SAMPLES.get(method, {}))
    except NotApplicable as reason:
        assert str(reason)
        return
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert (maps >= 0).all()  # the default reduction is the sum of absolute values


def test_unknown_method_and_setting_fail_clearly(tiny_vgg, images):
    with pytest.raises(ValueError, match=r"unknown method 'gradcam\+\+'.*saliency.*grad_cam.*sobel"):
        attribute(tiny_vgg, images, TARGETS, "gradcam++")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['n_step'\].*n_steps"):
        attribute(tiny_vgg, images, TARGETS, "integrated_gradients", n_step=5)
    with pytest.raises(ValueError, match="targets must lie in 0..1"):
        attribute(tiny_vgg, images, [0, 2], "saliency")
    assert explain.resolve_method("Grad-CAM") == "grad_cam" and explain.resolve_method("DeepLIFT") == "deeplift"


def test_saliency_is_the_gradient_of_the_target_logit(tiny_vgg, images):
    x = images.clone().requires_grad_(True)
    tiny_vgg(x)[torch.arange(2), TARGETS].sum().backward()
    maps = attribute(tiny_vgg, images, TARGETS, "saliency", signed=True)
    np.testing.assert_allclose(maps, x.grad[:, 0].numpy(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(attribute(tiny_vgg, images, TARGETS, "saliency"), np.abs(maps))


def test_deeplift_sums_to_the_output_difference_without_max_pooling():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).double()
    x = torch.rand(3, 1, 16, 16, dtype=torch.float64)
    targets = torch.tensor([0, 1, 1])
    maps = attribute(model, x, targets, "deeplift", signed=True)
    with torch.no_grad():
        difference = (model(x) - model(torch.zeros_like(x)))[torch.arange(3), targets].numpy()
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), difference, rtol=1e-5)


@pytest.mark.parametrize("method", ["deeplift", "guided_backprop"])
def test_in_place_relus_give_the_rebuilt_models_result(method):
    """torchvision VGG has in-place ReLUs; ours runs on a copy rebuilt with separate ones, and must match it."""
    import captum.attr
    import torchvision

    torch.manual_seed(0)
    network = torchvision.models.vgg11(weights=None, num_classes=2)
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.bias, 0.0, 0.05)
    in_place = Grey(network).eval()
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in in_place.modules())
    rebuilt = replace_relus(copy.deepcopy(in_place)).eval()
    x = torch.rand(2, 1, 32, 32)
    captum_class = {"deeplift": captum.attr.DeepLift, "guided_backprop": captum.attr.GuidedBackprop}[method]
    expected = captum_class(rebuilt).attribute(x.clone(), target=TARGETS).detach()[:, 0].numpy()
    ours = attribute(in_place, x, TARGETS, method, signed=True)
    # Ours runs in channels-last memory format on the CPU, so the sums round differently: 1e-5 of the largest value
    # (an in-place ReLU left in place changes the maps by far more).
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert np.abs(expected).max() > 0
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in in_place.modules())  # the caller's model is untouched


def test_shared_activation_modules_are_not_applicable_for_hooked_methods():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(2 * 8 * 8, 2)

        def forward(self, x):
            return self.fc(self.relu(self.conv2(self.relu(self.conv1(x)))).flatten(1))

    x, targets = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(NotApplicable, match="relu.*more than once"):
        attribute(Shared(), x, targets, "deeplift")
    assert attribute(Shared(), x, targets, "saliency").shape == (2, 8, 8)


def test_lrp_refuses_a_residual_addition_it_cannot_see():
    """The residual additions of MobileNetV2 and ResNet blocks become modules (tests/test_propagation.py); one in a
    module of the user's own is an operation outside modules, which LRP cannot give a rule."""

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(64, 2)

        def forward(self, x):
            return self.fc(self.relu(x + self.conv(x)).flatten(1))

    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(NotApplicable, match="operations outside modules.*add"):
        attribute(Residual(), x, [1], "lrp")
    assert np.isfinite(attribute(Residual(), x, [1], "deeplift")).all()
    assert issubclass(NotApplicable, ValueError)


def test_stochastic_methods_are_seeded_and_leave_the_global_rng_alone(tiny_vgg, images):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = attribute(tiny_vgg, images, TARGETS, "smoothgrad", nt_samples=4, seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    again = attribute(tiny_vgg, images, TARGETS, "smoothgrad", nt_samples=4, seed=7)
    other = attribute(tiny_vgg, images, TARGETS, "smoothgrad", nt_samples=4, seed=8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    shap = [attribute(tiny_vgg, images, TARGETS, "gradient_shap", n_samples=4, seed=s) for s in (1, 1, 2)]
    np.testing.assert_array_equal(shap[0], shap[1])
    assert not np.array_equal(shap[0], shap[2])
    for method, samples in (("kernel_shap", 12), ("shapley_value_sampling", 1)):
        runs = [attribute(tiny_vgg, images[:1], TARGETS[:1], method, n_samples=samples, seed=s) for s in (1, 1, 2)]
        np.testing.assert_array_equal(runs[0], runs[1])
        assert not np.array_equal(runs[0], runs[2]), method


def test_batching_and_training_mode(tiny_vgg, images):
    tiny_vgg.train()
    whole = attribute(tiny_vgg, images, TARGETS, "deeplift", batch_size=4)
    split = attribute(tiny_vgg, images, TARGETS, "deeplift", batch_size=2)  # one image per DeepLift call
    assert tiny_vgg.training  # restored
    # it ran in channels-last format on the CPU, and is handed back in the default one
    assert all(p.is_contiguous() for p in tiny_vgg.parameters())
    tiny_vgg.eval()
    tolerance = 1e-5 * np.abs(whole).max()  # float32 sums in another order
    np.testing.assert_allclose(whole, split, atol=tolerance)
    numpy_input = attribute(tiny_vgg, images.numpy()[:, 0], [0, 1], "deeplift", batch_size=4)
    np.testing.assert_allclose(numpy_input, whole, atol=tolerance)


def test_batch_size_bounds_every_model_pass():
    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.network = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 2))
            self.largest = 0

        def forward(self, x):
            self.largest = max(self.largest, x.shape[0])
            return self.network(x)

    model, x, targets = Recorder(), torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 0, 1, 1])
    for method in ("integrated_gradients", "smoothgrad", "deeplift", "deeplift_shap", "gradient_shap", "occlusion",
                   "kernel_shap"):
        model.largest = 0
        settings = {"kernel_shap": {"n_samples": 30}, "deeplift_shap": {"n_baselines": 3},
                    "gradient_shap": {"n_samples": 3}}.get(method, {})
        maps = attribute(model, x, targets, method, batch_size=6, **settings)
        assert maps.shape == (5, 8, 8)
        assert 1 < model.largest <= 6, (method, model.largest)


def test_grad_cam_is_upsampled_from_the_last_block(tiny_vgg, images):
    cam = attribute(tiny_vgg, images, TARGETS, "grad_cam")
    assert cam.shape == (2, 32, 32) and (cam >= 0).all()
    # the last VGG block halves 2×2 to 1×1 at 32²: the upsampled map is constant; an earlier layer is not
    assert np.ptp(cam[0]) <= 1e-5 * cam[0].max()
    finer = attribute(tiny_vgg, images, TARGETS, "grad_cam", layer="blocks.3")
    assert finer.shape == (2, 32, 32) and np.ptp(finer[0]) > 1e-3 * finer[0].max()


def test_control_maps_known_maps():
    constant = np.full((2, 1, 16, 16), 0.3, dtype=np.float32)
    assert not attribute(None, constant, None, "sobel").any()
    assert not attribute(None, constant, None, "laplace").any()
    ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (16, 1))[None, None]
    assert np.abs(attribute(None, ramp, None, "laplace")[0, 1:-1, 1:-1]).max() < 1e-6  # linear: zero Laplacian
    sobel = attribute(None, ramp, None, "sobel")[0, 1:-1, 1:-1]
    np.testing.assert_allclose(sobel, 8 / 15, rtol=1e-5)  # Sobel weights sum to 8 per unit slope
    image = np.random.default_rng(0).normal(size=(3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(attribute(None, image, None, "input"), np.abs(image[:, 0]))
    np.testing.assert_array_equal(attribute(None, image, None, "input", signed=True), image[:, 0])
    noise = attribute(None, image, None, "random", seed=3)
    np.testing.assert_array_equal(noise, attribute(None, image, None, "random", seed=3))
    assert not np.array_equal(noise, attribute(None, image, None, "random", seed=4))
    assert noise.shape == (3, 8, 8) and noise.min() >= 0 and noise.max() < 1


def test_method_table_lists_every_method():
    table = explain.method_table()
    assert list(table.index) == list(METHODS)
    assert {"cost", "needs baseline", "stochastic", "caveats"} <= set(table.columns)
    assert set(table["cost"]) <= set(explain.COST_CLASSES)
    assert table.loc["lime", "cost"] == "costly" and table.loc["smoothgrad", "stochastic"]
    assert explain.methods_by_cost("costly") == ["lime", "kernel_shap", "shapley_value_sampling"]
    assert explain.methods_by_cost() == list(METHODS)
    assert explain.control_map_names() == ["sobel", "laplace", "random", "input"]
    assert set(table.loc[explain.control_map_names(), "kind"]) == {"control"}
    with pytest.raises(ValueError, match="unknown cost 'free'; valid choices: none, cheap, moderate, costly"):
        explain.methods_by_cost("free")


def test_baselines_the_old_name_of_the_control_maps_is_gone():
    assert not hasattr(explain, "BASELINES")


def test_captum_tables_restated_in_checks_equal_captums():
    """checks.py restates Captum's private DeepLift table; an upgrade that changes it fails here."""
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    from xaiutils.domain.explain import checks

    assert set(checks.DEEPLIFT_NON_LINEAR) == set(SUPPORTED_NON_LINEAR)


def test_full_fp32_turns_tf32_off_on_cuda_and_restores_the_callers_settings():
    # The flags are plain settings, so this runs without a GPU; test_gpu_matches_cpu checks their effect.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
        with explain.full_fp32(torch.device("cpu")):
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with pytest.raises(RuntimeError, match="inside"), explain.full_fp32(torch.device("cuda")):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            raise RuntimeError("inside")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu(tiny_vgg, images):
    cpu = attribute(tiny_vgg, images, TARGETS, "integrated_gradients", n_steps=8)
    gpu = attribute(tiny_vgg, images, TARGETS, "integrated_gradients", n_steps=8, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4 * np.abs(cpu).max())
    assert next(tiny_vgg.parameters()).device.type == "cpu"  # ran on a copy
