"""Several torch jobs at once on one machine: a pool of spawned processes that share the cores between them.

On 2 CPU cores, two processes with one thread each train or explain small models at about 1.7 times the images
per second of one process with two threads (threads wait on each other at every layer of a small batch).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor


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


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """Make this process (a pool worker) end when ``parent`` does, however the parent ends (SIGKILL included).

    Linux only: the kernel sends SIGKILL when the parent exits (``prctl(PR_SET_PDEATHSIG)``; the pool's workers
    are started by the thread that submits, the main thread). A worker whose parent is already gone exits at once.
    Elsewhere nothing changes; a stop signal to the parent still ends the workers (:func:`process_pool`)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return
    if os.getppid() != parent:
        os._exit(1)


def _start(threads: int, parent: int, initializer: Callable | None, initargs: tuple) -> None:
    die_with_parent(parent)
    # Ctrl-C in a terminal reaches the whole process group: the parent stops the workers, which must not each
    # answer it with a traceback of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch  # torch also reads OMP_NUM_THREADS at import; set_num_threads makes sure of it

    torch.set_num_threads(threads)
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def process_pool(workers: int, initializer: Callable | None = None, initargs: tuple = ()) -> Iterator:
    """A ``ProcessPoolExecutor`` of ``workers`` spawned processes, each running torch with
    :func:`threads_per_worker` threads (and ``initializer(*initargs)`` once).

    Spawned, not forked: a forked child of a process that already runs torch's thread pool can deadlock. The
    functions submitted must be importable (module-level) and their arguments picklable.

    When the block raises (a failed job, Ctrl-C, SIGTERM turned into an exception), the workers are killed at once
    instead of finishing the jobs they run (:func:`stop_workers`); when this process is killed, they die with it
    (:func:`die_with_parent`).
    """
    threads = threads_per_worker(workers)
    with kernel_threads(threads):
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
                                   initargs=(threads, os.getpid(), initializer, initargs))
        try:
            yield pool
        except BaseException:
            stop_workers(pool)
            raise
        pool.shutdown(wait=True)


def stop_workers(pool: ProcessPoolExecutor, grace: float = 2.0) -> None:
    """Shut ``pool`` down without waiting for its running jobs: queued jobs are cancelled, workers killed."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            process.kill()
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            process.join(max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def cancel_on_error(futures) -> Iterator[None]:
    """When the block raises (a job failed, or Ctrl-C), the jobs of ``futures`` not yet started are cancelled, so
    the pool does not go on running its queue before it shuts down."""
    try:
        yield
    except BaseException:
        for future in list(futures):
            if isinstance(future, Future):
                future.cancel()
        raise
