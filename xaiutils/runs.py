"""Run folders and the papermill runner behind ``python -m xaiutils run``.

A *run folder* holds one executed notebook (``<name>.ipynb``), everything that notebook wrote, and ``run.json``
(notebook, preset, parameters, timing, package versions). It is built under a temporary name and renamed into
place only when the notebook finished without error, so a crash never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from . import versions
from .presets import preset_names

RUNS_ENV = "XAIBENCH_RUNS"
NOTEBOOK_FORMAT = "py:percent"


def project_root() -> Path | None:
    """The repository checkout this package belongs to (the folder holding ``_toc.yml``), if any."""
    candidates = [Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parent.parent]
    for folder in candidates:
        if (folder / "_toc.yml").is_file() and (folder / "xaiutils").is_dir():
            return folder
    return None


def runs_root() -> Path:
    """Where run folders go: ``$XAIBENCH_RUNS`` if set, else ``runs/`` in the checkout, else ``./runs``."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV])
    root = project_root()
    return (root if root is not None else Path.cwd()) / "runs"


def default_out_dir(preset: str, step: str) -> Path:
    """The run folder a notebook uses when no ``out_dir`` is given: ``<runs root>/<preset>/<step>``."""
    return runs_root() / preset / step


def notebooks_dir() -> Path:
    root = project_root()
    if root is None:
        raise FileNotFoundError("no repository checkout found (a folder with _toc.yml and xaiutils/)")
    return root / "notebooks"


def available_notebooks() -> list[str]:
    try:
        return sorted(path.stem for path in notebooks_dir().glob("[0-9]*.py"))
    except FileNotFoundError:
        return []


def find_notebook(name: str | os.PathLike) -> Path:
    """Resolve a notebook given as a path or as a name in ``notebooks/`` (``00_overview`` or ``00_overview.py``)."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".py")
    try:
        candidate = notebooks_dir() / f"{stem}.py"
    except FileNotFoundError:
        candidate = None
    if candidate is not None and candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"notebook {str(name)!r} not found; available notebooks: {', '.join(available_notebooks()) or 'none'}"
    )


def move_into_place(partial: Path, target: Path) -> None:
    """Rename the finished folder ``partial`` to ``target``; an existing ``target`` is moved aside first and
    deleted only after the swap, so at every moment ``target`` is either the old or the new complete folder."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
        os.replace(partial, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, target)


def write_atomic(path: str | os.PathLike, content: str | bytes) -> None:
    """Write ``content`` to ``path`` through a temporary name and a rename, so no reader sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        if isinstance(content, bytes):
            partial.write_bytes(content)
        else:
            partial.write_text(content)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def parse_value(text: str) -> Any:
    """Parse a ``-p NAME VALUE`` value as YAML (``3`` → int, ``0.5`` → float, ``[1, 2]`` → list, ``null``)."""
    return yaml.safe_load(text)


def read_notebook(path: Path):
    """Read a py:percent notebook into an nbformat object (``.ipynb`` files are read as they are)."""
    import jupytext

    fmt = "ipynb" if path.suffix == ".ipynb" else NOTEBOOK_FORMAT
    return jupytext.read(path, fmt=fmt)


def notebook_parameters(notebook) -> list[str]:
    """Names assigned in the cell tagged ``parameters`` (raises if the notebook has no such cell)."""
    import ast

    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            names = []
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                names += [target.id for target in targets if isinstance(target, ast.Name)]
            return names
    raise ValueError("notebook has no code cell tagged 'parameters'")


def run_notebook(
    notebook: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    preset: str = "smoke",
    parameters: Mapping[str, Any] | None = None,
    kernel_name: str = "python3",
    overwrite: bool = False,
    progress: bool = True,
    cwd: str | os.PathLike | None = None,
) -> Path:
    """Execute ``notebook`` with papermill into the run folder ``out_dir`` and return that folder.

    ``preset`` and ``out_dir`` are passed to the notebook as parameters, next to ``parameters``. Unknown
    parameter names are refused before anything runs. The folder appears only if every cell succeeded; on
    failure the executed notebook is kept beside it as ``<out_dir>.failed.ipynb`` for inspection.
    """
    import nbformat
    import papermill

    if preset not in preset_names():
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(preset_names())}")
    path = find_notebook(notebook)
    nb = read_notebook(path)
    valid = notebook_parameters(nb)
    parameters = dict(parameters or {})
    unknown = sorted(set(parameters) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for notebook {path.stem}; "
            f"valid parameters: {', '.join(valid)}"
        )
    for required in ("preset", "out_dir"):
        if required not in valid:
            raise ValueError(f"notebook {path.stem} has no {required!r} parameter; every notebook needs one")

    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(preset, path.stem)
    out_dir = out_dir.absolute()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"run folder {out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    partial.chmod(0o755)  # mkdtemp makes it private; a run folder is meant to be shared like any other
    failed_copy = out_dir.with_name(out_dir.name + ".failed.ipynb")

    # A bare py:percent file carries no kernel; papermill needs one to know the language.
    nb.metadata.setdefault("kernelspec", {"name": kernel_name, "display_name": kernel_name, "language": "python"})
    nb.metadata.setdefault("language_info", {"name": "python"})
    source = partial / f"{path.stem}.source.ipynb"
    nbformat.write(nb, source)
    executed = partial / f"{path.stem}.ipynb"
    injected = {**parameters, "preset": preset, "out_dir": str(partial)}
    started = time.time()
    try:
        papermill.execute_notebook(
            str(source),
            str(executed),
            parameters=injected,
            kernel_name=kernel_name,
            progress_bar=progress,
            cwd=str(cwd) if cwd is not None else None,
            # ipykernel 7 logs a warning about TCP transport at every start; in a notebook that runs other
            # notebooks (the grid), it lands in the rendered book once per cell. Errors still come through.
            extra_arguments=["--log-level=ERROR"],
        )
    except BaseException:
        if executed.exists():
            shutil.copyfile(executed, failed_copy)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    source.unlink()
    record = {
        "notebook": path.stem,
        "preset": preset,
        "parameters": parameters,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 2),
        "versions": versions(),
    }
    (partial / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")

    move_into_place(partial, out_dir)
    failed_copy.unlink(missing_ok=True)
    return out_dir


# ---------------------------------------------------------------------------------------------------------------
# The fine-tuning grid: source × n_pretrained_blocks × seed, one papermill run of notebook 3 per cell.

GRID_KEYS = ("sources", "n_pretrained_blocks", "seeds")


def grid_cells(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Expand a grid spec into cells ``{"source", "n_pretrained_blocks", "seed"}``.

    ``n_pretrained_blocks`` is either one list for every source or a mapping source → list (so that the
    ``none`` source, which has nothing to transfer, can be run at k = 0 only).
    """
    missing = [key for key in GRID_KEYS if key not in spec]
    if missing:
        raise ValueError(f"grid spec lacks {', '.join(missing)}; a grid needs {', '.join(GRID_KEYS)}")
    unknown = sorted(set(spec) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"unknown grid key(s) {', '.join(unknown)}; valid keys: {', '.join(GRID_KEYS)}")
    cells = []
    for source in spec["sources"]:
        ks = spec["n_pretrained_blocks"]
        if isinstance(ks, Mapping):
            if source not in ks:
                raise ValueError(f"n_pretrained_blocks gives no values for source {source!r}")
            ks = ks[source]
        for k in ks:
            for seed in spec["seeds"]:
                cells.append({"source": source, "n_pretrained_blocks": int(k), "seed": int(seed)})
    return cells


def cell_name(cell: Mapping[str, Any]) -> str:
    return f"{cell['source']}-k{cell['n_pretrained_blocks']}-s{cell['seed']}"


INPUTS_FILE = "inputs.json"


def input_fingerprint(preset: str, parameters: Mapping[str, Any],
                      notebook: str | os.PathLike = "03_finetune") -> dict[str, Any]:
    """What a grid cell depends on besides its own parameters, by content.

    - ``dataset_hash`` and ``mri_checkpoint_sha256``: the dataset's content hash and the MRI checkpoint's SHA-256.
      Paths alone are not enough: re-running notebook 1 or 2 rewrites the same paths with other contents.
    - ``finetune_config``: the fine-tuning settings after the preset is applied, so that a changed preset value
      (not only a changed papermill parameter) runs the cell again.
    - ``code_sha256``: the notebook's text and the source of ``xaiutils``, so that a cell trained by older code is
      not taken for a current one.

    A missing input is recorded as ``None``.
    """
    import hashlib

    from .presets import resolve

    data_dir = Path(parameters.get("data_dir") or default_out_dir(preset, "01_data") / "dataset")
    checkpoint = Path(parameters.get("mri_checkpoint") or default_out_dir(preset, "02_pretrain_mri") / "model.pt")
    card = data_dir / "card.json"
    dataset_hash = json.loads(card.read_text()).get("content_hash") if card.is_file() else None
    checkpoint_hash = hashlib.sha256(checkpoint.read_bytes()).hexdigest() if checkpoint.is_file() else None
    keys = resolve("finetune", preset)
    finetune_config = resolve("finetune", preset, **{key: parameters.get(key) for key in keys})
    code = hashlib.sha256(find_notebook(notebook).read_bytes())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        code.update(source.name.encode() + b"\0" + source.read_bytes())
    return {"dataset_hash": dataset_hash, "mri_checkpoint_sha256": checkpoint_hash,
            "finetune_config": json.loads(json.dumps(finetune_config, default=str)), "code_sha256": code.hexdigest()}


def is_finished(folder: Path, parameters: Mapping[str, Any], inputs: Mapping[str, Any] | None = None) -> bool:
    """A run folder is finished when it holds ``run.json`` recorded with exactly these parameters (and, when
    ``inputs`` is given, ``inputs.json`` recorded with exactly these input fingerprints)."""
    record = folder / "run.json"
    if not record.is_file():
        return False
    recorded = json.loads(record.read_text()).get("parameters")
    if recorded != json.loads(json.dumps(dict(parameters), default=str)):
        return False
    if inputs is None:
        return True
    inputs_record = folder / INPUTS_FILE
    return inputs_record.is_file() and json.loads(inputs_record.read_text()) == dict(inputs)


def run_grid(
    preset: str = "smoke",
    out_dir: str | os.PathLike | None = None,
    spec: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    notebook: str | os.PathLike = "03_finetune",
    progress: bool = True,
):
    """Run every grid cell that is not finished yet, then collect ``accuracy.csv``; return that table.

    Each cell is one run folder ``<out_dir>/<source>-k<k>-s<seed>``, built atomically by :func:`run_notebook`.
    A cell whose folder holds ``run.json`` with the same parameters, and ``inputs.json`` with the same
    fingerprint (:func:`input_fingerprint`: inputs, resolved settings and code), is skipped, so an interrupted grid
    resumes where it stopped; a cell recorded with other parameters or another fingerprint is run again and
    replaced. ``parameters`` are passed to every cell (e.g. ``epochs``, ``data_dir``).
    """
    import pandas as pd
    from tqdm import tqdm

    from .presets import resolve

    spec = dict(spec) if spec is not None else resolve("grid", preset)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(preset, "03_finetune") / "grid"
    out_dir = out_dir.absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.glob(".*.partial-*"):  # an interrupted run's temporary folder
        shutil.rmtree(leftover, ignore_errors=True)

    cells = grid_cells(spec)
    inputs = input_fingerprint(preset, dict(parameters or {}), notebook)
    executed = []
    for cell in tqdm(cells, desc="grid", disable=not progress):
        cell_parameters = {**dict(parameters or {}), **cell, "grid": False}
        folder = out_dir / cell_name(cell)
        if is_finished(folder, cell_parameters, inputs):
            continue
        run_notebook(notebook, out_dir=folder, preset=preset, parameters=cell_parameters, overwrite=True,
                     progress=False)
        # Written after the folder is in place: a crash in between leaves the cell unfinished, so it runs again.
        write_atomic(folder / INPUTS_FILE, json.dumps(inputs, indent=2) + "\n")
        executed.append(cell_name(cell))

    rows = []
    for cell in cells:
        sidecar = json.loads((out_dir / cell_name(cell) / "model.json").read_text())
        rows.append({**cell, "run": cell_name(cell), "model": sidecar["config"].get("model"),
                     **{f"test_{key}": value for key, value in sidecar["metrics"]["test"].items()},
                     "val_accuracy": sidecar["metrics"]["val"]["accuracy"],
                     "best_epoch": sidecar["history"]["best_epoch"], "train_seconds": sidecar["history"]["seconds"]})
    table = pd.DataFrame(rows)
    write_atomic(out_dir / "accuracy.csv", table.to_csv(index=False))
    table.attrs["executed"] = executed
    return table
