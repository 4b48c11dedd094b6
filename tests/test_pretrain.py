"""MRI-domain pre-training data and the throughput benchmark script."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from xaiutils.domain import pretrain
from xaiutils.domain.mri.anatomy import template_anatomy
from xaiutils.domain.mri.slices import Variability, sample_slices

ROOT = Path(__file__).resolve().parent.parent


def test_level_bands_are_contiguous_and_balanced():
    bands = pretrain.level_bands(np.arange(10, 30), 4)
    assert bands.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    assert np.all(np.diff(pretrain.level_bands(np.arange(7), 3)) >= 0)
    with pytest.raises(ValueError, match="n_bands must lie in 2..5"):
        pretrain.level_bands(np.arange(5), 6)


def test_level_band_dataset_is_balanced_reproducible_and_split_by_subject():
    images, labels, table = pretrain.level_band_dataset(6, 8, 32, n_bands=4, seed=3, progress=False)
    assert images.shape == (48, 32, 32) and images.dtype == np.float32
    assert np.bincount(labels).tolist() == [12, 12, 12, 12]
    assert table.groupby("subject")["split"].nunique().max() == 1, "a subject appears in two splits"
    # Bands follow the axial level: every level of band b lies below every level of band b + 1.
    for band in range(3):
        assert table.loc[table.band == band, "level"].max() < table.loc[table.band == band + 1, "level"].min()
    again, _, _ = pretrain.level_band_dataset(6, 8, 32, n_bands=4, seed=3, progress=False)
    assert np.array_equal(images, again), "same seed must give identical slices"
    with pytest.raises(ValueError, match="multiple of n_bands"):
        pretrain.level_band_dataset(2, 6, 32, n_bands=4, progress=False)
    with pytest.raises(ValueError, match="unknown pre-training task 'age'.*level_band"):
        pretrain.level_band_dataset(2, 8, 32, task="age", progress=False)


def test_pretraining_subjects_differ_from_the_benchmark_subjects():
    """Seed streams differ, so the pre-training pseudo-subjects are not the benchmark's (same level, same size)."""
    anatomy = template_anatomy(32, 0.6)
    level = anatomy.band[len(anatomy.band) // 2 : len(anatomy.band) // 2 + 1]
    first = sample_slices(anatomy, level, 32, np.random.default_rng(0), Variability())[0]
    second = sample_slices(anatomy, level, 32, np.random.default_rng(1000), Variability())[0]
    assert not np.allclose(first, second)


@pytest.mark.slow
def test_throughput_benchmark_runs_end_to_end():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "gpu_finetune_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick", "--device", "cpu"])
    assert result["real_loop_images_per_second"] > 0 and result["synthetic_images_per_second"] > 0
    assert result["ratio"] == pytest.approx(
        result["real_loop_images_per_second"] / result["synthetic_images_per_second"], rel=1e-2)


def test_attribution_precision_benchmark_compares_the_cpu_with_itself_without_a_gpu():
    spec = importlib.util.spec_from_file_location("precision", ROOT / "benchmarks" / "gpu_attribution_precision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--device", "cpu", "--image-size", "32", "--n-images", "2", "--n-steps", "4"])
    # Same device, same seed, same code: the maps are identical whichever TF32 setting is in force.
    assert result["max_deviation_over_max_full_fp32"] == 0.0
    assert result["max_deviation_over_max_tf32_default"] == 0.0
    assert module.relative_deviation(np.array([1.0, -2.0]), np.array([1.0, -4.0])) == pytest.approx(0.5)

