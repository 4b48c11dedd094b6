"""Run folders and the papermill runner behind ``python -m xaiutils run``: the names of :mod:`xaiutils.pipeline`
and :mod:`xaiutils._io`, re-exported under the module they were first written in.

Where each job lives now:

- the checkout, the runs root and the notebooks: :mod:`xaiutils.pipeline.paths`;
- folder locks, leftovers of dead writers, ``Terminated``: :mod:`xaiutils.pipeline.locks`;
- ``-p`` values, YAML files, notebook parameters and their checks: :mod:`xaiutils.pipeline.params`;
- ``run_notebook`` and ``describe_failure``: :mod:`xaiutils.pipeline.runner`;
- the dataset card and hash, a grid cell's inputs and fingerprint: :mod:`xaiutils.pipeline.inputs`;
- the grid (cells, grid files, ``run_grid``, ``kernel_threads``, ``check_workers``): :mod:`xaiutils.pipeline.grid`;
- atomic writes and stamps: :mod:`xaiutils._io`;
- what a fine-tuning run folder holds (``model.pt``, ``model.json``, ``predictions.csv``):
  :class:`xaiutils.run_record.RunRecord`.
"""

from __future__ import annotations

from ._io import (
    STAMP_FILE,
    file_stamp,
    move_into_place,
    new_partial_folder,
    signals_deferred,
    stamp_matches,
    write_atomic,
    write_stamp,
)
from .pipeline.grid import (
    GRID_KEYS,
    cell_name,
    check_workers,
    grid_cells,
    is_finished,
    kernel_threads,
    read_grid_file,
    run_grid,
    run_grid_cell,
)
from .pipeline.inputs import INPUTS_FILE, check_grid_inputs, dataset_hash, grid_inputs, input_fingerprint, read_card
from .pipeline.locks import (
    LOCK_POLL_SECONDS,
    FolderBusy,
    Terminated,
    folder_lock,
    lock_file,
    lock_owner,
    remove_dead_leftovers,
    remove_leftovers,
    terminate_like_interrupt,
)
from .pipeline.params import (
    NOTEBOOK_FORMAT,
    check_parameter_types,
    expected_parameter_types,
    notebook_parameter_defaults,
    notebook_parameters,
    parse_value,
    prepare_notebook,
    read_notebook,
    read_yaml_file,
)
from .pipeline.paths import (
    RUNS_ENV,
    available_notebooks,
    default_out_dir,
    find_notebook,
    notebooks_dir,
    project_root,
    runs_root,
)
from .pipeline.runner import describe_failure, execute, run_notebook

_lock_owner = lock_owner  # the name cluster.py used before the split

__all__ = [
    "GRID_KEYS", "INPUTS_FILE", "LOCK_POLL_SECONDS", "NOTEBOOK_FORMAT", "RUNS_ENV", "STAMP_FILE",
    "available_notebooks", "cell_name", "check_grid_inputs", "check_parameter_types", "check_workers",
    "dataset_hash", "default_out_dir", "describe_failure", "execute", "expected_parameter_types", "file_stamp",
    "find_notebook", "folder_lock", "FolderBusy", "grid_cells", "grid_inputs", "input_fingerprint", "is_finished",
    "kernel_threads", "lock_file", "lock_owner", "move_into_place", "new_partial_folder",
    "notebook_parameter_defaults", "notebook_parameters", "notebooks_dir", "parse_value", "prepare_notebook",
    "project_root", "read_card", "read_grid_file", "read_notebook", "read_yaml_file", "remove_dead_leftovers",
    "remove_leftovers", "run_grid", "run_grid_cell", "run_notebook", "runs_root", "signals_deferred",
    "stamp_matches", "terminate_like_interrupt", "Terminated", "write_atomic", "write_stamp",
]
