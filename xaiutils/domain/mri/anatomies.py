"""Real anatomies available offline for in-domain pre-training, each with a loader and a description card.

- ``mni152``: the MNI152 2009 T1 template (an average of 152 adults) with its brain mask and grey- and white-matter
  probability maps, all shipped inside nilearn's wheel.
- ``colin27``: the Colin27 single-subject brain (27 scans of one adult, averaged; Holmes et al. 1998),
  skull-stripped with the package's brain-extracted copy like the MNI152 template, and the AAL atlas drawn on it
  (Tzourio-Mazoyer et al. 2002), as Debian's ``mricron-data`` package ships them (``make anatomy`` unpacks that
  package into the virtual environment, without root).

Each anatomy gives a T1 volume, a brain mask, a tissue map (0 background, 1 CSF, 2 grey, 3 white matter) and a map
of *generation labels* for domain-randomised synthesis: the tissue classes with the grey matter split into the AAL
atlas's 116 regions (label ``3 + region``), so that one tissue class is drawn with many intensities.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from xaiutils.domain.mri.brain import load_mni152, otsu_thresholds_3

ANATOMIES = ("mni152", "colin27")
TISSUE_CLASSES = ("background", "csf", "grey_matter", "white_matter")
AAL_REGIONS = 116
MRICRON_ENV = "XAI_MRICRON_DIR"  # a folder holding mricron-data's templates (ch2.nii.gz, ch2bet.nii.gz, aal.nii.gz)
MRICRON_FILES = ("ch2.nii.gz", "ch2bet.nii.gz", "aal.nii.gz")

CARDS = {
    "mni152": {
        "name": "MNI152 2009 T1 template",
        "source": "nilearn's wheel (load_mni152_template, load_mni152_brain_mask, load_mni152_gm_template, "
                  "load_mni152_wm_template); Fonov et al. 2011",
        "licence": "free use with acknowledgement (McConnell Brain Imaging Centre, see nilearn's data notice)",
        "subjects": "an average of 152 adults",
        "shape": "197 x 233 x 189 voxels of 1 mm",
        "tissues": "grey- and white-matter probability maps of the template; CSF: the brain mask's remainder",
    },
    "colin27": {
        "name": "Colin27 single-subject brain (ch2) and the AAL atlas",
        "source": "Debian package mricron-data (files ch2.nii.gz, ch2bet.nii.gz, aal.nii.gz); Holmes et al. 1998, "
                  "Tzourio-Mazoyer et al. 2002",
        "licence": "MRIcron's data, BSD-3-clause as packaged by Debian (debian/copyright of mricron-data)",
        "subjects": "one adult, 27 scans averaged",
        "shape": "181 x 217 x 181 voxels of 1 mm",
        "tissues": "three-class Otsu thresholds of the T1 inside the brain mask (CSF, grey, white matter)",
    },
}


def check_anatomy(name: str) -> str:
    if name not in ANATOMIES:
        raise ValueError(f"unknown anatomy {name!r}; valid anatomies: {', '.join(ANATOMIES)}")
    return name


def mricron_dir() -> Path:
    """Where mricron-data's templates are: ``$XAI_MRICRON_DIR``, else ``share/mricron/templates`` of this Python
    environment (``make anatomy`` puts them there)."""
    folder = Path(os.environ.get(MRICRON_ENV) or Path(sys.prefix) / "share" / "mricron" / "templates")
    missing = [name for name in MRICRON_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the Colin27 anatomy needs {', '.join(missing)} in {folder}, from Debian's mricron-data package: run "
            f"`make anatomy` (it unpacks the package into the virtual environment), or set {MRICRON_ENV} to a "
            "folder holding them")
    return folder


def install_mricron(target: str | os.PathLike | None = None) -> Path:
    """Put mricron-data's templates into ``target`` (default: ``share/mricron/templates`` of this Python
    environment): ``apt-get download`` the Debian package into a temporary folder and unpack it with ``dpkg-deb``
    (no root needed). Returns the folder; does nothing when the files are there already."""
    import shutil
    import subprocess
    import tempfile

    target = Path(target) if target is not None else Path(sys.prefix) / "share" / "mricron" / "templates"
    if all((target / name).is_file() for name in MRICRON_FILES):
        return target
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise FileNotFoundError(f"installing the Colin27 anatomy needs {' and '.join(missing)} (Debian, Ubuntu); "
                                f"elsewhere put {', '.join(MRICRON_FILES)} of mricron-data in a folder and set "
                                f"{MRICRON_ENV} to it")
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(["apt-get", "download", "mricron-data"], cwd=folder, check=True, capture_output=True)
        package = next(Path(folder).glob("mricron-data_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(package), str(Path(folder) / "root")], check=True)
        unpacked = Path(folder) / "root" / "usr" / "share" / "mricron" / "templates"
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(unpacked, partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


def _tissues_from_probabilities(brain: np.ndarray, grey: np.ndarray, white: np.ndarray) -> np.ndarray:
    csf = np.clip(brain - grey - white, 0.0, 1.0)
    stack = np.stack([1.0 - brain, csf, grey, white])
    return np.where(brain > 0.5, np.argmax(stack, axis=0), 0).astype(np.int16)


def _tissues_from_intensity(t1: np.ndarray, brain: np.ndarray) -> np.ndarray:
    smooth = ndimage.gaussian_filter(t1.astype(np.float32), 0.5)
    low, high = otsu_thresholds_3(smooth[brain])
    tissues = np.where(smooth < low, 1, np.where(smooth < high, 2, 3)).astype(np.int16)
    return np.where(brain, tissues, 0).astype(np.int16)


def _with_regions(tissues: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Generation labels: grey-matter voxels inside an atlas region become ``3 + region`` (4 … 119)."""
    regions = np.asarray(regions, dtype=np.int16)
    return np.where((tissues == 2) & (regions > 0), 3 + regions, tissues).astype(np.int16)


@functools.lru_cache(maxsize=2)
def load_anatomy(name: str) -> dict:
    """``{"t1", "brain", "affine", "tissues", "labels"}`` of anatomy ``name`` (RAS+, 1 mm; cached).

    ``tissues``: int16, indices into :data:`TISSUE_CLASSES`. ``labels``: int16 generation labels (see the module).
    """
    import nibabel as nib

    check_anatomy(name)
    if name == "mni152":
        from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template
        from nilearn.image import resample_to_img

        t1, brain, affine = load_mni152(resolution=1)
        grey = np.asarray(load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
        white = np.asarray(load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
        tissues = _tissues_from_probabilities(brain.astype(np.float32), grey, white)
        aal = nib.load(mricron_dir() / "aal.nii.gz")
        reference = nib.Nifti1Image(np.zeros(t1.shape, np.int16), affine)
        regions = np.asarray(resample_to_img(aal, reference, interpolation="nearest", force_resample=True,
                                             copy_header=True).dataobj)
    else:
        folder = mricron_dir()
        image = nib.load(folder / "ch2.nii.gz")
        brain = ndimage.binary_fill_holes(np.asarray(nib.load(folder / "ch2bet.nii.gz").dataobj) > 0)
        # skull-stripped like nilearn's MNI152 template (the benchmark's slices): scalp and skull set to zero
        t1 = np.where(brain, np.asarray(image.dataobj, dtype=np.float32), 0.0).astype(np.float32)
        affine = np.asarray(image.affine)
        tissues = _tissues_from_intensity(t1, brain)
        regions = np.asarray(nib.load(folder / "aal.nii.gz").dataobj)
    if regions.shape != t1.shape:
        raise ValueError(f"atlas shape {regions.shape} differs from the {name} T1's {t1.shape}")
    return {"t1": t1, "brain": np.asarray(brain, bool), "affine": affine, "tissues": tissues,
            "labels": _with_regions(tissues, regions)}


def anatomy_card(name: str) -> dict:
    """The description card of anatomy ``name``: what it is, where it comes from, its licence and shape."""
    return {"anatomy": check_anatomy(name), **CARDS[name]}
