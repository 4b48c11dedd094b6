"""requirements.txt, environment.yml, binder/environment.yml and pyproject.toml must agree, and binder/postBuild
pairs every notebook of the book with the .ipynb its Binder button opens."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)$")


def pins(lines) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        match = PIN.match(line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def conda_pip_section(path: Path) -> list[str]:
    spec = yaml.safe_load(path.read_text())
    sections = [item["pip"] for item in spec["dependencies"] if isinstance(item, dict) and "pip" in item]
    assert len(sections) == 1, f"{path} should have exactly one pip section"
    return sections[0]


def test_requirements_are_exact_pins():
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines, "requirements.txt is empty"
    loose = [line for line in lines if not PIN.match(line)]
    assert not loose, f"requirements.txt lines that are not exact pins: {loose}"
    required = {"torch", "torchvision", "captum", "numpy", "nibabel", "nilearn", "pot", "statsmodels", "pandas",
                "matplotlib", "tqdm", "jupyter-book", "jupytext", "papermill", "ipykernel", "pytest"}
    assert required <= set(pins(lines)), f"missing pins: {sorted(required - set(pins(lines)))}"
    assert pins(lines)["torch"] == "2.14.1" and pins(lines)["torchvision"] == "0.29.1"
    assert Version(pins(lines)["jupyter-book"]) < Version("2")


def test_environment_yml_installs_the_same_pins():
    requirements = pins((ROOT / "requirements.txt").read_text().splitlines())
    environment = pins(conda_pip_section(ROOT / "environment.yml"))
    assert environment == requirements


def test_binder_differs_only_by_cpu_torch():
    requirements = pins((ROOT / "requirements.txt").read_text().splitlines())
    section = conda_pip_section(ROOT / "binder" / "environment.yml")
    binder = pins(section)
    assert set(binder) == set(requirements)
    for name, version in requirements.items():
        if name in ("torch", "torchvision"):
            assert binder[name] == f"{version}+cpu", f"binder should pin the CPU build of {name}"
        else:
            assert binder[name] == version, f"binder pins {name}=={binder[name]}, requirements.txt {version}"
    assert any("download.pytorch.org/whl/cpu" in line for line in section)
    # The file CI installs must never pull the CPU index.
    assert "+cpu" not in (ROOT / "requirements.txt").read_text()


def test_pinned_versions_satisfy_pyproject_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = pins((ROOT / "requirements.txt").read_text().splitlines())
    declared = project["dependencies"] + [dep for group in project["optional-dependencies"].values() for dep in group]
    for text in declared:
        requirement = Requirement(text)
        name = requirement.name.lower()
        assert name in requirements, f"pyproject depends on {name}, which requirements.txt does not pin"
        assert requirement.specifier.contains(requirements[name], prereleases=True), (
            f"{name}=={requirements[name]} is outside pyproject's range {requirement.specifier}"
        )


def test_gpu_machine_wheels_follow_the_requirements_pins():
    """benchmarks/device_wheels.sh fetches nibabel, nilearn and captum for a GPU machine at the pinned versions."""
    printed = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_wheels.sh"), "--print"],
                             capture_output=True, text=True, check=True).stdout.split()
    required = pins((ROOT / "requirements.txt").read_text().splitlines())
    assert pins(printed) == {name: required[name] for name in ("nibabel", "nilearn", "captum")}


def toc_files() -> list[str]:
    """Every page of _toc.yml, as its path without suffix."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("root", "file"):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    return found


def test_binder_postbuild_pairs_every_notebook_of_the_book(tmp_path):
    """binder/postBuild's pairing steps, run on a copy of the pages: every page that is a notebook (py:percent, or
    MyST markdown with a kernelspec) gets the .ipynb that its Binder button opens."""
    for folder in ("notebooks", "book"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("_ext", "*.bib"))
    script = (ROOT / "binder" / "postBuild").read_text()
    pairing = script[script.index("\nfor "):]  # the steps after installing (the loops of jupytext conversions)
    jupytext = Path(sys.executable).with_name("jupytext")
    env = {**os.environ, "PATH": f"{jupytext.parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", "-euo", "pipefail", "-c", pairing], cwd=tmp_path, env=env, check=True,
                   capture_output=True, text=True)
    notebooks = []
    for page in toc_files():
        source = next((ROOT / page).parent.glob(Path(page).name + ".*"))
        if source.suffix == ".py" or "kernelspec:" in source.read_text().split("\n---", 1)[0]:
            notebooks.append(page)
    assert len(notebooks) >= 6, notebooks
    missing = [page for page in notebooks if not (tmp_path / f"{page}.ipynb").exists()]
    assert not missing, f"binder/postBuild leaves these notebooks unpaired: {missing}"
