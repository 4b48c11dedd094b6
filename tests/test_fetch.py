"""The IXI fetcher against a local HTTP server on 127.0.0.1 that serves a small generated archive (no network)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from xaiutils.domain.mri import fetch
from xaiutils.domain.mri.nifti import load_volumes
from xaiutils.domain.synth.parameters import resolve_volume_source

SUBJECTS = ("IXI002-Guys-0828", "IXI012-HH-1211", "IXI013-HH-1212")


def _tiny_volume(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (20, 24, 18)
    grid = np.indices(shape).astype(float)
    center = np.array(shape)[:, None, None, None] / 2
    inside = (((grid - center) / (np.array(shape)[:, None, None, None] * 0.35)) ** 2).sum(axis=0) <= 1
    volume = (inside * 100 + rng.normal(0, 1, shape)).astype(np.float32)
    return nib.Nifti1Image(volume, np.diag([6.0, 6.0, 6.0, 1.0])).to_bytes()  # over 60 mm along each axis


def _gzip(raw: bytes) -> bytes:
    import gzip

    return gzip.compress(raw, mtime=0)


@pytest.fixture(scope="module")
def archive_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        readme = tarfile.TarInfo("README.txt")
        text = b"not a volume"
        readme.size = len(text)
        tar.addfile(readme, io.BytesIO(text))
        for seed, subject in enumerate(SUBJECTS):
            payload = _gzip(_tiny_volume(seed))
            info = tarfile.TarInfo(f"IXI-T1/{subject}-T1.nii.gz")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


class Server:
    """A threaded HTTP server on loopback serving one file, honouring Range (and If-Range) unless told not to;
    it can also break the connection after ``cut_after`` bytes of a full response."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.honour_range = True
        self.cut_after: int | None = None
        self.requests: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(dict(self.headers))
                body = server.payload
                total = len(body)
                wanted = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if wanted and server.honour_range and (if_range is None or if_range == '"v1"'):
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= total:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{total}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                    body = body[start:]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"v1"')
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if server.cut_after is not None:
                    self.wfile.write(body[: server.cut_after])
                    self.wfile.flush()
                    server.cut_after = None
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/downloads/IXI-T1.tar"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(archive_bytes):
    running = Server(archive_bytes)
    yield running
    running.close()


def test_fetch_ixi_downloads_checks_and_extracts(tmp_path, server, archive_bytes):
    digest = hashlib.sha256(archive_bytes).hexdigest()
    folder = fetch.fetch_ixi(tmp_path, url=server.url, sha256=digest, expected_size=len(archive_bytes),
                             progress=False)
    assert folder == tmp_path / "ixi" / "T1"
    assert sorted(p.name for p in folder.glob("*.nii.gz")) == sorted(f"{s}-T1.nii.gz" for s in SUBJECTS)
    assert not (folder / "README.txt").exists()
    assert not (folder.parent / "IXI-T1.tar").exists(), "archive is removed after extraction by default"
    assert not list(folder.parent.glob(".T1.partial-*"))
    volumes = load_volumes(folder)
    assert [v.subject for v in volumes] == sorted(SUBJECTS)
    assert all(v.mask_source == "computed" and v.brain_mask.any() for v in volumes)
    # a second call reuses the extraction without touching the network
    count = len(server.requests)
    assert fetch.fetch_ixi(tmp_path, url=server.url, progress=False) == folder
    assert len(server.requests) == count


def test_resume_from_truncated_part_gives_the_same_bytes(tmp_path, server, archive_bytes):
    dest = tmp_path / "IXI-T1.tar"
    cut = len(archive_bytes) // 3
    (tmp_path / "IXI-T1.tar.part").write_bytes(archive_bytes[:cut])
    fetch.download(server.url, dest, progress=False)
    assert dest.read_bytes() == archive_bytes
    assert server.requests[-1].get("Range") == f"bytes={cut}-"
    assert not (tmp_path / "IXI-T1.tar.part").exists()
    assert (tmp_path / "IXI-T1.tar.sha256").read_text().split()[0] == hashlib.sha256(archive_bytes).hexdigest()


def test_broken_connection_keeps_part_and_resumes(tmp_path, server, archive_bytes):
    dest = tmp_path / "IXI-T1.tar"
    server.cut_after = 1000
    with pytest.raises(ConnectionError, match="call again to resume"):
        fetch.download(server.url, dest, progress=False)
    part = tmp_path / "IXI-T1.tar.part"
    assert part.stat().st_size == 1000 and not dest.exists()
    fetch.download(server.url, dest, progress=False)
    assert dest.read_bytes() == archive_bytes
    assert server.requests[-1].get("Range") == "bytes=1000-"
    assert server.requests[-1].get("If-Range") == '"v1"', "the resumed request must carry the saved validator"


def test_server_without_range_support_restarts_cleanly(tmp_path, server, archive_bytes):
    server.honour_range = False
    dest = tmp_path / "IXI-T1.tar"
    (tmp_path / "IXI-T1.tar.part").write_bytes(b"garbage that is not the start of the file")
    fetch.download(server.url, dest, progress=False)
    assert dest.read_bytes() == archive_bytes


def test_complete_part_is_finished_without_download(tmp_path, server, archive_bytes):
    dest = tmp_path / "IXI-T1.tar"
    (tmp_path / "IXI-T1.tar.part").write_bytes(archive_bytes)
    fetch.download(server.url, dest, progress=False)  # the server answers 416 with the total size
    assert dest.read_bytes() == archive_bytes


def test_checksum_mismatch_is_named_and_nothing_kept(tmp_path, server):
    dest = tmp_path / "IXI-T1.tar"
    with pytest.raises(ValueError, match="sha256 .* expected 0000"):
        fetch.download(server.url, dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not (tmp_path / "IXI-T1.tar.part").exists()
    with pytest.raises(ValueError, match="expected 12 bytes|has .* bytes, expected 12"):
        fetch.download(server.url, dest, expected_size=12, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_raises_connection_error(tmp_path):
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        fetch.download("http://127.0.0.1:9/none.tar", tmp_path / "none.tar", progress=False, timeout=5)


def test_extraction_flattens_member_paths(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        payload = _gzip(_tiny_volume(0))
        info = tarfile.TarInfo("../../escape-T1.nii.gz")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    folder = fetch.extract_volumes(archive, tmp_path / "out" / "T1")
    assert (folder / "escape-T1.nii.gz").is_file()
    assert not (tmp_path / "escape-T1.nii.gz").exists()
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(ValueError, match="holds no NIfTI files"):
        fetch.extract_volumes(empty, tmp_path / "out2" / "T1")
    assert not (tmp_path / "out2" / "T1").exists() and list((tmp_path / "out2").iterdir()) == []


def test_data_home_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(fetch.DATA_ENV, str(tmp_path / "home"))
    assert fetch.data_home() == tmp_path / "home"
    assert fetch.ixi_folder() == tmp_path / "home" / "ixi" / "T1"
    monkeypatch.delenv(fetch.DATA_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert fetch.data_home() == Path(tmp_path / "user" / "xaibench_data")
    with pytest.raises(FileNotFoundError, match="fetch_ixi"):
        fetch.ixi_folder(must_exist=True)
    with pytest.raises(FileNotFoundError, match="fetch_ixi"):
        resolve_volume_source("ixi")
