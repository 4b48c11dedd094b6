"""The import contract of pyproject.toml ([tool.importlinter]): the package's layers, its executors and no cycles.

``make test`` runs ``lint-imports`` itself (the ``lint`` target); these tests run it too, and show that it fails
when a module imports from a layer above its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def lint_imports(project: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package and the pyproject.toml in ``project`` (its folder first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(project), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", "--no-logo"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


def copy_project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "xaiutils", tmp_path / "xaiutils", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_import_contract_holds():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    project = copy_project(tmp_path)
    low = project / "xaiutils" / "foundation" / "files.py"
    low.write_text(low.read_text() + "\n\ndef upward():\n    from xaiutils.analysis import stats  # deliberate\n\n"
                   "    return stats\n")
    result = lint_imports(project)
    assert result.returncode == 1, result.stdout
    assert "Layers, bottom-up: foundation, domain, execution, analysis, entry points BROKEN" in result.stdout
    assert "xaiutils.foundation is not allowed to import xaiutils.analysis" in result.stdout
    assert "xaiutils.foundation.files -> xaiutils.analysis.stats" in result.stdout


def test_a_cycle_inside_a_layer_breaks_the_contract(tmp_path):
    # paths is imported by grid; paths importing grid back closes a circle inside the execution layer
    project = copy_project(tmp_path)
    paths = project / "xaiutils" / "execution" / "paths.py"
    paths.write_text(paths.read_text() + "\n\ndef circle():\n    from xaiutils.execution import grid  # deliberate\n\n"
                     "    return grid\n")
    result = lint_imports(project)
    assert result.returncode == 1, result.stdout
    assert "No import cycles among the package's modules BROKEN" in result.stdout
    assert "in xaiutils.execution" in result.stdout and "- .paths -> .grid (1 import)" in result.stdout


def test_an_executor_that_knows_the_grid_breaks_the_contract(tmp_path):
    project = copy_project(tmp_path)
    cluster = project / "xaiutils" / "execution" / "cluster.py"
    cluster.write_text(cluster.read_text() + "\n\ndef cells():\n"
                       "    from xaiutils.execution import grid  # deliberate\n\n    return grid\n")
    result = lint_imports(project)
    assert result.returncode == 1, result.stdout
    assert "xaiutils.execution.cluster is not allowed to import xaiutils.execution.grid" in result.stdout
