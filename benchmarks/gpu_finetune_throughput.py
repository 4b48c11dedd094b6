"""Fine-tuning throughput through the real training loop, as a ratio to synthetic tensors (issue: data path).

Measures, in one run and on one device:

1. *synthetic*: VGG-16 train steps (Adam, cross-entropy, bf16 autocast on CUDA) on one random batch that stays
   on the device: the model's own ceiling;
2. *real loop*: ``xaiutils.domain.train.fit`` on a benchmark dataset made by
``xaiutils.domain.synth.dataset.make_benchmark``, timed
   per epoch over the training images only (``train_images_per_second`` in the history).

Target on an H100/H200: ratio >= 0.85 (the data path must not starve the GPU). Run on a GPU machine with::

    python benchmarks/gpu_finetune_throughput.py --image-size 224 --width 1.0 --out results.json

or, on a GPU machine whose Python lacks this project's packages, ``bash benchmarks/run_on_device.sh`` after
``bash benchmarks/device_wheels.sh`` here (it fetches the missing wheels: nibabel, nilearn and captum).

``--quick`` runs a tiny configuration on the CPU (what the test suite checks: the script works end to end).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from xaiutils.domain import models, train
from xaiutils.domain.synth.dataset import load_benchmark, make_benchmark


def synthetic_throughput(model, batch_size: int, image_size: int, steps: int, warmup: int, device) -> float:
    """Images per second of train steps on one device-resident random batch."""
    model = model.to(device).train()
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.rand(batch_size, 1, image_size, image_size, device=device)
    y = torch.randint(0, 2, (batch_size,), device=device)
    loss_function = torch.nn.CrossEntropyLoss()

    def step():
        optimiser.zero_grad(set_to_none=True)
        with train.autocast(device):
            loss = loss_function(model(x).float(), y)
        loss.backward()
        optimiser.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - started)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="vgg16", choices=models.BACKBONES)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    # 128 x 16 slices: about 1,640 training images, some 26 steps of 64 per epoch, so that an epoch is long enough
    # to time on a fast GPU; the median over epochs 2-4 is reported.
    parser.add_argument("--n-subjects", type=int, default=128, help="pseudo-subjects in the benchmark dataset")
    parser.add_argument("--slices-per-subject", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4, help="real-loop epochs; the first is warm-up")
    parser.add_argument("--steps", type=int, default=50, help="synthetic timed steps")
    parser.add_argument("--device", default=None)
    parser.add_argument("--quick", action="store_true", help="tiny CPU configuration (checks the script runs)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.width, args.image_size, args.batch_size = 0.125, 32, 8
        args.n_subjects, args.slices_per_subject, args.epochs, args.steps = 6, 4, 2, 3
    device = train.select_device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        # Lesion sizes scale with the image side (the smoke preset's radii are for 64²).
        scale = args.image_size / 64
        path = make_benchmark(
            Path(tmp) / "dataset", preset="smoke", seed=0, image_size=args.image_size,
            n_subjects=args.n_subjects, slices_per_subject=args.slices_per_subject, split_fractions=(0.8, 0.1, 0.1),
            radius_range=(3.0 * scale, 6.0 * scale), edge_softness=scale, min_gap=scale, progress=False,
        )
        bench = load_benchmark(path)
    train_rows, val_rows = bench.indices("train"), bench.indices("val")
    model = models.prepare_model(args.backbone, "none", 0, width=args.width, seed=0)
    history = train.fit(model, (bench.images[train_rows], bench.labels[train_rows]),
                        (bench.images[val_rows], bench.labels[val_rows]), epochs=args.epochs, lr=1e-4,
                        batch_size=args.batch_size, patience=args.epochs, seed=0, device=device, progress=False)
    timed = history["epochs"][1:] or history["epochs"]  # epoch 1 pays cuDNN autotuning and allocator warm-up
    real = float(np.median([epoch["train_images_per_second"] for epoch in timed]))

    fresh = models.prepare_model(args.backbone, "none", 0, width=args.width, seed=0)
    synthetic = synthetic_throughput(fresh, args.batch_size, args.image_size, args.steps, warmup=5, device=device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "model": models.model_name(args.backbone, args.width),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "train_images": int(len(train_rows)),
        "real_loop_images_per_second": round(real, 2),
        "synthetic_images_per_second": round(synthetic, 2),
        "ratio": round(real / synthetic, 4),
        "target_ratio": 0.85,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
