"""Timings on a CUDA device, for `benchmarks/gpu_check.sh` (also runs on CPU, for a dry run).

Measures, for each generator config (random weights: speed does not depend on them):
* ``generate_img_s``: z → image (mapping + synthesis), batch 1024, no gradient;
* ``grad_samples_s``: the ranking pass, s → image → classifier → ∂p_y/∂s per sample, batch 512;
and for every native op its speed over its reference (``bench_ops`` of benchmarks/run.py).
Each figure is the median of 5 timed repeats after 2 warm-ups (CUDA synchronized). Prints JSON.

    python benchmarks/gpu_timing.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def _timed(fn, device: torch.device, repeats: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def generator_figures(config: str, device: torch.device, batch_gen: int, batch_grad: int) -> dict:
    from failatlas.models.adapter import classifier_view
    from failatlas.models.classifier import PaperCNN
    from failatlas.models.stylegan2 import CONFIGS, Generator

    torch.manual_seed(0)
    G = Generator(CONFIGS[config]).eval().requires_grad_(False).to(device)
    C = PaperCNN().eval().requires_grad_(False).to(device)
    z = torch.randn(batch_gen, G.z_dim, device=device)
    y = torch.arange(batch_gen, device=device) % G.num_classes

    def gen():
        with torch.no_grad():
            G(z, y)

    t_gen = _timed(gen, device)
    with torch.no_grad():
        s0 = G.styles(G.mapping(z[:batch_grad], y[:batch_grad]))
    yg = y[:batch_grad]

    def grad():
        s = s0.clone().requires_grad_(True)
        p = C(classifier_view(G.synthesis_from_styles(s))).softmax(1).gather(1, yg[:, None]).sum()
        (g,) = torch.autograd.grad(p, s)
        return g

    t_grad = _timed(grad, device)
    return {"style_dim": G.style_dim, "generate_img_s": batch_gen / t_gen, "grad_samples_s": batch_grad / t_grad,
            "batch_generate": batch_gen, "batch_grad": batch_grad}


def op_figures(device: torch.device) -> dict:
    """Every native op against its reference: ``bench_ops`` of benchmarks/run.py on ``device``; a failure is
    reported in the result instead of stopping the whole check."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run

    try:
        return run.bench_ops(5, device.type)
    except Exception as exc:  # noqa: BLE001 - the GPU check reports what failed and goes on
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--configs", default="cpu-small,paper")
    ap.add_argument("--json", default=None, help="also write the result to this file")
    a = ap.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    small = device.type == "cpu"
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "configs": {}}
    for config in a.configs.split(","):
        result["configs"][config] = generator_figures(config, device, 64 if small else 1024, 32 if small else 512)
    result["ops"] = op_figures(device)
    text = json.dumps(result, indent=2)
    print(text, flush=True)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
