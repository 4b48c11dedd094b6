"""The benchmark dataset on disk: one folder, written atomically (:func:`write_benchmark`, :func:`make_benchmark`)
and read back with its content hash checked (:func:`load_benchmark`).

A dataset folder holds ``card.json`` (parameters, versions, hash), ``README.md``, ``cache/*.npy`` (the arrays),
``metadata.csv`` (one row per image), ``lesions.csv`` (one row per lesion) and ``images.nii.gz``,
``masks.nii.gz``, ``brain_masks.nii.gz``: the same pixels as NIfTI slice stacks (RAS+) for neuroimaging viewers.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xaiutils.domain.synth.benchmark import Benchmark, content_hash
from xaiutils.domain.synth.generate import synthesize
from xaiutils.foundation.config import resolve
from xaiutils.foundation.files import atomic_folder, stamp_matches, write_stamp

CARD_FILE = "card.json"
ARRAY_FILES = {"images": "images.npy", "masks": "masks.npy", "brain_masks": "brain_masks.npy",
               "labels": "labels.npy"}
NIFTI_FILES = {"images": "images.nii.gz", "masks": "masks.nii.gz", "brain_masks": "brain_masks.nii.gz"}
# written only when the dataset has them (variant "distractor")
OPTIONAL_ARRAY_FILES = {"distractor_masks": "distractor_masks.npy"}
# the files the content hash covers, relative to the dataset folder (their sizes and change times are stamped)
HASHED_FILES = tuple(f"cache/{name}" for name in ARRAY_FILES.values()) + ("metadata.csv", "lesions.csv")


def _array_files(bench_or_card) -> dict[str, str]:
    """The arrays a dataset holds: the four every dataset has, and the optional ones it was written with."""
    if isinstance(bench_or_card, dict):
        listed = bench_or_card.get("files", {}).get("arrays", {})
        extra = {name: file for name, file in OPTIONAL_ARRAY_FILES.items() if name in listed}
    else:
        extra = {name: file for name, file in OPTIONAL_ARRAY_FILES.items() if getattr(bench_or_card, name) is not None}
    return {**ARRAY_FILES, **extra}


def _hashed_files(arrays: dict[str, str]) -> tuple[str, ...]:
    return HASHED_FILES + tuple(f"cache/{file}" for name, file in arrays.items() if name not in ARRAY_FILES)


def to_nifti_stack(array: np.ndarray, pixel_mm: float = 1.0, description: str = ""):
    """An ``N×H×W`` stack of slices as a NIfTI image (X×Y×N, RAS+): each slice becomes one axial plane, so a
    neuroimaging viewer shows it the same way up as ``imshow`` does."""
    import nibabel as nib

    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"a slice stack must be N×H×W, got shape {array.shape}")
    data = np.ascontiguousarray(np.transpose(array[:, ::-1, :], (2, 1, 0)))
    if data.dtype == bool:
        data = data.astype(np.uint8)
    affine = np.diag([pixel_mm, pixel_mm, pixel_mm, 1.0])
    image = nib.Nifti1Image(data, affine)
    image.header["descrip"] = description[:79].encode()
    image.header.set_xyzt_units("mm")
    return image


def from_nifti_stack(image) -> np.ndarray:
    """Inverse of :func:`to_nifti_stack`: the ``N×H×W`` array (dtype as stored)."""
    data = np.asarray(image.dataobj)
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1, :])


def _dataset_readme(card: dict[str, Any]) -> str:
    lines = [
        f"# {card['name']}",
        "",
        f"- task: {card['task']} (labels: {card['conventions']['labels']})",
        f"- images: {card['n_images']} of {card['image_size']}×{card['image_size']} pixels from "
        f"{card['n_subjects']} subjects; seed {card['seed']}",
        f"- source: {card['source']['name']}: {card['source']['note']}",
        f"- content hash (sha256): `{card['content_hash']}`",
        "",
        "| split | " + " | ".join(card["class_names"]) + " |",
        "| --- | " + " | ".join("---" for _ in card["class_names"]) + " |",
    ]
    for split, counts in card["counts"].items():
        lines.append(f"| {split} | " + " | ".join(str(counts[name]) for name in card["class_names"]) + " |")
    lines += [
        "",
        "Files: `images.nii.gz`, `masks.nii.gz`, `brain_masks.nii.gz` (slice stacks for neuroimaging viewers), "
        "`cache/*.npy` (arrays for training), `metadata.csv` (one row per image), `lesions.csv` (one row per "
        "lesion), `card.json` (parameters, versions, hash).",
        "",
    ]
    return "\n".join(lines)


def write_benchmark(bench: Benchmark, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``bench`` into ``out_dir`` atomically: built in a temporary sibling folder and renamed into place;
    on any error the temporary folder is removed and ``out_dir`` is left as it was."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"dataset folder {out_dir} exists; pass overwrite=True to replace it")
    try:
        with atomic_folder(out_dir) as partial:
            card = dict(bench.card)
            card["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            arrays = _array_files(bench)
            card["files"] = {"arrays": {k: f"cache/{v}" for k, v in arrays.items()}, "nifti": NIFTI_FILES,
                             "metadata": "metadata.csv", "lesions": "lesions.csv"}
            (partial / "cache").mkdir()
            for name, filename in arrays.items():
                np.save(partial / "cache" / filename, getattr(bench, name))
            pixel_mm = float(np.median(bench.metadata["pixel_mm"])) if len(bench.metadata) else 1.0
            for name, filename in NIFTI_FILES.items():
                to_nifti_stack(getattr(bench, name), pixel_mm, f"xaiutils benchmark {name}").to_filename(
                    str(partial / filename))
            bench.metadata.to_csv(partial / "metadata.csv", index=False)
            bench.lesions.to_csv(partial / "lesions.csv", index=False)
            (partial / CARD_FILE).write_text(json.dumps(card, indent=2, default=str) + "\n")
            (partial / "README.md").write_text(_dataset_readme(card))
            write_stamp(partial, _hashed_files(arrays), card["content_hash"])
    except OSError as error:
        # NumPy reports a full disk as "N requested and M written", with no errno: say what it means
        if error.errno == errno.ENOSPC or "requested and" in str(error):
            raise OSError(errno.ENOSPC, f"no space left on the device while writing the dataset into {out_dir} "
                          f"({error}); nothing was written: free space or choose another folder") from None
        raise
    bench.card = card
    bench.path = out_dir
    return out_dir


def make_benchmark(out_dir: str | os.PathLike, preset: str = "smoke", seed: int | None = 0, *,
                   overwrite: bool = False, progress: bool = True, **overrides: Any) -> Path:
    """Generate the benchmark dataset of ``preset`` (with ``seed`` and any ``data`` parameter overridden) and
    write it atomically into ``out_dir``; return that path. ``seed=None`` takes the preset's seed.

    Every parameter is checked before work starts, and nothing is written unless generation succeeds.
    """
    config = resolve("data", preset, seed=seed, **overrides)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"dataset folder {out_dir} exists; pass overwrite=True to replace it")
    bench = synthesize(config, progress=progress)
    bench.card["preset"] = preset
    return write_benchmark(bench, out_dir, overwrite=overwrite)


def _remake_hint(card: dict[str, Any] | None = None) -> str:
    preset = (card or {}).get("preset", "smoke")
    return (f"re-create it with notebook 1 (python -m xaiutils run 01_data --preset {preset} --overwrite) or "
            f"make_benchmark(..., overwrite=True)")


def _load_array(file: Path, dataset: Path, mmap: bool) -> np.ndarray:
    if not file.is_file():
        raise FileNotFoundError(f"dataset {dataset} is incomplete: {file.relative_to(dataset)} is missing; "
                                f"{_remake_hint()}")
    try:
        return np.load(file, mmap_mode="r" if mmap else None)
    except Exception as error:  # EOFError (empty), ValueError (truncated, pickled), OSError
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"dataset {dataset}: {file.relative_to(dataset)} is not a readable .npy array "
                         f"({reason}); the file is damaged: {_remake_hint()}") from None


def _read_table(file: Path, dataset: Path, **options) -> pd.DataFrame:
    if not file.is_file():
        raise FileNotFoundError(f"dataset {dataset} is incomplete: {file.name} is missing; {_remake_hint()}")
    try:
        return pd.read_csv(file, **options)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"dataset {dataset}: {file.name} is not a readable table ({reason}); "
                         f"{_remake_hint()}") from None


def load_benchmark(path: str | os.PathLike, verify: bool = False, mmap: bool = False) -> Benchmark:
    """Read a dataset folder written by :func:`make_benchmark`; ``mmap=True`` memory-maps the array cache.

    The data are always checked against the card's content hash, so nothing is computed on a dataset changed
    after its card was written. By default the check is cheap: the sizes and change times of the hashed files
    are compared with ``cache/stamp.json``, written with the dataset; while they match, the card's hash stands.
    When they differ (or the stamp is missing), and always with ``verify=True``, the content hash is recomputed
    from the data (about 0.07 s for the smoke dataset): a mismatch raises ``ValueError``; a match renews the
    stamp where the folder is writable. Damaged or inconsistent files raise one-line errors naming the file.
    """
    path = Path(path)
    card = read_card(path)
    array_files = _array_files(card)
    arrays = {name: _load_array(path / "cache" / filename, path, mmap) for name, filename in array_files.items()}
    images = arrays["images"]
    if images.ndim != 3:
        raise ValueError(f"dataset {path}: cache/images.npy has shape {images.shape}, expected N×H×W; "
                         f"{_remake_hint(card)}")
    for name in ("masks", "brain_masks", *(set(array_files) - set(ARRAY_FILES))):
        if arrays[name].shape != images.shape:
            raise ValueError(f"dataset {path}: cache/{array_files[name]} has shape {arrays[name].shape}, the "
                             f"images {images.shape}; {_remake_hint(card)}")
    if arrays["labels"].shape != images.shape[:1]:
        raise ValueError(f"dataset {path}: cache/labels.npy has shape {arrays['labels'].shape} for "
                         f"{images.shape[0]} images; {_remake_hint(card)}")
    text_columns = {"subject": str, "split": str, "class_name": str, "shape": str}
    metadata = _read_table(path / "metadata.csv", path, dtype=text_columns, keep_default_na=False,
                           na_values={c: [""] for c in ("contrast", "solidity", "centroid_row", "centroid_col")})
    lesions = _read_table(path / "lesions.csv", path, dtype={"shape": str})
    bench = Benchmark(arrays["images"], arrays["masks"], arrays["labels"], metadata, card, arrays["brain_masks"],
                      lesions, arrays.get("distractor_masks"), path)
    if len(metadata) != len(bench.labels):
        raise ValueError(f"dataset {path}: metadata.csv has {len(metadata)} rows for {len(bench.labels)} images; "
                         f"{_remake_hint(card)}")
    if verify or not stamp_matches(path, card["content_hash"]):
        actual = content_hash(bench)
        if actual != card["content_hash"]:
            raise ValueError(f"dataset {path} no longer matches its card: the content hash of its files is "
                             f"{actual[:12]}…, card.json records {card['content_hash'][:12]}… (a file was changed "
                             f"after the dataset was written); {_remake_hint(card)}")
        write_stamp(path, _hashed_files(array_files), actual)
    return bench


def read_card(data_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``card.json`` of a dataset folder, with one-line errors that name the file and what to do."""
    data_dir = Path(data_dir)
    card_path = data_dir / "card.json"
    if not card_path.is_file():
        raise FileNotFoundError(
            f"{data_dir} is not a benchmark dataset folder: card.json is missing; make the dataset first with "
            f"notebook 1 (python -m xaiutils run 01_data --preset smoke), or point data_dir at one")
    try:
        card = json.loads(card_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{card_path} is not valid JSON ({error}); the dataset is damaged: re-create it with "
                         f"notebook 1 (python -m xaiutils run 01_data --overwrite)") from None
    if not isinstance(card, dict) or not isinstance(card.get("content_hash"), str):
        raise ValueError(f"{card_path} holds no content_hash; the dataset is damaged: re-create it with "
                         f"notebook 1 (python -m xaiutils run 01_data --overwrite)")
    return card


def dataset_hash(data_dir: str | os.PathLike) -> str:
    """The content hash of the dataset in ``data_dir``, checked against its data: cheaply through the stamp
    (a few ``stat`` calls), by hashing the data when the stamp does not match. Raises ``ValueError`` when the
    data no longer match the card, ``FileNotFoundError`` when the folder is not a dataset."""
    card = read_card(data_dir)
    if stamp_matches(data_dir, card["content_hash"]):
        return card["content_hash"]
    return load_benchmark(data_dir, verify=True).card["content_hash"]
