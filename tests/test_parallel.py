"""The worker pool of :mod:`xaiutils.execution.parallel`: workers forked by a fork server that imported torch once,
each with the pool's thread count, tied to the process that made the pool (killing that process is tested with real
signals in tests/test_reliability_signals.py)."""

from __future__ import annotations

import os
import sys

import pytest

from xaiutils.execution import parallel


def describe_worker() -> dict:
    """What a worker knows about itself (module-level: jobs must be importable)."""
    import multiprocessing.forkserver

    import torch

    return {"pid": os.getpid(), "parent": os.getppid(), "torch_threads": torch.get_num_threads(),
            "omp": os.environ.get("OMP_NUM_THREADS"),
            "alive_fd": multiprocessing.forkserver._forkserver._forkserver_alive_fd}


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and the fork server of Linux")
@pytest.mark.parametrize("workers", [2, 1])
def test_workers_come_from_the_fork_server_with_the_pool_s_threads(workers):
    parallel.start_fork_server(3)  # started for another pool size: each pool's own thread count must still hold
    with parallel.process_pool(workers) as pool:
        seen = [future.result() for future in [pool.submit(describe_worker) for _ in range(4)]]
    threads = parallel.threads_per_worker(workers)
    assert {worker["torch_threads"] for worker in seen} == {threads}
    assert {worker["omp"] for worker in seen} == {str(threads)}
    for worker in seen:
        assert worker["parent"] != os.getpid()  # forked by the server, not by this process
        assert parallel._parent_of(worker["parent"]) == os.getpid()  # the server is this process's child
        assert worker["alive_fd"] is None  # the keep-alive pipe released: the server ends with this process


@pytest.mark.skipif(sys.platform != "linux", reason="/proc of Linux")
def test_parent_of_reads_the_parent_and_is_none_for_a_process_that_is_gone():
    assert parallel._parent_of(os.getpid()) == os.getppid()
    assert parallel._parent_of(2**22 + 12345) is None  # above Linux's largest pid


def test_a_bad_worker_count_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"workers must be a whole number >= 1, got 0"):
        parallel.start_fork_server(0)
