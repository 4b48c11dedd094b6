"""How far GPU explanation maps move from the CPU's, with TF32 off (what ``attribute`` does) and on (PyTorch's
default for cuDNN convolutions): the numbers behind ``xaiutils.domain.explain.full_fp32`` and the Methods page.

Integrated gradients on VGG-16 at width/8 with non-zero biases, 8 random slices at 64², 16 steps; the value is
max |device map − CPU map| / max |CPU map|. Run on a GPU machine (``benchmarks/run_on_device.sh`` does)::

    python benchmarks/gpu_attribution_precision.py --out precision.json

On a machine without CUDA it compares the CPU with itself (every deviation 0), which is what the test suite checks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import nn

from xaiutils.domain import explain
from xaiutils.domain.models import build_model


def relative_deviation(maps: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(maps - reference).max() / np.abs(reference).max())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-images", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=16)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    torch.manual_seed(0)  # the weights, then the biases drawn after them, from one seeded stream
    model = build_model("vgg16", width=0.125)
    for module in model.modules():  # non-zero biases, as in the tests: zero biases hide precision effects
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.bias, 0.0, 0.05)
    model.eval()
    images = torch.rand(args.n_images, 1, args.image_size, args.image_size,
                        generator=torch.Generator().manual_seed(0))
    targets = torch.arange(args.n_images) % 2
    settings = {"n_steps": args.n_steps}

    cpu_maps = explain.attribute(model, images, targets, "integrated_gradients", **settings)
    full_fp32 = explain.attribute(model, images, targets, "integrated_gradients", device=args.device, **settings)
    # PyTorch's defaults, which attribute overrides: lift its override for this one call.
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with mock.patch.object(explain, "full_fp32", lambda device: contextlib.nullcontext()):
            tf32 = explain.attribute(model, images, targets, "integrated_gradients", device=args.device, **settings)
    finally:
        torch.backends.cudnn.allow_tf32 = saved

    result = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "model": "vgg16 width 0.125",
        "image_size": args.image_size,
        "n_images": args.n_images,
        "max_deviation_over_max_full_fp32": relative_deviation(full_fp32, cpu_maps),
        "max_deviation_over_max_tf32_default": relative_deviation(tf32, cpu_maps),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
