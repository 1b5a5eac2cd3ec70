"""The walk engine: the prefix cache and ToRGB linearity give the same answers as full recomputation."""

from __future__ import annotations

import copy

import pytest
import torch

from failatlas import FailatlasError
from failatlas.engine import WalkEngine, walk
from failatlas.models.classifier import ClassifierConfig, build_classifier


@pytest.fixture(scope="module")
def models(tiny_generator):
    torch.manual_seed(1)
    return tiny_generator, build_classifier(ClassifierConfig()).eval()


def _inputs(G, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=g)
    y = torch.randint(0, G.num_classes, (n,), generator=g)
    with torch.no_grad():
        s = G.styles(G.mapping(z, y))
    sigma = torch.rand(G.style_dim, generator=g) + 0.5
    return s, y, sigma


def _dims_of_every_layer(G):
    """Two dimensions of every style layer (conv and ToRGB, every resolution)."""
    return [t.start + c for t in G.style_layers() for c in (0, t.size - 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cached_equals_full_recomputation_for_every_layer(models, dtype):
    G, C = models
    s, y, sigma = _inputs(G)
    if dtype == torch.float64:
        G, C = copy.deepcopy(G).double(), copy.deepcopy(C).double()
    dims = torch.tensor(_dims_of_every_layer(G))
    sign = torch.where(torch.arange(len(dims)) % 2 == 0, 1.0, -1.0)
    shifts = torch.tensor([0.0, 0.5, 2.0, 7.5, -3.0])
    fast = WalkEngine(G, C, batch_size=7).walk(s.to(dtype), y, dims, shifts, sigma, sign, progress_bar=False)
    slow = WalkEngine(G, C, batch_size=64, cache=False).walk(s.to(dtype), y, dims, shifts, sigma, sign,
                                                            progress_bar=False)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert fast.p_y.shape == (5, len(dims), 5)
    assert (fast.p_y - slow.p_y).abs().max() <= tol
    # the walks really move the prediction probabilities (the comparison is not vacuous)
    assert (fast.p_y[:, :, 3] - fast.p_y[:, :, 0]).abs().max() > 1e-3
    agree = fast.pred == slow.pred
    assert agree.float().mean() > 0.99  # ties at float32 rounding may flip an argmax, nothing more


def test_full_recomputation_matches_synthesis_of_moved_styles(models):
    G, C = models
    s, y, sigma = _inputs(G, n=3)
    d = G.style_layers()[3].start + 2
    res = walk(G, C, s, y, [d], [0.0, 4.0], sigma, [-1.0], progress_bar=False)
    moved = s.clone()
    moved[:, d] -= 4.0 * sigma[d]
    from failatlas.models.adapter import classifier_view

    with torch.no_grad():
        for col, st in ((0, s), (1, moved)):
            p = torch.softmax(C(classifier_view(G.synthesis_from_styles(st))).double(), 1)[torch.arange(3), y]
            assert torch.allclose(res.p_y[:, 0, col], p, atol=1e-6)
    assert res.images == 6 and res.accuracy(y).shape == (1, 2)


def test_chunking_does_not_change_results(models):
    G, C = models
    s, y, sigma = _inputs(G, n=9)
    dims = torch.tensor(_dims_of_every_layer(G)[:6])
    args = (s, y, dims, torch.linspace(0, 5, 4), sigma, torch.ones(len(dims)))
    a = WalkEngine(G, C, batch_size=1).walk(*args, progress_bar=False)
    b = WalkEngine(G, C, batch_size=1000).walk(*args, progress_bar=False)
    assert torch.allclose(a.p_y, b.p_y, atol=1e-6)


def test_empty_and_bad_inputs(models):
    G, C = models
    s, y, sigma = _inputs(G, n=2)
    eng = WalkEngine(G, C)
    assert eng.walk(s, y, [], [0.0], sigma, [], progress_bar=False).p_y.shape == (2, 0, 1)
    bad = [
        ((s[:, :5], y, [0], [1.0], sigma, [1.0]), r"starts must be a Tensor \[N, 272\]"),
        ((s, y[:1], [0], [1.0], sigma, [1.0]), r"labels must be integer Tensor \[2\]"),
        ((s, y + 10, [0], [1.0], sigma, [1.0]), r"labels must be classes in \[0, 10\)"),
        ((s, y, [272], [1.0], sigma, [1.0]), r"dims must be in \[0, 272\)"),
        ((s, y, [0], [1.0], sigma[:3], [1.0]), "sigma must have one entry per style dimension"),
        ((s, y, [0, 1], [1.0], sigma, [1.0]), "sign needs one entry per walked dimension"),
        ((s, y, [0], [float("nan")], sigma, [1.0]), "shifts contains NaN"),
        ((s, y, [0], [1.0], -sigma, [1.0]), "sigma holds a negative value"),
        ((s, y, [0, 1], [1.0], sigma, [1.0, 2.0]), "sign must be \\+1 or -1 for each walked dimension, got 2"),
        ((s, y, [0], [1.0], sigma, [0.0]), "sign must be \\+1 or -1 for each walked dimension, got 0"),
    ]
    for args, message in bad:
        with pytest.raises(FailatlasError, match=message):
            eng.walk(*args, progress_bar=False)
    with pytest.raises(FailatlasError, match="noise_mode must be 'const' or 'none'"):
        WalkEngine(G, C, noise_mode="random")
