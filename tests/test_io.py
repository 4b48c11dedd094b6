"""Atomic writes (xaiutils.foundation.files)."""

from __future__ import annotations

from xaiutils.foundation import files


def test_write_atomic_writes_whole_files_and_returns_nothing(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    # None: notebooks end cells with this call, and a returned path would show the build machine's folder
    assert files.write_atomic(target, "{}\n") is None
    assert target.read_text() == "{}\n"
    assert files.write_atomic(target, b"\x00\x01") is None
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(path.name for path in target.parent.iterdir()) == ["summary.json"]  # no temporary left
