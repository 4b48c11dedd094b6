"""Several torch jobs at once on one machine: a pool of processes that share the cores between them.

On 2 CPU cores, two processes with one thread each train or explain small models at about 1.7 times the images
per second of one process with two threads (threads wait on each other at every layer of a small batch).

The pool's processes are forked by a fork server (``multiprocessing``'s ``forkserver`` start method) that has
imported torch and the pool's code once; each worker then starts at once instead of importing them itself (about
3 s each on 2 cores). :func:`start_fork_server` starts that server early, so that its imports run beside the
caller's own.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path


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


def _parent_of(pid: int) -> int | None:
    """The parent process id of ``pid`` (Linux ``/proc``), or None when ``pid`` is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces


def die_with_parent(parent: int) -> None:
    """Make this process (a pool worker) end when ``parent`` (the process that made the pool) does, however it
    ends (SIGKILL included).

    Linux only: the kernel sends SIGKILL when this process's own parent exits (``prctl(PR_SET_PDEATHSIG)``).
    That parent is ``parent`` itself (spawned workers) or the fork server, a single-threaded child of ``parent``
    that exits as soon as ``parent`` does (its end of a pipe closes). A worker whose chain to ``parent`` is already
    broken exits at once. Elsewhere nothing changes; a stop signal to the parent still ends the workers
    (:func:`process_pool`)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return
    own_parent = os.getppid()
    if own_parent != parent and _parent_of(own_parent) != parent:
        os._exit(1)


def _release_fork_server() -> None:
    """Close this worker's copy of the fork server's keep-alive pipe. The server exits once no process holds that
    pipe's writing end; had the workers kept theirs, a killed parent would leave the server waiting for the workers
    and the workers (:func:`die_with_parent`) waiting for the server. A worker makes no processes through it."""
    server = multiprocessing.forkserver._forkserver
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        with contextlib.suppress(OSError):
            os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None


def _start(threads: int, parent: int, initializer: Callable | None, initargs: tuple) -> None:
    die_with_parent(parent)
    _release_fork_server()
    # Ctrl-C in a terminal reaches the whole process group: the parent stops the workers, which must not each
    # answer it with a traceback of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the fork server may have been started for another pool size: this pool's thread count holds here and in any
    # process a job starts (torch read OMP_NUM_THREADS at import; set_num_threads overrides it)
    os.environ.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    import torch

    torch.set_num_threads(threads)
    if initializer is not None:
        initializer(*initargs)


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def start_fork_server(workers: int, modules: tuple[str, ...] = ()) -> None:
    """Start the fork server of :func:`process_pool` now, importing torch and ``modules`` in it, so that this
    happens beside the caller's own work; a pool made later forks its workers from it at once.

    Its environment is that of a pool of ``workers`` processes (:func:`kernel_threads`). Where there is no fork
    server (Windows), nothing happens. Once started, the server stays for the life of this process; later calls
    change nothing."""
    context = _context()
    if context.get_start_method() != "forkserver":
        return
    context.set_forkserver_preload(["torch", *modules])
    with kernel_threads(threads_per_worker(check_workers(workers))):
        multiprocessing.forkserver.ensure_running()


@contextlib.contextmanager
def process_pool(workers: int, initializer: Callable | None = None, initargs: tuple = ()) -> Iterator:
    """A ``ProcessPoolExecutor`` of ``workers`` processes, each running torch with :func:`threads_per_worker`
    threads (and ``initializer(*initargs)`` once).

    The workers are forked by a fork server (:func:`start_fork_server`, started here if it is not yet), a clean
    process that imports torch but never runs it, not by this process: a forked child of a process that already
    runs torch's thread pool can deadlock. Without a fork server (Windows) they are spawned. The functions
    submitted must be importable (module-level) and their arguments picklable.

    When the block raises (a failed job, Ctrl-C, SIGTERM turned into an exception), the workers are killed at once
    instead of finishing the jobs they run (:func:`stop_workers`); when this process is killed, they die with it
    (:func:`die_with_parent`).
    """
    threads = threads_per_worker(workers)
    start_fork_server(workers, (initializer.__module__,) if initializer is not None else ())
    with kernel_threads(threads):
        pool = ProcessPoolExecutor(workers, mp_context=_context(), initializer=_start,
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
