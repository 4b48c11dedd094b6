from __future__ import annotations

import shutil
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from xaiutils.domain.mri.anatomy import axial_band, template_anatomy
from xaiutils.domain.mri.brain import compute_brain_mask
from xaiutils.domain.mri.nifti import Volume, find_volumes, load_volumes, read_nifti, voxel_size
from xaiutils.domain.mri.slices import Variability, sample_slices
from xaiutils.domain.synth import dataset as synth_dataset
from xaiutils.domain.synth.benchmark import content_hash
from xaiutils.domain.synth.dataset import (
    NIFTI_FILES,
    from_nifti_stack,
    load_benchmark,
    make_benchmark,
    to_nifti_stack,
    write_benchmark,
)
from xaiutils.domain.synth.generate import assign_splits, synthesize
from xaiutils.domain.synth.parameters import SPLITS
from xaiutils.foundation.config import resolve

SMALL = {"n_subjects": 6, "slices_per_subject": 4}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small dataset at the smoke preset's settings, written to disk and read back."""
    path = make_benchmark(tmp_path_factory.mktemp("bench") / "dataset", "smoke", seed=3, progress=False,
                          **SMALL)
    return load_benchmark(path)


def _no_partials(parent):
    return not [p for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_same_seed_same_hash_different_seed_different_hash(small):
    config = resolve("data", "smoke", seed=3, **SMALL)
    again = synthesize(config, progress=False)
    assert again.card["content_hash"] == small.card["content_hash"]
    np.testing.assert_array_equal(again.images, small.images)
    np.testing.assert_array_equal(again.masks, small.masks)
    other = synthesize({**config, "seed": 4}, progress=False)
    assert other.card["content_hash"] != small.card["content_hash"]
    assert not np.array_equal(other.images, small.images)


def test_loaded_arrays_and_types(small):
    images, masks, labels, metadata, card = small  # the benchmark unpacks as the five parts
    n = 6 * 4
    assert images.shape == (n, 64, 64) and images.dtype == np.float32
    assert masks.shape == (n, 64, 64) and masks.dtype == np.float32
    assert masks.min() >= 0 and masks.max() <= 1
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert isinstance(metadata, pd.DataFrame) and len(metadata) == n
    assert card["n_images"] == n and card["seed"] == 3 and card["preset"] == "smoke"
    assert card["parameters"]["n_subjects"] == 6 and "numpy" in card["versions"]
    assert content_hash(small) == card["content_hash"], "hash recomputed from the files must match"
    assert np.isfinite(images).all()


def test_every_lesion_pixel_is_inside_the_brain(small):
    lesion = small.masks >= 0.5
    assert lesion.any()
    assert not (lesion & ~small.brain_masks).any()
    assert not ((small.masks > 0) & ~small.brain_masks).any(), "even the soft edge stays inside the brain"


def test_lesion_counts_radii_and_metadata_agree_with_masks(small):
    cfg = resolve("data", "smoke")
    low, high = cfg["n_lesions"]
    r_low, r_high = cfg["radius_range"]
    meta = small.metadata
    assert meta["n_lesions"].between(low, high).all()
    for index, row in meta.iterrows():
        binary = small.masks[index] >= 0.5
        _, components = ndimage.label(binary, structure=np.ones((3, 3)))
        assert components == row["n_lesions"], "lesions must not touch or overlap"
        assert row["lesion_area_px"] == binary.sum()
        assert row["centroid_row"] == pytest.approx(ndimage.center_of_mass(binary)[0])
    assert small.lesions["radius_px"].between(r_low, r_high).all()
    measured = np.sqrt(small.lesions["area_px"] / np.pi)
    assert measured.between(0.75 * r_low, 1.25 * r_high).all()
    assert len(small.lesions) == meta["n_lesions"].sum()
    contrast = small.lesions["contrast"]
    assert contrast.between(*cfg["lesion_contrast"]).all()
    # the lesion's intensity offset shows in the image
    # the presets' lesions are hypo-intense: darker than the brain around them by about their contrast (0.4-0.6)
    inside = small.images[small.masks >= 0.99].mean()
    ring = small.images[(small.masks == 0) & small.brain_masks].mean()
    assert inside < ring - 0.2


def test_images_are_scaled_within_the_brain(small):
    background = (small.masks == 0) & small.brain_masks
    assert small.images[background].min() >= 0.0 and small.images[background].max() <= 1.0
    for image, brain, mask in zip(small.images, small.brain_masks, small.masks, strict=True):
        values = image[brain & (mask == 0)]
        assert np.mean(values >= 0.999) < 0.03 and np.mean(values <= 0.001) < 0.03


def test_classes_balanced_and_splits_by_subject(small):
    meta = small.metadata
    for split in SPLITS:
        part = meta[meta["split"] == split]
        assert len(part) > 0
        assert (part["label"] == 0).sum() == (part["label"] == 1).sum()
    subjects_per_split = meta.groupby("subject")["split"].nunique()
    assert (subjects_per_split == 1).all(), "a subject must not appear in two splits"
    assert meta.groupby("split")["subject"].nunique().to_dict() == {"train": 4, "val": 1, "test": 1}
    assert (meta["class_name"] == np.where(meta["label"] == 1, "irregular", "regular")).all()
    assert (meta["shape"] == meta["class_name"]).all()


def test_solidity_separates_the_classes_in_the_dataset(small):
    by_class = small.metadata.groupby("label")["solidity"]
    assert by_class.min()[0] > by_class.max()[1]


def test_assign_splits_counts_and_keeps_every_split():
    rng = np.random.default_rng(0)
    names = assign_splits(10, (0.6, 0.2, 0.2), rng)
    assert sorted(names.tolist()) == sorted(["train"] * 6 + ["val"] * 2 + ["test"] * 2)
    names = assign_splits(3, (0.9, 0.05, 0.05), rng)
    assert sorted(names.tolist()) == ["test", "train", "val"]


def test_nifti_stacks_round_trip_and_orientation(small, tmp_path):
    for name, filename in NIFTI_FILES.items():
        stored = from_nifti_stack(nib.load(small.path / filename))
        np.testing.assert_array_equal(stored.astype(getattr(small, name).dtype), getattr(small, name))
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # N=2, H=3, W=4
    image = to_nifti_stack(array, pixel_mm=2.5)
    volume = np.asarray(image.dataobj)
    assert volume.shape == (4, 3, 2)
    assert volume[3, 2, 1] == array[1, 0, 3], "top-right pixel of a slice = anterior (high y), right (high x)"
    assert image.header.get_zooms() == (2.5, 2.5, 2.5)
    image.to_filename(tmp_path / "stack.nii.gz")
    np.testing.assert_array_equal(from_nifti_stack(nib.load(tmp_path / "stack.nii.gz")), array)


def test_verify_detects_tampering(small, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small.path, copy)
    assert load_benchmark(copy, verify=True).card["content_hash"] == small.card["content_hash"]
    images = np.load(copy / "cache" / "images.npy")
    images[0, 0, 0] += 1
    np.save(copy / "cache" / "images.npy", images)
    with pytest.raises(ValueError, match="content hash"):
        load_benchmark(copy, verify=True)
    (copy / "cache" / "masks.npy").unlink()
    with pytest.raises(FileNotFoundError, match="masks.npy is missing"):
        load_benchmark(copy)
    with pytest.raises(FileNotFoundError, match="card.json is missing"):
        load_benchmark(tmp_path)


def test_split_indices(small):
    for split in SPLITS:
        np.testing.assert_array_equal(small.indices(split), np.flatnonzero(small.metadata["split"] == split))
    np.testing.assert_array_equal(small.indices(), np.arange(len(small)))
    with pytest.raises(ValueError, match="unknown split 'dev'; valid splits: train, val, test"):
        small.indices("dev")


def test_voxel_size_is_the_length_of_each_affine_column():
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * [2.0, 3.0, 1.5]  # columns scaled: voxel axes of 2, 3 and 1.5 mm, rotated
    affine[:3, 3] = (-90, 12, 40)
    np.testing.assert_allclose(voxel_size(affine), [2.0, 3.0, 1.5])
    volume = Volume("sub", np.zeros((2, 2, 2), np.float32), np.ones((2, 2, 2), bool), affine)
    np.testing.assert_allclose(volume.zooms, [2.0, 3.0, 1.5])


def test_old_names_are_gone():
    # the deprecated aliases of the last release and the four façades were removed in this one
    from pathlib import Path

    import xaiutils
    from xaiutils.domain.synth import parameters

    for old in ("lesion_params", "variability", "resolve_source"):
        assert not hasattr(parameters, old), old
    package = Path(xaiutils.__file__).parent
    for facade in ("data", "runs", "lesions", "presets"):
        assert not (package / f"{facade}.py").exists(), facade


def test_presence_task_and_white_matter_placement():
    config = resolve("data", "smoke", n_subjects=4, slices_per_subject=4, lesion_task="presence",
                     placement="white_matter", radius_range=(1.5, 2.5), n_lesions=(1, 2),
                     split_fractions=(0.5, 0.25, 0.25))
    bench = synthesize(config, progress=False)
    lesioned = (bench.masks >= 0.5).reshape(len(bench), -1).any(axis=1)
    np.testing.assert_array_equal(lesioned, bench.labels == 1)
    assert (bench.labels == 0).sum() == (bench.labels == 1).sum()
    assert bench.card["class_names"] == ["no lesion", "lesion"]
    assert set(bench.metadata.loc[bench.labels == 0, "shape"]) == {"none"}
    assert bench.metadata.loc[bench.labels == 0, "contrast"].isna().all()


def test_pseudo_subjects_vary_and_zero_variability_gives_the_template():
    anatomy = template_anatomy(64, 0.6)
    levels = anatomy.band[[10, 40]]
    plain, brain = sample_slices(anatomy, levels, 64)
    none = Variability(0, 0, 0, 0, 0, 0)
    same, same_brain = sample_slices(anatomy, levels, 64, np.random.default_rng(1), none)
    np.testing.assert_allclose(same, plain, atol=1e-5)
    np.testing.assert_array_equal(same_brain, brain)
    first, _ = sample_slices(anatomy, levels, 64, np.random.default_rng(1), Variability())
    second, _ = sample_slices(anatomy, levels, 64, np.random.default_rng(2), Variability())
    assert np.abs(first - second).mean() > 0.02
    # similar anatomy all the same: the deformed slices still correlate strongly with the template's
    assert np.corrcoef(first[0].ravel(), plain[0].ravel())[0, 1] > 0.7


def _write_phantom(path, seed=0, shape=(40, 44, 36), skull=False, mask_path=None):
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    center = (np.array(shape) / 2)[:, None, None, None]
    radius = np.sqrt((((grid - center) / (np.array(shape)[:, None, None, None] * 0.32)) ** 2).sum(axis=0))
    brain = radius <= 1.0
    volume = np.where(radius <= 0.5, 120.0, 80.0) * brain  # "white matter" core, "grey matter" rim
    volume[radius <= 0.15] = 20.0  # a dark "ventricle"
    if skull:
        volume[(radius >= 1.25) & (radius <= 1.4)] = 110.0  # bright scalp shell beyond a dark gap
    volume = volume + rng.normal(0, 2.0, shape)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])  # a brain of 69 mm or more along each axis: over the 60 mm bound
    nib.Nifti1Image(volume.astype(np.float32), affine).to_filename(path)
    if mask_path is not None:
        nib.Nifti1Image(brain.astype(np.uint8), affine).to_filename(mask_path)
    return brain


def test_compute_brain_mask_keeps_brain_and_drops_scalp(tmp_path):
    truth = _write_phantom(tmp_path / "head.nii.gz", skull=True)
    volume, affine = read_nifti(tmp_path / "head.nii.gz")
    computed = compute_brain_mask(volume, zooms=(2.0, 2.0, 2.0))
    dice = 2 * (computed & truth).sum() / (computed.sum() + truth.sum())
    assert dice > 0.9
    grid = np.indices(truth.shape).astype(float)
    center = (np.array(truth.shape) / 2)[:, None, None, None]
    radius = np.sqrt((((grid - center) / (np.array(truth.shape)[:, None, None, None] * 0.32)) ** 2).sum(axis=0))
    assert not computed[radius >= 1.2].any(), "the scalp shell is not brain"
    assert computed[radius <= 0.15].all(), "the ventricle is filled"


def test_real_volume_folder(tmp_path):
    folder = tmp_path / "volumes"
    folder.mkdir()
    for seed, name in enumerate(["sub-01", "sub-02", "sub-03", "sub-04"]):
        mask = folder / f"{name}_desc-brain_mask.nii.gz" if seed % 2 == 0 else None
        _write_phantom(folder / f"{name}_T1w.nii.gz", seed=seed, mask_path=mask)
    (folder / "notes.txt").write_text("not a volume")
    found = find_volumes(folder)
    assert [f.subject for f in found] == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert [f.mask_path is not None for f in found] == [True, False, True, False]
    volumes = load_volumes(folder)
    assert [v.mask_source for v in volumes] == ["file", "computed", "file", "computed"]
    assert all(v.t1.ndim == 3 and v.brain_mask.shape == v.t1.shape for v in volumes)
    path = make_benchmark(tmp_path / "dataset", volume_source=str(folder), n_subjects=4, slices_per_subject=2,
                          image_size=32, radius_range=(1.5, 2.5), split_fractions=(0.5, 0.25, 0.25),
                          progress=False)
    bench = load_benchmark(path, verify=True)
    assert sorted(bench.metadata["subject"].unique()) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert (bench.metadata.groupby("subject")["split"].nunique() == 1).all()
    assert bench.card["source"]["kind"] == "folder"
    assert not ((bench.masks >= 0.5) & ~bench.brain_masks).any()


# ----------------------------------------------------------------------------------------- bad input


def test_corrupt_and_non_3d_nifti_are_named(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "broken_T1w.nii.gz").write_bytes(b"this is not a NIfTI file at all" * 20)
    with pytest.raises(ValueError, match=r"cannot read T1 volume .*broken_T1w\.nii\.gz.*not a readable NIfTI"):
        find_volumes(folder)
    with pytest.raises(ValueError, match="broken_T1w"):
        make_benchmark(tmp_path / "out" / "dataset", volume_source=str(folder), progress=False)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []

    flat = tmp_path / "flat.nii.gz"
    nib.Nifti1Image(np.zeros((10, 10), np.float32), np.eye(4)).to_filename(flat)
    with pytest.raises(ValueError, match=r"is 2-D with shape \(10, 10\); expected a 3-D volume"):
        read_nifti(flat)
    series = tmp_path / "series.nii.gz"
    nib.Nifti1Image(np.zeros((6, 6, 6, 3), np.float32), np.eye(4)).to_filename(series)
    with pytest.raises(ValueError, match=r"is 4-D with shape \(6, 6, 6, 3\)"):
        read_nifti(series)
    single = tmp_path / "single.nii.gz"  # a 4-D file holding one volume is fine
    nib.Nifti1Image(np.ones((6, 7, 8, 1), np.float32), np.eye(4)).to_filename(single)
    assert read_nifti(single)[0].shape == (6, 7, 8)


def test_folder_without_volumes(tmp_path):
    (tmp_path / "readme.txt").write_text("no volumes here")
    with pytest.raises(FileNotFoundError, match=r"no T1 NIfTI volumes \(\.nii\.gz, \.nii\) found in folder"):
        load_volumes(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_volumes(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"unknown volume_source 'nowhere'.*'mni152'.*'ixi'"):
        make_benchmark(tmp_path / "dataset", volume_source="nowhere", progress=False)
    assert not (tmp_path / "dataset").exists() and _no_partials(tmp_path)


def test_empty_brain_mask(tmp_path):
    folder = tmp_path / "volumes"
    folder.mkdir()
    _write_phantom(folder / "s1.nii.gz")
    nib.Nifti1Image(np.zeros((40, 44, 36), np.uint8), np.diag([3.0, 3.0, 3.0, 1.0])).to_filename(
        folder / "s1_mask.nii.gz")
    with pytest.raises(ValueError, match=r"brain mask .*s1_mask\.nii\.gz is empty"):
        load_volumes(folder)
    with pytest.raises(ValueError, match="brain mask is empty"):
        axial_band(np.zeros((4, 4, 4), bool))
    with pytest.raises(ValueError, match="the volume is empty or constant"):
        compute_brain_mask(np.zeros((8, 8, 8), np.float32))


def test_unplaceable_lesions_leave_nothing_behind(tmp_path):
    out = tmp_path / "dataset"
    with pytest.raises(ValueError, match=r"radius_range=\(30\.0, 40\.0\)"):
        make_benchmark(out, radius_range=(30.0, 40.0), progress=False, **SMALL)
    assert not out.exists() and _no_partials(tmp_path)


def test_failure_while_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    out = tmp_path / "dataset"

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(synth_dataset, "to_nifti_stack", broken)
    with pytest.raises(OSError, match="disk full"):
        make_benchmark(out, progress=False, n_subjects=3, slices_per_subject=2)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lesion_task": "colour"}, "unknown lesion_task 'colour'; valid choices: shape, presence"),
        ({"placement": "skull"}, "unknown placement 'skull'; valid placements: brain, white_matter"),
        ({"split_fractions": (0.5, 0.5)}, "split_fractions must be 3 non-negative numbers"),
        ({"image_size": 8}, "image_size must be at least 16"),
        ({"n_subjects": 2}, "n_subjects=2 is too few for 3 non-empty splits"),
        ({"slices_per_subject": 500}, "slices_per_subject=500 exceeds the"),
        ({"noise": -1.0}, "noise must be >= 0"),
    ],
)
def test_bad_parameters_are_named(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        make_benchmark(tmp_path / "dataset", progress=False, **override)
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_needs_overwrite(small, tmp_path):
    out = tmp_path / "dataset"
    out.mkdir()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_benchmark(out, progress=False, **SMALL)
    path = write_benchmark(small, out, overwrite=True)
    assert load_benchmark(path, verify=True).card["content_hash"] == small.card["content_hash"]
    assert _no_partials(tmp_path)


def test_smoke_preset_is_generated_in_under_30_seconds(tmp_path):
    started = time.perf_counter()
    path = make_benchmark(tmp_path / "dataset", "smoke", progress=False)
    seconds = time.perf_counter() - started
    card = load_benchmark(path).card
    smoke = resolve("data", "smoke")
    assert card["n_images"] == smoke["n_subjects"] * smoke["slices_per_subject"]
    assert all(counts["regular"] == counts["irregular"] for counts in card["counts"].values())
    assert seconds < 30, f"smoke dataset took {seconds:.1f} s"


@pytest.fixture(scope="module")
def with_distractor(tmp_path_factory):
    """The smoke preset's data with the distractor variant, written and read back."""
    path = make_benchmark(tmp_path_factory.mktemp("variant") / "dataset", "smoke", seed=3, progress=False,
                          variant="distractor", **SMALL)
    return load_benchmark(path, verify=True)


def test_distractor_variant_is_stored_apart_from_the_ground_truth(with_distractor, small):
    bench = with_distractor
    assert bench.distractor_masks is not None and bench.distractor_masks.shape == bench.masks.shape
    assert "cache/distractor_masks.npy" in bench.card["files"]["arrays"].values()
    distractor, lesion = bench.distractor_masks >= 0.5, bench.masks >= 0.5
    assert distractor.any(axis=(1, 2)).all(), "every image has one distractor"
    # outside the lesions' soft support, and inside the brain
    assert not ((bench.distractor_masks > 0) & (bench.masks > 0)).any()
    assert not (distractor & ~bench.brain_masks).any()
    # one blob per image
    assert all(ndimage.label(d)[1] == 1 for d in distractor)
    # its contrast has the opposite sign of the (hypo-intense) lesions': brighter than the brain around it
    around = bench.brain_masks & (bench.masks == 0) & (bench.distractor_masks == 0)
    for image, inside, rest, lesions_here in zip(bench.images, distractor, around, lesion, strict=True):
        assert image[inside].mean() > image[rest].mean() + 0.2 > image[lesions_here].mean() + 0.4
    assert bench.metadata["distractor_area_px"].gt(0).all()
    # the variant adds to what every dataset holds; without it, no distractor array and no extra column
    assert small.distractor_masks is None and "distractor_area_px" not in small.metadata.columns


def test_distractor_variant_reproduces_and_its_masks_enter_the_hash(with_distractor, tmp_path):
    config = resolve("data", "smoke", seed=3, variant="distractor", **SMALL)
    again = synthesize(config, progress=False)
    assert again.card["content_hash"] == with_distractor.card["content_hash"]
    np.testing.assert_array_equal(again.distractor_masks, with_distractor.distractor_masks)
    # a changed distractor mask on disk no longer matches the card
    copy = tmp_path / "dataset"
    shutil.copytree(with_distractor.path, copy)
    damaged = np.load(copy / "cache" / "distractor_masks.npy")
    damaged[0] = 0
    np.save(copy / "cache" / "distractor_masks.npy", damaged)
    with pytest.raises(ValueError, match="no longer matches its card"):
        load_benchmark(copy, verify=True)


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="unknown variant 'suppressor'; valid choices: none, distractor"):
        synthesize(resolve("data", "smoke", variant="suppressor", **SMALL), progress=False)
