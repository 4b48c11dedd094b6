"""The parameter sets ("presets") of the benchmark, one frozen dataclass per pipeline step.

A :class:`Preset` holds one dataclass per step (``overview``, ``data``, ``pretrain``, ``finetune``, ``grid``,
``explain``, ``regression``); their fields are exactly the parameters of that step, and every notebook exposes a
step's fields as its papermill parameters (``tests/test_config.py`` checks that). Three presets exist:

- ``smoke``: a tiny CPU version for the tests, written out in full below;
- ``book``: the default book on 2 CPU cores, derived from ``smoke`` with :func:`dataclasses.replace`;
- ``study``: the reference study's scale (VGG-16 at 224², a GPU job), derived from ``smoke`` the same way.

Each derived value says why it differs. Parameters are validated once, here, with one style of message
("valid choices: …"). Notebooks read a step through :func:`resolve` (or :func:`resolve_from`), which returns a
plain dict.
About 400 lines, one job: most of it is the three presets written out with the reason for each value.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar


@dataclass(frozen=True)
class Step:
    """A step's parameters. ``name`` is the step's name in :class:`Preset` and in error messages."""

    name: ClassVar[str] = ""

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [item.name for item in dataclasses.fields(cls)]

    def as_dict(self) -> dict[str, Any]:
        """The parameters as a new dict (deep copies: changing it leaves the preset alone), in field order."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self.parameter_names()}

    def with_overrides(self, **overrides: Any) -> Step:
        """A copy with every non-``None`` override applied; an unknown name is refused with the valid ones."""
        unknown = sorted(set(overrides) - set(self.parameter_names()))
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for step {self.name!r}; "
                             f"valid parameters: {', '.join(sorted(self.parameter_names()))}")
        given = {key: value for key, value in overrides.items() if value is not None}
        for key, value in given.items():
            check_override(self.name, key, value)
        return replace(self, **given)


# Seeds go to NumPy (non-negative, any size) and to torch.manual_seed (at most 2**64 - 1); one range for both that
# every platform's C integers hold.
SEED_RANGE = (0, 2**32 - 1)
# Counts that must be positive when given; None (all images) stays allowed where the step says so.
POSITIVE_COUNTS = ("n_test_images",)


def check_override(step: str, name: str, value: Any) -> None:
    """Refuse an override whose value cannot work, naming the parameter, the value and the valid range (before any
    work; the presets' own values are not checked here)."""
    low, high = SEED_RANGE
    seeds = value if name.endswith("seeds") and isinstance(value, (list, tuple)) else [value]
    if name == "seed" or name.endswith("_seed") or name.endswith("seeds"):
        for seed in seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high:
                raise ValueError(f"{step} parameter {name!r} must hold whole numbers from {low} to {high}, got "
                                 f"{seed!r}")
    if name in POSITIVE_COUNTS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{step} parameter {name!r} must be a whole number of at least 1 (or None: all test "
                         f"images), got {value!r}")


@dataclass(frozen=True)
class OverviewConfig(Step):
    """Notebook 0: the template and its band of axial slices."""

    name: ClassVar[str] = "overview"
    min_brain_fraction: float  # keep axial slices holding >= this fraction of the largest slice's brain area
    n_slices_shown: int


@dataclass(frozen=True)
class DataConfig(Step):
    """Notebook 1: the benchmark dataset (pseudo-subjects or real volumes, slices, synthetic lesions, splits)."""

    name: ClassVar[str] = "data"
    # "source" meant both these volumes and the pre-training weights; "task" both this and the pre-training task
    volume_source: str  # "mni152" (pseudo-subjects from nilearn's template), "ixi" (fetched IXI T1), or a folder
    n_subjects: int
    slices_per_subject: int  # distinct axial levels per subject, drawn from the band
    image_size: int  # pixels per side
    min_brain_fraction: float  # axial band: slices with >= this fraction of the largest slice's brain area
    lesion_task: str  # "shape": regular vs irregular lesions; "presence": lesions vs none
    n_lesions: tuple[int, int]  # lesions per image (inclusive)
    radius_range: tuple[float, float]  # equivalent lesion radius, pixels
    max_aspect: float  # ellipse aspect ratio drawn from [1, max_aspect]
    irregularity: float  # RMS relative boundary modulation of irregular lesions
    lesion_contrast: tuple[float, float]  # additive offset, in units of the slice's brain intensity range (< 0: hypo)
    lesion_texture: float  # SD of the smooth random texture inside lesions (same units); 0: uniform lesions
    texture_scale: float  # correlation length of that texture (Gaussian sigma, pixels)
    edge_softness: float  # soft-edge ramp width, pixels (0: hard edges)
    min_gap: float  # pixels between lesions
    placement: str  # "brain" or "white_matter"
    variant: str  # "none", or "distractor": a class-independent blob per image, outside the ground truth
    # pseudo-subjects (source "mni152" only): simulated variability of one anatomy
    deformation_mm: float  # SD of the B-spline deformation's control-point coefficients (mm)
    rotation_deg: float  # in-plane rotation drawn from +- this
    scale_jitter: float  # isotropic scaling drawn from 1 +- this
    contrast_jitter: float  # SD of log gamma of the intensity curve
    bias_field: float  # SD of the B-spline coefficients of the smooth log bias field
    noise: float  # Rician noise SD, relative to bright brain tissue
    split_fractions: tuple[float, float, float]  # train, val, test (by subject)
    seed: int


@dataclass(frozen=True)
class PretrainConfig(Step):
    """Notebook 2: in-domain pre-training on lesion-free slices of pseudo-subjects disjoint from the benchmark's."""

    name: ClassVar[str] = "pretrain"
    backbone: str
    width: float
    task: str  # a task name, or "auto": train every candidate task and keep the one notebook 2's criterion picks
    candidate_tasks: list[str]
    anatomies: list[str]  # real anatomies the pseudo-subjects come from (xaiutils.domain.mri.anatomies)
    baseline_margin: float  # a task must beat its trivial baseline by this much to be chosen (pretrain.beats_baseline)
    n_bands: int
    n_subjects: int  # pseudo-subjects per anatomy
    slices_per_subject: int
    image_size: int
    epochs: int
    lr: float
    batch_size: int
    patience: int
    lr_schedule: str
    seed: int  # a seed stream apart from the benchmark's, so pseudo-subjects differ
    selection_k: int  # the candidate tasks are compared by a transfer run with this many frozen blocks …
    selection_seeds: list[int]  # … and these seeds (validation accuracy on the lesion task)
    workers: int  # pre-training and transfer runs done at once, each in its own process


@dataclass(frozen=True)
class FinetuneConfig(Step):
    """Notebook 3: one fine-tuning run (one grid cell)."""

    name: ClassVar[str] = "finetune"
    backbone: str
    width: float
    mode: str  # "transfer": blocks after k re-initialised; "finetune": all start pre-trained; "transfer_finetune"
    epochs: int
    lr: float
    batch_size: int
    patience: int
    dropout: float
    weight_decay: float
    augment: str  # "none" or "flips"
    lr_schedule: str  # "constant" or "onecycle"
    transferred_lr_factor: float  # mode "transfer_finetune": the transferred blocks train at lr times this


@dataclass(frozen=True)
class GridConfig(Step):
    """The fine-tuning grid: weights source × number of pre-trained blocks × seed."""

    name: ClassVar[str] = "grid"
    sources: list[str]
    # transfer mode: k = 0 means no pre-trained block, so "none" is run at k = 0 only
    n_pretrained_blocks: dict[str, list[int]]
    seeds: list[int]
    workers: int  # cells trained at once (execution.grid.run_grid); results do not depend on it
    # cells ("<source>-k<k>-s<seed>") notebook 3 trains again in mode "transfer_finetune" (AnB+), beside the grid's
    # mode, to compare the two protocols; not explained by notebook 4
    anb_plus_cells: list[str]


@dataclass(frozen=True)
class ExplainConfig(Step):
    """Notebook 4: explanations scored against the lesion masks."""

    name: ClassVar[str] = "explain"
    methods: list[str]
    metrics: list[str]
    n_test_images: int  # class-balanced sample of the test split, the same for every run
    n_images_costly: int  # LIME / KernelSHAP / Shapley sampling run on this many of them
    resolution: int  # scoring resolution (sum-pooled)
    selection: str  # "correct" (per run), "correct_all" (correct for every run) or "all"
    n_boot: int
    seed: int
    workers: int  # runs explained at once, each in its own process
    # Model-randomisation sanity check (xaiutils.analysis.sanity), on the most accurate run only: the first
    # sanity_images of
    # the explained images, the top sanity_stages stages re-initialised (head, then blocks from the last); a method
    # whose maps keep a mean rank correlation >= sanity_threshold with the trained model's maps is flagged.
    sanity_images: int
    sanity_stages: int
    sanity_threshold: float


@dataclass(frozen=True)
class RegressionConfig(Step):
    """Notebook 5: explanation performance against pre-training, corrected for accuracy."""

    name: ClassVar[str] = "regression"
    metric: str  # a column of notebook 4's scores.csv
    selection: str  # images averaged per run: "correct", "correct_all" or "all"
    formula: str  # patsy formula on the columns score, accuracy, source, k
    n_boot: int
    seed: int


@dataclass(frozen=True)
class Preset:
    """One parameter set: a dataclass per step."""

    overview: OverviewConfig
    data: DataConfig
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    grid: GridConfig
    explain: ExplainConfig
    regression: RegressionConfig

    @classmethod
    def step_names(cls) -> list[str]:
        return [item.name for item in dataclasses.fields(cls)]

    def step(self, name: str) -> Step:
        if name not in self.step_names():
            raise ValueError(f"unknown step {name!r}; valid steps: {', '.join(sorted(self.step_names()))}")
        return getattr(self, name)


# The attribution methods the smoke and book presets run, in the order they are explained and scored: the study's
# list without the sampling-heavy perturbation methods (LIME, KernelSHAP), which the study preset runs on a subset
# of its images. The propagation methods run on every backbone of the presets (ReLU6 and residual sums are handled
# in xaiutils.domain.explain.canonical). And the model-free control maps.
# Written out rather than read from xaiutils.domain.explain so that reading a preset does not import torch and Captum
# (the command line reads presets); tests/test_config.py checks them against the registry.
# The grid's weight sources (xaiutils.domain.models.prepare_model), written out here so that the command line can
# check a grid without importing torch. "random" is the control: frozen, randomly initialised blocks at each k.
SOURCES = ("imagenet", "mri", "none", "random")

DEFAULT_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "gradient_shap", "deeplift",
                   "deeplift_shap", "guided_backprop", "deconvolution", "lrp", "grad_cam", "guided_grad_cam",
                   "occlusion")
CONTROL_MAPS = ("sobel", "laplace", "random", "input")


def _default_methods() -> list[str]:
    return list(DEFAULT_METHODS)


def _control_maps() -> list[str]:
    return list(CONTROL_MAPS)


# ------------------------------------------------------------------------------------------------------- smoke
# CPU, small images, a few hundred slices: the whole pipeline runs in minutes on 2 cores.

SMOKE = Preset(
    overview=OverviewConfig(min_brain_fraction=0.6, n_slices_shown=8),
    data=DataConfig(
        volume_source="mni152", n_subjects=48, slices_per_subject=16, image_size=64, min_brain_fraction=0.6,
        lesion_task="shape",
        n_lesions=(1, 2), radius_range=(4.0, 8.0), max_aspect=1.5, irregularity=0.4,
        # Hypo-intense, textured lesions, chosen by a criterion stated before any method was scored: the image is not
        # an oracle (its `input` map wins the pointing game on <= 30 % of the test images, ROC-AUC <= 0.75). With the
        # former bright lesions (0.3, 0.6) the book's `input` map had a pointing game of 1.00 and a ROC-AUC of 0.97;
        # with these, 0.00 and 0.53 on the book's test split, and the book's `none` k = 0 and `imagenet` k = 3 runs
        # (seed 0) still reached a test accuracy of 0.91 and 0.99.
        lesion_contrast=(-0.6, -0.4), lesion_texture=0.1, texture_scale=1.5,
        edge_softness=1.0, min_gap=1.0, placement="brain", variant="none", deformation_mm=5.0, rotation_deg=5.0,
        scale_jitter=0.05,
        contrast_jitter=0.15, bias_field=0.2, noise=0.02, split_fractions=(0.6, 0.2, 0.2), seed=0,
    ),
    pretrain=PretrainConfig(
        backbone="mobilenet_v2",  # the backbone whose ImageNet weights can be had offline
        width=1.0, task="level_band", candidate_tasks=["level_band"], anatomies=["mni152"], baseline_margin=0.1,
        n_bands=4, n_subjects=24,
        slices_per_subject=16, image_size=64, epochs=20, lr=1e-3, batch_size=32,
        # Trained from scratch, the BatchNorm running statistics lag the weights: validation accuracy sits at
        # chance for the first ~7 epochs while training accuracy climbs, so a shorter patience stops too early.
        patience=10,
        lr_schedule="constant", seed=1000, selection_k=3, selection_seeds=[0], workers=1,
    ),
    finetune=FinetuneConfig(
        backbone="mobilenet_v2", width=1.0, mode="transfer",
        # Blocks trained from scratch need a few epochs before validation moves off chance (BatchNorm statistics
        # lag the weights, as in notebook 2), and their validation loss is noisy: a short patience restores an
        # epoch-1 model at chance.
        epochs=40, lr=1e-3, batch_size=32, patience=12, dropout=0.2, weight_decay=0.0,
        # Random left-right / up-down flips of the training images. Without them the few hundred training slices
        # are memorised by the runs that train most blocks from scratch (training accuracy > 0.9, validation at
        # chance).
        augment="flips",
        lr_schedule="constant",
        # Yosinski et al.'s AnB+ (mode transfer_finetune): transferred blocks train at a tenth of the rate
        transferred_lr_factor=0.1,
    ),
    grid=GridConfig(
        sources=["imagenet", "mri", "none"],
        n_pretrained_blocks={"imagenet": [1, 3, 5], "mri": [1, 3, 5], "none": [0]},
        seeds=[0],
        workers=1,
        anb_plus_cells=[],
    ),
    explain=ExplainConfig(
        methods=_default_methods() + _control_maps(),
        metrics=["emd_score", "importance_mass_accuracy", "topk_precision", "pointing_game", "roc_auc"],
        n_test_images=24,
        n_images_costly=8,
        resolution=32,  # exact EMD at 64² would take ~10× longer on the CPU
        selection="correct", n_boot=1000, seed=0,
        workers=1,  # 1: here, scoring spread over the cores
        sanity_images=2, sanity_stages=2, sanity_threshold=0.5,
    ),
    regression=RegressionConfig(
        metric="emd_score", selection="correct",
        # The smoke and book grids run "none" at k = 0 only, so the source × k interaction is not estimable there.
        formula="score ~ accuracy + C(source) + k",
        n_boot=1000, seed=0,
    ),
)

# -------------------------------------------------------------------------------------------------------- book
# The default book (`make book`): 2 CPU cores, the whole build within 30 minutes, models that learn the task, and
# 3 seeds per grid cell so that the regression has 21 clusters. What differs from smoke is said why.

BOOK = replace(
    SMOKE,
    data=replace(
        SMOKE.data,
        # 2,560 slices: with a few hundred, the blocks trained from scratch did not learn; more did not fit the 30
        # minutes of the book (a grid cell costs 70-120 s on one core, most of it proportional to the number of
        # images).
        n_subjects=160,
        # 70 % of the subjects for training (1,792 slices): with 60 % (1,536), a `none` run reached 0.81 on the
        # test split; 384 validation and 384 test slices remain.
        split_fractions=(0.7, 0.15, 0.15),
        # Two lesions per image and a stronger boundary modulation: MobileNetV2 trained from scratch for 6 epochs
        # reached a validation accuracy of 0.82 with (2, 2) lesions at irregularity 0.4, and 0.93 at 0.6
        # (benchmarks: see the Reproducing chapter). The task stays a shape task: sizes are drawn alike per class.
        n_lesions=(2, 2),
        irregularity=0.6,
    ),
    # The recipe of the shipped in-domain arm (xaiutils/shipped/, `python -m xaiutils pretrain-mri --preset book`):
    # notebook 2 reads the shipped blocks while these settings are the card's, and trains them only when asked.
    # Three candidate tasks with the same corpus, epochs and optimiser, one chosen on validation data by the rule of
    # notebook 2. 640 pseudo-subjects of each of two anatomies x 16 slices = 20,480 slices (90 % for training);
    # 14 epochs = about 258,000 image-steps per task, 50 times the first version's 5,000. The patience equals the
    # epochs, so that every task gets the whole budget (the best epoch is kept).
    pretrain=replace(
        SMOKE.pretrain,
        task="auto",
        candidate_tasks=["level_band", "synth_segmentation", "restoration"],
        anatomies=["mni152", "colin27"], baseline_margin=0.1,
        n_subjects=640, epochs=14, lr=1e-3, batch_size=64, patience=14, lr_schedule="onecycle",
        selection_seeds=[0, 1, 2],
        # Three tasks and their transfer runs, two at a time with one thread each (on 2 cores, about 1.7 times the
        # images per second of one process with two threads).
        workers=2,
    ),
    # One-cycle schedule (warm-up, then cosine annealing) over a fixed budget: blocks trained from scratch learn in
    # a few epochs instead of sitting at chance while BatchNorm statistics settle.
    finetune=replace(SMOKE.finetune, epochs=4, lr=3e-3, batch_size=64, patience=4, lr_schedule="onecycle"),
    # Two cells side by side with one thread each train faster on 2 cores than one cell with two threads.
    # k = 2, 3, 5: with k = 1 the runs trained all but MobileNetV2's first stage, as slowly as from scratch (about
    # 155 s each on one thread), which put the grid over the book's 30 minutes.
    # `random`: the control of the source axis, frozen randomly initialised blocks at each k of the other sources.
    grid=replace(SMOKE.grid, sources=["imagenet", "mri", "none", "random"],
                 n_pretrained_blocks={"imagenet": [2, 3, 5], "mri": [2, 3, 5], "none": [0], "random": [2, 3, 5]},
                 seeds=[0, 1, 2], workers=2,
                 # the other protocol, for both pre-trained sources at the middle of the k axis (two runs)
                 anb_plus_cells=["imagenet-k3-s0", "mri-k3-s0"]),
    # 24 class-balanced test images per run (8 before the propagation methods ran on MobileNetV2): with 8, the
    # intervals of the skill over the control maps were wider than the differences between methods. Two runs at
    # once, one thread each. The explanation's and the sanity check's share of the book's 30 minutes are measured
    # in the Reproducing chapter.
    explain=replace(SMOKE.explain, n_test_images=24, workers=2),
)

# ------------------------------------------------------------------------------------------------------- study
# The reference study's scale: VGG-16 at 224², thousands of images: a GPU job.

STUDY = replace(
    SMOKE,
    overview=replace(SMOKE.overview, n_slices_shown=12),
    data=replace(
        SMOKE.data, n_subjects=200, slices_per_subject=20, image_size=224,
        radius_range=(14.0, 28.0),  # the smoke radii scaled by 224 / 64
        edge_softness=3.0, min_gap=3.0, texture_scale=5.0,
    ),
    # The book's recipe for VGG-16 at 224² (a GPU job): the same corpus size, tasks, budget and selection rule.
    pretrain=replace(BOOK.pretrain, backbone="vgg16", image_size=224, lr=1e-4, workers=1),
    # The transferred blocks are fine-tuned too, at a tenth of the learning rate (AnB+), the protocol of most
    # medical-imaging transfer studies; `mode=transfer` gives the book's frozen protocol.
    finetune=replace(SMOKE.finetune, backbone="vgg16", epochs=30, lr=1e-4, patience=5, dropout=0.5, augment="none",
                     mode="transfer_finetune"),
    grid=replace(SMOKE.grid, sources=["imagenet", "mri", "none", "random"],
                 n_pretrained_blocks={"imagenet": [1, 2, 3, 4, 5], "mri": [1, 2, 3, 4, 5], "none": [0],
                                      "random": [1, 2, 3, 4, 5]},
                 seeds=[0, 1, 2]),
    explain=replace(
        SMOKE.explain,
        methods=_default_methods() + ["lime", "kernel_shap"] + _control_maps(),
        n_test_images=1000,
        n_images_costly=100,  # perturbation methods cost thousands of forward passes per image: a subset
        resolution=64,  # the convention of the sibling benchmark XAI-TRIS
        sanity_images=32,
        sanity_stages=6,  # VGG-16: the head and the five conv blocks, the full cascade
    ),
    # The study's grid runs every source at several k, so the source × k interaction is estimable.
    regression=replace(SMOKE.regression, formula="score ~ accuracy + C(source) * k"),
)

PRESETS: dict[str, Preset] = {"smoke": SMOKE, "book": BOOK, "study": STUDY}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(preset: str) -> Preset:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(preset_names())}")
    return PRESETS[preset]


def step_config(step: str, preset: str = "smoke", **overrides: Any) -> Step:
    """The dataclass of ``step`` under ``preset``, with every non-``None`` override applied."""
    chosen = get_preset(preset)
    if step not in Preset.step_names():
        raise ValueError(f"unknown step {step!r} in preset {preset!r}; valid steps: "
                         f"{', '.join(sorted(Preset.step_names()))}")
    return chosen.step(step).with_overrides(**overrides)


def resolve(step: str, preset: str = "smoke", **overrides: Any) -> dict[str, Any]:
    """The parameters of ``step`` under ``preset`` as a plain dict, with every non-``None`` override applied: what
    notebooks read, e.g. ``resolve("data", preset="smoke", image_size=96)``. ``None`` means "take the preset's
    value", which lets a notebook's papermill parameters default to ``None``.

    Raises ``ValueError`` naming the bad preset, step or parameter and listing the valid ones.
    """
    return step_config(step, preset, **overrides).as_dict()


def resolve_from(step: str, preset: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`resolve` with the overrides read from ``parameters`` (a notebook's ``globals()``): one value per
    parameter of ``step``, ``None`` meaning the preset's. A parameter missing from ``parameters`` is an error, so a
    notebook cannot silently lack one of its step's parameters."""
    names = get_preset(preset).step(step).parameter_names()
    missing = [name for name in names if name not in parameters]
    if missing:
        raise ValueError(f"no value for parameter(s) {', '.join(map(repr, missing))} of step {step!r}; "
                         f"every parameter of the step must be given (None: the preset's value)")
    return resolve(step, preset, **{name: parameters[name] for name in names})


def preset_as_dicts(preset: str) -> dict[str, dict[str, Any]]:
    """``{step: {parameter: value}}`` of ``preset`` (new dicts: changing them changes nothing)."""
    chosen = get_preset(preset)
    return {step: chosen.step(step).as_dict() for step in Preset.step_names()}


# Each notebook's papermill parameters: ``preset``, the fields of its steps, and these others (inputs, outputs and
# switches that are not preset values). tests/test_config.py checks every notebook against this table.
NOTEBOOK_STEPS: dict[str, tuple[str, ...]] = {
    "00_overview": ("overview",),
    "01_data": ("data",),
    "02_pretrain_mri": ("pretrain",),
    "03_finetune": ("finetune",),
    "04_explain": ("explain",),
    "05_regression": ("regression",),
}
NOTEBOOK_EXTRA_PARAMETERS: dict[str, tuple[str, ...]] = {
    "00_overview": ("out_dir",),
    "01_data": ("out_dir",),
    "02_pretrain_mri": ("retrain", "data_dir", "out_dir"),
    # grid: run the preset's grid or one run; source, n_pretrained_blocks, seed: that one run; workers: the grid's
    "03_finetune": ("grid", "source", "n_pretrained_blocks", "seed", "workers", "data_dir", "mri_checkpoint",
                    "out_dir"),
    "04_explain": ("user_methods", "cluster", "data_dir", "grid_dir", "out_dir"),
    "05_regression": ("grid_dir", "explain_dir", "out_dir"),
}

__all__ = ["DataConfig", "ExplainConfig", "FinetuneConfig", "GridConfig", "NOTEBOOK_EXTRA_PARAMETERS",
           "NOTEBOOK_STEPS", "OverviewConfig", "PRESETS", "Preset", "PretrainConfig", "RegressionConfig", "Step",
           "get_preset", "preset_as_dicts", "preset_names", "resolve", "resolve_from", "step_config"]
