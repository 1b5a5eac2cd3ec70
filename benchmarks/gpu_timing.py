"""Timings on a CUDA device, for `benchmarks/gpu_check.sh` (also runs on CPU, for a dry run).

Measures, for each generator config (random weights: speed does not depend on them):
* ``generate_img_s``: z → image (mapping + synthesis), batch 1024, no gradient;
* ``grad_samples_s``: the ranking pass, s → image → classifier → ∂p_y/∂s per sample, batch 512;
and for the native op ``walk_styles``: native vs reference time on one large batch.
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
    from failatlas.ops import walk_styles

    g = torch.Generator().manual_seed(0)
    N, D, K, M = 256, 1280, 10, 16
    starts = torch.randn(N, D, generator=g).to(device)
    dims = torch.randperm(D, generator=g)[:K].to(device)
    shifts = torch.linspace(0, 5, M).to(device)
    sigma = torch.rand(D, generator=g).add(0.5).to(device)
    sign = torch.ones(K).to(device)
    args = (starts, dims, shifts, sigma, sign)
    out = {}
    for backend in ("native", "reference"):
        try:
            out[backend + "_s"] = _timed(lambda: walk_styles(*args, backend=backend), device)
        except Exception as exc:  # the report says what failed instead of stopping the whole check
            out[backend + "_error"] = f"{type(exc).__name__}: {exc}"
    if "native_s" in out and "reference_s" in out:
        out["speedup_native_over_reference"] = out["reference_s"] / out["native_s"]
        out["max_abs_diff"] = float((walk_styles(*args) - walk_styles(*args, backend="reference")).abs().max())
    out["shape"] = [N, K, M, D]
    return out


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
    result["walk_styles"] = op_figures(device)
    text = json.dumps(result, indent=2)
    print(text, flush=True)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
