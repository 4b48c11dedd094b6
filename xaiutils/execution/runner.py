"""The papermill runner behind ``python -m xaiutils run``: one notebook executed into one run folder.

A *run folder* holds one executed notebook (``<name>.ipynb``), everything that notebook wrote, and ``run.json``
(notebook, preset, parameters, timing, package versions). It is built under a temporary name and renamed into
place only when the notebook finished without error, so a crash never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xaiutils.execution.locks import folder_lock, remove_leftovers
from xaiutils.execution.params import prepare_notebook
from xaiutils.execution.paths import default_out_dir
from xaiutils.foundation.files import (
    check_writable,
    move_into_place,
    new_partial_folder,
    output_folder,
    write_atomic_with,
)
from xaiutils.foundation.versions import versions

RECORD_FILE = "run.json"  # written last into a run folder; with the executed notebook, what marks one


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
    are refused before anything runs, and so are an ``out_dir`` whose last part is ``..`` (:func:`output_folder`)
    and a folder that cannot be written (:func:`check_writable`). The folder appears only if every cell succeeded;
    on failure the executed notebook is kept beside it as ``<out_dir>.failed.ipynb`` for inspection.

    While it runs, the process holds the folder's lock (:func:`folder_lock`): a second writer of the same folder
    stops at once with :class:`FolderBusy`. Temporary folders that an earlier, dead writer left are removed.
    """
    path, nb, parameters = prepare_notebook(notebook, preset, parameters)
    # checked before the lock, the temporary folder or the kernel: all three go beside the run folder
    out_dir = (output_folder(out_dir, "--out") if out_dir is not None else
               output_folder(default_out_dir(preset, path.stem), f"the run folder named after notebook {path.name}"))
    check_writable(out_dir.parent, f"run folder {out_dir}")
    with folder_lock(out_dir, wait=0):
        remove_leftovers(out_dir)
        return execute(path, nb, out_dir, preset, parameters, kernel_name, overwrite, progress, cwd)


def execute(path: Path, nb, out_dir: Path, preset: str, parameters: dict[str, Any], kernel_name: str,
             overwrite: bool, progress: bool, cwd) -> Path:
    """The body of :func:`run_notebook`; the caller holds the lock of ``out_dir``."""
    import nbformat
    import papermill

    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"run folder {out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    if out_dir.exists():
        check_replaceable(out_dir)
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
        (partial / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
        move_into_place(partial, out_dir)
    except BaseException as error:
        kept = False
        if executed.is_file() and executed.stat().st_size > 0:
            try:  # through a temporary name: a full disk leaves no copy rather than a 0-byte one
                write_atomic_with(failed_copy, lambda temporary: shutil.copyfile(executed, temporary))
                kept = True
            except OSError:
                pass
        if kept and hasattr(error, "add_note") and not isinstance(error, KeyboardInterrupt):
            error.add_note(f"executed notebook kept as {failed_copy}")
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, RunNotWritten):
            raise RunNotWritten(_not_written(error, out_dir, kept and failed_copy)) from error
        raise
    failed_copy.unlink(missing_ok=True)
    return out_dir


class RunNotWritten(OSError):
    """A run folder that could not be written (a full disk, a read-only folder); the message (one line) names what
    could not be written and why, and says that nothing was left behind."""


def _not_written(error: OSError, out_dir: Path, kept) -> str:
    what = f"{error.filename}" if getattr(error, "filename", None) else f"the run folder {out_dir}"
    why = error.strerror or str(error) or type(error).__name__
    kept_text = f"the executed notebook was kept as {kept}" if kept else "no partial run folder or notebook was left"
    return " ".join(f"could not write {what} ({why}); {out_dir} was not written, {kept_text}; free space or "
                    "give another --out, and run it again".split())


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` is a run folder this runner wrote: it holds ``run.json`` and an executed notebook
    (``*.ipynb``) beside it. (``run.json`` itself may be damaged: the grid replaces such a cell.)"""
    return (folder.is_dir() and (folder / RECORD_FILE).is_file()
            and any(path.is_file() for path in folder.glob("*.ipynb")))


def check_replaceable(out_dir: Path) -> None:
    """Refuse, deleting nothing, to replace ``out_dir`` unless it is a run folder (:func:`is_run_folder`) or an
    empty folder: ``--overwrite`` must never delete a folder of the user's that only shares the name."""
    if out_dir.is_dir() and (is_run_folder(out_dir) or not any(out_dir.iterdir())):
        return
    why = ("it is a file, not a folder" if not out_dir.is_dir() else
           f"it holds no {RECORD_FILE} and executed notebook, as a run folder does")
    raise FileExistsError(f"--overwrite replaces only a run folder (one holding {RECORD_FILE} and the executed "
                          f"notebook) or an empty folder; {out_dir} is not a run folder ({why}); nothing was "
                          "deleted: give another --out, or move that folder away yourself")


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

