"""Issue 23 (reliability, second round), cases 10 to 14: errors a user meets are answered with one line naming
what is wrong, never a traceback: a read-only output folder, a full disk while a notebook is saved, a damaged run
file, a broken method file, a scheduler address that is not one.

One test (or a few) per numbered case of the issue; each failed on the code before the fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import test_evaluate  # the tests folder is on sys.path under pytest (rootdir import mode)
from test_reliability import ROOT

from xaiutils.__main__ import main
from xaiutils.execution.run_record import RunRecord

tiny_grid = test_evaluate.tiny_grid


def error_line(stderr: str) -> str:
    """The one ``error: ...`` line on stderr (a progress bar may precede it on the same line), with no traceback."""
    assert "Traceback" not in stderr, stderr
    found = [line[line.index("error: "):] for line in stderr.replace("\r", "\n").splitlines() if "error: " in line]
    assert len(found) == 1, f"expected one error line, got:\n{stderr}"
    return found[0]


# -------------------------------------------------------------------- case 10: a read-only output folder

READ_ONLY = 'folder="$1"; shift; mount --bind "$folder" "$folder" && mount -o remount,ro,bind "$folder" "$folder" ' \
            '&& exec "$@"'


def read_only_prefix(folder: Path) -> list[str] | None:
    """The command prefix that runs a command with ``folder`` mounted read-only, in a mount namespace of its own
    (``unshare -m``, or ``-rm`` for a user without privileges), or None where neither works. A real read-only file
    system: as root, ``chmod`` would not stop a write."""
    import shutil

    if shutil.which("unshare") is None:
        return None
    for unshare in (["unshare", "-m"], ["unshare", "-rm"]):
        prefix = [*unshare, "sh", "-c", READ_ONLY, "sh", str(folder)]
        try:
            probe = subprocess.run([*prefix, "sh", "-c", 'touch "$0/probe"', str(folder)], capture_output=True,
                                   timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode != 0 and b"Read-only file system" in probe.stderr and not (folder / "probe").exists():
            return prefix
    return None


def test_case10_a_read_only_output_folder_is_refused_naming_it_before_any_work(tiny_grid, tmp_path):
    """``run``, ``grid`` and ``evaluate`` into a folder on a read-only file system: one line naming the folder,
    before any work (``evaluate`` loaded nothing and called no method: it writes a mark when called)."""
    import os

    root, data_dir, _ = tiny_grid
    shared = Path(copy_run(tiny_grid, tmp_path)).parent  # a grid with accuracy.csv
    locked = tmp_path / "locked"
    locked.mkdir()
    prefix = read_only_prefix(locked)
    if prefix is None:
        pytest.skip("no way to mount a folder read-only here (unshare -m / -rm failed), and root ignores chmod")
    marks = tmp_path / "called"
    (tmp_path / "m.py").write_text(f"def m(model, images, target):\n    open({str(marks)!r}, 'w').close()\n"
                                   "    return images[:, 0]\n")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                   "XAIBENCH_RUNS": str(tmp_path / "runs")}
    commands = {
        "run": (["run", "00_overview", "--out", str(locked / "run")], f"run folder {locked / 'run'}"),
        "grid": (["grid", "--out", str(locked / "grid")], f"grid folder {locked / 'grid'}"),
        "evaluate": (["evaluate", "--method", f"{tmp_path / 'm.py'}:m", "--preset", "smoke", "--grid-dir",
                      str(shared), "--data-dir", str(data_dir), "--out", str(locked / "board")],
                     f"result folder {locked / 'board'}"),
    }
    # the three commands in one interpreter inside the read-only mount (one start of Python and torch, not three),
    # each with the command line's own entry point and its stderr kept apart
    script = textwrap.dedent(f"""\
        import contextlib, io, sys
        from pathlib import Path
        from xaiutils.__main__ import main
        for name, argv in {({name: argv for name, (argv, _) in commands.items()})!r}.items():
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                try:
                    code = main(argv)
                except SystemExit as stop:
                    code = stop.code
            Path({str(tmp_path)!r}, name + ".err").write_text(stderr.getvalue())
            Path({str(tmp_path)!r}, name + ".rc").write_text(str(code))
        """)
    subprocess.run([*prefix, sys.executable, "-c", script], cwd=ROOT, env=environment, timeout=300, check=True)
    for name, (_, what) in commands.items():
        stderr = (tmp_path / f"{name}.err").read_text()
        assert (tmp_path / f"{name}.rc").read_text().strip() == "2", (name, stderr[-2000:])
        assert error_line(stderr) == (f"error: cannot write {what}: {locked} is not writable (it is on a read-only "
                                      "file system); nothing was done: give --out a folder you can write to, or make "
                                      "that one writable"), name
    assert not marks.exists()  # evaluate stopped before it called the method
    assert list(locked.iterdir()) == [] and not (tmp_path / "runs").exists()


# ------------------------------------------------------------ case 12: a damaged model.json or predictions.csv


def copy_run(tiny_grid, tmp_path: Path) -> Path:
    import shutil

    root, _, _ = tiny_grid
    shutil.copytree(root / "grid", tmp_path / "grid")
    (tmp_path / "grid" / "accuracy.csv").write_text("run,test_accuracy\nnone-k0-s0,0.5\nnone-k0-s1,0.75\n")
    return tmp_path / "grid" / "none-k0-s0"


def test_case12_a_damaged_sidecar_is_named_with_how_to_regenerate_it(tiny_grid, tmp_path):
    run = copy_run(tiny_grid, tmp_path)
    (run / "model.json").write_text("")
    with pytest.raises(ValueError) as caught:
        RunRecord.read(run)
    message = str(caught.value)
    assert f"{run / 'model.json'} is damaged: not valid JSON (Expecting value: line 1 column 1 (char 0))" in message
    assert "python -m xaiutils grid" in message and "\n" not in message
    (run / "model.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match=r"model.json is damaged: it lacks history, metrics"):
        RunRecord.read(run)


def test_case12_an_empty_predictions_file_is_named_with_how_to_regenerate_it(tiny_grid, tmp_path):
    run = copy_run(tiny_grid, tmp_path)
    (run / "predictions.csv").write_bytes(b"")
    with pytest.raises(ValueError) as caught:
        RunRecord.read(run)
    message = str(caught.value)
    assert f"{run / 'predictions.csv'} is damaged: it is empty (0 bytes, no header row)" in message
    assert "python -m xaiutils grid" in message
    (run / "predictions.csv").write_text("image,split\n1,test\n")
    with pytest.raises(ValueError, match=r"predictions.csv is damaged: it lacks the column\(s\) label, "):
        RunRecord.read(run)
    assert RunRecord.read(run, predictions=False).config["seed"] == 0  # the sidecar alone still reads


def test_case12_evaluate_on_a_damaged_run_prints_one_line(tiny_grid, tmp_path, capsys):
    root, data_dir, _ = tiny_grid
    run = copy_run(tiny_grid, tmp_path)
    (run / "model.json").write_text("{")
    (tmp_path / "flat.py").write_text("def flat(model, images, target):\n    return images[:, 0] + 1.0\n")
    # the command line's own code, in this process (a new interpreter would only add seconds of imports)
    code = main(["evaluate", "--method", f"{tmp_path / 'flat.py'}:flat", "--preset", "smoke", "--grid-dir",
                 str(run.parent), "--data-dir", str(data_dir), "--out", str(tmp_path / "out"), "-p", "methods",
                 "[input]", "-p", "workers", "1"])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    line = error_line(stderr)
    assert line.startswith(f"error: {run / 'model.json'} is damaged: not valid JSON"), line


# ------------------------------------------- case 13: a method file that does not import, maps on another device


def test_case13_a_method_file_with_a_syntax_error_is_refused_naming_file_and_line(tiny_grid, tmp_path, capsys):
    _, data_dir, _ = tiny_grid
    grid = copy_run(tiny_grid, tmp_path).parent
    methods_file = tmp_path / "broken.py"
    methods_file.write_text("def flat(model, images, target):\n    return images[:, 0] +\n")
    code = main(["evaluate", "--method", f"{methods_file}:flat", "--preset", "smoke", "--grid-dir", str(grid),
                 "--data-dir", str(data_dir), "--out", str(tmp_path / "out"), "-p", "methods", "[input]", "-p",
                 "workers", "1"])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    line = error_line(stderr)
    assert line.startswith(f"error: method file {methods_file} cannot be imported (method 'flat'): SyntaxError at "
                           f"{methods_file}, line 2: invalid syntax"), line
    assert not (tmp_path / "out").exists()


def test_case13_a_missing_import_is_refused_naming_the_module(tmp_path):
    from xaiutils.domain import plugins

    (tmp_path / "needs.py").write_text("import not_installed_anywhere\n\n\ndef flat(model, images, target):\n"
                                       "    return images[:, 0]\n")
    entry = plugins.parse_entries([f"{tmp_path / 'needs.py'}:flat"])[0]
    with pytest.raises(plugins.InvalidMethod, match=r"it imports module 'not_installed_anywhere', which is not "
                                                    r"installed here"):
        plugins.load(entry)
    # the same through a package.module spec whose module imports a missing one
    (tmp_path / "user_pkg_needs.py").write_text("from not_installed_anywhere import x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        entry = plugins.parse_entries(["user_pkg_needs:flat"])[0]
        with pytest.raises(plugins.InvalidMethod, match=r"module 'user_pkg_needs' cannot be imported .*"
                                                        r"'not_installed_anywhere'"):
            plugins.load(entry)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("user_pkg_needs", None)


def test_case13_maps_on_another_device_are_moved_to_the_cpu_or_refused_naming_the_device():
    import numpy as np
    import torch

    from xaiutils.domain import plugins

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    images, targets = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    entry = {"name": "elsewhere", "spec": "x:elsewhere", "settings": {}}

    def on_meta(model, images, target):
        return torch.zeros(images.shape[0], 8, 8, device="meta")

    with pytest.raises(plugins.InvalidMethod, match=r"method 'elsewhere' returned maps on device meta that cannot be "
                                                    r"copied to the CPU"):
        plugins.call(on_meta, entry, model, images, targets)
    maps = plugins.call(lambda model, images, target: images[:, 0] * 2, entry, model, images, targets)
    assert isinstance(maps, np.ndarray) and maps.shape == (2, 8, 8)  # CPU maps are taken as they are


# ------------------------------------------------- case 14: a scheduler address that refuses, or is not Dask's


def unused_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def not_dask():
    """The address of a tiny TCP service that answers every connection with an HTTP error, as a web server
    would."""
    import socketserver
    import threading

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 3)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_case14_a_refusing_address_is_named_in_one_line_within_the_timeout():
    import time

    from xaiutils.execution.cluster import SchedulerUnreachable, connect

    address = f"tcp://127.0.0.1:{unused_port()}"
    started = time.monotonic()
    with pytest.raises(SchedulerUnreachable) as caught, connect(address, timeout=1):
        pass
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert message.startswith(f"cannot connect to the Dask scheduler at {address}: Timed out trying to connect"), \
        message
    assert "\n" not in message


def test_case14_a_service_that_is_not_dask_is_named_as_such(not_dask):
    from xaiutils.execution.cluster import SchedulerUnreachable, connect

    with pytest.raises(SchedulerUnreachable, match=rf"the service at {not_dask} does not answer as a Dask "
                                                   r"scheduler \(its reply is not Dask's protocol: MemoryError\)"):
        with connect(not_dask, timeout=2):
            pass


def test_case14_the_command_line_prints_one_line_for_a_service_that_is_not_dask(not_dask):
    # the command line's error handling around a connection, as grid --cluster and notebook 4 make it
    script = ("import sys\n"
              "from xaiutils.__main__ import _run_guarded\n"
              "from xaiutils.execution.cluster import connect\n"
              "def action():\n"
              "    with connect(sys.argv[1], timeout=2):\n"
              "        return 0\n"
              "sys.exit(_run_guarded(action))\n")
    result = subprocess.run([sys.executable, "-c", script, not_dask], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr).startswith(f"error: the service at {not_dask} does not answer as a Dask "
                                                "scheduler"), result.stderr


# ------------------------------------------------------ case 11: a full disk while papermill saves the notebook

TINY_NOTEBOOK = '# %% tags=["parameters"]\npreset = "smoke"\nout_dir = None\n\n# %%\nvalue = 1\n'


def test_case11_a_full_disk_while_the_notebook_is_saved_is_one_line_and_leaves_nothing(tmp_path, capsys,
                                                                                       monkeypatch):
    import errno
    import shutil

    import papermill.engines
    import papermill.execute

    notebook = tmp_path / "tiny.py"
    notebook.write_text(TINY_NOTEBOOK)
    written = []

    def disk_full(nb, path, *args, **kwargs):  # the first save fits, no later one
        written.append(path)
        if len(written) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        Path(path).write_text("{}")

    def copy_disk_full(source, target, *args, **kwargs):  # the copy of the executed notebook does not fit either
        Path(target).write_bytes(b"")
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(papermill.execute, "write_ipynb", disk_full)
    monkeypatch.setattr(papermill.engines, "write_ipynb", disk_full)  # the saves while cells run
    monkeypatch.setattr(shutil, "copyfile", copy_disk_full)
    out = tmp_path / "run"
    code = main(["run", str(notebook), "--out", str(out)])
    assert code == 1
    line = error_line(capsys.readouterr().err)
    assert line == (f"error: could not write the run folder {out} (No space left on device); {out} was not written, "
                    "no partial run folder or notebook was left; free space or give another --out, and run it again")
    left = sorted(path.name for path in tmp_path.iterdir() if not path.name.endswith(".lock"))
    assert left == ["tiny.py"], left  # no .partial-* folder, no 0-byte run.failed.ipynb
