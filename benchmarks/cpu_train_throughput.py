"""CPU training throughput (images/s) of each backbone and width at the default book preset's image size.

Measured before choosing the default preset's backbone and budget (issue: a default book whose models learn).
Train steps (Adam, cross-entropy) on a random batch of grey slices, after a few warm-up steps, for:

- ``k = 0``: every block trained (the ``none`` arm);
- ``k = 1, 3``: the first k blocks frozen. "uncached" runs the frozen blocks in every step, as a plain training
  loop would; "cached" feeds the outputs of the frozen blocks, computed once, to the trainable rest (what
  :func:`xaiutils.domain.train.fit` does when blocks are frozen).

    python benchmarks/cpu_train_throughput.py                # ~2 minutes on 2 cores
    python benchmarks/cpu_train_throughput.py --quick        # a few seconds (the test suite runs this)

Never run it beside another torch job: two jobs on 2 cores oversubscribe the threads and train ~10× slower.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from xaiutils.domain import models

CANDIDATES = [("mobilenet_v2", 1.0), ("mobilenet_v2", 0.5), ("resnet18", 1.0), ("vgg16", 0.125), ("vgg16", 0.25)]


def throughput(backbone: str, width: float, k: int, cached: bool, image_size: int, batch_size: int,
               steps: int, warmup: int = 2) -> float:
    torch.manual_seed(0)  # the weights, then the batch drawn after them
    model = models.build_model(backbone, width=width).freeze(k).train()
    x = torch.rand(batch_size, 1, image_size, image_size)
    y = torch.randint(0, 2, (batch_size,))
    if cached and k:
        with torch.no_grad():
            x = model.features(x, stop=k)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step():
        optimiser.zero_grad(set_to_none=True)
        logits = model.forward_from(x, k) if cached and k else model(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        optimiser.step()

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - started)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="one small backbone, 2 steps")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    candidates = [("mobilenet_v2", 0.5)] if args.quick else CANDIDATES
    steps = 2 if args.quick else args.steps
    rows = []
    for backbone, width in candidates:
        for k, cached in ((0, False), (1, False), (1, True), (3, True)):
            rate = throughput(backbone, width, k, cached, args.image_size, args.batch_size, steps)
            rows.append({"model": models.model_name(backbone, width), "k": k, "frozen_blocks_cached": cached,
                         "images_per_second": round(rate, 1)})
            print(f"{rows[-1]['model']:>16}  k={k}  cached={cached!s:5}  {rate:8.1f} images/s", flush=True)
    result = {"image_size": args.image_size, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "rows": rows}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)
    return result


if __name__ == "__main__":
    main()
