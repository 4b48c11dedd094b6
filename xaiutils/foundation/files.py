"""Files on disk, written so that no reader ever sees half of one: atomic file and folder writes, and the
stamps that let a content hash stand without reading the data again.

Every module that writes a result goes through here, so there is one recipe for each and one permission policy:
a finished folder gets the usual permissions of the user's umask (``tempfile.mkdtemp`` makes it private).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")  # a name that may become one path component


def check_safe_name(name: Any, what: str, choices: tuple[str, ...] = ()) -> str:
    """``name`` when it may become one path component (letters, digits, ``_ . + -``, not starting with a dot or
    a dash, no ``..``, at most 100 characters); otherwise ``ValueError`` naming ``what``, the value and the valid
    choices. Checked before anything is written, so a name like ``../../x`` cannot write outside its folder."""
    if isinstance(name, str) and SAFE_NAME.fullmatch(name) and ".." not in name:
        return name
    listed = f"valid choices: {', '.join(choices)}; or a name" if choices else "a name"
    raise ValueError(f"{what} {name!r} cannot be used as a file or folder name; {listed} of letters, digits and "
                     "_ . + - (no path separator, no '..', not starting with a dot or dash, at most 100 characters)")


def output_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as an absolute path, ``..`` and ``.`` resolved by name, so that what is written beside the folder
    (its lock ``.NAME.lock``, its temporary folder ``.NAME.partial-*``, ``NAME.failed.ipynb``) lies beside the
    folder itself. Refuses (``ValueError`` naming ``what`` and the value) a path whose last part is ``..``, or that
    names the root: the folder would be named after one of its parents (``runs/x/..`` is ``runs``) while its lock
    and temporary folder went into ``runs/x``, created for them. Checked before anything is written."""
    text = os.fspath(path)
    last = re.split(r"[/\\]", text.rstrip("/\\"))[-1] if text.strip() else ""
    folder = Path(os.path.abspath(text)) if text.strip() else None
    if last == ".." or folder is None or not folder.name:
        ends = repr(last) if last else "the root"
        raise ValueError(f"{what} {text!r} does not end in the folder's own name (it ends in {ends}); give a path "
                         "whose last part names the folder, e.g. runs/my-run; nothing was written")
    return folder


class FolderNotWritable(PermissionError):
    """An output folder that cannot be written (a read-only file system, no write permission); the message (one
    line) names the folder and says that nothing was done."""


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Refuse with :class:`FolderNotWritable`, before any work, when ``folder`` (or, where it does not exist yet, the
    nearest folder above it that does, where it would be created) cannot be written: a read-only file system, or no
    write permission for this user. ``what``: the output it is for, named in the message (e.g. "run folder X")."""
    folder = Path(os.path.abspath(folder))
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return  # a file where a folder should be: the caller's own check names it
    if os.access(existing, os.W_OK | os.X_OK):
        return
    read_only = hasattr(os, "statvfs") and bool(os.statvfs(existing).f_flag & getattr(os, "ST_RDONLY", 1))
    why = "it is on a read-only file system" if read_only else "this user may not write there"
    raise FolderNotWritable(f"cannot write {what}: {existing} is not writable ({why}); nothing was done: give "
                            "--out a folder you can write to, or make that one writable")


@contextlib.contextmanager
def signals_deferred(names=("SIGINT", "SIGTERM", "SIGHUP")) -> Iterator[None]:
    """Hold back the delivery of stop signals to this thread for the block (where the OS allows it)."""
    wanted = {getattr(signal, name) for name in names if hasattr(signal, name)}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def write_atomic_with(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)`` and rename the result to ``path``; on any error the temporary file is
    removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def write_atomic(path: str | os.PathLike, content: str | bytes) -> None:
    """Write ``content`` to ``path`` through a temporary name and a rename, so no reader sees half a file.

    Returns ``None``: notebooks end cells with this call, and a returned path would print the build machine's
    folder in the book (``make check-book`` refuses that)."""
    if isinstance(content, bytes):
        write_atomic_with(path, lambda partial: partial.write_bytes(content))
    else:
        write_atomic_with(path, lambda partial: partial.write_text(content))


def usual_permissions(folder: Path) -> None:
    """Give ``folder`` the permissions a new folder gets under the user's umask."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def move_into_place(partial: Path, target: Path) -> None:
    """Rename the finished folder ``partial`` to ``target``; an existing ``target`` is moved aside first and
    deleted only after the swap, so at every moment ``target`` is either the old or the new complete folder."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        with signals_deferred():  # a stop between the two renames would leave no target at all
            os.replace(target, old / target.name)
            os.replace(partial, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, target)


def new_partial_folder(target: Path) -> Path:
    """A fresh temporary sibling ``.NAME.partial-*`` of ``target``, with the usual permissions."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    usual_permissions(partial)
    return partial


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary sibling name; on success it replaces ``target`` (see
    :func:`move_into_place`), on any error it is removed and ``target`` is left as it was."""
    target = Path(target)
    partial = new_partial_folder(target)
    try:
        yield partial
        move_into_place(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------------------------
# Stamps: the size and change times of the files a content hash covers, recorded when the hash was last known to
# be right. While they match, the hash stands without reading the data; when any changed, the data are hashed
# again (see ``xaiutils.domain.synth.dataset.load_benchmark``).

STAMP_FILE = "cache/stamp.json"


def file_stamp(folder: str | os.PathLike, names) -> dict[str, list[int]]:
    """``{name: [size, mtime_ns, ctime_ns]}`` of files in ``folder``. ``ctime`` cannot be set back by a
    program (as ``mtime`` can), so an edit that restores the modification time is still seen."""
    stamp = {}
    for name in names:
        info = (Path(folder) / name).stat()
        stamp[name] = [info.st_size, info.st_mtime_ns, info.st_ctime_ns]
    return stamp


def stamp_matches(folder: str | os.PathLike, content_hash: str | None) -> bool:
    """Whether ``folder``'s stamp (``cache/stamp.json``) vouches for ``content_hash``: it records that hash and
    every file it lists still has the recorded size and change times."""
    try:
        stamp = json.loads((Path(folder) / STAMP_FILE).read_text())
        files = stamp["files"]
        return (content_hash is not None and stamp.get("content_hash") == content_hash and bool(files)
                and file_stamp(folder, files) == files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def write_stamp(folder: str | os.PathLike, names, content_hash: str) -> bool:
    """Record the stamp of ``names`` for ``content_hash``; ``False`` (and nothing else) if the folder is not
    writable: then the next reader hashes the data again."""
    try:
        stamp = {"content_hash": content_hash, "files": file_stamp(folder, names),
                 "note": "size, mtime_ns, ctime_ns of the files the content hash covers, when it was last checked"}
        write_atomic(Path(folder) / STAMP_FILE, json.dumps(stamp, indent=1) + "\n")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# Checksums: the size and SHA-256 of a finished folder's files, recorded when it was written, so that a file damaged
# later (truncated, overwritten, deleted) is found before the folder is trusted. A stamp over the same files (above)
# vouches for the record while nothing was touched, so checking an untouched folder reads no data.

CHECKSUMS_FILE = "checksums.json"


def file_checksums(folder: str | os.PathLike, names) -> dict[str, list]:
    """``{name: [size, sha256]}`` of files in ``folder``."""
    import hashlib

    checksums = {}
    for name in names:
        digest = hashlib.sha256()
        with open(Path(folder) / name, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        checksums[name] = [(Path(folder) / name).stat().st_size, digest.hexdigest()]
    return checksums


def _checksums_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def record_checksums(folder: str | os.PathLike, names) -> None:
    """Record the size and SHA-256 of ``names`` in ``folder/checksums.json`` (atomically), and a stamp that vouches
    for the record while the files are untouched."""
    names = sorted(names)
    text = json.dumps({"files": file_checksums(folder, names),
                       "note": "size and sha256 of the folder's files when it was written"}, indent=1) + "\n"
    write_atomic(Path(folder) / CHECKSUMS_FILE, text)
    write_stamp(folder, names, _checksums_hash(text))


def changed_files(folder: str | os.PathLike) -> list[str] | None:
    """The files of ``folder`` whose size or SHA-256 differ from ``checksums.json`` (a missing file included), ``[]``
    when none does, ``None`` when the folder has no readable record. Files are hashed only when the stamp no longer
    vouches for them; a folder found intact gets a fresh stamp (when it is writable)."""
    try:
        text = (Path(folder) / CHECKSUMS_FILE).read_text()
        recorded = json.loads(text)["files"]
        names = sorted(recorded)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if names and stamp_matches(folder, _checksums_hash(text)):
        return []
    changed = []
    for name in names:
        try:
            if file_checksums(folder, [name])[name] != list(recorded[name]):
                changed.append(name)
        except (OSError, TypeError):
            changed.append(name)
    if not changed and names:
        write_stamp(folder, names, _checksums_hash(text))
    return changed


def read_yaml_file(path: str | os.PathLike, what: str, missing_hint: str) -> Any:
    """The content of the YAML file ``path``; one-line errors name ``what`` it is (e.g. "grid file") and the file:
    a missing file (with ``missing_hint``: what to do instead), or invalid YAML (with its line and problem)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; {missing_hint}")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{what} {path} is not valid YAML{where} ({problem})") from None
