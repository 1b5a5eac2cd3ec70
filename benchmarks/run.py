"""Side-by-side speed ratios of the engine against straightforward procedures, in one run (issue 5).

    python benchmarks/run.py --json out.json [--quick] [--rss-images 1000000] [--only ranking,fused,...]
                             [--generator DIR] [--classifier DIR]

Measured on the shipped models (models/mnist/generator, classifier-corrupted) unless --generator or
--classifier name others, on whatever this machine is: ratios from one run, never asserted. The walk and
corner figures depend on the models as much as on the code: a walk along a dimension of layer ℓ reruns
layers ℓ, ℓ+1, …, so they follow where the classifier's top dimensions lie. Prints a markdown table and writes JSON:

* ``ranking_speedup``: GradientRanking (its default batch: 64 on CPU) vs the authors' procedure (batches of 32, eager,
  per-sample gradients read from hooks on the style layers' affine outputs), same population;
  ``ranking_flops_per_sample`` (counted) and ``ranking_gflop_per_s`` show that both do the same operations;
* ``corner_speedup``, ``corner_max_threshold_diff_sigma``: the batched search (CornerCaseSearch, its default
  secant refinement) vs the authors' stepping (5σ steps, then back by 0.01σ, one image at a time) on the
  same (class, dimension) rows, and the largest difference between the thresholds they find;
  ``corner_secant_vs_bisection_speedup``: the default vs ``refine="bisection"`` (measured only), with
  each one's evaluations and whether they found the same shifts;
* ``walk_cache_speedup``: walks of the top-10 dimensions with prefix cache and ToRGB linearity vs full
  recomputation (WalkEngine cache=True vs cache=False);
* ``walk_vs_classifier_ratio``: the cached walk's time over the classifier alone on as many images;
  ``walk_cache_speedup_flop_bound``, ``walk_vs_classifier_flop_bound``: the same two ratios in floating-point
  operations (counted, not timed) for an exact walk along these ten dimensions — what the layers after each
  dimension's layer cost, whatever the engine (see :func:`walk_flop_bounds`);
* ``walk_native_vs_python_full_speedup``: the same walks by the C++ engine (NativeEngine on the fused
  TorchScript graph, full recomputation, reused buffers) vs WalkEngine's full recomputation (measured only);
* ``walk_peak_rss_mb``: peak resident memory of a walk of ``--rss-images`` images in a fresh process,
  beside one of a tenth as many (flat in N means the two are close);
* ``fused_forward_speedup``, ``fused_gradient_speedup``: the generator's fused StyleConv (demodulation,
  noise, bias and activation in three passes) vs :func:`~failatlas.models.stylegan2.style_conv_reference`
  (the step-by-step formula, six passes), for a forward and for the ranking's gradients (measured only);
* ``ops``: each native op's speed over its reference's (walk_styles, dim_stats, bisect_update), and the
  separation analysis with the native dim_stats against its torch code (``separation_speedup``).

Each timing is the median of ``--repeats`` runs after one warm-up. One torch thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def authors_ranking_gradients(G, C, population, batch: int = 32) -> torch.Tensor:
    """Per-sample ∂p_y/∂s the authors' way: forward from w, hooks keep each affine layer's output (the
    styles) and its gradient; batches of 32; eager, default layout."""
    from failatlas.models.adapter import classifier_view

    outputs: list[torch.Tensor] = []

    def keep(_module, _inputs, out):
        out.retain_grad()
        outputs.append(out)

    layers = G.synthesis_network.layers
    hooks = [layer.affine.register_forward_hook(keep) for layer in layers]
    grads = []
    try:
        for i in range(0, population.n, batch):
            outputs.clear()
            w = population.w[i:i + batch].clone().requires_grad_(True)  # the loaded G is frozen
            y = population.y[i:i + batch]
            with torch.enable_grad():
                img = G.synthesis(w, noise_mode="const")
                p = torch.softmax(C(classifier_view(img)), dim=1).gather(1, y[:, None]).sum()
                p.backward()
            grads.append(torch.cat([o.grad for o in outputs], dim=1))
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(grads)


def gradient_flops(G, C, population, n: int = 8) -> dict:
    """Floating-point operations per sample (counted by ``torch.utils.flop_counter`` on ``n`` samples) of the
    ranking's gradients and of the authors' hooks: one forward and one backward each. The ranking's
    ``style_gradients`` calls ``torch.autograd.grad``, which the counter's module tracking cannot follow, so
    its forward and backward are counted through ``backward()`` on the same graph."""
    from torch.utils.flop_counter import FlopCounterMode

    from failatlas.models.adapter import classifier_view

    sub = population.subset(torch.arange(n))

    def ranking():
        s = sub.s.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = C(classifier_view(G.synthesis_from_styles(s, noise_mode="const")))
            torch.softmax(logits, dim=1).gather(1, sub.y[:, None]).sum().backward()

    counts = {}
    for name, fn in (("ranking", ranking), ("authors", lambda: authors_ranking_gradients(G, C, sub))):
        with FlopCounterMode(display=False) as counter:
            fn()
        counts[name] = counter.get_total_flops() / n
    return counts


def bench_ranking(G, C, population, repeats):
    """Timed side by side; also the operations per sample of each (both one forward and one backward, so
    the ratio can only come from running the same operations faster) and the rate each reached."""
    from failatlas.analysis import GradientRanking

    ours = timed(lambda: GradientRanking(G, C, progress_bar=False).rank(population), repeats)
    theirs = timed(lambda: authors_ranking_gradients(G, C, population), repeats)
    flops = gradient_flops(G, C, population)
    return {"ranking_speedup": theirs / ours, "ranking_s": ours, "authors_ranking_s": theirs, "n": population.n,
            "ranking_flops_per_sample": flops,
            "ranking_gflop_per_s": {"ranking": flops["ranking"] * population.n / ours / 1e9,
                                    "authors": flops["authors"] * population.n / theirs / 1e9}}


class _plain_style_convs:
    """Within the block, every StyleConv runs the step-by-step reference formula instead of the fused one."""

    def __enter__(self):
        from failatlas.models import stylegan2 as sg

        def plain(layer, x, s, noise_mode="const"):
            noise = {"const": layer.noise_const, "none": None}.get(noise_mode)
            if noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, layer.resolution, layer.resolution, dtype=x.dtype, device=x.device)
            return sg.style_conv_reference(layer, x, s, noise)

        self._fused, sg.StyleConv.forward = sg.StyleConv.forward, plain
        return self

    def __exit__(self, *exc):
        from failatlas.models import stylegan2 as sg
        sg.StyleConv.forward = self._fused


def bench_fused_layers(G, C, population, repeats):
    """The generator's fused StyleConv (three passes over the activations) vs the step-by-step formula
    (six), on the same styles: a forward of 512 images and the ranking's per-sample gradients of 256."""
    from failatlas.analysis.ranking import style_gradients

    s, y = population.s[:512], population.y[:512]

    def forward():
        with torch.no_grad():
            return G.synthesis_from_styles(s)

    def gradient():
        return style_gradients(G, C, s[:256], y[:256])

    fused = {"forward": timed(forward, repeats), "gradient": timed(gradient, repeats)}
    out = {"forward": forward(), "gradient": gradient()}
    with _plain_style_convs():
        plain = {"forward": timed(forward, repeats), "gradient": timed(gradient, repeats)}
        diff = {k: float((out[k] - f()).abs().max()) for k, f in (("forward", forward), ("gradient", gradient))}
    return {"fused_forward_speedup": plain["forward"] / fused["forward"],
            "fused_gradient_speedup": plain["gradient"] / fused["gradient"],
            "fused_s": fused, "plain_s": plain, "fused_max_abs_diff": diff}


def bench_corners(G, C, ranking, population, classes, dims, repeats):
    """Our search: median of ``repeats`` after a warm-up, each refinement; the authors': one run (a warm-up
    would double the benchmark's longest step, and it is one image at a time, so it has little to warm)."""
    from failatlas.analysis import CornerCaseSearch
    from failatlas.analysis.corners import authors_corner_search

    results = {}

    def search(refine):
        results[refine] = CornerCaseSearch(G, C, ranking, progress_bar=False).search(
            population, dims=dims, classes=classes, pairs=False, verify=False, refine=refine)

    t_bisected = timed(lambda: search("bisection"), repeats)
    t_ours = timed(lambda: search("secant"), repeats)
    bisected, ours = results["bisection"], results["secant"]
    t = time.perf_counter()
    theirs = authors_corner_search(G, C, ranking, population, dims=dims, classes=classes, pairs=False)
    t_theirs = time.perf_counter() - t
    diffs, both = [], 0
    for r in theirs.rows:
        o = ours.find(r.start, r.dims)
        if o is not None and o.shift is not None and r.shift is not None:
            both += 1
            diffs.append(abs(o.shift - r.shift))
    found = sum(r.shift is not None for r in theirs.rows)
    return {"corner_speedup": t_theirs / t_ours, "corner_s": t_ours, "authors_corner_s": t_theirs,
            "corner_rows": len(theirs.rows), "corner_found_by_both": both, "corner_found_by_authors": found,
            "corner_max_threshold_diff_sigma": max(diffs) if diffs else None,
            "corner_bisection_s": t_bisected, "corner_secant_vs_bisection_speedup": t_bisected / t_ours,
            "corner_evaluations": {"secant": ours.evaluations, "bisection": bisected.evaluations,
                                   "authors": theirs.evaluations},
            "corner_secant_equals_bisection": all(a.shift == b.shift for a, b in zip(ours.rows, bisected.rows))}


def walk_flop_bounds(G, C, dims) -> dict:
    """What any exact walk along ``dims`` must compute, in floating-point operations per image (counted by
    ``torch.utils.flop_counter`` on one image): a ToRGB dimension needs the classifier only; a conv dimension
    of layer ℓ needs the layers after ℓ and the classifier (its own convolution is linear in the style, so the
    engine adds a one-channel correction per start instead). In operations, full recomputation over these is
    the most ``walk_cache_speedup`` can reach, and these over the classifier's the least
    ``walk_vs_classifier_ratio`` can reach, for these dimensions. Time follows operations only roughly: the
    small classifier runs fewer operations per second than the generator, so the timed walk/classifier
    ratio comes out below its operation count."""
    from torch.utils.flop_counter import FlopCounterMode

    from failatlas.models.adapter import classifier_view

    net = G.synthesis_network
    s = torch.zeros(1, G.style_dim, dtype=next(G.parameters()).dtype)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        C(classifier_view(net(s, "const")))
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    per_layer = [counts.get(f"{type(net).__name__}.layers.{i}", 0) for i in range(len(net.layers))]
    classifier = counts["Global"] - sum(per_layer)
    layer_of = net.layer_of_dims()
    needed = []
    for d in dims:
        li = int(layer_of[int(d)])
        needed.append(classifier + (0 if net.layers[li].kind == "torgb" else sum(per_layer[li + 1:])))
    mean_needed = sum(needed) / len(needed)
    return {"walk_cache_speedup_flop_bound": (sum(per_layer) + classifier) / mean_needed,
            "walk_vs_classifier_flop_bound": mean_needed / classifier,
            "flops_per_image": {"synthesis": sum(per_layer), "classifier": classifier}}


def bench_walks(G, C, ranking, population, n_starts, n_shifts, repeats):
    from failatlas.engine import WalkEngine
    from failatlas.models.adapter import classifier_view

    dims = ranking.order[:10]
    sign = ranking.direction[dims].double()
    sign[sign == 0] = 1.0
    starts, labels = population.s[:n_starts], population.y[:n_starts]
    shifts = torch.linspace(0, 10, n_shifts)
    args = (starts, labels, dims, shifts, ranking.sigma, sign)
    fast = WalkEngine(G, C, batch_size=512)
    slow = WalkEngine(G, C, batch_size=512, cache=False)
    t_fast = timed(lambda: fast.walk(*args, progress_bar=False), repeats)
    t_slow = timed(lambda: slow.walk(*args, progress_bar=False), repeats)
    diff = float((fast.walk(*args, progress_bar=False).p_y - slow.walk(*args, progress_bar=False).p_y).abs().max())
    n_images = n_starts * len(dims) * n_shifts
    with torch.no_grad():
        imgs = classifier_view(G.synthesis_from_styles(starts)).repeat(len(dims) * n_shifts, 1, 1, 1)

    def classify():
        with torch.no_grad():
            for i in range(0, len(imgs), 512):
                torch.softmax(C(imgs[i:i + 512]).double(), 1)

    t_clf = timed(classify, repeats)
    kinds = [ranking.layout[int(d)].kind for d in dims]
    layers = [ranking.layout[int(d)].name for d in dims]
    return {"walk_cache_speedup": t_slow / t_fast, "walk_vs_classifier_ratio": t_fast / t_clf,
            "walk_cached_s": t_fast, "walk_full_s": t_slow, "classifier_only_s": t_clf, "walk_images": n_images,
            "walk_max_abs_diff_p_y": diff, "walk_top10_kinds": {k: kinds.count(k) for k in set(kinds)},
            "walk_top10_layers": {k: layers.count(k) for k in sorted(set(layers))}, **walk_flop_bounds(G, C, dims),
            **bench_native_walk(G, C, args, repeats, t_full=t_slow)}


def bench_native_walk(G, C, args, repeats, t_full=None):
    """The C++ engine's walk (NativeEngine: failatlas._C.Engine on the fused TorchScript graph, every point
    recomputed in full, in chunks of 512 through reused buffers) beside the Python WalkEngine's full
    recomputation (cache=False; timed here unless ``t_full`` is given) on the same walks ``args`` =
    (starts, labels, dims, shifts, sigma, sign)."""
    import tempfile

    from failatlas import _ext
    from failatlas.engine import NativeEngine, WalkEngine, export_torchscript

    if not _ext.available():
        return {"walk_native": "native module not built"}
    full = WalkEngine(G, C, batch_size=512, cache=False)
    if t_full is None:
        t_full = timed(lambda: full.walk(*args, progress_bar=False), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        engine = NativeEngine(export_torchscript(G, C, Path(tmp) / "fused.pt"), batch_size=512)
        t_native = timed(lambda: engine.walk(*args), repeats)
        diff = float((engine.walk(*args).p_y - full.walk(*args, progress_bar=False).p_y).abs().max())
    return {"walk_native_vs_python_full_speedup": t_full / t_native, "walk_native_s": t_native,
            "walk_python_full_s": t_full, "walk_native_max_abs_diff_p_y": diff}


def bench_ops(repeats, device: str = "cpu"):
    """Each native op against its pure-torch reference on one CPU-sized input; for dim_stats also the
    separation analysis (failatlas.analysis.separation) with its native backend against its torch code.
    ``device="cuda"`` times the same inputs on the GPU (synchronized), e.g. from a GPU check script:
    ``python -c "import sys; sys.path.insert(0, 'benchmarks'); import run; print(run.bench_ops(5, 'cuda'))"``."""
    from failatlas import _ext
    from failatlas.analysis.separation import _edges, separation
    from failatlas.ops import bisect_update, dim_stats, walk_styles

    if not _ext.available():
        return {op: "native module not built" for op in ("walk_styles", "dim_stats", "bisect_update")}
    if device != "cpu":
        def timed_on_device(fn, repeats_):
            def synced():
                fn()
                torch.cuda.synchronize()
            return timed(synced, repeats_)
    else:
        timed_on_device = timed
    g = torch.Generator().manual_seed(0)
    N, D, K, M = 256, 1280, 10, 16
    args = tuple(t.to(device) for t in (
        torch.randn(N, D, generator=g), torch.randperm(D, generator=g)[:K], torch.linspace(0, 5, M),
        torch.rand(D, generator=g) + 0.5, torch.ones(K)))
    native = timed_on_device(lambda: walk_styles(*args), repeats)
    ref = timed_on_device(lambda: walk_styles(*args, backend="reference"), repeats)
    out = {"walk_styles": {"speedup_over_reference": ref / native, "native_s": native, "reference_s": ref,
                           "shape": [N, K, M, D]}}

    # dim_stats: a population of style vectors (float32), 20 % mis-classified, the analysis's 20 bins.
    N, D = 2048, 1280
    values = torch.randn(N, D, generator=g).to(device)
    mis = (torch.rand(N, generator=g) < 0.2).to(device)
    edges = _edges(values.double().t(), 20)
    native = timed_on_device(lambda: dim_stats(values, mis, edges), repeats)
    ref = timed_on_device(lambda: dim_stats(values, mis, edges, backend="reference"), repeats)
    out["dim_stats"] = {"speedup_over_reference": ref / native, "native_s": native, "reference_s": ref,
                        "shape": [N, D], "bins": 20}
    if device == "cpu":  # the analysis runs on CPU tensors (its torch code creates CPU tensors)
        sep_native = timed(lambda: separation(values, ~mis, backend="native"), repeats)
        sep_ref = timed(lambda: separation(values, ~mis, backend="reference"), repeats)
        out["dim_stats"].update({"separation_speedup": sep_ref / sep_native, "separation_native_s": sep_native,
                                 "separation_reference_s": sep_ref})

    # bisect_update: one step of the corner search's brackets (grid steps), as many rows as a large search.
    B = 4096
    lo = torch.zeros(B, dtype=torch.int64, device=device)
    hi = torch.randint(2, 1000, (B,), generator=g).to(device)
    p = torch.rand(B, generator=g).to(device)
    native = timed_on_device(lambda: bisect_update(lo, hi, p), max(repeats, 20))
    ref = timed_on_device(lambda: bisect_update(lo, hi, p, backend="reference"), max(repeats, 20))
    out["bisect_update"] = {"speedup_over_reference": ref / native, "native_s": native, "reference_s": ref,
                            "shape": [B]}
    for v in out.values():
        v["device"] = device
    return out


def rss_child(images: int, dims: list[int], signs: list[float], generator: str, classifier: str) -> None:
    """Run in a fresh process: a walk of about ``images`` images, then print the peak RSS in MB (VmHWM of
    /proc/self/status: getrusage's ru_maxrss keeps the parent's high-water mark across fork + exec)."""

    def peak_mb() -> float:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc/self/status")

    from failatlas import load_generator
    from failatlas._paths import resolve_model
    from failatlas.engine import WalkEngine
    from failatlas.models.classifier import load_classifier

    torch.set_num_threads(1)
    G = load_generator(resolve_model(generator))
    C = load_classifier(resolve_model(classifier))
    K, M = len(dims), 10
    n = max(1, images // (K * M))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, G.z_dim, generator=g)
    y = torch.arange(n) % G.num_classes
    # starts made in chunks, so that building them costs no more memory than the walk
    with torch.no_grad():
        s = torch.cat([G.styles(G.mapping(z[i:i + 1024], y[i:i + 1024])) for i in range(0, n, 1024)])
    sigma = s.std(dim=0).double()
    before = peak_mb()
    t = time.perf_counter()
    WalkEngine(G, C, batch_size=512).walk(s, y, dims, torch.linspace(0, 10, M), sigma, signs, progress_bar=False)
    print(json.dumps({"images": n * K * M, "peak_rss_mb": peak_mb(),
                      "rss_before_walk_mb": before, "seconds": time.perf_counter() - t}))


def bench_rss(images: int, dims, signs, generator: str, classifier: str) -> dict:
    out = {}
    for n in (images // 10, images):
        cmd = [sys.executable, __file__, "--rss-child", str(n), "--rss-dims=" + ",".join(map(str, dims)),
               "--rss-signs=" + ",".join(map(str, signs)), "--generator", generator, "--classifier", classifier]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
        if res.returncode != 0:
            out[str(n)] = {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
        else:
            out[str(n)] = json.loads(res.stdout.strip().splitlines()[-1])
    return {"walk_peak_rss_mb": out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None, help="write the results to this file")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, a minute or two)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rss-images", type=int, default=50000,
                    help="images of the memory benchmark's walk (the issue's figure is 1,000,000: slow on 2 cores)")
    ap.add_argument("--only", default=None,
                    help="comma-separated steps to run (ranking, fused, corners, walks, ops, rss; default: all)")
    ap.add_argument("--generator", default="mnist/generator",
                    help="generator folder or shipped name (default: the shipped mnist/generator)")
    ap.add_argument("--classifier", default="mnist/classifier-corrupted",
                    help="classifier folder or shipped name (default: the shipped mnist/classifier-corrupted)")
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rss-dims", default="", help=argparse.SUPPRESS)
    ap.add_argument("--rss-signs", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    from failatlas._alloc import keep_freed_memory

    keep_freed_memory()  # as the failatlas command does (a no-op where tcmalloc is preloaded)
    if a.rss_child is not None:
        rss_child(a.rss_child, [int(d) for d in a.rss_dims.split(",")], [float(s) for s in a.rss_signs.split(",")],
                  a.generator, a.classifier)
        return 0

    from failatlas import load_generator
    from failatlas._paths import resolve_model
    from failatlas.analysis import GradientRanking, sample_population
    from failatlas.models.classifier import load_classifier

    torch.set_num_threads(a.threads)
    G = load_generator(resolve_model(a.generator))
    C = load_classifier(resolve_model(a.classifier))
    n_pop = 256 if a.quick else 1024
    t0 = time.perf_counter()
    population = sample_population(G, C, n_pop, seed=0, batch_size=256, progress_bar=False)
    ranking = GradientRanking(G, C, batch_size=256, progress_bar=False).rank(population)
    result = {"machine": {"threads": a.threads, "cpus": os.cpu_count(), "torch": torch.__version__},
              "population": n_pop, "date": time.strftime("%Y-%m-%d"),
              "models": {"generator": a.generator, "classifier": a.classifier}}
    steps = [
        ("ranking", lambda: bench_ranking(G, C, population, a.repeats)),
        ("fused", lambda: bench_fused_layers(G, C, population, a.repeats)),
        ("corners", lambda: bench_corners(G, C, ranking, population, [0, 1] if a.quick else [0, 1, 2, 3], 5, a.repeats)),
        ("walks", lambda: bench_walks(G, C, ranking, population, 16 if a.quick else 64, 8, a.repeats)),
        ("ops", lambda: {"ops": bench_ops(a.repeats)}),
        ("rss", lambda: bench_rss(a.rss_images // (10 if a.quick else 1), [int(d) for d in ranking.order[:10]],
                                  [float(s) or 1.0 for s in ranking.direction[ranking.order[:10]]],
                                  a.generator, a.classifier)),
    ]
    if a.only is not None:
        chosen = [s.strip() for s in a.only.split(",") if s.strip()]
        unknown = sorted(set(chosen) - {name for name, _ in steps})
        if unknown:
            ap.error(f"unknown step(s) {unknown} in --only; choose from {[name for name, _ in steps]}")
        steps = [(name, fn) for name, fn in steps if name in chosen]
    for name, fn in steps:
        t = time.perf_counter()
        result.update(fn())
        print(f"[benchmarks] {name}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    result["total_s"] = time.perf_counter() - t0

    rows = [("ranking_speedup", "≥ 3×"), ("corner_speedup", "≥ 30×"), ("corner_max_threshold_diff_sigma", "≤ 0.01"),
            ("corner_secant_vs_bisection_speedup", "measured (refine='secant' vs 'bisection')"),
            ("walk_cache_speedup", "≥ 2×"),
            ("walk_cache_speedup_flop_bound", "counted (full recomputation's operations over an exact walk's)"),
            ("walk_vs_classifier_ratio", "≤ 2"),
            ("walk_vs_classifier_flop_bound", "counted (an exact walk's operations over the classifier's)"),
            ("walk_native_vs_python_full_speedup", "measured (C++ engine vs WalkEngine cache=False)"),
            ("fused_forward_speedup", "measured (fused StyleConv vs the step-by-step formula, 512 images)"),
            ("fused_gradient_speedup", "measured (the same, ranking gradients of 256 samples)")]
    print("| figure | value | goal |\n|---|---|---|")
    for key, goal in rows:
        if key not in result:
            continue
        v = result[key]
        print(f"| {key} | {v:.3g} | {goal} |" if isinstance(v, float) else f"| {key} | {v} | {goal} |")
    for n, r in result.get("walk_peak_rss_mb", {}).items():
        print(f"| walk peak RSS, {n} images | {r.get('peak_rss_mb', r)} MB | < 2048, flat in N |")
    for op in ("walk_styles", "dim_stats", "bisect_update"):
        ops = result.get("ops", {}).get(op)
        if isinstance(ops, dict):
            print(f"| ops: {op} native / reference speed | {ops['speedup_over_reference']:.3g} | ≥ 1 |")
            if "separation_speedup" in ops:
                print(f"| separation: native / torch-code speed | {ops['separation_speedup']:.3g} | ≥ 1 |")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
