"""One writer per run folder: folder locks, the temporary folders a dead writer left, and stop signals that clean
up like Ctrl-C.

A folder ``NAME`` is built as ``.NAME.partial-*`` beside it while its writer holds an exclusive ``flock`` on the
file ``.NAME.lock``. The operating system drops the lock when its holder dies, however it dies (SIGKILL, power
loss of a client aside), so a temporary folder whose lock can be taken is a dead leftover, and only those are
deleted. Lock files stay in place: waiters must lock the same inode.

The lock is ``fcntl.flock`` from the standard library where it exists. The ``filelock`` package does the same
portably, but importing it costs about 0.1 s of CPU, which is 10 % of a grid run that skips every cell; it is used
only where ``fcntl`` is missing (Windows).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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


def lock_owner(path: Path) -> str:
    """Who holds the lock file ``path``, in words for a message ("process 123" or "another process")."""
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
    return FolderBusy(f"{Path(target)} is being written by {lock_owner(path)} right now; wait for it to finish, "
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


def exec_holding_lock(target: str | os.PathLike, argv: list[str]) -> int:
    """Run the program ``argv`` while holding the folder lock of ``target``, or refuse at once with
    :class:`FolderBusy` naming the holder: one ``make book`` per checkout at a time.

    Where ``fcntl`` exists this process takes the lock and becomes the program (``exec``, same PID): the lock goes
    with it, signals reach it directly, and the lock is dropped when it ends, however it ends. Elsewhere the
    program runs as a child while the lock is held. Returns the program's exit code (only without ``exec``)."""
    if not argv:
        raise ValueError("no program to run")
    if fcntl is None:  # pragma: no cover - Windows
        with folder_lock(target, wait=0):
            return subprocess.call(argv)
    path = lock_file(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _busy(target, path) from None
    _note_owner(fd)
    os.set_inheritable(fd, True)  # the program keeps the open file, and with it the lock
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError:
        os.close(fd)
        raise


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
