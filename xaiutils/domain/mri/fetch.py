"""Downloading an openly available T1 collection (IXI) into a local data home, resumably and checked.

The data home is ``$XAIBENCH_DATA`` if set, else ``~/xaibench_data``. :func:`fetch_ixi` downloads the IXI T1
archive (one ``.tar`` of ``.nii.gz`` volumes, one per subject) with HTTP Range requests into a ``.part`` file, so
an interrupted download resumes where it stopped; checks its size against the server's and, when given, its
sha256; and extracts the volumes atomically into ``<data home>/ixi/T1``. A folder without the completion marker
is never used.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from xaiutils.foundation.files import atomic_folder

DATA_ENV = "XAIBENCH_DATA"
DEFAULT_DATA_HOME = "~/xaibench_data"
IXI_T1_URL = "http://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/IXI-T1.tar"
COMPLETE_MARKER = ".complete.json"
CHUNK = 1 << 20


def data_home(path: str | os.PathLike | None = None) -> Path:
    """Where downloaded data live: ``path`` if given, else ``$XAIBENCH_DATA``, else ``~/xaibench_data``."""
    chosen = path if path is not None else os.environ.get(DATA_ENV) or DEFAULT_DATA_HOME
    return Path(chosen).expanduser()


def ixi_folder(home: str | os.PathLike | None = None, must_exist: bool = False) -> Path:
    """The folder holding the extracted IXI T1 volumes (``<data home>/ixi/T1``)."""
    folder = data_home(home) / "ixi" / "T1"
    if must_exist and not (folder / COMPLETE_MARKER).is_file():
        raise FileNotFoundError(
            f"IXI T1 volumes not found in {folder}; download them first with xaiutils.domain.mri.fetch.fetch_ixi() "
            f"(set ${DATA_ENV} to choose where they go)"
        )
    return folder


def sha256sum(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _total_from_content_range(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", value or "")
    if match and match.group(3) != "*":
        return int(match.group(3))
    match = re.match(r"bytes\s+\*/(\d+)", value or "")
    return int(match.group(1)) if match else None


def download(url: str, dest: str | os.PathLike, *, expected_size: int | None = None, sha256: str | None = None,
             progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, resuming from ``dest + '.part'`` if an earlier try stopped midway.

    A resumed request carries ``Range: bytes=<have>-`` and ``If-Range`` (the validator saved from the first
    response), so a file that changed on the server restarts from zero instead of being spliced. The result must
    have the size the server announced (and ``expected_size`` / ``sha256`` when given); otherwise a ``ValueError``
    names the mismatch and the bad ``.part`` is deleted. A broken connection raises ``ConnectionError`` and keeps
    the ``.part`` for the next call. The finished file is renamed into place, so ``dest`` is never partial.
    """
    from tqdm import tqdm

    dest = Path(dest)
    if dest.is_file():
        _verify(dest, expected_size, sha256, delete=False)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    state_file = dest.with_name(dest.name + ".part.json")
    state = json.loads(state_file.read_text()) if state_file.is_file() and part.is_file() else {"url": url}
    if state.get("url") != url:  # a .part of another URL: start over
        state = {"url": url}
        part.unlink(missing_ok=True)
    have = part.stat().st_size if part.is_file() else 0

    request = urllib.request.Request(url, headers={"User-Agent": "xaiutils-fetch"})
    if have > 0:
        request.add_header("Range", f"bytes={have}-")
        validator = state.get("etag") or state.get("last_modified")
        if validator:
            request.add_header("If-Range", validator)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        total = _total_from_content_range(error.headers.get("Content-Range"))
        if error.code == 416 and have > 0 and total == have:  # the .part already holds the whole file
            return _finish(part, state_file, dest, have, expected_size, sha256)
        if error.code == 416:  # the .part does not fit this file: start over next time
            part.unlink(missing_ok=True)
            state_file.unlink(missing_ok=True)
        raise ConnectionError(f"download of {url} failed: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise ConnectionError(f"download of {url} failed: {error}") from error

    with response:
        if response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            start = re.match(r"bytes\s+(\d+)-", content_range)
            if start is None or int(start.group(1)) != have:
                raise ConnectionError(f"download of {url}: server answered range {content_range!r}, asked {have}-")
            total = _total_from_content_range(content_range)
            mode = "ab"
        else:  # 200: the server sent the whole file (no range support, or the file changed)
            have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
            mode = "wb"
            state = {"url": url, "etag": response.headers.get("ETag"),
                     "last_modified": response.headers.get("Last-Modified"), "total": total}
            state_file.write_text(json.dumps(state))
        total = total if total is not None else state.get("total")
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=not progress)
        try:
            with open(part, mode) as stream:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (OSError, ValueError, http.client.HTTPException) as error:
                        raise ConnectionError(
                            f"download of {url} broke off after {stream.tell()} bytes ({error}); call again to "
                            "resume"
                        ) from error
                    if not block:
                        break
                    stream.write(block)
                    bar.update(len(block))
        finally:
            bar.close()
    size = part.stat().st_size
    if total is not None and size < total:
        raise ConnectionError(f"download of {url} stopped at {size} of {total} bytes; call again to resume")
    if total is not None and size > total:
        part.unlink()
        state_file.unlink(missing_ok=True)
        raise ValueError(f"download of {url} has {size} bytes, more than the {total} announced; deleted")
    return _finish(part, state_file, dest, size, expected_size, sha256)


def _verify(path: Path, expected_size: int | None, sha256: str | None, delete: bool) -> str:
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        if delete:
            path.unlink()
        raise ValueError(f"{path.name} has {size} bytes, expected {expected_size}" + (" (deleted)" if delete else ""))
    digest = sha256sum(path)
    if sha256 is not None and digest != sha256.lower():
        if delete:
            path.unlink()
        raise ValueError(f"{path.name} has sha256 {digest}, expected {sha256}" + (" (deleted)" if delete else ""))
    return digest


def _finish(part: Path, state_file: Path, dest: Path, size: int, expected_size, sha256) -> Path:
    try:
        digest = _verify(part, expected_size, sha256, delete=True)
    finally:
        if not part.exists():
            state_file.unlink(missing_ok=True)
    os.replace(part, dest)
    state_file.unlink(missing_ok=True)
    dest.with_name(dest.name + ".sha256").write_text(f"{digest}  {dest.name}\n")
    return dest


def extract_volumes(archive: str | os.PathLike, folder: str | os.PathLike, source: str = "") -> Path:
    """Extract the NIfTI files (``.nii``, ``.nii.gz``) of a tar ``archive`` flat into ``folder``, atomically:
    into a temporary sibling first, with a completion marker, then renamed into place. Other members and any
    path components of member names are ignored, so a crafted archive cannot write outside ``folder``."""
    archive, folder = Path(archive), Path(folder)
    with atomic_folder(folder) as partial:
        count = 0
        try:
            with tarfile.open(archive) as tar:
                for member in tar:
                    name = Path(member.name).name
                    if not member.isfile() or not name.lower().endswith((".nii", ".nii.gz")) or name.startswith("."):
                        continue
                    with tar.extractfile(member) as stream, open(partial / name, "wb") as out:
                        shutil.copyfileobj(stream, out, CHUNK)
                    count += 1
        except tarfile.TarError as error:
            raise ValueError(f"cannot extract {archive}: not a readable tar archive ({error})") from error
        if count == 0:
            raise ValueError(f"archive {archive} holds no NIfTI files (.nii, .nii.gz)")
        marker = {"source": source, "archive": archive.name, "n_files": count}
        (partial / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return folder


def fetch_ixi(home: str | os.PathLike | None = None, *, url: str = IXI_T1_URL, sha256: str | None = None,
              expected_size: int | None = None, keep_archive: bool = False, progress: bool = True,
              timeout: float = 60.0) -> Path:
    """Download and extract the IXI T1 volumes into ``<data home>/ixi/T1`` (once) and return that folder.

    Safe to call again after an interruption: a finished extraction is reused, a partial download resumes.
    ``url``, ``sha256`` and ``expected_size`` can point the fetcher at a mirror or pin a known archive.
    """
    folder = ixi_folder(home)
    if (folder / COMPLETE_MARKER).is_file():
        return folder
    archive = folder.parent / Path(urllib.request.urlparse(url).path).name
    if not archive.name:
        raise ValueError(f"cannot tell the archive's file name from url {url!r}")
    download(url, archive, expected_size=expected_size, sha256=sha256, progress=progress, timeout=timeout)
    extract_volumes(archive, folder, source=url)
    if not keep_archive:
        archive.unlink()
        archive.with_name(archive.name + ".sha256").unlink(missing_ok=True)
    return folder
