"""Issue 23 (reliability, second round), cases 8, 9 and 19: stop signals end ``evaluate``'s worker pool at once and
leave no orphans, a user method that never returns is stopped by a per-batch time limit that names it, and a second
book build in the same checkout is refused while the first runs.

Real processes and real signals; each test failed on the code before its fix.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import test_evaluate  # the tests folder is on sys.path under pytest (rootdir import mode)
from test_reliability import ROOT

tiny_grid = test_evaluate.tiny_grid

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="real signals and process trees of Linux")


def write_accuracy(grid: Path) -> None:
    (grid / "accuracy.csv").write_text("run,test_accuracy\nnone-k0-s0,0.5\nnone-k0-s1,0.75\n")


def hanging_method(tmp_path: Path) -> str:
    """A method that answers at once in the process that calls it first (``evaluate``'s check of the method) and
    never returns anywhere else (the pool's workers), where it leaves a file ``worker-PID`` first."""
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "hangs.py").write_text(textwrap.dedent(f"""\
        import os
        import time
        from pathlib import Path

        MARKS = Path({str(marks)!r})


        def hangs(model, images, target):
            first = MARKS / "first"
            if not first.exists():
                first.write_text(str(os.getpid()))
            if int(first.read_text()) != os.getpid():
                (MARKS / f"worker-{{os.getpid()}}").touch()
                while True:
                    time.sleep(0.05)
            return images[:, 0] + 1.0
        """))
    return f"{tmp_path / 'hangs.py'}:hangs"


def evaluate_command(tiny_grid, tmp_path, method: str, *extra: str) -> list[str]:
    root, data_dir, _ = tiny_grid
    write_accuracy(root / "grid")
    return [sys.executable, "-m", "xaiutils", "evaluate", "--method", method, "--preset", "smoke",
            "--grid-dir", str(root / "grid"), "--data-dir", str(data_dir), "--out", str(tmp_path / "board"),
            "-p", "methods", "[input]", "-p", "metrics", "[importance_mass_accuracy]", "-p", "n_test_images", "4",
            "-p", "resolution", "16", "-p", "selection", "all", "-p", "n_boot", "20", "-p", "sanity_images", "2",
            "-p", "sanity_stages", "1", *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "LOKY_MAX_CPU_COUNT": "1"}


def start_until_workers_hang(command, tmp_path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """Start ``command``; return it and its whole process tree once both pool workers run the hanging method."""
    with open(tmp_path / "stderr.txt", "w") as stderr:  # a file, not a pipe: orphans would hold a pipe open
        process = subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "marks").glob("worker-*"))) < 2:
        if process.poll() is not None:
            pytest.fail(f"evaluate ended early ({process.returncode}): {stderr_of(tmp_path)[-2000:]}")
        assert time.monotonic() < deadline, "the pool's workers never started the method"
        time.sleep(0.1)
    return process, psutil.Process(process.pid).children(recursive=True)


def stderr_of(tmp_path: Path) -> str:
    return (tmp_path / "stderr.txt").read_text()


def running(process: psutil.Process) -> bool:
    """True while ``process`` runs. A zombie has ended: it holds no memory, file or CPU, only its entry in the
    process table until the init process reaps it (which in some containers takes seconds)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_all_gone(processes: list[psutil.Process], within: float) -> None:
    deadline = time.monotonic() + within
    alive = [process for process in processes if running(process)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [process for process in alive if running(process)]
    for survivor in alive:
        survivor.kill()
    assert not alive, f"processes left running: {[p.pid for p in alive]}"


# ------------------------------------------------------------- case 8: stop signals end the worker pool, no orphans


def wait_or_fail(process, children, timeout: float, message: str) -> None:
    """Wait for ``process``; past ``timeout`` kill it and its children (no orphan outlives the test) and fail."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in children:
            child.kill()
        process.kill()
        pytest.fail(message)


@pytest.mark.parametrize("stop, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_case8_a_stop_signal_ends_evaluate_and_its_workers_within_seconds(tiny_grid, tmp_path, stop, code):
    command = evaluate_command(tiny_grid, tmp_path, hanging_method(tmp_path), "-p", "workers", "2")
    process, children = start_until_workers_hang(command, tmp_path)
    assert len([child for child in children if child.pid != process.pid]) >= 2
    sent = time.monotonic()
    os.kill(process.pid, stop)
    wait_or_fail(process, children, 10, f"evaluate still ran 10 s after {stop.name}")
    assert time.monotonic() - sent < 10
    err = stderr_of(tmp_path)
    assert process.returncode == code, err[-2000:]
    assert "Traceback" not in err
    assert_all_gone(children, within=5)
    assert not (tmp_path / "board").exists()  # nothing half-written
    assert [path.name for path in (tiny_grid[0] / "grid").iterdir() if path.name.startswith(".")] == []


def test_case8_the_workers_die_with_evaluate_when_it_is_killed(tiny_grid, tmp_path):
    command = evaluate_command(tiny_grid, tmp_path, hanging_method(tmp_path), "-p", "workers", "2")
    process, children = start_until_workers_hang(command, tmp_path)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert_all_gone(children, within=5)


# ----------------------------------------------------- case 9: a method that never returns is stopped, naming it


def test_case9_a_method_that_never_returns_is_stopped_at_its_time_limit_naming_it(tiny_grid, tmp_path, capsys):
    from xaiutils.__main__ import main

    (tmp_path / "forever.py").write_text("import time\n\n\ndef forever(model, images, target):\n"
                                         "    while True:\n        time.sleep(0.05)\n")
    command = evaluate_command(tiny_grid, tmp_path, f"{tmp_path / 'forever.py'}:forever", "--method-timeout", "1",
                               "-p", "workers", "1")
    assert command[1:4] == ["-m", "xaiutils", "evaluate"]
    import threading

    # the command line's code in this (main) thread, no new interpreter to start; should the limit fail, Ctrl-C
    # after 60 s ends it (exit code 130) instead of hanging the test run
    safety = threading.Timer(60, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    safety.start()
    try:
        code = main(command[3:])
    finally:
        safety.cancel()
    stderr = capsys.readouterr().err
    assert time.monotonic() - started < 30
    assert code == 2, stderr[-2000:]
    assert ("error: method 'forever' took longer than its limit of 1 s on a batch of 2 images and was stopped"
            in stderr), stderr[-2000:]
    assert "Traceback" not in stderr
    assert not (tmp_path / "board").exists()


def test_case9_the_limit_holds_in_the_pool_s_workers_and_ends_them(tiny_grid, tmp_path):
    command = evaluate_command(tiny_grid, tmp_path, hanging_method(tmp_path), "--method-timeout", "1",
                               "-p", "workers", "2")
    process, children = start_until_workers_hang(command, tmp_path)
    wait_or_fail(process, children, 30, "evaluate still waited for the method 30 s after the workers started it")
    err = stderr_of(tmp_path)
    assert process.returncode == 2, err[-2000:]
    assert "error: method 'hangs' took longer than its limit of 1 s on a batch of" in err, err[-2000:]
    assert_all_gone(children, within=5)
    assert not (tmp_path / "board").exists()


def tiny_model_and_images(n: int = 3):
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)).eval()
    return model, torch.rand(n, 1, 8, 8), torch.zeros(n, dtype=torch.long)


def test_case9_a_method_running_long_is_named_on_stderr_with_its_batch(tmp_path, capfd, monkeypatch):
    from xaiutils.domain import plugins

    monkeypatch.setattr(plugins, "PROGRESS_SECONDS", 0.2, raising=False)  # absent before the fix
    (tmp_path / "dozes.py").write_text(textwrap.dedent("""\
        import time


        def dozes(model, images, target):  # slow on the first batch only
            if len(images) == 2:
                time.sleep(1.0)
            return images[:, 0]
        """))
    model, images, targets = tiny_model_and_images(3)
    entry = plugins.parse_entries([{"spec": f"{tmp_path / 'dozes.py'}:dozes", "timeout": 30}])[0]
    capfd.readouterr()
    assert plugins.attribute(model, images, targets, entry, batch_size=2).shape == (3, 8, 8)
    err = capfd.readouterr().err
    lines = re.findall(r"method 'dozes' has run ([\d.]+) s on images 1-2 of 3 so far \(it is stopped at 30 s\)", err)
    assert 2 <= len(lines) <= 6, err  # about one line every 0.2 s of the 1 s call
    assert "images 3-3" not in err  # a quick batch says nothing
    time.sleep(0.5)
    assert capfd.readouterr().err == ""  # and nothing once the call is over


def test_case9_the_limit_holds_in_a_thread_that_is_not_the_main_one(capfd):
    """A Dask worker runs its tasks in threads, where no SIGALRM reaches the method: the limit holds there too."""
    import threading

    from xaiutils.domain import plugins

    model, images, targets = tiny_model_and_images(2)

    def naps(model, images, target):  # never returns on its own within the test's patience
        started = time.monotonic()
        while time.monotonic() - started < 60:
            time.sleep(0.05)
        return images[:, 0]

    entry = {"name": "naps", "spec": "x:naps", "settings": {}, "timeout": 1.0}
    outcome = {}

    def in_a_thread():
        started = time.monotonic()
        try:
            plugins.call(naps, entry, model, images, targets)
        except plugins.InvalidMethod as error:
            outcome["error"] = str(error)
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=in_a_thread, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "the method still ran 20 s after its limit of 1 s"
    assert outcome["error"].startswith("method 'naps' took longer than its limit of 1 s on a batch of 2 images and "
                                       "was stopped"), outcome
    assert outcome["seconds"] < 5
    time.sleep(0.3)
    assert plugins.call(lambda model, images, target: images[:, 0], {**entry, "name": "quick"}, model, images,
                        targets).shape == (2, 8, 8)  # the thread goes on working after it


# ------------------------------------------------------------- case 19: one book build per checkout at a time


def test_case19_a_second_book_build_in_the_same_checkout_is_refused_naming_the_first(tmp_path):
    build = [sys.executable, "-m", "xaiutils", "build-book", "--"]
    first = subprocess.Popen([*build, sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path,
                             env=environment())
    try:
        lock = tmp_path / "_build" / ".html.lock"
        deadline = time.monotonic() + 30
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, f"the first build ended ({first.returncode})"
            assert time.monotonic() < deadline, "the first build never took the lock"
            time.sleep(0.05)
        started = time.monotonic()
        second = subprocess.run([*build, sys.executable, "-c", "open('second-ran', 'w')"], cwd=tmp_path,
                                env=environment(), capture_output=True, text=True, timeout=30)
        assert time.monotonic() - started < 10
        assert second.returncode == 2, second.stderr
        assert f"_build/html is being written by process {first.pid} right now" in second.stderr
        assert not (tmp_path / "second-ran").exists()
        assert psutil.Process(first.pid).cmdline()[-1] == "import time; time.sleep(60)"  # the build itself holds it
    finally:
        first.terminate()
        first.wait(timeout=10)
    # once the first has ended, a build runs
    again = subprocess.run([*build, sys.executable, "-c", "open('second-ran', 'w')"], cwd=tmp_path,
                           env=environment(), capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "second-ran").exists()
    # and make book goes through it
    recipe = subprocess.run(["make", "-n", "book"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    assert "-m xaiutils build-book -- .venv/bin/jupyter-book build ." in recipe
