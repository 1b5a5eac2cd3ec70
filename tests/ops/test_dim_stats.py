"""torch.ops.failatlas.dim_stats against an independent float64 oracle, the reference, the analysis code and
bad inputs."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from failatlas.analysis.separation import auroc as analysis_auroc
from failatlas.analysis.separation import histograms as analysis_histograms
from failatlas.analysis.separation import ks_statistic as analysis_ks
from failatlas.ops import dim_stats, reference_dim_stats

BACKENDS = ["native", "reference"]
DTYPES = [torch.float32, torch.float64]



def oracle(values, mask, edges=None):
    """Pairwise definitions in float64, one column at a time: KS as the largest ECDF difference at any sample
    value, AUROC as the mean over (true, false) pairs of [x > y] + ½[x = y], bins from counting edges.
    NaN is above every number and ties with NaN: here +inf, so a column must not hold both."""
    x = values.detach().cpu().double()
    nan = x.isnan()
    assert not (nan.any(dim=0) & (x == math.inf).any(dim=0)).any(), "the oracle cannot order NaN and +inf"
    x = torch.where(nan, math.inf, x)
    m = mask.cpu()
    N, D = x.shape
    B = 0 if edges is None else edges.shape[1] - 1
    ks = torch.full((D,), math.nan, dtype=torch.float64)
    au = torch.full((D,), math.nan, dtype=torch.float64)
    ht = torch.zeros(D, B, dtype=torch.int64)
    hf = torch.zeros(D, B, dtype=torch.int64)
    for d in range(D):
        a, b = x[m, d], x[~m, d]
        if len(a) and len(b):
            at = x[:, d]
            fa = (a[None, :] <= at[:, None]).double().mean(dim=1)
            fb = (b[None, :] <= at[:, None]).double().mean(dim=1)
            ks[d] = (fa - fb).abs().max()
            au[d] = ((a[:, None] > b[None, :]).double() + 0.5 * (a[:, None] == b[None, :]).double()).mean()
        if B:
            e = edges[d].detach().cpu().double()
            idx = ((e[None, :] <= x[:, d, None]).sum(dim=1) - 1).clamp(0, B - 1)
            for n in range(N):
                (ht if m[n] else hf)[d, idx[n]] += 1
    return ks, au, ht, hf


def make_inputs(N, D, B=None, *, dtype=torch.float64, device="cpu", seed=0, ties=True, p_true=0.3):
    """values with many ties (small integers, halves) unless ties=False; edges spanning each column."""
    g = torch.Generator().manual_seed(seed)
    if ties:
        values = (torch.randint(-4, 5, (N, D), generator=g) / 2).to(dtype)
    else:
        values = torch.randn(N, D, generator=g, dtype=dtype)
    mask = torch.rand(N, generator=g) < p_true
    edges = None
    if B is not None:
        lo = values.min(dim=0).values.double() - 0.25 if N else torch.zeros(D, dtype=torch.float64)
        hi = values.max(dim=0).values.double() + 0.25 if N else torch.ones(D, dtype=torch.float64)
        edges = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, B + 1, dtype=torch.float64)
    return values.to(device), mask.to(device), None if edges is None else edges.to(device)


def exact_reference(values, mask, edges):
    """What the op must equal bit for bit: the torch reference on the CPU; on CUDA, the CPU op (the same
    merge walk). The torch reference run on CUDA matched the float64 oracle but not bit for bit on the
    H200 (its CUDA kernels round differently)."""
    if values.device.type == "cpu":
        return reference_dim_stats(values, mask, edges)
    return dim_stats(values.cpu(), mask.cpu(), None if edges is None else edges.cpu())


def assert_stats(out, expected, *, exact=False):
    ks, au, ht, hf = (t.cpu() for t in out)
    eks, eau, eht, ehf = (t.cpu() for t in expected)  # the oracle may have run on the op's device
    if exact:
        assert torch.equal(ks.nan_to_num(-1), eks.nan_to_num(-1)) and torch.equal(au.nan_to_num(-1), eau.nan_to_num(-1))
    else:
        torch.testing.assert_close(ks, eks, rtol=1e-12, atol=1e-12, equal_nan=True)
        torch.testing.assert_close(au, eau, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert torch.equal(ht, eht) and torch.equal(hf, ehf)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [True, False], ids=["ties", "no-ties"])
@pytest.mark.parametrize("seed", range(4))
def test_matches_oracle_on_random_shapes(native, device, dtype, ties, seed):
    g = torch.Generator().manual_seed(200 + seed)
    N, D, B = (int(torch.randint(1, hi, (1,), generator=g)) for hi in (60, 20, 12))
    values, mask, edges = make_inputs(N, D, B, dtype=dtype, device=device, seed=seed, ties=ties)
    out = dim_stats(values, mask, edges)
    assert out.ks.shape == (D,) and out.ks.dtype == torch.float64 and out.ks.device == values.device
    assert out.hist_true.shape == (D, B) and out.hist_true.dtype == torch.int64
    assert_stats(out, oracle(values, mask, edges))
    # Same integers, same roundings: identical to the reference.
    assert_stats(out, exact_reference(values, mask, edges), exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_equals_the_analysis_code(native, device, dtype):
    # What failatlas.analysis.separation computes (well = ~mis): the native op gives the same bits.
    values, _, _ = make_inputs(500, 40, dtype=dtype, seed=7)
    values[:, :20] = torch.randn(500, 20, dtype=dtype)  # half the columns without ties
    mis = torch.rand(500, generator=torch.Generator().manual_seed(8)) < 0.2
    edges, hist_well, hist_mis = analysis_histograms(values, ~mis, 20)
    out = dim_stats(values.to(device), mis.to(device), edges.to(device))
    assert torch.equal(out.ks.cpu(), analysis_ks(values, ~mis))
    assert torch.equal(out.auroc.cpu(), analysis_auroc(values, mis))
    assert torch.equal(out.hist_true.cpu(), hist_mis) and torch.equal(out.hist_false.cpu(), hist_well)


def test_perfect_and_no_separation(native, device):
    values = torch.arange(10.0, device=device)[:, None].repeat(1, 3)
    values[:, 1] = 1.0  # one constant column: everything tied
    values[:, 2] = -values[:, 2]
    mask = torch.arange(10, device=device) >= 6
    out = dim_stats(values, mask)
    assert out.ks.tolist() == [1.0, 0.0, 1.0]
    assert out.auroc.tolist() == [1.0, 0.5, 0.0]
    assert out.hist_true.shape == (3, 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,D,B,p_true", [(0, 5, 3, 0.5), (6, 0, 3, 0.5), (0, 0, None, 0.5), (7, 4, 2, 0.0),
                                          (7, 4, 2, 1.0), (7, 4, None, 1.0), (1, 3, 1, 1.0)])
def test_empty_and_one_group(native, backend, dtype, N, D, B, p_true):
    values, mask, edges = make_inputs(N, D, B, dtype=dtype, p_true=p_true)
    out = dim_stats(values, mask, edges, backend=backend)
    assert out.ks.shape == (D,) and out.auroc.shape == (D,)
    assert out.hist_true.shape == (D, B or 0) and out.hist_false.shape == (D, B or 0)
    assert out.ks.isnan().all() and out.auroc.isnan().all()  # a group is empty
    assert_stats(out, oracle(values, mask, edges))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(native, dtype):
    N, D, B = 30, 7, 5
    values, mask, edges = make_inputs(N, D, B, dtype=dtype, seed=3)
    v = values.t().contiguous().t()  # column-major
    m = torch.stack([mask, ~mask], dim=1)[:, 0]  # strided
    e = edges.t().contiguous().t()
    assert not (v.is_contiguous() or m.is_contiguous() or e.is_contiguous())
    out = dim_stats(v, m, e)
    assert_stats(out, oracle(values, mask, edges))
    assert_stats(out, dim_stats(values, mask, edges), exact=True)
    assert_stats(dim_stats(values[::2, 1::2], mask[::2], edges[1::2]),
                 oracle(values[::2, 1::2], mask[::2], edges[1::2]))


def test_edges_beyond_the_values_float32_edges_and_infinities(native):
    values = torch.tensor([[-5.0, 0.0], [0.0, 1.0], [1.0, 2.0], [9.0, math.inf], [-math.inf, 3.0]])
    mask = torch.tensor([True, False, True, False, False])
    edges = torch.tensor([[0.0, 0.5, 1.0, 1.0], [1.0, 2.0, 2.0, 2.5]], dtype=torch.float32)  # empty bins
    out = dim_stats(values, mask, edges)
    assert_stats(out, oracle(values, mask, edges))
    assert_stats(out, reference_dim_stats(values, mask, edges), exact=True)
    assert out.hist_true.tolist() == [[1, 0, 1], [1, 0, 1]]  # -5 clamps into the first bin, 9 into the last


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_is_above_every_number_and_ties_with_nan(native, device, dtype):
    values, mask, edges = make_inputs(60, 4, 5, dtype=dtype, seed=9)
    values[[0, 5, 6, 30, 31], 1] = math.nan  # both groups
    values[mask.nonzero()[:3, 0], 2] = math.nan  # one group only
    values[:, 3] = math.nan  # all
    values, mask, edges = values.to(device), mask.to(device), edges.to(device)
    out = dim_stats(values, mask, edges)
    assert_stats(out, oracle(values, mask, edges))
    assert_stats(out, exact_reference(values, mask, edges), exact=True)
    assert out.ks[3] == 0 and out.auroc[3] == 0.5
    assert int(out.hist_true[3, -1] + out.hist_false[3, -1]) == 60  # NaN: the last bin, as searchsorted


def test_large_batch_is_parallel_safe(native):
    values, mask, edges = make_inputs(3000, 64, 20, dtype=torch.float32, seed=4)
    assert_stats(dim_stats(values, mask, edges), reference_dim_stats(values, mask, edges), exact=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_equals_cpu_on_a_large_batch(native, dtype):
    # Several blocks of columns, thousands of rows, ties and not.
    values, mask, edges = make_inputs(3000, 700, 20, dtype=dtype, seed=12)
    values[:, 350:] = torch.randn(3000, 350, dtype=dtype)
    cpu = dim_stats(values, mask, edges)
    assert_stats(dim_stats(values.cuda(), mask.cuda(), edges.cuda()), cpu, exact=True)


def test_requires_grad_input_is_read_detached(native):
    values, mask, edges = make_inputs(20, 4, 3, seed=5)
    out = dim_stats(values.requires_grad_(True), mask, edges)
    assert not out.ks.requires_grad
    assert_stats(out, oracle(values, mask, edges))


def test_opcheck(native):
    values, mask, edges = make_inputs(12, 5, 4, seed=6)
    torch.library.opcheck(torch.ops.failatlas.dim_stats.default, (values, mask, edges))
    torch.library.opcheck(torch.ops.failatlas.dim_stats.default, (values.float(), mask, None))


def test_fake_tensor_mode_gives_shape(native):
    with FakeTensorMode():
        values = torch.empty(7, 11, dtype=torch.float32)
        mask = torch.empty(7, dtype=torch.bool)
        edges = torch.empty(11, 6, dtype=torch.float64)
        ks, au, ht, hf = torch.ops.failatlas.dim_stats(values, mask, edges)
        assert ks.shape == (11,) and ks.dtype == torch.float64 and au.dtype == torch.float64
        assert ht.shape == (11, 5) and hf.dtype == torch.int64
        with pytest.raises(RuntimeError, match="edges has 10 rows but values has D = 11 columns"):
            torch.ops.failatlas.dim_stats(values, mask, edges[:10])


def test_meta_tensors_give_shape(native):
    values, mask, edges = (t.to("meta") for t in make_inputs(5, 6, 3))
    out = dim_stats(values, mask, edges)
    assert out.ks.device.type == "meta" and out.hist_false.shape == (6, 3)


def _bad_cases():
    # (name, change to the valid float64 inputs N=50, D=1280, B=4, expected message text)
    def with_(i, value):
        return lambda a: a[:i] + (value(a),) + a[i + 1:]

    return [
        ("values int32", with_(0, lambda a: a[0].int()), "dim_stats: values must be float32 or float64, got int32"),
        ("values 1-D", with_(0, lambda a: a[0][:, 0]), "dim_stats: values must be 2-D [N, D], got a 1-D tensor"),
        ("values 3-D", with_(0, lambda a: a[0][None]), "dim_stats: values must be 2-D [N, D], got a 3-D tensor"),
        ("mask 2-D", with_(1, lambda a: a[1][None]), "dim_stats: mask must be 1-D [N], got a 2-D tensor"),
        ("mask int64", with_(1, lambda a: a[1].long()), "dim_stats: mask must be bool, got int64"),
        ("mask float", with_(1, lambda a: a[1].double()), "dim_stats: mask must be bool, got float64"),
        ("mask size", with_(1, lambda a: a[1][:-1]), "dim_stats: mask has 49 entries but values has N = 50 rows"),
        ("mask on meta", with_(1, lambda a: a[1].to("meta")), "dim_stats: mask is on meta but values is on cpu"),
        ("edges 1-D", with_(2, lambda a: a[2][0]), "dim_stats: edges must be 2-D [D, B + 1], got a 1-D tensor"),
        ("edges int64", with_(2, lambda a: a[2].long()), "dim_stats: edges must be float32 or float64, got int64"),
        ("edges rows", with_(2, lambda a: a[2][:-1]), "dim_stats: edges has 1279 rows but values has D = 1280 columns"),
        ("edges one column", with_(2, lambda a: a[2][:, :1]),
         "dim_stats: edges must have at least 2 columns (one bin), got 1"),
        ("edges on meta", with_(2, lambda a: a[2].to("meta")), "dim_stats: edges is on meta but values is on cpu"),
        ("edges decreasing", with_(2, lambda a: a[2].index_put((torch.tensor([700]), torch.tensor([3])),
                                                              torch.tensor(-10.0, dtype=torch.float64))),
         "dim_stats: edges[700] must be non-decreasing and free of NaN, but edges[700, 2] = "),
        ("edges NaN", with_(2, lambda a: a[2].index_put((torch.tensor([3]), torch.tensor([0])),
                                                       torch.tensor(math.nan, dtype=torch.float64))),
         "dim_stats: edges[3] must be non-decreasing and free of NaN, but edges[3, 0] = nan"),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("change,message", [c[1:] for c in _bad_cases()], ids=[c[0] for c in _bad_cases()])
def test_bad_inputs_raise_clear_errors(native, backend, change, message):
    args = change(make_inputs(50, 1280, 4))
    with pytest.raises((RuntimeError, ValueError), match=re.escape(message)):
        dim_stats(*args, backend=backend)


@pytest.mark.parametrize("change,message", [c[1:] for c in _bad_cases()], ids=[c[0] for c in _bad_cases()])
def test_native_op_itself_raises_clear_errors(native, change, message):
    """The C++ checks, without the wrapper's Python-side checks in front of them (what C++ callers get)."""
    args = change(make_inputs(50, 1280, 4))
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.failatlas.dim_stats.default(*args)


def test_edge_values_in_messages_round_trip(native):
    values, mask, edges = make_inputs(4, 2, 2)
    edges[1] = torch.tensor([0.1, 1e-9, 3.0], dtype=torch.float64)
    for call in (lambda: dim_stats(values, mask, edges, backend="reference"),
                 lambda: torch.ops.failatlas.dim_stats.default(values, mask, edges)):
        with pytest.raises(RuntimeError, match=re.escape("edges[1, 0] = 0.1 and edges[1, 1] = 1e-09")):
            call()


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be 'native' or 'reference'"):
        dim_stats(*make_inputs(3, 2), backend="cuda")


def test_a_mask_whose_true_bytes_are_not_one(native):
    """A bool tensor viewed from other bytes (uint8.view(bool), numpy's view) holds 2..255 for True; torch
    reads them as True. The kernel summed the bytes: wrong statistics, or a write past its buffer."""
    import numpy as np

    values = torch.randn(1000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    raw = (np.arange(1000, dtype=np.uint8) % 5)
    mask = torch.from_numpy(raw.view(np.bool_))
    clean = torch.from_numpy(raw != 0)
    assert torch.equal(mask, clean) and int(mask.view(torch.uint8).max()) == 4
    edges = torch.stack([torch.linspace(-4, 4, 6, dtype=torch.float64)] * 4)
    assert_stats(dim_stats(values, mask, edges), dim_stats(values, clean, edges), exact=True)
    assert_stats(dim_stats(values, mask, edges), oracle(values, clean, edges))


@pytest.mark.parametrize("call", [
    lambda: dim_stats([[1.0]], torch.tensor([True])),
    lambda: dim_stats(torch.ones(1, 1), [True]),
])
def test_arguments_that_are_not_tensors_are_named(native, call):
    with pytest.raises(TypeError, match=r"dim_stats: (values|mask) must be a Tensor, got list"):
        call()
