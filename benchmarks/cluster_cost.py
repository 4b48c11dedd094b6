"""What does the ``study`` preset cost on a Dask cluster, and what does Dask add to each cell and each map?

Measured here, on this machine, with a ``LocalCluster`` of 2 single-threaded worker processes:

- **scoring**: seconds per 64² map (exact EMD and the other metrics of the study) serially in one process, and the
  same maps through ``score_maps(backend=cluster.joblib_backend(client))`` (joblib's dask backend); the cluster's
  efficiency is the serial time over (workers × cluster time), 1.0 when Dask adds nothing;
- **grid**: seconds per cell of a stand-in notebook that does no work, one machine (one cell at a time) against
  the cluster (two at a time): what a cell costs besides its training (kernel start, papermill, Dask).

Then the projection for the study: the scoring on 8 nodes of 16 cores, the grid on 8 GPUs, from these figures and
from the measured ones quoted in the Reproducing chapter (GPU training throughput). Every figure printed says
whether it is measured (here, or where) or projected.

    nice -n 19 python benchmarks/cluster_cost.py            # about a minute on 2 cores
    nice -n 19 python benchmarks/cluster_cost.py --maps 48 --cells 8
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from emd_speed import maps as synthetic_maps  # noqa: E402
from emd_speed import study_maps  # noqa: E402

from xaiutils.domain import metrics  # noqa: E402
from xaiutils.execution import cluster  # noqa: E402
from xaiutils.execution.grid import grid_cells, run_grid  # noqa: E402
from xaiutils.foundation.config import resolve  # noqa: E402

NOTHING = """\
# %% tags=["parameters"]
preset = "smoke"
out_dir = None
grid = True
source = "none"
n_pretrained_blocks = 0
seed = 0
data_dir = None
mri_checkpoint = None

# %%
import json
from pathlib import Path
sidecar = {"config": {"model": "none"}, "history": {"best_epoch": 0, "seconds": 0.0},
           "metrics": {"val": {"accuracy": 0.5}, "test": {"accuracy": 0.5}}}
(Path(out_dir) / "model.json").write_text(json.dumps(sidecar))
"""

# Measured elsewhere, quoted in book/reproducing.md: VGG-16 at 224², batch 64, bf16, every block trained,
# on one NVIDIA H100 (benchmarks/gpu_finetune_throughput.py, 2026-11-26).
GPU_IMAGES_PER_SECOND = 1851


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", type=int, default=24, help="64² maps scored each way (default 24)")
    parser.add_argument("--cells", type=int, default=6, help="stand-in grid cells run each way (default 6)")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--cores", type=int, default=16, help="cores per scoring node")
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args(argv)
    import distributed

    explain = resolve("explain", "study")
    names = explain["metrics"]
    pairs = list(synthetic_maps(np.random.default_rng(0), 64, args.maps))
    batch = np.stack([a for a, _ in pairs]), np.stack([m for _, m in pairs])
    metrics.score_maps(batch[0][:2], batch[1][:2], metrics=names, resolution=64, n_jobs=1)  # imports, caches
    serial, serial_seconds = timed(metrics.score_maps, *batch, metrics=names, resolution=64, n_jobs=1)
    spec = {"sources": ["none"], "n_pretrained_blocks": [0], "seeds": list(range(args.cells))}
    with tempfile.TemporaryDirectory() as folder, distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None) as local, distributed.Client(local) as client:
        metrics.score_maps(batch[0][:2], batch[1][:2], metrics=names, resolution=64,
                           backend=cluster.joblib_backend(client))  # warm up
        spread, cluster_seconds = timed(metrics.score_maps, *batch, metrics=names, resolution=64,
                                        backend=cluster.joblib_backend(client))
        assert spread.equals(serial), "the cluster's scores differ from the serial ones"
        notebook = Path(folder) / "nothing.py"
        notebook.write_text(NOTHING)
        _, here = timed(run_grid, out_dir=Path(folder) / "here", spec=spec, notebook=notebook,
                        progress=False, check_inputs=False, workers=1)
        _, there = timed(run_grid, out_dir=Path(folder) / "there", spec=spec, notebook=notebook,
                         progress=False, check_inputs=False, cluster=client)
    per_map = serial_seconds / args.maps
    efficiency = serial_seconds / (2 * cluster_seconds)
    print(f"scoring, 64², {len(names)} metrics, {args.maps} maps (measured, this machine, {os.cpu_count()} cores):")
    print(f"  one process:          {per_map:.3f} s per map")
    print(f"  LocalCluster, 2 workers: {cluster_seconds / args.maps:.3f} s per map, efficiency {efficiency:.2f}")
    print(f"grid, stand-in cells that do no work, {args.cells} cells (measured):")
    print(f"  one machine, one at a time: {here / args.cells:.2f} s per cell")
    print(f"  LocalCluster, two at a time: {there / args.cells:.2f} s per cell of wall time "
          f"(cluster started beforehand)")

    data = resolve("data", "study")
    test_slices = round(data["n_subjects"] * data["split_fractions"][2]) * data["slices_per_subject"]
    train_slices = round(data["n_subjects"] * data["split_fractions"][0]) * data["slices_per_subject"]
    images = min(explain["n_test_images"], test_slices)
    cells = len(grid_cells(resolve("grid", "study")))
    n_maps, cheap, costly = study_maps(cells, images, explain["n_images_costly"])
    cores = args.nodes * args.cores
    print(f"\nstudy preset: {cells} grid cells; {cheap} methods and baselines on {images} test images "
          f"(the dataset's test split), {costly} costly ones on {explain['n_images_costly']}: {n_maps:,} maps")
    for label, seconds in (("this run's per-map cost", per_map), ("0.81 s per map (book/_emd_cost.md, measured "
                                                                  "under contention)", 0.81),
                           ("0.3 s per map (idle core, issue 13, measured)", 0.3)):
        wall = n_maps * seconds / cores
        print(f"  scoring at {label}: {n_maps * seconds / 3600:,.0f} core-hours; on {args.nodes} nodes × "
              f"{args.cores} cores: {wall / 3600:.2f} h if Dask adds nothing, {wall / min(1.0, efficiency) / 3600:.2f}"
              f" h at this run's efficiency (projected)")
    finetune = resolve("finetune", "study")
    epoch = train_slices / GPU_IMAGES_PER_SECOND
    cell = finetune["epochs"] * epoch + here / args.cells
    rounds = math.ceil(cells / args.gpus)
    print(f"  grid: {train_slices} training slices, at most {finetune['epochs']} epochs at {GPU_IMAGES_PER_SECOND} "
          f"images/s (measured, H100, every block trained) = {finetune['epochs'] * epoch:.0f} s of training per "
          f"cell at most, plus {here / args.cells:.1f} s per cell besides training (measured here) = {cell:.0f} s; "
          f"{cells} cells on {args.gpus} GPUs = {rounds} rounds: {rounds * cell / 60:.1f} min (projected, a lower "
          f"bound: loading the 224² dataset and the weights, evaluation passes and the test predictions are not "
          f"counted; early stopping and frozen blocks would shorten it)")


if __name__ == "__main__":
    main()
