"""torch.ops.failatlas.bisect_update against corners.py's bisection (Python numbers), the reference, and bad
inputs."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from failatlas.analysis.corners import THRESHOLD
from failatlas.ops import bisect_update, reference_bisect_update

BACKENDS = ["native", "reference"]
BRACKETS = [torch.int64, torch.float32, torch.float64]
PROBS = [torch.float32, torch.float64]



def oracle(lo, hi, p, threshold):
    """The update of corners.py (``mid = (a + b) // 2; if pp <= THRESHOLD: a = mid else: b = mid``) on Python
    numbers: ints for int64 brackets, the bracket dtype's numpy scalars for floats, p as a Python float."""
    new_lo, new_hi = [], []
    np_type = {torch.float32: np.float32, torch.float64: np.float64}.get(lo.dtype)
    for a, b, pp in zip(lo.tolist(), hi.tolist(), p.tolist()):
        if np_type is None:
            mid = (a + b) // 2
        else:
            mid = (np_type(a) + np_type(b)) / np_type(2)
        if pp <= threshold:
            a = mid
        else:
            b = mid
        new_lo.append(a)
        new_hi.append(b)
    return torch.tensor(new_lo, dtype=lo.dtype), torch.tensor(new_hi, dtype=lo.dtype)


def make_inputs(B, *, dtype=torch.int64, p_dtype=torch.float32, device="cpu", seed=0, nan=True):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.int64:
        lo = torch.randint(-1000, 1000, (B,), generator=g)
        hi = lo + torch.randint(-50, 51, (B,), generator=g)  # either order, odd and even sums
    else:
        lo = (torch.randn(B, generator=g, dtype=torch.float64) * 100).to(dtype)
        hi = lo + torch.randn(B, generator=g, dtype=torch.float64).to(dtype)
    p = torch.rand(B, generator=g, dtype=torch.float64).to(p_dtype)
    if B:
        p[: B // 10] = 0.5  # exactly at the threshold: counts as flipped
        if nan:
            p[B // 10: B // 5] = math.nan
    return lo.to(device), hi.to(device), p.to(device)


@pytest.mark.parametrize("dtype", BRACKETS)
@pytest.mark.parametrize("p_dtype", PROBS)
@pytest.mark.parametrize("threshold", [THRESHOLD, 0.1, 0.9])
def test_matches_corners_update(native, device, dtype, p_dtype, threshold):
    lo, hi, p = make_inputs(500, dtype=dtype, p_dtype=p_dtype, device=device, seed=int(threshold * 10))
    new_lo, new_hi = bisect_update(lo, hi, p, threshold)
    for t in (new_lo, new_hi):
        assert t.dtype == dtype and t.device == lo.device and t.shape == (500,)
    exp_lo, exp_hi = oracle(lo.cpu(), hi.cpu(), p.cpu(), threshold)
    assert torch.equal(new_lo.cpu(), exp_lo) and torch.equal(new_hi.cpu(), exp_hi)
    ref_lo, ref_hi = reference_bisect_update(lo, hi, p, threshold)
    assert torch.equal(new_lo, ref_lo) and torch.equal(new_hi, ref_hi)
    # new tensors: the inputs are left as they were
    assert not (new_lo.data_ptr() == lo.data_ptr() or new_hi.data_ptr() == hi.data_ptr())


def test_float32_threshold_compared_in_float64(native):
    # 0.1 is not a float32: p = float32(0.1) > 0.1 in float64, as corners.py compares Python floats.
    p = torch.tensor([0.1, 0.0999999], dtype=torch.float32)
    lo, hi = torch.tensor([0, 0]), torch.tensor([8, 8])
    for backend in BACKENDS:
        new_lo, new_hi = bisect_update(lo, hi, p, 0.1, backend=backend)
        assert new_lo.tolist() == [0, 4] and new_hi.tolist() == [4, 8]


def test_whole_search_equals_corners_bisection(native, device):
    # Rows of corners.py's bisection over m = 0 … mb (a: p ≤ 0.5, b: p > 0.5), each with its own flip
    # point, run to convergence with the op; then the same rows in Python, one at a time.
    g = torch.Generator().manual_seed(11)
    R = 300
    mb = torch.randint(1, 1000, (R,), generator=g)
    flip = (torch.rand(R, generator=g) * mb).long()  # p(m) ≤ 0.5 for m ≤ flip

    def p_of(m, flip_):
        return torch.where(m <= flip_, 0.25, 0.75).to(torch.float32)

    a, b = torch.zeros(R, dtype=torch.int64, device=device), mb.to(device)
    flip_d = flip.to(device)
    while True:
        active = (b - a) > 1
        if not bool(active.any()):
            break
        mid = torch.div(a + b, 2, rounding_mode="floor")
        new_a, new_b = bisect_update(a, b, p_of(mid, flip_d))
        a, b = torch.where(active, new_a, a), torch.where(active, new_b, b)
    for r in range(R):
        ra, rb = 0, int(mb[r])
        while rb - ra > 1:
            mid = (ra + rb) // 2
            if float(p_of(torch.tensor(mid), flip[r])) <= THRESHOLD:
                ra = mid
            else:
                rb = mid
        assert (int(a[r]), int(b[r])) == (ra, rb) == (int(flip[r]), int(flip[r]) + 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", BRACKETS)
def test_empty(native, backend, dtype):
    lo, hi, p = make_inputs(0, dtype=dtype)
    new_lo, new_hi = bisect_update(lo, hi, p, backend=backend)
    assert new_lo.shape == (0,) and new_hi.dtype == dtype


def test_non_contiguous_inputs(native):
    lo, hi, p = make_inputs(40, seed=2)
    args = (lo[::2], hi[1::2], p[::2])
    assert not any(t.is_contiguous() for t in args)
    out = bisect_update(*args)
    exp = oracle(*args, THRESHOLD)
    assert torch.equal(out[0], exp[0]) and torch.equal(out[1], exp[1])


def test_large_batch_is_parallel_safe(native):
    lo, hi, p = make_inputs(200_000, dtype=torch.float64, p_dtype=torch.float64, seed=3)
    out, ref = bisect_update(lo, hi, p), reference_bisect_update(lo, hi, p, THRESHOLD)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", BRACKETS)
def test_cuda_equals_cpu_on_a_large_batch(native, dtype):
    lo, hi, p = make_inputs(3_000_000, dtype=dtype, p_dtype=torch.float64, seed=4)  # ~12k blocks
    cpu = bisect_update(lo, hi, p)
    gpu = bisect_update(lo.cuda(), hi.cuda(), p.cuda())
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])


def test_opcheck(native):
    for dtype in BRACKETS:
        torch.library.opcheck(torch.ops.failatlas.bisect_update.default, (*make_inputs(9, dtype=dtype, nan=False), 0.5))


def test_fake_tensor_mode_gives_shape(native):
    with FakeTensorMode():
        lo, hi = torch.empty(7, dtype=torch.int64), torch.empty(7, dtype=torch.int64)
        p = torch.empty(7, dtype=torch.float32)
        new_lo, new_hi = torch.ops.failatlas.bisect_update(lo, hi, p, 0.5)
        assert new_lo.shape == (7,) and new_hi.dtype == torch.int64
        with pytest.raises(RuntimeError, match="p has 6 entries but lo has B = 7"):
            torch.ops.failatlas.bisect_update(lo, hi, p[:6], 0.5)


def test_meta_tensors_give_shape(native):
    lo, hi, p = (t.to("meta") for t in make_inputs(5))
    new_lo, _ = bisect_update(lo, hi, p)
    assert new_lo.device.type == "meta" and new_lo.shape == (5,)


def _bad_cases():
    # (name, change to the valid inputs B=6 (int64 brackets, float32 p), expected message text)
    def with_(i, value):
        return lambda a: a[:i] + (value(a),) + a[i + 1:]

    return [
        ("lo 2-D", with_(0, lambda a: a[0][None]), "bisect_update: lo must be 1-D [B], got a 2-D tensor of shape [1, 6]"),
        ("hi 0-D", with_(1, lambda a: a[1][0]), "bisect_update: hi must be 1-D [B], got a 0-D tensor"),
        ("p 2-D", with_(2, lambda a: a[2][:, None]), "bisect_update: p must be 1-D [B], got a 2-D tensor"),
        ("lo int32", lambda a: (a[0].int(), a[1].int(), a[2]), "bisect_update: lo must be int64, float32 or float64, got int32"),
        ("lo bool", lambda a: (a[0] > 0, a[1] > 0, a[2]), "bisect_update: lo must be int64, float32 or float64, got bool"),
        ("hi other dtype", with_(1, lambda a: a[1].double()), "bisect_update: hi must have the dtype of lo (int64), got float64"),
        ("p int64", with_(2, lambda a: a[2].long()), "bisect_update: p must be float32 or float64, got int64"),
        ("hi on meta", with_(1, lambda a: a[1].to("meta")), "bisect_update: hi is on meta but lo is on cpu"),
        ("p on meta", with_(2, lambda a: a[2].to("meta")), "bisect_update: p is on meta but lo is on cpu"),
        ("hi size", with_(1, lambda a: a[1][:-1]), "bisect_update: hi has 5 entries but lo has B = 6"),
        ("p size", with_(2, lambda a: torch.zeros(8)), "bisect_update: p has 8 entries but lo has B = 6"),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("change,message", [c[1:] for c in _bad_cases()], ids=[c[0] for c in _bad_cases()])
def test_bad_inputs_raise_clear_errors(native, backend, change, message):
    args = change(make_inputs(6))
    with pytest.raises((RuntimeError, ValueError), match=re.escape(message)):
        bisect_update(*args, backend=backend)


@pytest.mark.parametrize("change,message", [c[1:] for c in _bad_cases()], ids=[c[0] for c in _bad_cases()])
def test_native_op_itself_raises_clear_errors(native, change, message):
    """The C++ checks, without the wrapper's Python-side checks in front of them (what C++ callers get)."""
    args = change(make_inputs(6))
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.failatlas.bisect_update.default(*args, 0.5)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be 'native' or 'reference'"):
        bisect_update(*make_inputs(2), backend="cuda")


def test_arguments_that_are_not_tensors_are_named(native):
    with pytest.raises(TypeError, match="bisect_update: p must be a Tensor, got float"):
        bisect_update(torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.long), 0.3, 0.5)
