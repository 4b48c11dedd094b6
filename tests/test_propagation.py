"""Guards the propagation methods on the presets' backbones: ReLU6 as ClippedReLU, Captum's DeepLift rule table,
zennit's canonizers and LRP, each against a known answer (completeness, conservation, definitions by hand, Captum).

The known answers need working activations: in a randomly initialised MobileNetV2 they vanish (maps of about 1e-9),
so the MobileNetV2 checks use its ImageNet blocks (from the local torch hub cache, put there by ``make install``)
with a seeded random head, and are skipped with the reason when the file is missing.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from xaiutils.domain.explain import NotApplicable, attribute
from xaiutils.domain.explain.canonical import ClippedReLU, clip_relu6, deeplift_rules, lrp_canonizers, residual_blocks
from xaiutils.domain.models import build_model, imagenet_state
from xaiutils.foundation.config import BOOK, PRESETS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Captum's "setting hooks" notices

TARGETS = torch.tensor([0, 1, 1, 0])
HOOKED = ("deeplift", "deeplift_shap", "guided_backprop", "deconvolution", "guided_grad_cam", "lrp")
FEW_SAMPLES = {"lime": {"n_samples": 20}, "kernel_shap": {"n_samples": 20}, "shapley_value_sampling": {"n_samples": 1},
               "integrated_gradients": {"n_steps": 8}, "smoothgrad": {"nt_samples": 4}, "occlusion": {"window": 8},
               "gradient_shap": {"n_samples": 2}, "deeplift_shap": {"n_baselines": 2}}


def bias_free(model: nn.Module) -> nn.Module:
    """Every convolution and dense bias 0, every BatchNorm's running mean and bias 0 (variance and weight kept): the
    network with BatchNorm merged has no bias at all (in place; returns ``model``)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
                module.bias.zero_()
    return model


def target_logits(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x)[torch.arange(len(targets)), targets].numpy()


@pytest.fixture(scope="module")
def book_model():
    """The book's backbone with its ImageNet blocks and a seeded random two-class head, in eval mode."""
    backbone, width = BOOK.finetune.backbone, BOOK.finetune.width
    try:
        state = imagenet_state(backbone, width, allow_download=False)
    except FileNotFoundError as error:
        pytest.skip(f"needs the ImageNet weights of {backbone} in the torch hub cache (`make install`): {error}")
    model = build_model(backbone, width=width, seed=0)
    loaded = model.load_state_dict({key: value for key, value in state.items() if not key.startswith("head.3.")},
                                   strict=False)
    assert sorted(loaded.missing_keys) == ["head.3.bias", "head.3.weight"] and not loaded.unexpected_keys
    return model.eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def tiny_vgg():
    """VGG-16 at width 1/8 with seeded non-zero biases (as in tests/test_explain.py)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("vgg16", width=0.125)
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.bias, 0.0, 0.05)
    return model.eval()


def randomised_resnet18() -> nn.Module:
    """ResNet-18 (seed 0) with seeded random BatchNorm statistics and affine parameters, so merging is not trivial."""
    model = build_model("resnet18", seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0),
                                          (module.weight, 0.5, 2.0), (module.bias, -0.5, 0.5)):
                    tensor.copy_(low + (high - low) * torch.rand(tensor.shape, generator=generator))
    return model.eval()


# ------------------------------------------------------------------------------------------------ ReLU6


def test_clipped_relu_is_relu6_bit_for_bit():
    values = torch.tensor([-1e30, -1.0, -0.0, 0.0, 1e-30, 3.0, 5.999999, 6.0, 6.5, 1e30, float("inf"), -float("inf")])
    values = torch.cat([values, 10 * torch.randn(1000, generator=torch.Generator().manual_seed(0))])
    clipped, relu6 = ClippedReLU(), nn.ReLU6()
    assert isinstance(clipped, nn.ReLU) and not clipped.inplace
    assert not ClippedReLU(inplace=True).inplace  # hooked methods need a non-in-place module
    assert torch.equal(clipped(values), relu6(values))
    for dtype in (torch.float64, torch.float16):
        assert torch.equal(clipped(values.to(dtype)), relu6(values.to(dtype)))
    # the same gradient too: zero below 0 and above 6, which is what reaches Captum's ReLU hooks
    gradients = []
    for module in (clipped, relu6):
        x = values.clone().requires_grad_()
        module(x).backward(torch.arange(len(values), dtype=values.dtype))
        gradients.append(x.grad)
    assert torch.equal(*gradients)
    assert gradients[0][values == 6.5] == 0 and gradients[0][values == 3.0] != 0


def test_clip_relu6_keeps_the_book_backbone_and_attribute_leaves_the_callers_model(book_model, images):
    relu6_count = sum(type(module) is nn.ReLU6 for module in book_model.modules())
    assert relu6_count > 0  # the book's backbone is a ReLU6 network, or none of this file's ReLU6 checks matter
    clipped = clip_relu6(copy.deepcopy(book_model))
    assert not any(type(module) is nn.ReLU6 for module in clipped.modules())
    assert sum(type(module) is ClippedReLU for module in clipped.modules()) == relu6_count
    with torch.no_grad():
        assert torch.equal(clipped(images), book_model(images))

    modules = [(name, module) for name, module in book_model.named_modules()]
    state = {key: value.clone() for key, value in book_model.state_dict().items()}
    for method in ("guided_backprop", "deeplift"):
        attribute(book_model, images[:1], TARGETS[:1], method)
    assert [(name, module) for name, module in book_model.named_modules()] == modules  # the very same modules
    assert sum(type(module) is nn.ReLU6 for module in book_model.modules()) == relu6_count
    assert not any(isinstance(module, ClippedReLU) for module in book_model.modules())
    assert all(torch.equal(value, state[key]) for key, value in book_model.state_dict().items())


def test_deeplift_rules_add_the_rescale_rule_only_inside_the_context():
    from captum.attr._core import deep_lift

    table = deep_lift.SUPPORTED_NON_LINEAR
    # What canonical.deeplift_rules relies on in Captum's private table: the rescale rule is the one Captum gives
    # nn.ReLU, looked up by exact type, so neither ReLU6 nor our subclass has one of its own.
    assert table[nn.ReLU] is deep_lift.nonlinear
    assert nn.ReLU6 not in table and ClippedReLU not in table
    before = dict(table)
    with deeplift_rules():
        assert table[ClippedReLU] is deep_lift.nonlinear
        assert {key: value for key, value in table.items() if key is not ClippedReLU} == before
    assert dict(table) == before
    with pytest.raises(RuntimeError, match="inside the context"), deeplift_rules():
        assert ClippedReLU in table
        raise RuntimeError("raised inside the context")
    assert dict(table) == before
    table[ClippedReLU] = deep_lift.nonlinear  # registered by someone else: left as it was found
    try:
        with deeplift_rules():
            pass
        assert table[ClippedReLU] is deep_lift.nonlinear
    finally:
        table.pop(ClippedReLU, None)
    assert dict(table) == before


# ------------------------------------------------------------------------------------------------ DeepLift


def test_deeplift_completeness_on_the_book_backbone(book_model, images):
    """Σ attributions = f(x) − f(0) at the target (Shrikumar et al. 2017), with ReLU6 under the rescale rule.
    Measured: 6.8e-6 relative in float32."""
    maps = attribute(book_model, images, TARGETS, "deeplift", signed=True)
    difference = target_logits(book_model, images, TARGETS) - target_logits(book_model, 0 * images, TARGETS)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), difference, rtol=1e-4)

    # The rule is what makes it hold: Captum's DeepLift without it passes the ClippedReLU's plain gradient.
    from captum.attr import DeepLift

    clipped = clip_relu6(copy.deepcopy(book_model))
    plain = DeepLift(clipped).attribute(images.clone().requires_grad_(), baselines=0 * images, target=TARGETS)
    plain_sums = plain.detach().sum(dim=(1, 2, 3)).numpy()
    assert np.abs(plain_sums - difference).max() > 1e-2 * np.abs(difference).max()


def test_deeplift_shap_completeness_over_given_baselines(book_model, images):
    """Σ attributions = f(x) − mean over baselines f(b). Measured: 8.8e-6 of the largest |difference| in float32
    (2.4e-5 of the smallest); the bound is relative to the largest difference, since a single difference may lie
    near zero."""
    noise = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    baselines = torch.cat([torch.zeros(1, 1, 64, 64), noise])  # the zero image and seeded noise
    maps = attribute(book_model, images, TARGETS, "deeplift_shap", signed=True, baselines=baselines)
    with torch.no_grad():
        difference = (book_model(images)[torch.arange(4), TARGETS] - book_model(baselines)[:, TARGETS].mean(0)).numpy()
    assert np.abs(maps.sum(axis=(1, 2)) - difference).max() <= 1e-4 * np.abs(difference).max()


# ------------------------------------------------------------------------------------------------ Guided BP, Deconv


def test_guided_backprop_and_deconvolution_equal_their_definitions_with_the_clip():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU6(), nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    conv, dense = network[0], network[3]
    with torch.no_grad():
        conv.weight.mul_(15)
        conv.bias.copy_(torch.tensor([5.0, 0.0, -3.0]))  # 8 % of z above 6, 48 % below 0
    network.eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_()
    z = conv(x)
    assert (z > 6).float().mean() > 0.05 and (z < 0).float().mean() > 0.05 and ((z > 0) & (z < 6)).any()
    g_a = dense.weight[TARGETS].detach().view(4, 3, 8, 8)  # d logit[target] / d activation
    assert (g_a > 0).any() and (g_a < 0).any()

    def backward(g_z):
        return torch.autograd.grad(z, x, grad_outputs=g_z, retain_graph=True)[0][:, 0].numpy()

    guided = backward(torch.relu(g_a * ((z > 0) & (z < 6))))  # ReLU6's own gradient, then only positive ones
    deconvolution = backward(torch.relu(g_a))  # the forward pass plays no part
    ours_guided = attribute(network, x.detach(), TARGETS, "guided_backprop", signed=True)
    ours_deconvolution = attribute(network, x.detach(), TARGETS, "deconvolution", signed=True)
    np.testing.assert_allclose(ours_guided, guided, rtol=1e-5, atol=1e-6 * np.abs(guided).max())
    np.testing.assert_allclose(ours_deconvolution, deconvolution, rtol=1e-5, atol=1e-6 * np.abs(deconvolution).max())
    # the clip matters: ReLU's mask alone (z > 0) gives another map
    unclipped = backward(torch.relu(g_a * (z > 0)))
    assert np.abs(unclipped - guided).max() > 0.1 * np.abs(guided).max()
    assert type(network[1]) is nn.ReLU6  # the caller's network is untouched


# ------------------------------------------------------------------------------------------------ LRP


def test_lrp_zero_conserves_the_target_logit_on_the_bias_free_book_backbone(book_model, images):
    """Without biases, LRP-0 (ε → 0) hands the whole target logit down to the input: Σ relevance = logit, through
    the merged BatchNorms, the residual sums, ReLU6 and average pooling. Measured: 2.2e-6 relative in float32."""
    model = bias_free(copy.deepcopy(book_model))
    maps = attribute(model, images, TARGETS, "lrp", signed=True, rule="epsilon", epsilon=1e-9)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), target_logits(model, images, TARGETS), rtol=1e-4)


@pytest.mark.parametrize("rule", ["epsilon_plus_flat", "epsilon"])
def test_lrp_conserves_the_target_logit_on_a_bias_free_relu_network(rule, images):
    """The default composite (flat first layer, z⁺ convolutions, ε dense layers) conserves relevance where every
    neuron that receives relevance has a positive input contribution: in a bias-free ReLU network, a neuron gets
    relevance only when its ReLU output is positive. Measured on VGG-16/8: 8.1e-6 relative (float32; the 1e-6
    stabiliser of the z⁺ and flat rules dominates, as the logits are about 2.6e-3).

    Not on MobileNetV2: its linear bottlenecks pass negative neurons on without a ReLU, and one whose inputs all
    contribute negatively gets relevance it cannot pass down under z⁺ (the bias-free book backbone keeps 83-94 %
    of the logit under epsilon_plus_flat), so only LRP-0 is checked there (above)."""
    model = bias_free(build_model("vgg16", width=0.125, seed=0)).eval()
    maps = attribute(model, images, TARGETS, "lrp", signed=True, rule=rule, epsilon=1e-9)
    logits = target_logits(model, images, TARGETS)
    assert np.abs(logits).min() > 1e-4
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), logits, rtol=1e-4)


def test_lrp_zero_conserves_through_resnet_sums_and_merged_batchnorms(images):
    """ResNet-18 with random BatchNorm statistics, bias-free: LRP-0 conserves the logit through the residual sums
    (zennit's Sum, split in proportion) and the merged BatchNorms. Measured: 2.4e-6 relative in float32."""
    model = bias_free(randomised_resnet18())
    maps = attribute(model, images, TARGETS, "lrp", signed=True, rule="epsilon", epsilon=1e-9)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), target_logits(model, images, TARGETS), rtol=1e-4)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet18", "vgg16"])
def test_lrp_canonizers_keep_the_function_and_are_undone(backbone, images, request):
    """Applied to the network LRP propagates through, the canonizers compute the original function (in float64,
    to 1e-10 relative: exact merging, measured 1.2e-14; zennit's own MergeBatchNorm, which keeps eps, is off by
    2.5e-4 on MobileNetV2 and 5.5e-5 on ResNet-18), turn every BatchNorm into the identity and every residual
    addition into a Sum module, and are undone exactly."""
    from zennit.layer import Sum

    if backbone == "mobilenet_v2":
        model = copy.deepcopy(request.getfixturevalue("book_model"))
    elif backbone == "resnet18":
        model = randomised_resnet18()
    else:
        model = build_model("vgg16", width=0.125, seed=0)
    model = model.double().eval()
    network = nn.Sequential(*model.blocks, model.head)
    with torch.no_grad():
        start = model.features(images.double(), stop=0)
        expected = network(start)
    state = {key: value.clone() for key, value in network.state_dict().items()}
    batch_norms = [module for module in network.modules() if isinstance(module, nn.BatchNorm2d)]
    eps = [module.eps for module in batch_norms]

    instances = []
    for canonizer in lrp_canonizers():
        instances += canonizer.apply(network)
    try:
        sums = [module for module in network.modules() if isinstance(module, Sum)]
        calls = []
        handles = [module.register_forward_hook(lambda *_: calls.append(1)) for module in sums]
        with torch.no_grad():
            merged = network(start)
        for handle in handles:
            handle.remove()
        # zennit attaches a Sum to every InvertedResidual; the ones without a residual connection never run
        assert len(calls) == residual_blocks(model) == {"mobilenet_v2": 10, "resnet18": 8, "vgg16": 0}[backbone]
        for module in batch_norms:
            assert module.eps == 0
            assert (module.running_mean == 0).all() and (module.running_var == 1).all()
            assert (module.weight == 1).all() and (module.bias == 0).all()
        assert (merged - expected).abs().max() <= 1e-10 * expected.abs().max()
    finally:
        for instance in instances:
            instance.remove()

    assert len(batch_norms) == {"mobilenet_v2": 52, "resnet18": 20, "vgg16": 0}[backbone]
    assert [module.eps for module in batch_norms] == eps
    assert all(torch.equal(value, state[key]) for key, value in network.state_dict().items())
    assert not any(isinstance(module, Sum) for module in network.modules())
    assert not any("forward" in vars(module) for module in network.modules())
    with torch.no_grad():
        assert torch.equal(network(start), expected)


def test_lrp_epsilon_equals_captums_lrp_and_gradient_times_input_on_vgg(tiny_vgg, images):
    """Where both libraries apply (VGG-16: ReLU, max pooling, no BatchNorm), zennit's ε rule and Captum's give the
    same relevance at the normalised input (measured: 1.1e-6 of the largest value); and LRP with ε → 0 on a ReLU
    network is gradient × input (Ancona et al. 2018; measured: 1.9e-6)."""
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import EpsilonRule

    x, targets = images[:2], TARGETS[:2]
    ours = attribute(tiny_vgg, x, targets, "lrp", signed=True, rule="epsilon", epsilon=1e-9)
    network = nn.Sequential(*tiny_vgg.blocks, tiny_vgg.head)
    for module in network.modules():
        if not list(module.children()):
            module.rule = EpsilonRule(epsilon=1e-9)  # Captum removes the rules after a successful call
    start = tiny_vgg.features(x, stop=0).detach().requires_grad_()
    captum = LRP(network).attribute(start, target=targets).detach().sum(dim=1).numpy()
    assert np.abs(captum).max() > 0
    np.testing.assert_allclose(ours, captum, rtol=0, atol=1e-5 * np.abs(captum).max())

    start = tiny_vgg.features(x, stop=0).detach().requires_grad_()
    (gradient,) = torch.autograd.grad(network(start)[torch.arange(2), targets].sum(), start)
    gradient_x_input = (gradient * start).sum(dim=1).detach().numpy()
    np.testing.assert_allclose(ours, gradient_x_input, rtol=0, atol=1e-5 * np.abs(gradient_x_input).max())


# ------------------------------------------------------------------------------------------------ every preset


def _preset_backbones() -> list[tuple[str, float]]:
    used = {(step.backbone, step.width) for preset in PRESETS.values() for step in (preset.pretrain, preset.finetune)}
    return sorted(used | {("vgg16", 0.125), ("resnet18", 1.0), ("mobilenet_v2", 0.25)})


PRESET_METHODS = list(dict.fromkeys(method for preset in PRESETS.values() for method in preset.explain.methods))


@pytest.mark.parametrize(("backbone", "width"), _preset_backbones(), ids=lambda value: str(value))
def test_every_preset_method_runs_or_is_not_applicable_on_every_preset_backbone(backbone, width):
    assert set(PRESET_METHODS) == set(PRESETS["study"].explain.methods)  # the study's list holds the others
    model = build_model(backbone, width=width, seed=0).eval()
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    refused = {}
    for method in PRESET_METHODS:
        try:
            maps = attribute(model, x, TARGETS[:2], method, **FEW_SAMPLES.get(method, {}))
        except NotApplicable as reason:
            assert str(reason), method
            refused[method] = str(reason)
            continue
        assert maps.shape == (2, 32, 32) and maps.dtype == np.float32, method
        assert np.isfinite(maps).all(), method
    if backbone in ("mobilenet_v2", "resnet18"):  # ReLU6 and residual sums are handled now
        assert not set(refused) & set(HOOKED), refused


class _Residual(nn.Module):
    """A residual addition of the user's own, in forward: no module LRP could give a rule."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


class _FunctionalGelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return functional.gelu(self.conv(x))


def test_lrp_refuses_what_it_has_no_rule_for():
    x, targets = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), TARGETS[:2]

    def network(*middle):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return nn.Sequential(*middle, nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8 * 8, 2)).eval()

    with pytest.raises(NotApplicable, match=r"lrp: operations outside modules \['add.*get no LRP rule"):
        attribute(network(nn.Conv2d(1, 2, 3, padding=1), _Residual()), x, targets, "lrp")
    with pytest.raises(NotApplicable, match=r"lrp: no LRP rule for GELU"):
        attribute(network(nn.Conv2d(1, 2, 3, padding=1), nn.GELU()), x, targets, "lrp")
    with pytest.raises(NotApplicable, match=r"lrp: operations outside modules \['gelu"):
        attribute(network(_FunctionalGelu()), x, targets, "lrp")
    plain = network(nn.Conv2d(1, 2, 3, padding=1))
    assert np.isfinite(attribute(plain, x, targets, "lrp")).all()
    with pytest.raises(ValueError, match=r"unknown LRP rule 'alpha_beta'; valid choices: epsilon_plus_flat, epsilon"):
        attribute(plain, x, targets, "lrp", rule="alpha_beta")


@pytest.mark.parametrize("method", ["deeplift", "guided_backprop"])
def test_captums_hook_notices_stay_out_of_the_output_and_other_warnings_do_not(method, book_model, images):
    """Captum warns on every call that it sets hooks (with its site-packages path); the built book's cells were
    full of it. attribute() silences exactly those notices, and only while it runs."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attribute(book_model, images[:2], TARGETS[:2], method, progress=False)
        warnings.warn("a user's own warning", UserWarning, stacklevel=1)
    messages = [str(warning.message) for warning in caught]
    assert not [message for message in messages if "hooks" in message], messages
    assert "a user's own warning" in messages
