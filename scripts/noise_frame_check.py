"""How much noise each image carries, generated vs real, measured on the 2-pixel frame.

The frame around the 28×28 digit is empty before corruption, so after blur + noise + clipping its mean
intensity is a per-image noise level: 0, about 0.033, 0.049 and 0.073 (in [0, 1]) for noise severity 0–3
(DESIGN §1). Prints the real test images' level per severity and the share of real and generated images in
four bins of that level.

Usage: .venv/bin/python scripts/noise_frame_check.py [GENERATOR] [N]   (defaults: the shipped generator, 2000)
"""

import sys

import numpy as np
import torch

from failatlas.data.datasets import load_dataset
from failatlas.models.stylegan2 import load_generator
from failatlas.training.quality import FRAME_EDGES, frame_level, frame_shares, generate

def main(generator: str = "models/mnist/generator", n: int = 2000) -> None:
    data = load_dataset("mnist", "test")
    real = frame_level(data.generator_input())
    severity = torch.where(data.corrupted, data.noise, torch.zeros_like(data.noise))
    for k in range(4):
        r = real[severity == k]
        print(f"real, noise severity {k}: n {len(r)}, frame level {float(r.mean()):.4f} "
              f"(10-90%: {float(r.quantile(.1)):.4f}-{float(r.quantile(.9)):.4f})")
    images, _ = generate(load_generator(generator), n, seed=0, noise_mode="const")
    print("bins of the frame level:", list(FRAME_EDGES))
    print("real share     ", np.round(frame_shares(data.generator_input()).numpy(), 3))
    print("generated share", np.round(frame_shares(images).numpy(), 3))


if __name__ == "__main__":
    main(*sys.argv[1:2], *(int(a) for a in sys.argv[2:3]))
