"""The GitHub Actions workflows: actionlint passes them (and fails a broken one), the tests run the README's test
command on every push and pull request, and the book is deployed to GitHub Pages with its Colab copies published
where the launch buttons look for them (_config.yml's colab_branch and colab_root)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"


def actionlint() -> str:
    """The actionlint of this environment (requirements-test.txt installs it); a missing one is a failure."""
    found = Path(sys.executable).with_name("actionlint")
    path = str(found) if found.exists() else shutil.which("actionlint")
    assert path, "actionlint is not installed: `make test` installs it from requirements-test.txt"
    return path


def load(name: str) -> dict:
    # YAML 1.1 reads the key `on` as True; the workflow keeps it as GitHub writes it
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def test_actionlint_passes_every_workflow():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {path.name for path in files} >= {"tests.yml", "book.yml"}
    result = subprocess.run([actionlint(), *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_fails_a_broken_workflow(tmp_path):
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\njobs:\n  test:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ matrix.missing }}\n"
    )
    result = subprocess.run([actionlint(), str(broken)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "matrix" in result.stdout


def test_tests_run_the_readme_command_on_every_push_and_pull_request():
    workflow = load("tests.yml")
    assert "push" in workflow["on"] and "pull_request" in workflow["on"]
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in steps(job)]
    assert "make test" in runs
    assert "make test" in (ROOT / "README.md").read_text()
    # and again with the instruction sets forced, as .ci/run does
    assert any(run.startswith("make test-isa") for run in runs)
    assert "make test-isa" in (ROOT / ".ci" / "run").read_text()


def test_the_book_is_deployed_to_pages_from_main():
    workflow = load("book.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    uses = {step.get("uses", "").split("@")[0]: step for step in steps(build)}
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert "make book" in [step.get("run") for step in steps(build)]
    assert deploy["needs"] == "build"
    assert deploy["permissions"]["pages"] == "write" and deploy["permissions"]["id-token"] == "write"
    assert any(step.get("uses", "").startswith("actions/deploy-pages@") for step in steps(deploy))


def test_the_colab_copies_go_where_the_launch_buttons_point():
    sphinx = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    workflow = load("book.yml")
    uploads = [step for step in steps(workflow["jobs"]["build"])
               if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert [step["with"]["path"] for step in uploads] == [f"_build/html/{sphinx['colab_root']}"]
    artifact = uploads[0]["with"]["name"]
    deploy = workflow["jobs"]["deploy"]
    downloads = [step for step in steps(deploy) if step.get("uses", "").startswith("actions/download-artifact@")]
    assert downloads and downloads[0]["with"]["name"] == artifact
    folder = downloads[0]["with"]["path"]
    push = " ".join(step.get("run", "") for step in steps(deploy))
    assert f"--branch {sphinx['colab_branch']}" in push and push.rstrip().endswith(folder)
    assert deploy["permissions"]["contents"] == "write"


def test_cached_run_folders_are_keyed_by_the_code_and_the_preset():
    workflow = load("book.yml")
    restores = {step["with"]["path"]: step for step in steps(workflow["jobs"]["build"])
                if step.get("uses", "").startswith("actions/cache/restore@")}
    runs_key = restores["runs"]["with"]["key"]
    # the presets live in xaiutils/config.py, the notebooks' parameters in notebooks/
    assert "xaiutils/**" in runs_key and "notebooks/**" in runs_key and "requirements.txt" in runs_key
    book_key = restores["_build"]["with"]["key"]
    for source in ("xaiutils/**", "notebooks/**", "book/**", "_config.yml", "_toc.yml", "requirements.txt"):
        assert source in book_key, f"the built book's cache key leaves out {source}"
    assert "restore-keys" not in restores["_build"]["with"], "a built book is reused only when nothing changed"
