"""Issue 23 (reliability, second round), the cases about inputs: volumes that cannot be brains (5), split
fractions of 0 (15), an unbounded image_size (16), user names that become paths (17) and misleading messages (18).

One test (or a few) per case; each failed on the code before the fix.
"""

from __future__ import annotations

import numpy as np
import pytest

from xaiutils.domain.mri.nifti import find_volumes, load_volumes


def write_blob(path, shape=(40, 44, 36), zooms=(3.0, 3.0, 3.0), sign=1.0, mask_path=None):
    """A bright ellipsoid filling 70 % of the field of view, with noise: a brain-like phantom (at 3 mm voxels, 75 mm
    or more along each axis)."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    grid = np.indices(shape).astype(float)
    center = (np.array(shape) / 2)[:, None, None, None]
    inside = (((grid - center) / (np.array(shape)[:, None, None, None] * 0.35)) ** 2).sum(axis=0) <= 1
    volume = sign * (inside * 100.0 + rng.normal(0, 1, shape) + 2.0)
    nib.Nifti1Image(volume.astype(np.float32), np.diag([*zooms, 1.0])).to_filename(str(path))
    if mask_path is not None:
        nib.Nifti1Image(inside.astype(np.uint8), np.diag([*zooms, 1.0])).to_filename(str(mask_path))
    return path


# ------------------------------------------------------------------------- case 5: volumes that cannot be brains


def test_case5_a_crop_or_a_slab_is_refused_naming_the_file_its_extent_and_the_bound(tmp_path):
    crop = tmp_path / "crop"
    crop.mkdir()
    write_blob(crop / "tiny_T1w.nii.gz", shape=(60, 60, 60), zooms=(0.2, 0.2, 0.2))  # 12 mm across
    with pytest.raises(ValueError, match=r"tiny_T1w\.nii\.gz: its brain mask spans .* mm .*shorter than 60 mm"):
        load_volumes(crop)
    small = tmp_path / "small"  # 41 mm across: a large crop, still no brain (accepted below a 20 mm bound)
    small.mkdir()
    write_blob(small / "part_T1w.nii.gz", shape=(60, 60, 60), zooms=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"part_T1w\.nii\.gz: its brain mask spans 41\.0 x 41\.0 x 41\.0 mm .*shorter "
                                         r"than 60 mm"):
        load_volumes(small)
    slab = tmp_path / "slab"
    slab.mkdir()
    write_blob(slab / "slab_T1w.nii.gz", shape=(40, 44, 2), mask_path=slab / "slab_mask.nii.gz")
    with pytest.raises(ValueError, match=r"slab_T1w\.nii\.gz: its brain mask spans .* x [0-9.]+ mm"):
        load_volumes(slab)
    whole = tmp_path / "whole"
    whole.mkdir()
    write_blob(whole / "ok_T1w.nii.gz")
    assert [volume.subject for volume in load_volumes(whole)] == ["ok"]


def test_case5_a_folder_mixing_voxel_sizes_is_refused_naming_the_odd_volume(tmp_path):
    write_blob(tmp_path / "a_T1w.nii.gz")
    write_blob(tmp_path / "b_T1w.nii.gz")
    write_blob(tmp_path / "c_T1w.nii.gz", shape=(60, 60, 60), zooms=(0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match=r"c_T1w\.nii\.gz has voxels of 0\.2 x 0\.2 x 0\.2 mm, while the volumes "
                                         r"of .* have 3 x 3 x 3 mm \(median\).* at most a factor 2"):
        find_volumes(tmp_path)
    (tmp_path / "c_T1w.nii.gz").unlink()
    write_blob(tmp_path / "c_T1w.nii.gz", zooms=(2.7, 3.0, 3.3))  # scanners differ a little: accepted
    assert [found.subject for found in find_volumes(tmp_path)] == ["a", "b", "c"]


# ------------------------------------------------------------------- case 15: a split fraction of 0 is refused


@pytest.mark.parametrize("fractions, split", [((0.8, 0.2, 0.0), "test"), ((0.8, 0.0, 0.2), "val"),
                                              ((0.0, 0.5, 0.5), "train"), ((1.0, 0.0, 0.0), "train")])
def test_case15_every_split_needs_a_fraction_strictly_between_0_and_1(fractions, split):
    from xaiutils.domain.synth.parameters import check_config
    from xaiutils.foundation.config import resolve

    with pytest.raises(ValueError, match=rf"split_fractions gives the {split} split .*each of train, val, test must "
                                         r"lie strictly between 0 and 1"):
        check_config(resolve("data", "smoke", split_fractions=fractions))
    assert check_config(resolve("data", "smoke"))["split_fractions"] == (0.6, 0.2, 0.2)


# ------------------------------------------------------------------------------- case 16: image_size is bounded


def test_case16_image_size_is_bounded_with_the_reason(tmp_path):
    from xaiutils.domain import pretrain
    from xaiutils.domain.synth.dataset import make_benchmark
    from xaiutils.domain.synth.parameters import MAX_IMAGE_SIZE, check_config
    from xaiutils.foundation.config import resolve

    assert MAX_IMAGE_SIZE == 512
    for size in (4096, 513, 8):
        with pytest.raises(ValueError, match=rf"image_size must be at least 16 pixels and at most 512, got {size} "
                                             r"\(memory grows with its square"):
            check_config(resolve("data", "smoke", image_size=size))
    with pytest.raises(ValueError, match="image_size must be at least 16 pixels and at most 512"):
        make_benchmark(tmp_path / "data", "smoke", image_size=4096, progress=False)
    assert not (tmp_path / "data").exists()
    with pytest.raises(ValueError, match="image_size must be at least 16 pixels and at most 512"):
        pretrain.pretrain_slices(4, 8, 768, progress=False)
    for preset in ("smoke", "book", "study"):
        check_config(resolve("data", preset))  # the study's 224 is accepted


# --------------------------------------------------- case 17: names that become paths are checked before writing


def test_case17_a_grid_source_that_would_leave_the_grid_folder_is_refused_before_anything_is_written(tmp_path):
    from xaiutils.execution.grid import grid_cells, run_grid

    out = tmp_path / "deep" / "grid"
    for bad in ("../../trav", "a/b", "..", ".hidden", ""):
        spec = {"sources": [bad], "n_pretrained_blocks": [0], "seeds": [0]}
        with pytest.raises(ValueError, match=r"grid source .* cannot be used as a file or folder name; valid "
                                             r"choices: imagenet, mri, none, random; .*no '\.\.'"):
            run_grid(out_dir=out, spec=spec, progress=False, check_inputs=False)
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == []
    assert len(grid_cells({"sources": ["imagenet", "my-source_2"], "n_pretrained_blocks": [0], "seeds": [0]})) == 2


def listing(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


PERCENT_NOTEBOOK = """# %% tags=["parameters"]
preset = "smoke"
out_dir = None

# %%
open(out_dir + "/done.txt", "w").write("ok")
"""


def test_case17_an_out_path_that_does_not_end_in_the_folders_name_is_refused_before_anything_is_written(
        tmp_path, capsys, monkeypatch):
    """``--out runs/x/..`` would name the folder ``runs`` while its lock, temporary folder and failed notebook went
    into ``runs/x`` (created for them): refused by run, grid, evaluate and build-book, with nothing written."""
    from xaiutils.__main__ import main
    from xaiutils.foundation.files import output_folder

    monkeypatch.setenv("XAIBENCH_RUNS", str(tmp_path / "runs"))
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "m.py").write_text("def m(model, images, target):\n    return images[:, 0]\n")
    before = listing(tmp_path)
    out = str(tmp_path / "deep" / "sub" / "..")
    for command in (["run", "00_overview", "--out", out], ["grid", "--out", out],
                    ["evaluate", "--method", f"{tmp_path / 'user' / 'm.py'}:m", "--out", out],
                    ["build-book", "--html-dir", out, "--", "true"]):
        assert main(command) == 2, command
        error = capsys.readouterr().err
        option = "--html-dir" if command[0] == "build-book" else "--out"
        assert f"error: {option} {out!r} does not end in the folder's own name (it ends in '..'); give a path " \
               "whose last part names the folder" in error, (command, error)
        assert "Traceback" not in error
        assert listing(tmp_path) == before, command  # no lock, no temporary folder, no parent created
    (tmp_path / "deep" / "sub").mkdir(parents=True)  # an existing parent changes nothing
    before = listing(tmp_path)
    assert main(["run", "00_overview", "--out", out]) == 2
    assert listing(tmp_path) == before
    with pytest.raises(ValueError, match="--out '/' does not end in the folder's own name"):
        output_folder("/")
    assert output_folder(tmp_path / "x" / ".") == tmp_path / "x"  # '.' only repeats the folder's name


def test_case17_a_valid_out_path_still_runs_with_its_lock_beside_the_folder_itself(tmp_path, monkeypatch):
    """``a/../run`` is the folder ``run``: its lock and temporary folder go beside it, and ``a`` is not created."""
    from xaiutils.execution import runner

    seen = {}

    def execute(path, nb, out_dir, *rest):  # the notebook's own run is another test's business
        seen["out_dir"] = out_dir
        seen["beside"] = sorted(path.name for path in out_dir.parent.iterdir())
        out_dir.mkdir()
        return out_dir

    monkeypatch.setattr(runner, "execute", execute)
    notebook = tmp_path / "tiny.py"
    notebook.write_text(PERCENT_NOTEBOOK)
    out = runner.run_notebook(notebook, out_dir=tmp_path / "a" / ".." / "run", progress=False)
    assert out == seen["out_dir"] == tmp_path / "run"
    assert seen["beside"] == [".run.lock", "tiny.py"]  # the lock beside the folder, taken before the run
    assert listing(tmp_path) == [".run.lock", "run", "tiny.py"]


# ------------------------------------------------------------------------------ case 18: messages that mislead


class Payload:  # a pickled object that weights_only refuses
    pass


def test_case18_a_refused_pickle_is_named_as_untrusted_without_pytorchs_advice(tmp_path):
    import torch

    from xaiutils.domain.models import load_weights

    path = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2), "extra": Payload()}, path)
    with pytest.raises(ValueError) as raised:
        load_weights(path)
    message = str(raised.value)
    assert f"weights file {path} is not a weights file this project trusts" in message
    assert "weights_only" not in message and "trust the source" not in message


# ------------------------------------------------------------- case 18: messages that name the parameter and range


@pytest.mark.parametrize(("step", "name", "value", "expected"), [
    ("explain", "n_test_images", 0, "explain parameter 'n_test_images' must be a whole number of at least 1"),
    ("explain", "n_test_images", -5, "got -5"),
    ("data", "seed", -3, "data parameter 'seed' must hold whole numbers from 0 to 4294967295, got -3"),
    ("data", "seed", 2**70, f"got {2**70}"),
    ("grid", "seeds", [0, -1], "grid parameter 'seeds' must hold whole numbers from 0 to 4294967295, got -1"),
])
def test_case18_a_bad_count_or_seed_is_refused_naming_the_parameter_and_range(step, name, value, expected):
    from xaiutils.foundation.config import resolve

    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        resolve(step, "smoke", **{name: value})
    assert resolve(step, "smoke")[name] is not None  # the presets' own values pass


def test_case18_a_volume_with_no_positive_intensity_is_named_as_such(tmp_path):
    path = write_blob(tmp_path / "inverted_T1w.nii.gz", sign=-1.0)
    with pytest.raises(ValueError, match="no positive intensity to speak of .values from -1"):
        load_volumes(str(tmp_path))
    assert path.exists()


def test_case18_a_full_disk_while_the_dataset_is_written_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    import xaiutils.domain.synth.dataset as dataset

    def full_disk(*args, **kwargs):  # what NumPy raises on a full disk: no errno, only the byte counts
        raise OSError("98304 requested and 15328 written")

    monkeypatch.setattr(dataset.np, "save", full_disk)
    with pytest.raises(OSError, match="no space left on the device while writing the dataset into .*nothing was "
                                      "written"):
        dataset.make_benchmark(tmp_path / "dataset", "smoke", progress=False, n_subjects=4)
    assert list(tmp_path.iterdir()) == []
