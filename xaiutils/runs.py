"""Run folders and the papermill runner behind ``python -m xaiutils run``.

A *run folder* holds one executed notebook (``<name>.ipynb``), everything that notebook wrote, and ``run.json``
(notebook, preset, parameters, timing, package versions). It is built under a temporary name and renamed into
place only when the notebook finished without error, so a crash never leaves a folder that looks complete.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from . import versions
from ._io import (  # noqa: F401  (re-exported: the names runs gave them before)
    STAMP_FILE,
    file_stamp,
    move_into_place,
    new_partial_folder,
    signals_deferred,
    stamp_matches,
    write_atomic,
    write_stamp,
)
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


# ---------------------------------------------------------------------------------------------------------------
# Locks: one writer per run folder. A folder ``NAME`` is built as ``.NAME.partial-*`` beside it while its writer
# holds an exclusive ``flock`` on the file ``.NAME.lock``. The operating system drops the lock when its holder
# dies, however it dies (SIGKILL, power loss of a client aside), so a temporary folder whose lock can be taken is
# a dead leftover, and only those are deleted. Lock files stay in place: waiters must lock the same inode.
#
# The lock is ``fcntl.flock`` from the standard library where it exists. The ``filelock`` package does the same
# portably, but importing it costs about 0.1 s of CPU, which is 10 % of a grid run that skips every cell; it is
# used only where ``fcntl`` is missing (Windows).

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_POLL_SECONDS = 0.2


class FolderBusy(RuntimeError):
    """Another live process is writing this run folder."""


def lock_file(target: str | os.PathLike) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def _lock_owner(path: Path) -> str:
    try:
        owner = path.read_text().strip()
    except OSError:
        owner = ""
    return f"process {owner}" if owner.isdigit() else "another process"


def _note_owner(fd: int) -> None:
    """Write this process's PID into the lock file it holds (fixed width, so no truncation; skipped when it is
    there already: a write costs milliseconds on a journaling file system). Waiters never write to it."""
    mine = f"{os.getpid():>10}\n".encode()
    with contextlib.suppress(OSError):
        if os.pread(fd, 64, 0) != mine:
            os.pwrite(fd, mine, 0)


def _busy(target, path: Path) -> FolderBusy:
    return FolderBusy(f"{Path(target)} is being written by {_lock_owner(path)} right now; wait for it to finish, "
                      f"or stop it, then run again")


@contextlib.contextmanager
def folder_lock(target: str | os.PathLike, wait: float | None = 0) -> Iterator[None]:
    """Hold the lock of run folder ``target`` (the file ``.NAME.lock`` beside it) for the ``with`` block.

    ``wait``: seconds to wait for another holder (``None``: as long as it takes); then :class:`FolderBusy`.
    The lock belongs to this open file: a second ``folder_lock`` of the same folder in the same process waits
    too. The holder's PID is written into the lock file, for the messages of those who wait.
    """
    path = lock_file(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - Windows
        from filelock import FileLock, Timeout

        lock = FileLock(str(path), timeout=-1 if wait is None else wait)
        try:
            lock.acquire()
        except Timeout:
            raise _busy(target, path) from None
        try:
            yield
        finally:
            lock.release()
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise _busy(target, path) from None
                time.sleep(LOCK_POLL_SECONDS if deadline is None else
                           max(0.0, min(LOCK_POLL_SECONDS, deadline - time.monotonic())))
        _note_owner(fd)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def remove_leftovers(target: str | os.PathLike) -> list[Path]:
    """Delete the temporary folders an interrupted writer of ``target`` left beside it (``.NAME.partial-*``,
    ``.NAME.old-*``; a folder moved aside by a swap that was killed half-way is first moved back when ``target``
    is missing). Call only while holding :func:`folder_lock` of ``target``: then no live writer owns them."""
    target = Path(target)
    pattern = glob.escape(f".{target.name}")
    found = [*target.parent.glob(pattern + ".partial-*"), *target.parent.glob(pattern + ".old-*")]
    for leftover in found:
        moved_aside = leftover / target.name
        if ".old-" in leftover.name and moved_aside.is_dir() and not target.exists():
            os.replace(moved_aside, target)  # killed mid-swap: the old folder is the only complete one; restore it
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return found


def remove_dead_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Delete every temporary run folder in ``folder`` whose writer is gone (its lock can be taken now);
    those of live writers stay."""
    removed = []
    for leftover in sorted([*Path(folder).glob(".*.partial-*"), *Path(folder).glob(".*.old-*")]):
        name = leftover.name[1:].rsplit(".partial-" if ".partial-" in leftover.name else ".old-", 1)[0]
        if not leftover.is_dir() or not name:
            continue
        try:
            with folder_lock(leftover.with_name(name), wait=0):
                removed += remove_leftovers(leftover.with_name(name))
        except FolderBusy:
            continue
    return removed


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM or SIGHUP, so that the clean-up of an interrupted run (the same as
    for Ctrl-C) takes place."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


@contextlib.contextmanager
def terminate_like_interrupt(signals=("SIGTERM", "SIGHUP")) -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (a ``KeyboardInterrupt``), so temporary
    folders are removed as after Ctrl-C. A second signal during the clean-up is ignored."""
    previous = {}

    def handler(signum, frame):
        for name in signals:  # let the clean-up finish
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        raise Terminated(signum)

    for name in signals:
        if hasattr(signal, name):
            previous[name] = signal.signal(getattr(signal, name), handler)
    try:
        yield
    finally:
        for name, old in previous.items():
            signal.signal(getattr(signal, name), old)


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
    from .data import load_benchmark  # imports torch: only when the data must be read

    return load_benchmark(data_dir, verify=True).card["content_hash"]


def parse_value(text: str, name: str | None = None) -> Any:
    """Parse a ``-p NAME VALUE`` value as YAML (``3`` → int, ``0.5`` → float, ``[1, 2]`` → list, ``null``).
    Raises a one-line ``ValueError`` naming the parameter when ``text`` is not valid YAML."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        label = f"-p {name} " if name else ""
        raise ValueError(f"{label}{text!r} is not a valid YAML value ({problem}); write a number, a list like "
                         f"[1, 2], null, or quote text") from None
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(text.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as text; everyone means the number
    return value


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def read_notebook(path: Path):
    """Read a py:percent notebook into an nbformat object (``.ipynb`` files are read as they are)."""
    import jupytext

    fmt = "ipynb" if path.suffix == ".ipynb" else NOTEBOOK_FORMAT
    return jupytext.read(path, fmt=fmt)


_NO_LITERAL = object()  # a parameter whose default is an expression, not a literal: its type is not checked


def notebook_parameter_defaults(notebook) -> dict[str, Any]:
    """``{name: default}`` of the cell tagged ``parameters``, in order; a default that is not a literal is
    recorded as an opaque marker. Raises if the notebook has no such cell."""
    import ast

    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            defaults: dict[str, Any] = {}
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                value = getattr(node, "value", None)
                try:
                    default = ast.literal_eval(value) if value is not None else _NO_LITERAL
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    default = _NO_LITERAL
                for target in targets:
                    if isinstance(target, ast.Name):
                        defaults[target.id] = default
            return defaults
    raise ValueError("notebook has no code cell tagged 'parameters'")


def notebook_parameters(notebook) -> list[str]:
    """Names assigned in the cell tagged ``parameters`` (raises if the notebook has no such cell)."""
    return list(notebook_parameter_defaults(notebook))


def _kind(value: Any) -> str | None:
    """The type class a parameter value is checked against."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "mapping"
    return None


_KIND_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "text",
               "list": "a list like [1, 2]", "mapping": "a mapping like {a: 1}"}


def _fits(value: Any, expected: str) -> bool:
    got = _kind(value)
    if expected == "float":
        return got in ("int", "float")
    if expected == "list":
        return got == "list"
    return got == expected


def expected_parameter_types(notebook, preset: str) -> dict[str, tuple[str, Any, str]]:
    """``{name: (kind, example, where)}`` for the parameters whose type is known: from the parameter cell's
    literal default, else (a ``None`` default) from the value of that name in the preset, when every section of
    the preset that has the name agrees on its type."""
    from .presets import PRESETS

    expected = {}
    for name, default in notebook_parameter_defaults(notebook).items():
        if default is _NO_LITERAL:
            continue
        if default is not None:
            kind = _kind(default)
            if kind is not None:
                expected[name] = (kind, default, "the notebook's default")
            continue
        found = [section[name] for section in PRESETS.get(preset, {}).values()
                 if isinstance(section, Mapping) and name in section]
        kinds = {_kind(value) for value in found}
        if len(kinds) == 1 and None not in kinds:
            expected[name] = (kinds.pop(), found[0], f"the {preset} preset's value")
    return expected


def check_parameter_types(notebook, parameters: Mapping[str, Any], preset: str, label: str = "") -> None:
    """Refuse, before anything runs, a parameter whose type differs from its declared default's (or, for a
    ``None`` default, from the preset's value). ``None`` is always accepted (it means "the preset's value");
    an integer is accepted for a number; list elements are checked when the example's elements share one type."""
    expected = expected_parameter_types(notebook, preset)
    for name, value in parameters.items():
        if value is None or name not in expected:
            continue
        kind, example, where = expected[name]
        ok = _fits(value, kind)
        if ok and kind == "list" and len(example) > 0:
            element_kinds = {_kind(item) for item in example}
            if len(element_kinds) == 1 and None not in element_kinds:
                element = element_kinds.pop()
                ok = all(_fits(item, element) for item in value)
        if not ok:
            shown = json.dumps(list(example) if isinstance(example, tuple) else example, default=str)
            raise ValueError(
                f"parameter {name}{label} must be {_KIND_WORDS[kind]} ({where} is {shown}), got {value!r}; "
                f"pass e.g. -p {name} {shown}"
            )


def _prepare_notebook(notebook, preset: str, parameters: Mapping[str, Any] | None, label: str = ""):
    """Find and read ``notebook`` and check ``parameters`` (names and types) against its parameter cell."""
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
    check_parameter_types(nb, parameters, preset, label=label or f" of notebook {path.stem}")
    return path, nb, parameters


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
    parameter names, and values whose type differs from the parameter cell's default (or the preset's value),
    are refused before anything runs. The folder appears only if every cell succeeded; on failure the executed
    notebook is kept beside it as ``<out_dir>.failed.ipynb`` for inspection.

    While it runs, the process holds the folder's lock (:func:`folder_lock`): a second writer of the same folder
    stops at once with :class:`FolderBusy`. Temporary folders that an earlier, dead writer left are removed.
    """
    path, nb, parameters = _prepare_notebook(notebook, preset, parameters)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(preset, path.stem)
    out_dir = out_dir.absolute()
    with folder_lock(out_dir, wait=0):
        remove_leftovers(out_dir)
        return _execute(path, nb, out_dir, preset, parameters, kernel_name, overwrite, progress, cwd)


def _execute(path: Path, nb, out_dir: Path, preset: str, parameters: dict[str, Any], kernel_name: str,
             overwrite: bool, progress: bool, cwd) -> Path:
    """The body of :func:`run_notebook`; the caller holds the lock of ``out_dir``."""
    import nbformat
    import papermill

    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"run folder {out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    partial = new_partial_folder(out_dir)
    failed_copy = out_dir.with_name(out_dir.name + ".failed.ipynb")
    started = time.time()
    executed = partial / f"{path.stem}.ipynb"
    try:
        # A bare py:percent file carries no kernel; papermill needs one to know the language.
        nb.metadata.setdefault("kernelspec", {"name": kernel_name, "display_name": kernel_name,
                                              "language": "python"})
        nb.metadata.setdefault("language_info", {"name": "python"})
        source = partial / f"{path.stem}.source.ipynb"
        nbformat.write(nb, source)
        injected = {**parameters, "preset": preset, "out_dir": str(partial)}
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
    except BaseException as error:
        if executed.exists():
            shutil.copyfile(executed, failed_copy)
            if hasattr(error, "add_note") and not isinstance(error, KeyboardInterrupt):
                error.add_note(f"executed notebook kept as {failed_copy}")
        shutil.rmtree(partial, ignore_errors=True)
        raise
    failed_copy.unlink(missing_ok=True)
    return out_dir


def describe_failure(error: BaseException) -> str:
    """One line for an error from a notebook run: for a failing cell, the cell's error and where the executed
    notebook was kept, without papermill's traceback."""
    notes = [note for note in getattr(error, "__notes__", []) if note.startswith("executed notebook kept")]
    try:
        from papermill.exceptions import PapermillExecutionError
    except ImportError:  # pragma: no cover - papermill is a dependency
        PapermillExecutionError = ()  # noqa: N806
    if isinstance(error, PapermillExecutionError):
        cell = f" in cell {error.exec_count}" if getattr(error, "exec_count", None) else ""
        text = f"the notebook failed{cell}: {error.ename}: {str(error.evalue).splitlines()[0] if error.evalue else ''}"
    else:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return "; ".join([text, *notes])


# ---------------------------------------------------------------------------------------------------------------
# The fine-tuning grid: source × n_pretrained_blocks × seed, one papermill run of notebook 3 per cell.

GRID_KEYS = ("sources", "n_pretrained_blocks", "seeds")


def grid_cells(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Expand a grid spec into cells ``{"source", "n_pretrained_blocks", "seed"}``.

    ``n_pretrained_blocks`` is either one list for every source or a mapping source → list (so that the
    ``none`` source, which has nothing to transfer, can be run at k = 0 only).
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a grid spec must be a mapping with keys {', '.join(GRID_KEYS)}, got {spec!r}")
    missing = [key for key in GRID_KEYS if key not in spec]
    if missing:
        raise ValueError(f"grid spec lacks {', '.join(missing)}; a grid needs {', '.join(GRID_KEYS)}")
    unknown = sorted(set(spec) - set(GRID_KEYS) - {"workers"})  # workers: how many cells run at once
    if unknown:
        raise ValueError(f"unknown grid key(s) {', '.join(unknown)}; valid keys: {', '.join(GRID_KEYS)}, workers")

    def integers(values, what: str) -> list[int]:
        if not isinstance(values, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ValueError(f"grid {what} must be a list of non-negative integers, got {values!r}")
        return [int(v) for v in values]

    sources = spec["sources"]
    if not isinstance(sources, (list, tuple)) or not sources or not all(isinstance(s, str) for s in sources):
        raise ValueError(f"grid sources must be a non-empty list of names (imagenet, mri, none), got {sources!r}")
    seeds = integers(spec["seeds"], "seeds")
    cells = []
    for source in sources:
        ks = spec["n_pretrained_blocks"]
        if isinstance(ks, Mapping):
            if source not in ks:
                raise ValueError(f"n_pretrained_blocks gives no values for source {source!r}")
            ks = ks[source]
        for k in integers(ks, f"n_pretrained_blocks of source {source!r}"):
            for seed in seeds:
                cells.append({"source": source, "n_pretrained_blocks": k, "seed": seed})
    return cells


def read_yaml_file(path: str | os.PathLike, what: str, missing_hint: str) -> Any:
    """The content of the YAML file ``path``; one-line errors name ``what`` it is (e.g. "grid file") and the file:
    a missing file (with ``missing_hint``: what to do instead), or invalid YAML (with its line and problem)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; {missing_hint}")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{what} {path} is not valid YAML{where} ({problem})") from None


def read_grid_file(path: str | os.PathLike) -> dict[str, Any]:
    """A grid spec from a YAML file, with one-line errors naming the file."""
    spec = read_yaml_file(path, "grid file", f"write a YAML file with {', '.join(GRID_KEYS)}, or leave --grid-file "
                          "out to use the preset's grid")
    try:
        grid_cells(spec)
    except ValueError as error:
        raise ValueError(f"grid file {path}: {error}") from None
    return spec


def cell_name(cell: Mapping[str, Any]) -> str:
    return f"{cell['source']}-k{cell['n_pretrained_blocks']}-s{cell['seed']}"


INPUTS_FILE = "inputs.json"


def grid_inputs(preset: str, parameters: Mapping[str, Any]) -> tuple[Path, Path]:
    """The dataset folder and MRI checkpoint a fine-tuning cell reads (``data_dir`` and ``mri_checkpoint``, or
    the preset's run folders of notebooks 1 and 2)."""
    data_dir = Path(parameters.get("data_dir") or default_out_dir(preset, "01_data") / "dataset")
    checkpoint = Path(parameters.get("mri_checkpoint") or default_out_dir(preset, "02_pretrain_mri") / "model.pt")
    return data_dir, checkpoint


def input_fingerprint(preset: str, parameters: Mapping[str, Any],
                      notebook: str | os.PathLike = "03_finetune") -> dict[str, Any]:
    """What a grid cell depends on besides its own parameters, by content.

    - ``dataset_hash`` and ``mri_checkpoint_sha256``: the dataset's content hash and the MRI checkpoint's SHA-256.
      Paths alone are not enough: re-running notebook 1 or 2 rewrites the same paths with other contents. The
      dataset's hash is checked against its data (:func:`dataset_hash`), so a dataset changed after its card was
      written raises ``ValueError`` instead of passing for the old one.
    - ``finetune_config``: the fine-tuning settings after the preset is applied, so that a changed preset value
      (not only a changed papermill parameter) runs the cell again.
    - ``code_sha256``: the notebook's text and the source of ``xaiutils``, so that a cell trained by older code is
      not taken for a current one.

    A missing input is recorded as ``None``.
    """
    import hashlib

    from .presets import resolve

    data_dir, checkpoint = grid_inputs(preset, parameters)
    dataset = dataset_hash(data_dir) if (data_dir / "card.json").is_file() else None
    checkpoint_hash = hashlib.sha256(checkpoint.read_bytes()).hexdigest() if checkpoint.is_file() else None
    keys = resolve("finetune", preset)
    finetune_config = resolve("finetune", preset, **{key: parameters.get(key) for key in keys})
    code = hashlib.sha256(find_notebook(notebook).read_bytes())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        code.update(source.name.encode() + b"\0" + source.read_bytes())
    return {"dataset_hash": dataset, "mri_checkpoint_sha256": checkpoint_hash,
            "finetune_config": json.loads(json.dumps(finetune_config, default=str)), "code_sha256": code.hexdigest()}


def check_grid_inputs(preset: str, parameters: Mapping[str, Any], cells) -> None:
    """Before any cell starts: the dataset must exist, and the MRI checkpoint too when a cell pre-trains on MRI.
    The errors name the command that makes the missing input. (That the dataset's data match its card is checked
    by :func:`input_fingerprint`, which the grid computes before any cell starts as well.)"""
    data_dir, checkpoint = grid_inputs(preset, parameters)
    if not (data_dir / "card.json").is_file():
        raise FileNotFoundError(
            f"the grid needs a dataset, and {data_dir} holds none (card.json is missing); make it first: "
            f"python -m xaiutils run 01_data --preset {preset}"
            + ("" if parameters.get("data_dir") is None else " --out <folder> (then -p data_dir <folder>/dataset)"))
    if any(cell["source"] == "mri" for cell in cells) and not checkpoint.is_file():
        raise FileNotFoundError(
            f"the grid's 'mri' cells need the MRI checkpoint {checkpoint}, which does not exist; make it first: "
            f"python -m xaiutils run 02_pretrain_mri --preset {preset}"
            + ("" if parameters.get("mri_checkpoint") is None else " (or pass -p mri_checkpoint FILE)"))


def is_finished(folder: Path, parameters: Mapping[str, Any], inputs: Mapping[str, Any] | None = None) -> bool:
    """A run folder is finished when it holds ``run.json`` recorded with exactly these parameters (and, when
    ``inputs`` is given, ``inputs.json`` recorded with exactly these input fingerprints)."""
    record = folder / "run.json"
    if not record.is_file():
        return False
    try:
        recorded = json.loads(record.read_text()).get("parameters")
    except (ValueError, AttributeError):
        return False  # a damaged record: the cell runs again
    if recorded != json.loads(json.dumps(dict(parameters), default=str)):
        return False
    if inputs is None:
        return True
    inputs_record = folder / INPUTS_FILE
    try:
        return inputs_record.is_file() and json.loads(inputs_record.read_text()) == dict(inputs)
    except ValueError:
        return False


def check_workers(workers) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
    return workers


@contextlib.contextmanager
def kernel_threads(threads: int) -> Iterator[None]:
    """Within the block, kernels started from this process use ``threads`` threads (OpenMP and MKL, which torch
    reads at import); the caller's environment is restored afterwards."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    previous = {name: os.environ.get(name) for name in names}
    os.environ.update({name: str(threads) for name in names})
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_grid_cell(folder: Path, cell_parameters: dict[str, Any], inputs: Mapping[str, Any], preset: str,
                  prepare, wait: float | None) -> bool:
    """Run one grid cell into ``folder`` under its lock, unless it is finished; whether it ran.

    ``prepare(cell_parameters)`` gives ``(path, notebook)``. Raises :class:`FolderBusy` when another live process
    holds the lock beyond ``wait`` seconds."""
    with folder_lock(folder, wait=wait):
        if is_finished(folder, cell_parameters, inputs):
            return False
        path, nb = prepare(cell_parameters)
        remove_leftovers(folder)
        _execute(path, nb, folder, preset, cell_parameters, "python3", True, False, None)
        # Written after the folder is in place: a crash in between leaves the cell unfinished, so it runs again.
        write_atomic(folder / INPUTS_FILE, json.dumps(inputs, indent=2) + "\n")
        return True


def run_grid(
    preset: str = "smoke",
    out_dir: str | os.PathLike | None = None,
    spec: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    notebook: str | os.PathLike = "03_finetune",
    progress: bool = True,
    check_inputs: bool = True,
    workers: int | None = None,
    cluster=None,
    resources: Mapping[str, float] | None = None,
):
    """Run every grid cell that is not finished yet, then collect ``accuracy.csv``; return that table.

    Each cell is one run folder ``<out_dir>/<source>-k<k>-s<seed>``, built atomically by :func:`run_notebook`.
    A cell whose folder holds ``run.json`` with the same parameters, and ``inputs.json`` with the same
    fingerprint (:func:`input_fingerprint`: inputs, resolved settings and code), is skipped, so an interrupted grid
    resumes where it stopped; a cell recorded with other parameters or another fingerprint is run again and
    replaced. ``parameters`` are passed to every cell (e.g. ``epochs``, ``data_dir``).

    Before any cell starts, the grid spec, the parameters' names and types (before the first cell that must
    run) and (``check_inputs``) the inputs are checked: the dataset must exist and match its card by content
    (:func:`check_grid_inputs`, :func:`input_fingerprint`).

    Several processes may run the same grid folder: each cell is written under its lock (:func:`folder_lock`). A
    cell that another live process is writing is left to it and taken up after the other cells: this process
    waits for the lock, then skips the cell if the other process finished it, or runs it if that one failed.
    Only temporary folders whose writer is gone are deleted.

    ``workers`` cells run at once (default: the spec's ``workers``, else 1), each in its own kernel with
    ``cpu_count // workers`` threads, the slowest cells (fewest frozen blocks) first. On a CPU, two small models
    trained side by side with one thread each get more done than one at a time with two threads (whose threads
    wait on each other at every layer); the per-cell locks keep the workers, and other processes, apart.
    Results do not depend on ``workers``: every cell is seeded by its own parameters.

    ``cluster`` (a scheduler address, a cluster spec file, or a Dask client or cluster; see
    :mod:`xaiutils.cluster`): each cell that is not finished is one Dask task instead, asking for ``resources``
    (default: the spec's ``task_resources``, e.g. ``{"GPU": 1}``); ``workers`` is then ignored. The task takes the
    cell's lock in the worker that runs it, so the contract above holds on a cluster too (see
    :func:`xaiutils.cluster.run_cells`).
    """
    import pandas as pd
    from tqdm import tqdm

    from .presets import resolve

    spec = dict(spec) if spec is not None else resolve("grid", preset)
    workers = check_workers(spec.pop("workers", 1) if workers is None else workers)
    spec.pop("workers", None)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(preset, "03_finetune") / "grid"
    out_dir = out_dir.absolute()
    parameters = dict(parameters or {})
    cells = grid_cells(spec)
    if check_inputs:
        check_grid_inputs(preset, parameters, cells)
    inputs = input_fingerprint(preset, parameters, notebook)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(out_dir)

    executed = []
    prepared = []  # the notebook, read and its parameters checked once, before the first cell that must run
    preparing = threading.Lock()

    def prepare(cell_parameters):
        with preparing:
            if not prepared:
                prepared.extend(_prepare_notebook(notebook, preset, cell_parameters, label=" of the grid"))
        return prepared[0], prepared[1]

    def run_cell(cell, wait) -> None:
        cell_parameters = {**parameters, **cell, "grid": False}
        if run_grid_cell(out_dir / cell_name(cell), cell_parameters, inputs, preset, prepare, wait):
            executed.append(cell_name(cell))

    busy = []
    if cluster is not None:
        from .cluster import run_cells

        executed += run_cells(cluster, out_dir, [{**parameters, **cell, "grid": False} for cell in cells], inputs,
                              preset, prepare, resources=resources, progress=progress)
    elif workers == 1:
        for cell in tqdm(cells, desc="grid", disable=not progress):
            try:
                run_cell(cell, wait=0)
            except FolderBusy:
                busy.append(cell)
    else:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        # slowest first (fewest frozen blocks), so that no long cell starts last
        ordered = sorted(cells, key=lambda cell: cell["n_pretrained_blocks"])
        with kernel_threads(max(1, (os.cpu_count() or 1) // workers)), ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(run_cell, cell, 0): cell for cell in ordered}
            try:
                for future in tqdm(as_completed(futures), total=len(futures), desc="grid", disable=not progress):
                    try:
                        future.result()
                    except FolderBusy:
                        busy.append(futures[future])
            except BaseException:
                # a failed cell, Ctrl-C or a stop signal: start no further cell (the pool would otherwise run every
                # queued one before it lets go); the running ones finish or fail on their own
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    for cell in busy:
        print(f"grid: waiting for cell {cell_name(cell)}, which {_lock_owner(lock_file(out_dir / cell_name(cell)))}"
              " is writing", file=sys.stderr, flush=True)
        run_cell(cell, wait=None)

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
