"""How far the book's numbers move between machines: build a preset under simulated instruction sets and compare.

Floating-point results of the same code differ between CPUs (AVX-512, AVX2 and generic code paths round
differently; training amplifies it). One machine can run another's code paths: PyTorch (``ATEN_CPU_CAPABILITY``),
oneDNN (``ONEDNN_MAX_CPU_ISA``) and NumPy's dispatched loops (``NPY_DISABLE_CPU_FEATURES``; features a CPU lacks are
ignored). The same settings drive ``make test-isa`` (``tests/test_cross_build.py`` checks they agree).

    # each build runs notebooks 00-05 in order, into a runs folder of its own (never two at once: 2 cores)
    python benchmarks/cross_build.py build --isa native --runs runs/cross-build/native
    python benchmarks/cross_build.py build --isa avx2 --runs runs/cross-build/avx2
    # every glued number and verdict, the grid's accuracies and the dataset hash, side by side
    python benchmarks/cross_build.py compare runs/cross-build/native runs/cross-build/avx2 \\
        --labels native avx2 --markdown book/_cross_build.md --record book/cross_build.json

``--record`` writes what notebook 5 reads to mark a verdict that flips between the builds as not robust
(:func:`xaiutils.analysis.verdicts.robustness`).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from xaiutils.analysis.verdicts import preset_settings
from xaiutils.foundation.files import write_atomic

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("00_overview", "01_data", "02_pretrain_mri", "03_finetune", "04_explain", "05_regression")

# One CPU's code paths on another (the Makefile's ISA_ENV_* hold the same; a test checks they agree).
ISA_ENVIRONMENTS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "NPY_DISABLE_CPU_FEATURES": "X86_V4,AVX512_ICL,AVX512_SPR"},
    "generic": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                "NPY_DISABLE_CPU_FEATURES": "X86_V3,X86_V4,AVX512_ICL,AVX512_SPR"},
}


def isa_environment(isa: str) -> dict[str, str]:
    if isa not in ISA_ENVIRONMENTS:
        raise SystemExit(f"unknown --isa {isa!r}; valid: {', '.join(ISA_ENVIRONMENTS)}")
    return ISA_ENVIRONMENTS[isa]


def git_commit() -> str:
    """The checkout's commit, with ``+changes`` when tracked files differ from it."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "xaiutils", "notebooks"], cwd=ROOT).returncode
    return commit + ("+changes" if dirty else "")


def build(isa: str, runs: Path, preset: str) -> None:
    """Run the six notebooks at ``preset`` into ``runs`` (``$XAIBENCH_RUNS``), as the book build runs them, and
    note in ``runs/build.json`` the setting and the commit of the code."""
    env = {**os.environ, **isa_environment(isa), "XAIBENCH_RUNS": str(runs.resolve())}
    runs.mkdir(parents=True, exist_ok=True)
    write_atomic(runs / "build.json", json.dumps({"isa": isa, "environment": isa_environment(isa),
                                                  "commit": git_commit(), "preset": preset}, indent=2) + "\n")
    for notebook in NOTEBOOKS:
        if (runs / preset / notebook / "run.json").exists():
            print(f"{notebook}: finished before, kept", flush=True)
            continue
        print(f"{notebook}: running with {isa_environment(isa) or 'the native code paths'}", flush=True)
        subprocess.run([sys.executable, "-m", "xaiutils", "run", notebook, "--preset", preset], env=env,
                       cwd=ROOT, check=True)


def glued_values(notebook: Path) -> dict[str, object]:
    """``{name: value}`` of every ``glue`` in an executed notebook (MyST-NB stores them as display outputs)."""
    values = {}
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            scrapbook = output.get("metadata", {}).get("scrapbook", {})
            if "name" not in scrapbook:
                continue
            # numbers are stored as their repr, texts as themselves (xaiutils.book.glue pastes them without quotes)
            text = "".join(output.get("data", {}).get(scrapbook.get("mime_prefix", "") + "text/plain", ""))
            name = scrapbook["name"]
            try:
                values[name] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                values[name] = text
    return values


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare_glue(a: Path, b: Path, preset: str) -> pd.DataFrame:
    rows = []
    for notebook in NOTEBOOKS:
        run_a, run_b = (root / preset / notebook / f"{notebook}.ipynb" for root in (a, b))
        values_a, values_b = glued_values(run_a), glued_values(run_b)
        # the *_robustness texts are read from the record this comparison writes: not results of the build
        names = sorted(name for name in set(values_a) | set(values_b) if not name.endswith("_robustness"))
        for name in names:
            value_a, value_b = values_a.get(name), values_b.get(name)
            numeric = is_number(value_a) and is_number(value_b)
            difference = abs(value_a - value_b) if numeric else math.nan
            rows.append({"notebook": notebook, "name": name, "a": value_a, "b": value_b,
                         "abs_difference": difference, "same": value_a == value_b})
    return pd.DataFrame(rows)


def compare_accuracy(a: Path, b: Path, preset: str) -> pd.DataFrame:
    keys = ["source", "n_pretrained_blocks", "seed"]
    tables = [pd.read_csv(root / preset / "03_finetune" / "grid" / "accuracy.csv") for root in (a, b)]
    merged = tables[0][keys + ["test_accuracy"]].merge(tables[1][keys + ["test_accuracy"]], on=keys,
                                                       suffixes=("_a", "_b"), how="outer")
    merged["abs_difference"] = (merged["test_accuracy_a"] - merged["test_accuracy_b"]).abs()
    return merged


def dataset_hash(root: Path, preset: str) -> str:
    card = json.loads((root / preset / "01_data" / "dataset" / "card.json").read_text())
    return card.get("content_hash", "?")


# notebook 5's statements that the book marks when they flip: the claims' verdicts and two summary statements
STATEMENTS = ("top_method", "n_methods_beating_baselines")


def dataset_difference(a: Path, b: Path, preset: str) -> str:
    """Where two datasets of the same parameters and seed differ: the pixels, by how much."""
    import numpy as np

    from xaiutils.domain.synth.dataset import load_benchmark

    first, second = (load_benchmark(root / preset / "01_data" / "dataset") for root in (a, b))
    parts = []
    for name in ("images", "masks", "labels"):
        x, y = (np.asarray(getattr(dataset, name), dtype=float) for dataset in (first, second))
        if x.shape != y.shape:
            parts.append(f"{name}: shapes {x.shape} and {y.shape}")
            continue
        differ = x != y
        parts.append(f"{name}: {int(differ.sum()):,} of {x.size:,} values differ"
                     + (f", by at most {np.abs(x - y).max():.2g}" if differ.any() else ""))
    return "; ".join(parts)


def verdict_rows(glue: pd.DataFrame) -> pd.DataFrame:
    statement = glue["name"].str.endswith("_verdict") | glue["name"].isin(STATEMENTS)
    return glue[statement & (glue["notebook"] == "05_regression")]


def markdown(glue, accuracy, hashes, difference, labels, commit) -> str:
    label_a, label_b = labels
    numeric = glue[glue["abs_difference"].notna()]
    moved = numeric[numeric["abs_difference"] > 0]
    lines = [
        f"Two builds of the `book` preset on one machine (commit {commit}), one with its native code paths "
        f"(`{label_a}`), one forced to another instruction set (`{label_b}`); measured "
        f"{datetime.date.today().isoformat()} with `benchmarks/cross_build.py`.",
        "",
        f"- Dataset content hash: `{hashes[0][:12]}` and `{hashes[1][:12]}`"
        + (" (identical)." if hashes[0] == hashes[1] else f" (they differ: {difference})."),
        f"- Grid: {int((accuracy['abs_difference'] > 0).sum())} of {len(accuracy)} runs changed test accuracy; "
        f"largest change {accuracy['abs_difference'].max():.3f}, mean {accuracy['abs_difference'].mean():.3f}.",
        f"- Glued numbers: {len(moved)} of {len(numeric)} moved; glued texts: "
        f"{int((~glue.loc[glue['abs_difference'].isna(), 'same']).sum())} of {int(glue['abs_difference'].isna().sum())}"
        " changed.",
        "",
        "| cell | " + f"{label_a} | {label_b} | abs. difference |",
        "| --- | --- | --- | --- |",
    ]
    for row in accuracy.sort_values(["source", "n_pretrained_blocks", "seed"]).itertuples():
        lines.append(f"| `{row.source}` k = {row.n_pretrained_blocks}, seed {row.seed} | {row.test_accuracy_a:.3f} | "
                     f"{row.test_accuracy_b:.3f} | {row.abs_difference:.3f} |")
    lines += ["", f"| notebook | glued value | {label_a} | {label_b} | abs. difference |",
              "| --- | --- | --- | --- | --- |"]
    for row in glue.itertuples():
        if is_number(row.a) and is_number(row.b):
            shown = (f"{row.a:.4g}", f"{row.b:.4g}", f"{row.abs_difference:.3g}")
        else:
            shown = (f"{row.a}", f"{row.b}", "same" if row.same else "**differs**")
        lines.append(f"| {row.notebook} | `{row.name}` | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def compare(a: Path, b: Path, labels, preset: str, markdown_path: Path | None, record_path: Path | None,
            commit: str | None = None) -> None:
    glue = compare_glue(a, b, preset)
    accuracy = compare_accuracy(a, b, preset)
    hashes = (dataset_hash(a, preset), dataset_hash(b, preset))
    if commit is None:
        commits = {json.loads((root / "build.json").read_text())["commit"] for root in (a, b)
                   if (root / "build.json").exists()}
        if len(commits) > 1:
            raise SystemExit(f"the two builds ran different code ({' and '.join(sorted(commits))}): not comparable")
        commit = commits.pop() if commits else "unknown"
    difference = dataset_difference(a, b, preset) if hashes[0] != hashes[1] else ""
    text = markdown(glue, accuracy, hashes, difference, labels, commit)
    print(text)
    if markdown_path:
        write_atomic(markdown_path, text)
    if record_path:
        verdicts = verdict_rows(glue)
        record = {
            "measured": datetime.date.today().isoformat(), "commit": commit, "preset": preset,
            "settings": preset_settings(preset),
            "builds": {labels[0]: ISA_ENVIRONMENTS.get(labels[0], {}), labels[1]: ISA_ENVIRONMENTS.get(labels[1], {})},
            "verdicts": {row.name: {labels[0]: row.a, labels[1]: row.b} for row in verdicts.itertuples()},
        }
        write_atomic(record_path, json.dumps(record, indent=2) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("build", help="run notebooks 00-05 under one instruction-set setting")
    run.add_argument("--isa", required=True, choices=list(ISA_ENVIRONMENTS))
    run.add_argument("--runs", required=True, type=Path, help="runs folder of this build ($XAIBENCH_RUNS)")
    run.add_argument("--preset", default="book")
    both = commands.add_parser("compare", help="compare two builds' glued values, accuracies and dataset hash")
    both.add_argument("a", type=Path)
    both.add_argument("b", type=Path)
    both.add_argument("--labels", nargs=2, default=["a", "b"])
    both.add_argument("--preset", default="book")
    both.add_argument("--markdown", type=Path, default=None)
    both.add_argument("--record", type=Path, default=None)
    both.add_argument("--commit", default=None,
                      help="the commit the builds ran (default: from their build.json, which `build` writes)")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.isa, args.runs, args.preset)
    else:
        compare(args.a, args.b, args.labels, args.preset, args.markdown, args.record, args.commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
