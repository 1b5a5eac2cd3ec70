"""Start a generator run with learned noise thresholds (StyleGANConfig.noise_threshold), calibrated.

Picks the soft threshold and gain of LAYER's per-sample noise amplitude whose generated images' frame
levels (the noise of the empty 2-pixel frame) fall into the four noise-severity bins most like the train
split's (failatlas.training.quality.calibrate_noise_threshold, on the run's EMA generator), then writes
DST/checkpoint.pt with those values (failatlas.training.gan.with_noise_threshold), to be trained on with
`failatlas train-gan --config cpu-small --init-from DST --out NEW ...`. Prints the calibration as JSON.

Usage: .venv/bin/python scripts/noise_threshold.py SRC_RUN DST [LAYER=b32.conv0] [N=1000]
"""

import json
import sys

import torch

from failatlas._io import load_checkpoint, write_json
from failatlas.models.stylegan2 import Generator, StyleGANConfig
from failatlas.training.gan import with_noise_threshold
from failatlas.training.quality import calibrate_noise_threshold


def main(src: str, dst: str, layer: str = "b32.conv0", n: str = "1000") -> None:
    torch.set_num_threads(1)
    ck = load_checkpoint(f"{src}/checkpoint.pt", "training checkpoint")
    G = Generator(StyleGANConfig.from_json(ck["arch"])).eval()
    G.load_state_dict(ck["G_ema"])
    cal = calibrate_noise_threshold(G, layer, n=int(n))
    path = with_noise_threshold(src, dst, layer, cal["threshold"], cal["gain"])
    write_json(f"{dst}/noise-threshold.json", cal)
    print(json.dumps({k: v for k, v in cal.items() if k != "grid"}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:])
