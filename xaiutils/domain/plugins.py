"""Bring your own explanation method: a callable scored beside the registry's methods, with no repository edit.

The contract: ``method(model, images, target, **settings) -> maps``, where ``images`` is a float32 N×1×H×W tensor in
[0, 1] (a copy: the method may set ``requires_grad``), ``target`` a long tensor of N class indices, and ``model``
the trained classifier in eval mode. ``maps`` is a tensor or array of N×H×W (or N×C×H×W, C the image channels)
floating-point values; like the registry's methods it is reduced to N×H×W by summing absolute values over channels.

A method is named by a spec, ``package.module:function`` (importable from here, e.g. through ``PYTHONPATH``) or
``path/to/file.py:function``, optionally prefixed with the name it gets in the tables (``NAME=SPEC``; default: the
function's name) and given keyword ``settings``. :func:`parse_entries` turns the command line's and notebook 4's
forms into plain dicts, which is what crosses process boundaries: each worker imports the function itself.

Every call is validated before its maps reach a metric (:func:`call`): shape, dtype, finite values, batch size,
and a model left unchanged (weights, buffers and every module's train/eval mode). A violation raises
:class:`InvalidMethod`, a ``ValueError`` with a one-line message naming the method and the problem. So does a call
that takes longer than the entry's ``timeout`` (seconds per batch, :data:`DEFAULT_TIMEOUT` unless set): a method
that never returns is stopped, not waited for. While a call runs longer than :data:`PROGRESS_SECONDS`, a line on
stderr names the method, the batch and how long it has run, every :data:`PROGRESS_SECONDS`.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import importlib.util
import inspect
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xaiutils.domain import explain

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


DEFAULT_TIMEOUT = 600.0  # seconds a user method may take on one batch (python -m xaiutils evaluate --method-timeout)
PROGRESS_SECONDS = 30.0  # a call running longer is named on stderr, then again every as many seconds


class InvalidMethod(ValueError):
    """A user's method broke the contract; the message (one line) names the method and what is wrong."""


class _TimeUp(BaseException):
    """Raised into a method that ran past its time limit (a BaseException: a method's ``except Exception`` must
    not swallow it)."""


def check_timeout(value, name: str = "timeout") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


@contextlib.contextmanager
def _time_limit(seconds: float, name: str = "", batch: str = "") -> Iterator[None]:
    """Raise :class:`_TimeUp` in the block after ``seconds``, and name the call on stderr while it runs longer than
    :data:`PROGRESS_SECONDS` (method ``name`` on ``batch``).

    In the main thread of a POSIX process (here, the pool's workers, notebook 4's kernel) the limit is a SIGALRM
    timer, which also interrupts a method that sleeps or waits. In any other thread (a Dask worker's thread runs its
    tasks in threads) no signal can reach the method: a watcher thread raises :class:`_TimeUp` into the method's
    thread instead, which Python delivers at the method's next Python instruction, so a method blocked inside one C
    call (a long sleep, one long torch operation) is stopped only when that call returns."""
    in_main = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    caller = threading.get_ident()
    done = threading.Event()
    guard = threading.Lock()  # held while the call may still be interrupted; cleared under it
    running = [True]
    started = time.monotonic()

    def watch() -> None:
        deadline = started + seconds
        next_note = started + PROGRESS_SECONDS
        while not done.wait(max(0.0, (next_note if in_main else min(next_note, deadline)) - time.monotonic())):
            now = time.monotonic()
            if now >= next_note:
                print(f"method {name!r} has run {round(now - started, 1):g} s on {batch} so far (it is stopped at "
                      f"{seconds:g} s)", file=sys.stderr, flush=True)
                next_note += PROGRESS_SECONDS
            if not in_main and now >= deadline:
                with guard:
                    if running[0]:
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(caller), ctypes.py_object(_TimeUp))
                return

    watcher = threading.Thread(target=watch, name=f"time limit of {name}", daemon=True)
    previous = None
    if in_main:
        def time_up(signum, frame):
            raise _TimeUp

        previous = signal.signal(signal.SIGALRM, time_up)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    watcher.start()
    try:
        yield
        with guard:  # from here on no _TimeUp is raised into this thread; one raised before is delivered here
            running[0] = False
    finally:
        with guard:
            running[0] = False
        done.set()
        if in_main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ------------------------------------------------------------------------------------------------ specs


def split_spec(spec: str) -> tuple[str | None, str, str]:
    """``(name or None, target, function)`` from ``[NAME=]package.module:function`` or ``[NAME=]file.py:function``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a method spec must be text like 'package.module:function' or 'path/to/file.py:function', "
                         f"got {spec!r}")
    spec = spec.strip()
    name = None
    head, sep, rest = spec.partition("=")
    if sep and ":" in rest and ":" not in head and "/" not in head and "\\" not in head:
        name, spec = head.strip(), rest.strip()
    target, sep, function = spec.rpartition(":")
    if not sep or not target or not function.isidentifier():
        raise ValueError(f"method spec {spec!r} must end in ':function' after a module or a .py file, e.g. "
                         "'mypkg.mymod:my_method' or 'path/to/file.py:my_method'")
    return name, target, function


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def parse_entries(entries) -> list[dict[str, Any]]:
    """Plain-dict entries ``{"name", "spec", "settings", "timeout"}`` from a list of specs (``"[NAME=]SPEC"``) or of
    mappings with keys ``spec`` (required), ``name``, ``settings`` and ``timeout`` (seconds per batch, default
    :data:`DEFAULT_TIMEOUT`). File paths are made absolute here, so that worker
    processes with another working folder find them. Names must be unique and differ from the registry's."""
    if entries is None:
        return []
    if isinstance(entries, (str, dict)):
        entries = [entries]
    parsed, seen = [], set()
    for entry in entries:
        if isinstance(entry, str):
            entry = {"spec": entry}
        if not isinstance(entry, dict) or "spec" not in entry:
            raise ValueError(f"a user method is 'package.module:function' or a mapping with 'spec' (and optional "
                             f"'name', 'settings', 'timeout'), got {entry!r}")
        unknown = sorted(set(entry) - {"spec", "name", "settings", "timeout"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in user method {entry!r}; valid keys: spec, name, settings, "
                             "timeout")
        given_name, target, function = split_spec(entry["spec"])
        if _is_file(target):
            path = Path(target).expanduser().resolve()
            if not path.is_file():
                raise ValueError(f"method file {target!r} (from {entry['spec']!r}) does not exist")
            target = str(path)
        name = str(entry.get("name") or given_name or function)
        if not _NAME.match(name):
            raise ValueError(f"method name {name!r} must start with a letter and hold letters, digits, '_', '-', '.'")
        settings = entry.get("settings") or {}
        if not isinstance(settings, dict) or not all(isinstance(key, str) for key in settings):
            raise ValueError(f"settings of method {name!r} must be a mapping of keyword names to values, "
                             f"got {settings!r}")
        try:
            clash = explain.resolve_method(name)
        except ValueError:
            clash = None
        if clash is not None:
            raise ValueError(f"user method name {name!r} is taken by the registry's method {clash!r}; give another "
                             f"name with NAME=SPEC (e.g. 'my_{name}={entry['spec']}')")
        if name in seen:
            raise ValueError(f"two user methods are named {name!r}; name them apart with NAME=SPEC")
        seen.add(name)
        timeout = check_timeout(entry.get("timeout", DEFAULT_TIMEOUT), f"timeout of method {name!r}")
        parsed.append({"name": name, "spec": f"{target}:{function}", "settings": dict(settings), "timeout": timeout})
    return parsed


def load(entry: dict[str, Any]):
    """The callable of ``entry`` (imported, or loaded from its file), checked to accept the contract's call."""
    _, target, function = split_spec(entry["spec"])
    if _is_file(target):
        path = Path(target)
        module_name = f"_xaiutils_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        module = sys.modules.get(module_name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            if module_spec is None or module_spec.loader is None:
                raise ValueError(f"cannot load {path} as a Python module (method {entry['name']!r})")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            try:
                module_spec.loader.exec_module(module)
            except SystemExit as error:
                del sys.modules[module_name]
                raise InvalidMethod(f"method file {path} called sys.exit({error.code!r}) while it was imported "
                                    f"(method {entry['name']!r}); a method file must only define functions") from None
            except (SyntaxError, ImportError) as error:
                del sys.modules[module_name]
                raise InvalidMethod(_import_failure(error, f"method file {path}", entry["name"])) from None
            except BaseException:
                del sys.modules[module_name]
                raise
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as error:
            if error.name is not None and target != error.name and not target.startswith(f"{error.name}."):
                # the module exists but imports one that does not
                raise InvalidMethod(_import_failure(error, f"module {target!r}", entry["name"])) from None
            raise ValueError(f"cannot import module {target!r} for method {entry['name']!r} ({error}); give "
                             "'package.module:function' importable from here (e.g. on PYTHONPATH) or "
                             "'path/to/file.py:function'") from None
        except (SyntaxError, ImportError) as error:
            raise InvalidMethod(_import_failure(error, f"module {target!r}", entry["name"])) from None
    method = getattr(module, function, None)
    if method is None:
        public = sorted(key for key, value in vars(module).items() if callable(value) and not key.startswith("_"))
        raise ValueError(f"{target!r} has no function {function!r} (method {entry['name']!r}); its callables: "
                         f"{', '.join(public) or 'none'}")
    if not callable(method):
        raise ValueError(f"{entry['spec']!r} is not callable (method {entry['name']!r})")
    try:
        inspect.signature(method).bind(None, None, None, **entry["settings"])
    except TypeError as error:
        raise ValueError(f"method {entry['name']!r} cannot be called as method(model, images, target"
                         f"{''.join(f', {key}=…' for key in entry['settings'])}): {error}") from None
    except ValueError:  # no signature to inspect (a builtin): the call itself will tell
        pass
    return method


def _import_failure(error: SyntaxError | ImportError, what: str, name: str) -> str:
    """One line for a method file or module that cannot be imported: the file, line and message of a
    ``SyntaxError``, the missing module of an ``ImportError``."""
    if isinstance(error, SyntaxError):
        where = f"{error.filename or what}, line {error.lineno}" if error.lineno else (error.filename or what)
        return _one_line(f"{what} cannot be imported (method {name!r}): {type(error).__name__} at {where}: "
                         f"{error.msg}")
    if isinstance(error, ModuleNotFoundError) and error.name:
        return _one_line(f"{what} cannot be imported (method {name!r}): it imports module {error.name!r}, which is "
                         f"not installed here (No module named {error.name!r}); install it, or remove that import")
    return _one_line(f"{what} cannot be imported (method {name!r}): ImportError: {error}")


# ------------------------------------------------------------------------------------------------ the call


def _model_state(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[bool]]:
    state = {key: value.detach().clone() for key, value in model.state_dict(keep_vars=True).items()}
    return state, [module.training for module in model.modules()]


def _model_change(model: torch.nn.Module, before) -> str:
    """'' when the model's weights, buffers and modes equal ``before``, else what changed."""
    state, modes = before
    after = model.state_dict(keep_vars=True)
    if set(after) != set(state):
        return f"changes the model's parameters or buffers (added or removed: {sorted(set(after) ^ set(state))[:3]})"
    changed = [key for key, value in after.items()
               if value.shape != state[key].shape or not torch.equal(value.detach(), state[key])]
    if changed:
        return f"changes the model's weights or buffers ({', '.join(changed[:3])}{' …' if len(changed) > 3 else ''})"
    if [module.training for module in model.modules()] != modes:
        switched = [key or "model" for (key, module), mode in zip(model.named_modules(), modes, strict=False)
                    if module.training != mode]
        return f"changes the model's train/eval mode ({', '.join(switched[:3])})"
    return ""


def check_maps(maps, n_images: int, image_shape: tuple[int, ...], name: str) -> np.ndarray:
    """The float32 N×H×W map batch (absolute values summed over channels), or :class:`InvalidMethod`."""
    height, width = image_shape[-2:]
    channels = image_shape[0] if len(image_shape) == 3 else 1
    valid = f"valid: {n_images}×{height}×{width} or {n_images}×{channels}×{height}×{width}, floating point"
    if torch.is_tensor(maps):
        try:  # maps on another device (a GPU) are moved to the CPU, as the registry's methods' maps are
            maps = maps.detach().cpu()
        except (RuntimeError, NotImplementedError) as error:
            raise InvalidMethod(_one_line(f"method {name!r} returned maps on device {maps.device} that cannot be "
                                          f"copied to the CPU ({error}); return maps on the images' device or "
                                          "the CPU")) from None
        if not torch.is_floating_point(maps):
            raise InvalidMethod(f"method {name!r} returned maps of dtype {maps.dtype}; {valid}")
        maps = maps.float().numpy()
    elif isinstance(maps, np.ndarray):
        if not np.issubdtype(maps.dtype, np.floating):
            raise InvalidMethod(f"method {name!r} returned maps of dtype {maps.dtype}; {valid}")
    else:
        raise InvalidMethod(f"method {name!r} returned {type(maps).__name__}, not a tensor or array; {valid}")
    shape = tuple(maps.shape)
    if len(shape) not in (3, 4) or shape[-2:] != (height, width) or (len(shape) == 4 and shape[1] != channels):
        if len(shape) in (3, 4) and shape[0] != n_images and shape[1:] in ((height, width), (channels, height, width)):
            raise InvalidMethod(f"method {name!r} returned {shape[0]} maps for a batch of {n_images} images "
                                f"(shape {shape}); {valid}")
        raise InvalidMethod(f"method {name!r} returned maps of shape {shape}; {valid}")
    if shape[0] != n_images:
        raise InvalidMethod(f"method {name!r} returned {shape[0]} maps for a batch of {n_images} images; {valid}")
    finite = np.isfinite(maps)
    if not finite.all():
        kind = "NaN" if np.isnan(maps).any() else "inf"
        raise InvalidMethod(f"method {name!r} returned maps with {kind} values ({int((~finite).sum())} of "
                            f"{maps.size}); maps must be finite")
    if maps.ndim == 3:
        maps = maps[:, None]
    return explain._reduce(maps, signed=False)


def call(method, entry: dict[str, Any], model: torch.nn.Module, images, targets, seed: int = 0,
         batch: str | None = None) -> np.ndarray:
    """Maps of a user's ``method`` (loaded from ``entry``) for ``images`` and ``targets``, validated; stopped with
    :class:`InvalidMethod` when it takes longer than the entry's ``timeout`` seconds, in any thread
    (:func:`_time_limit`), and named on stderr while it runs longer than :data:`PROGRESS_SECONDS` (``batch``: which
    images, for that line; default "a batch of N images").

    The model runs in eval mode (its modes are restored afterwards); RNGs are seeded with ``seed`` and restored, as
    for the registry's methods. Raises :class:`InvalidMethod` when the maps or the model break the contract, before
    any metric sees the maps.
    """
    name = entry["name"]
    images = explain._as_images(images)
    targets = explain._as_targets(targets, images.shape[0])
    parameter = next(model.parameters(), None)
    if parameter is not None:
        images, targets = images.to(parameter.device, parameter.dtype), targets.to(parameter.device)
    was_training = [module.training for module in model.modules()]
    model.eval()
    before = _model_state(model)
    try:
        limit = entry.get("timeout", DEFAULT_TIMEOUT)
        with explain._seeded(seed, images.device):
            try:
                with _time_limit(limit, name, batch or f"a batch of {images.shape[0]} images"):
                    maps = method(model, images.clone(), targets.clone(), **entry["settings"])
            except _TimeUp:
                raise InvalidMethod(f"method {name!r} took longer than its limit of {limit:g} s on a batch of "
                                    f"{images.shape[0]} images and was stopped; make it faster, or allow more time "
                                    "(evaluate --method-timeout SECONDS, or 'timeout' in its entry)") from None
            except InvalidMethod:
                raise
            except SystemExit as error:  # sys.exit() in a method would end the whole command with its code
                raise InvalidMethod(f"method {name!r} called sys.exit({error.code!r}) on a batch of "
                                    f"{images.shape[0]} images; a method must return maps, not end the "
                                    "program") from None
            except Exception as error:
                raise InvalidMethod(_one_line(f"method {name!r} failed on a batch of {images.shape[0]} images: "
                                              f"{type(error).__name__}: {error}")) from error
        change = _model_change(model, before)
        if change:
            raise InvalidMethod(f"method {name!r} {change}; a method must leave the model as it found it "
                                "(work on a copy: copy.deepcopy(model))")
        return check_maps(maps, images.shape[0], tuple(images.shape[1:]), name)
    finally:
        for module, mode in zip(model.modules(), was_training, strict=True):
            module.training = mode


def attribute(model, images, targets, entry: dict[str, Any], seed: int = 0, batch_size: int = 32) -> np.ndarray:
    """Validated maps of the user method ``entry`` in batches of at most ``batch_size`` images."""
    method = load(entry)
    images = explain._as_images(images)
    targets = explain._as_targets(targets, images.shape[0])
    if images.shape[0] == 0:
        return np.zeros((0, *images.shape[-2:]), dtype=np.float32)
    total, size = images.shape[0], int(batch_size)
    return np.concatenate([call(method, entry, model, images[start:start + size], targets[start:start + size],
                                seed=seed, batch=f"images {start + 1}-{min(start + size, total)} of {total}")
                           for start in range(0, total, size)])


def maps_of(model, images, targets, method: str, user: dict[str, dict] | None = None, seed: int = 0,
            batch_size: int = 32) -> np.ndarray:
    """Maps of a registry method (by name) or of a user method (a name in ``user``, name → entry)."""
    if user and method in user:
        return attribute(model, images, targets, user[method], seed=seed, batch_size=batch_size)
    return explain.attribute(model, images, targets, method, batch_size=batch_size, seed=seed)


def validate(entries, model, images, targets, seed: int = 0) -> None:
    """Call every user method once on ``images`` (a few are enough) and refuse the first that breaks the contract.

    Run before any scoring, so a broken method costs seconds, not a grid."""
    for entry in parse_entries(entries):
        attribute(model, images, targets, entry, seed=seed, batch_size=len(images))
