"""An experiment on issue 4's separation goal: would a generator whose corruption sits in a few style
dimensions let the top-ranked dimensions separate the misses 2 × better than random ones?

It edits a generator's style layers (no training) so that only the KEEP style dimensions most correlated
with each corruption factor still vary linearly with it: for every other dimension k the affine row a_k
loses its component in span(Cov(w, blur), Cov(w, noise)) (the bias is moved so that the mean of s_k stays),
which makes Cov(s_k, c) = a_k · Cov(w, c) zero for both factors. The factors are the expected blur and
noise levels of a corruption classifier trained on the real train split of MNIST-10k (seed JUDGE, as
`train-gan --mix-weight` uses): the script is for MNIST generators. Then rank the edited generator like the shipped one:

    .venv/bin/python scripts/corruption_surgery.py models/mnist/generator runs/surgery --keep 10
    failatlas rank --generator runs/surgery --n 10000 --out runs/surgery-rank

It prints, as JSON, the share of each factor's squared correlations with the style dimensions held by
its KEEP strongest ones (before and after; 1 would be all of it), and the mean blur and noise levels
before and after. The edited folder is an ordinary generator folder (config.json notes the edit).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from failatlas._seeding import latent_generator
from failatlas.models.stylegan2 import load_generator, save_generator
from failatlas.training.quality import CELLS, train_corruption_classifier


def corruption_levels(judge: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """[N, 2]: expected blur and noise level (0 clean, else 1–3) under the judge's softmax over CELLS."""
    p = torch.softmax(judge(images), dim=1)
    grid = p[:, 1:].reshape(-1, 3, 3)  # CELLS[1 + 3·(blur − 1) + (noise − 1)]
    level = torch.arange(1, 4, dtype=p.dtype)
    return torch.stack([(grid.sum(2) * level).sum(1), (grid.sum(1) * level).sum(1)], dim=1)


def correlations(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """[factors, S]: the correlation of every style dimension with every factor."""
    s, c = s.double() - s.double().mean(0), c.double() - c.double().mean(0)
    return (c.T @ s) / (c.norm(dim=0)[:, None] * s.norm(dim=0).clamp_min(1e-12)[None])


def shares(r: torch.Tensor, keep: int) -> list[float]:
    r2 = r.square()
    return (r2.topk(keep, dim=1).values.sum(1) / r2.sum(1)).tolist()


def project_out(G: torch.nn.Module, w: torch.Tensor, c: torch.Tensor, keep: int) -> list[int]:
    """Edit G's style layers in place: every style dimension but the ``keep`` most correlated with each
    factor (column of c) loses the part of its affine row in span(Cov(w, c)); its bias moves so that its
    mean over w stays. Returns the kept dimensions."""
    with torch.no_grad():
        r = correlations(G.styles(w), c)
    kept = sorted(set(torch.cat([r[f].abs().topk(keep).indices for f in range(r.shape[0])]).tolist()))
    wd, cd = w.double() - w.double().mean(0), c.double() - c.double().mean(0)
    basis, _ = torch.linalg.qr(wd.T @ cd / (len(w) - 1))
    mean_w = w.double().mean(0)
    start = 0
    with torch.no_grad():
        for layer in G.synthesis_network.layers:
            fc = layer.affine
            rows = (fc.weight * fc.weight_gain).double()
            for k in range(rows.shape[0]):
                if start + k not in kept:
                    part = basis @ (basis.T @ rows[k])
                    fc.weight[k] -= (part / fc.weight_gain).to(fc.weight.dtype)
                    fc.bias[k] += float(part @ mean_w) / fc.bias_gain
            start += rows.shape[0]
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("generator")
    ap.add_argument("out")
    ap.add_argument("--keep", type=int, default=10, help="style dimensions kept per factor (default 10)")
    ap.add_argument("--n", type=int, default=4000, help="samples that estimate the covariances (default 4000)")
    ap.add_argument("--judge", type=int, default=2, help="seed of the corruption classifier (default 2)")
    ap.add_argument("--seed", type=int, default=77, help="seed of those samples' latents (default 77)")
    a = ap.parse_args()
    assert len(CELLS) == 10, "the blur × noise grid of 3 × 3 cells plus clean"

    G = load_generator(a.generator).eval()
    judge = train_corruption_classifier(seed=a.judge, progress=False)
    z = torch.randn(a.n, G.z_dim, generator=latent_generator(a.seed))
    y = torch.arange(a.n) % G.num_classes
    chunks = range(0, a.n, 500)

    def measure() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            s = torch.cat([G.styles(w[i:i + 500]) for i in chunks])
            c = torch.cat([corruption_levels(judge, G.synthesis_from_styles(s[i:i + 500])) for i in chunks])
        return s, c

    with torch.no_grad():
        w = torch.cat([G.mapping(z[i:i + 500], y[i:i + 500]) for i in chunks])
    s, c = measure()
    r = correlations(s, c)
    kept = project_out(G, w, c, a.keep)
    s2, c2 = measure()
    report = {"keep": a.keep, "kept_dims": kept, "n": a.n, "judge_seed": a.judge,
              "share_before": shares(r, a.keep), "share_after": shares(correlations(s2, c2), a.keep),
              "levels_before": c.mean(0).tolist(), "levels_after": c2.mean(0).tolist(),
              "max_mean_style_change": float((s2.double().mean(0) - s.double().mean(0)).abs().max())}
    source = json.loads((Path(a.generator) / "config.json").read_text())
    edit = {"by": "scripts/corruption_surgery.py", "from": a.generator, "keep": a.keep, "n": a.n,
            "judge_seed": a.judge}
    save_generator(G, a.out, extra={"training": source.get("training"), "edited": edit})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
