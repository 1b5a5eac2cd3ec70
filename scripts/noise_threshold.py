"""Calibrate a generator run's noise threshold (StyleGANConfig.noise_threshold) and write the result as a run.

Picks the gain and soft threshold of LAYER's per-sample noise amplitude whose generated images come
closest to the train split's mix of corruptions (failatlas.training.quality.calibrate_noise_threshold,
on the run's EMA generator; criterion "frame": the noise of the empty 2-pixel frame, or "judge": a
corruption classifier trained with another seed than eval-gan's), then writes DST as a run folder:
checkpoint.pt with those values (failatlas.training.gan.with_noise_threshold; a run that already has
thresholds is recalibrated on top of them), noise-threshold.json (the calibration), the new EMA generator
(generator.safetensors + config.json, for eval-gan and analyze), its sample grid and SRC's metrics.jsonl.
DST can be trained on (`failatlas train-gan --init-from DST`) or shipped as it is
(`RUN=DST scripts/ship_generator.sh`).

Usage: .venv/bin/python scripts/noise_threshold.py SRC_RUN DST [--layer b32.conv0] [--n 1000]
       [--criterion frame|judge]
"""

import argparse
import json
import shutil
from pathlib import Path

import torch

from failatlas._io import load_checkpoint, write_json
from failatlas.models.stylegan2 import Generator, StyleGANConfig, save_generator
from failatlas.training.gan import _sample_grid, with_noise_threshold
from failatlas.training.quality import CRITERIA, calibrate_noise_threshold


def ema_generator(run: Path) -> Generator:
    ck = load_checkpoint(run / "checkpoint.pt", "training checkpoint")
    G = Generator(StyleGANConfig.from_json(ck["arch"])).eval()
    G.load_state_dict(ck["G_ema"])
    return G


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="a train-gan output folder")
    ap.add_argument("dst", type=Path, help="the folder to write")
    ap.add_argument("--layer", default="b32.conv0")
    ap.add_argument("--n", type=int, default=1000, help="generated images per grid point")
    ap.add_argument("--criterion", choices=CRITERIA, default="frame")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cal = calibrate_noise_threshold(ema_generator(args.src), args.layer, n=args.n, criterion=args.criterion)
    path = with_noise_threshold(args.src, args.dst, args.layer, cal["threshold"], cal["gain"])
    write_json(args.dst / "noise-threshold.json", cal)
    G = ema_generator(args.dst)
    save_generator(G, args.dst, extra={"noise_calibration": {k: v for k, v in cal.items() if k != "grid"}})
    _sample_grid(G, args.dst / "samples-latest.png")
    if (args.src / "metrics.jsonl").is_file():
        shutil.copyfile(args.src / "metrics.jsonl", args.dst / "metrics.jsonl")
    print(json.dumps({k: v for k, v in cal.items() if k != "grid"}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
