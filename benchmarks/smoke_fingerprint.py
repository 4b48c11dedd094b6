"""The fingerprint of a pipeline run, to show that a change left the benchmark's outputs as they were.

    python benchmarks/smoke_fingerprint.py runs/smoke                 # print it
    python benchmarks/smoke_fingerprint.py OLD/runs/smoke runs/smoke  # compare two; exit 1 if they differ

A fingerprint is the dataset's content hash (``01_data/dataset/card.json``) and the SHA-256 of the grid's
``accuracy.csv`` and of notebook 4's ``scores.csv``, each without its timing columns (their names hold
"seconds"), which differ from run to run. Run every notebook first, e.g. at the smoke preset:
``for nb in 00_overview 01_data 02_pretrain_mri 03_finetune 04_explain 05_regression; do
.venv/bin/python -m xaiutils run $nb --preset smoke; done``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import pandas as pd

TABLES = ("03_finetune/grid/accuracy.csv", "04_explain/scores.csv")


def table_digest(path: Path) -> dict:
    """SHA-256 of the table as text, with the timing columns dropped (every value read as text, unchanged)."""
    table = pd.read_csv(io.StringIO(path.read_text()), dtype=str, keep_default_na=False)
    timing = [column for column in table.columns if "seconds" in column]
    text = table.drop(columns=timing).to_csv(index=False)
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "rows": len(table), "timing_columns": timing}


def fingerprint(runs_dir: Path) -> dict:
    card = runs_dir / "01_data" / "dataset" / "card.json"
    missing = [str(path) for path in (card, *(runs_dir / name for name in TABLES)) if not path.is_file()]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} missing; run notebooks 01, 03 and 04 into {runs_dir} first")
    return {"content_hash": json.loads(card.read_text())["content_hash"],
            **{name: table_digest(runs_dir / name) for name in TABLES}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dirs", nargs="+", metavar="RUNS_DIR", help="runs/<preset> folder(s): one or two")
    args = parser.parse_args(argv)
    if len(args.runs_dirs) > 2:
        parser.error("give one RUNS_DIR to print its fingerprint, or two to compare them")
    prints = [fingerprint(Path(folder)) for folder in args.runs_dirs]
    print(json.dumps(prints[0] if len(prints) == 1 else dict(zip(("before", "after"), prints, strict=True)),
                     indent=1))
    if len(prints) == 2:
        same = prints[0] == prints[1]
        print("identical" if same else "DIFFERENT")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
