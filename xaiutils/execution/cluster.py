"""Dask clusters, an executor: a scheduler address or a cluster spec file turned into a client, and nothing more.

Nothing here schedules work: Dask does (``distributed.Client``, its futures and worker resources; joblib's
``dask`` backend for the scoring; ``dask_jobqueue`` starts the batch jobs). This module turns what the user
gives (``--cluster``, notebook 4's ``cluster`` parameter, ``run_grid(cluster=...)``) into a client
(:func:`connect`), checks a spec file before anything is submitted, and hands joblib the cluster
(:func:`joblib_backend`). It knows nothing of grids or explanations: the callers submit their own functions
(:mod:`xaiutils.execution.grid` its cells, :mod:`xaiutils.analysis.evaluate` its runs), asking for
:func:`task_resources`, and cancel them with :func:`cancel_on_error`.

A cluster spec is a YAML file::

    type: slurm              # local, slurm, pbs, or scheduler (an existing scheduler at ``address``)
    jobs: 8                  # batch jobs to submit (slurm, pbs); one job is one node with ``options.cores``
    worker_resources: {GPU: 1}   # what each Dask worker offers (Dask's --resources); optional
    task_resources: {GPU: 1}     # what each grid cell and each explained run asks for; optional
    options:                 # keyword arguments of dask_jobqueue.SLURMCluster (or PBSCluster, LocalCluster)
      cores: 16
      memory: 64GB
      walltime: "04:00:00"

``jobs``, ``options.cores``, ``options.memory`` and ``options.walltime`` are required for ``slurm`` and ``pbs``;
``address`` for ``scheduler``. Option names are checked against the cluster class, so a typo is refused before a
job is submitted.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xaiutils.foundation.files import read_yaml_file

# type -> (module, class, options that must be given)
CLUSTER_TYPES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "local": ("distributed", "LocalCluster", ()),
    "slurm": ("dask_jobqueue", "SLURMCluster", ("cores", "memory", "walltime")),
    "pbs": ("dask_jobqueue", "PBSCluster", ("cores", "memory", "walltime")),
    "scheduler": ("distributed", "Client", ()),
}
SPEC_KEYS = ("type", "jobs", "address", "worker_resources", "task_resources", "options")
BATCH_TYPES = ("slurm", "pbs")
_ADDRESS = re.compile(r"^([a-z]+://)?[\w.\-]+:\d+$")


@dataclass(frozen=True)
class ClusterSpec:
    """A checked cluster spec (see the module's docstring)."""

    type: str
    jobs: int | None = None
    address: str | None = None
    worker_resources: dict[str, float] = field(default_factory=dict)
    task_resources: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    source: str = "the cluster spec"


def _cluster_class(kind: str):
    import importlib

    module, name, _ = CLUSTER_TYPES[kind]
    return getattr(importlib.import_module(module), name)


def valid_options(kind: str) -> list[str]:
    """Keyword arguments the cluster class of ``kind`` accepts (for jobqueue types: the cluster's and its job's)."""
    cls = _cluster_class(kind)
    classes = [cls]
    if kind in BATCH_TYPES:
        classes += [cls.job_cls, *cls.job_cls.__mro__[1:]]
    elif kind == "local":
        from distributed import Nanny, Scheduler, Worker  # LocalCluster passes the rest on to these

        classes += [Worker, Nanny, Scheduler]
    names = set()
    for each in classes:
        init = each.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) and parameter.name != "self":
                names.add(parameter.name)
    return sorted(names)


def _resources(value, key: str, where: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
            isinstance(name, str) and isinstance(amount, (int, float)) and not isinstance(amount, bool)
            and amount > 0 for name, amount in value.items()):
        raise ValueError(f"{where}: {key} must map resource names to positive numbers, e.g. {{GPU: 1}}; "
                         f"got {value!r}")
    return dict(value)


def check_spec(spec: Any, where: str = "the cluster spec") -> ClusterSpec:
    """Check a spec (the mapping read from a YAML file) and return it as a :class:`ClusterSpec`; every error is a
    ``ValueError`` that names ``where``, the bad key or value, and the valid choices."""
    types = ", ".join(CLUSTER_TYPES)
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping with keys {', '.join(SPEC_KEYS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(SPEC_KEYS)}")
    if "type" not in spec:
        raise ValueError(f"{where} lacks 'type'; valid types: {types}")
    kind = spec["type"]
    if kind not in CLUSTER_TYPES:
        raise ValueError(f"{where}: unknown cluster type {kind!r}; valid types: {types}")
    options = spec.get("options") or {}
    if not isinstance(options, Mapping) or not all(isinstance(name, str) for name in options):
        raise ValueError(f"{where}: options must be a mapping of keyword arguments, got {options!r}")
    options = dict(options)
    jobs, address = spec.get("jobs"), spec.get("address")
    if kind == "scheduler":
        if address is None:
            raise ValueError(f"{where}: a 'scheduler' cluster needs 'address' (e.g. tcp://10.0.0.1:8786)")
        if not isinstance(address, str) or not _ADDRESS.match(address):
            raise ValueError(f"{where}: address must look like tcp://host:port, got {address!r}")
        for key in ("jobs", "options", "worker_resources"):
            if spec.get(key):
                raise ValueError(f"{where}: {key!r} does not apply to an existing scheduler; give it only with "
                                 f"type {', '.join(t for t in CLUSTER_TYPES if t != 'scheduler')}")
    elif address is not None:
        raise ValueError(f"{where}: 'address' applies to type scheduler only, not {kind!r}")
    if kind in BATCH_TYPES:
        if jobs is None:
            raise ValueError(f"{where}: a {kind} cluster needs 'jobs' (how many batch jobs to submit, e.g. 8)")
    elif jobs is not None and kind != "scheduler":
        raise ValueError(f"{where}: 'jobs' applies to {', '.join(BATCH_TYPES)} only; for a local cluster give "
                         f"options.n_workers")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"{where}: jobs must be a whole number >= 1, got {jobs!r}")
    if kind != "scheduler":  # a misspelt option is named as such, before the required ones are looked for
        valid = valid_options(kind)
        bad = sorted(set(options) - set(valid))
        if bad:
            raise ValueError(f"{where}: unknown option(s) {', '.join(map(repr, bad))} for a {kind} cluster "
                             f"({CLUSTER_TYPES[kind][1]}); valid options: {', '.join(valid)}")
    required = CLUSTER_TYPES[kind][2]
    missing = [name for name in required if name not in options]
    if missing:
        raise ValueError(f"{where}: a {kind} cluster needs options.{missing[0]}; required options: "
                         f"{', '.join(required)} (e.g. cores: 16, memory: 64GB, walltime: '04:00:00')")
    _check_option_values(options, where)
    return ClusterSpec(kind, jobs, address, _resources(spec.get("worker_resources"), "worker_resources", where),
                       _resources(spec.get("task_resources"), "task_resources", where), options, where)


def _check_option_values(options: Mapping[str, Any], where: str) -> None:
    for name in ("cores", "processes", "n_workers", "threads_per_worker"):
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{where}: options.{name} must be a whole number >= 1, got {value!r}")
    if "memory" in options:
        from dask.utils import parse_bytes

        try:
            parse_bytes(options["memory"])
        except (ValueError, TypeError):
            raise ValueError(f"{where}: options.memory must be a size like 64GB or 500MiB, "
                             f"got {options['memory']!r}") from None
    if "walltime" in options and not isinstance(options["walltime"], str):
        raise ValueError(f"{where}: options.walltime must be quoted text like '04:00:00', got "
                         f"{options['walltime']!r} (unquoted, YAML reads 12:00:00 as a number of seconds)")


def read_cluster_spec(path: str | os.PathLike) -> ClusterSpec:
    """A checked cluster spec from a YAML file; errors name the file."""
    spec = read_yaml_file(path, "cluster spec", "give a YAML file (see examples/slurm.yaml) or a scheduler address "
                          "like tcp://host:8786")
    return check_spec(spec, where=f"cluster spec {path}")


def as_spec(cluster: Any) -> ClusterSpec | Any:
    """What the user gave, as a :class:`ClusterSpec` (a spec file or a scheduler address), or unchanged when it is
    a ``distributed.Client``, a Dask cluster object or a ``ClusterSpec`` already."""
    if not isinstance(cluster, (str, os.PathLike)):
        return cluster
    text = str(cluster)
    if text.endswith((".yml", ".yaml")) or Path(text).is_file():
        return read_cluster_spec(text)
    if _ADDRESS.match(text):
        return ClusterSpec("scheduler", address=text, source=f"scheduler {text}")
    raise ValueError(f"cluster {text!r} is neither a cluster spec file (.yaml, e.g. examples/slurm.yaml) nor a "
                     f"scheduler address (tcp://host:8786)")


def task_resources(cluster: Any) -> dict[str, float] | None:
    """The resources each grid cell or explained run asks for (the spec's ``task_resources``), or None."""
    return (cluster.task_resources or None) if isinstance(cluster, ClusterSpec) else None


def make_cluster(spec: ClusterSpec, scale: bool = True):
    """Start the cluster a spec describes (a ``LocalCluster``, or a jobqueue cluster scaled to ``jobs`` jobs)."""
    options = dict(spec.options)
    if spec.worker_resources:
        if spec.type == "local":
            options["resources"] = {**spec.worker_resources, **options.get("resources", {})}
        else:
            flags = ",".join(f"{name}={amount:g}" for name, amount in spec.worker_resources.items())
            options["worker_extra_args"] = [*options.get("worker_extra_args", []), "--resources", flags]
    cluster = _cluster_class(spec.type)(**options)
    if scale and spec.jobs is not None:
        cluster.scale(jobs=spec.jobs)
    return cluster


def job_script(spec: ClusterSpec) -> str:
    """The batch script one job of a ``slurm`` or ``pbs`` spec runs, without submitting anything."""
    if spec.type not in BATCH_TYPES:
        raise ValueError(f"{spec.source}: a {spec.type} cluster has no job script; types with one: "
                         f"{', '.join(BATCH_TYPES)}")
    options = {**spec.options, "scheduler_options": {"dashboard_address": ":0",  # no fixed port taken
                                                      **spec.options.get("scheduler_options", {})}}
    started = make_cluster(replace(spec, options=options), scale=False)
    try:
        return started.job_script()
    finally:
        started.close()


CONNECT_TIMEOUT = 10.0  # seconds to reach an existing scheduler (Dask's own default is 30 s, retried)


class SchedulerUnreachable(ValueError):
    """A scheduler address that cannot be reached, or that does not answer as a Dask scheduler; the message (one
    line) names the address and the reason."""


def connect_scheduler(address: str, timeout: float = CONNECT_TIMEOUT):
    """A ``distributed.Client`` of the scheduler at ``address``, or :class:`SchedulerUnreachable` within about
    ``timeout`` seconds: when nothing answers there (refused, no route, silence) and when what answers is not a
    Dask scheduler (its reply cannot be read as Dask's protocol)."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as error:  # refused, unreachable, or no answer in time (Dask's OSError)
        reason = " ".join(str(error).split()) or type(error).__name__
        if isinstance(error.__cause__, OSError) and str(error.__cause__):
            reason = f"{reason} ({' '.join(str(error.__cause__).split())})"
        raise SchedulerUnreachable(f"cannot connect to the Dask scheduler at {address}: {reason}; check the address "
                                   "and that the scheduler runs (dask scheduler), or leave --cluster out") from None
    except (MemoryError, ValueError, TypeError, KeyError, EOFError) as error:
        # A service of another kind: its first bytes read as Dask frame lengths ask for exabytes (MemoryError), or
        # cannot be unpacked.
        raise SchedulerUnreachable(f"the service at {address} does not answer as a Dask scheduler (its reply is not "
                                   f"Dask's protocol: {type(error).__name__}); give the address of a Dask "
                                   "scheduler (tcp://host:8786 by default)") from None


@contextlib.contextmanager
def connect(cluster: Any, announce: bool = True, timeout: float = CONNECT_TIMEOUT) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster`` (spec file, address, ``ClusterSpec``, cluster object or client)
    for the ``with`` block. A cluster started here is shut down afterwards (its batch jobs are cancelled); a
    client or cluster given by the caller is left as it was. The dashboard link is printed to stderr.

    An existing scheduler must answer within ``timeout`` seconds, as a Dask scheduler, or
    :class:`SchedulerUnreachable` (a ``ValueError``) names its address and why (:func:`connect_scheduler`)."""
    from distributed import Client

    if isinstance(cluster, Client):
        yield cluster
        return
    spec = as_spec(cluster)
    started = None
    if isinstance(spec, ClusterSpec):
        if spec.type == "scheduler":
            client = connect_scheduler(spec.address, timeout)
        else:
            started = make_cluster(spec)
            client = Client(started)
    else:
        client = Client(spec)
    try:
        if announce:
            print(f"dask: dashboard {client.dashboard_link} (scheduler {client.scheduler.address})",
                  file=sys.stderr, flush=True)
        yield client
    finally:
        client.close()
        if started is not None:
            started.close()


@contextlib.contextmanager
def cancel_on_error(client, futures) -> Iterator[None]:
    """When the block raises (a failed task, Ctrl-C), the tasks not yet finished are cancelled; a task already
    running on a worker finishes or fails on its own, as a cell of a local grid does."""
    try:
        yield
    except BaseException:
        client.cancel(list(futures))
        raise


@contextlib.contextmanager
def joblib_backend(cluster: Any) -> Iterator[None]:
    """Within the block, joblib's ``Parallel(n_jobs=-1)`` runs its tasks on ``cluster``'s Dask workers (joblib's
    ``dask`` backend): what :func:`xaiutils.domain.metrics.score_maps` takes as ``backend`` to spread a batch."""
    from joblib import parallel_config

    with connect(cluster, announce=False) as client, parallel_config(backend="dask", client=client,
                                                                     wait_for_workers_timeout=600):
        yield
