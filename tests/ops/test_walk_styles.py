"""torch.ops.failatlas.walk_styles against an independent float64 oracle, the reference, and bad inputs."""

from __future__ import annotations

import re

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from failatlas.ops import reference_walk_styles, walk_styles

BACKENDS = ["native", "reference"]
DTYPES = [torch.float32, torch.float64]



def oracle(starts, dims, shifts, sigma, sign) -> torch.Tensor:
    """out[n, k, m] = starts[n] with dims[k] moved by shifts[m] * sigma[dims[k]] * sign[k], in float64."""
    s = starts.detach().cpu().double()
    N, D = s.shape
    K, M = dims.shape[0], shifts.shape[0]
    out = torch.empty(N, K, M, D, dtype=torch.float64)
    for k in range(K):
        d = int(dims[k])
        for m in range(M):
            row = s.clone()
            row[:, d] += float(shifts[m]) * float(sigma[d]) * float(sign[k])
            out[:, k, m] = row
    return out


def make_inputs(N, D, K, M, *, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    starts = torch.randn(N, D, generator=g, dtype=dtype)
    dims = torch.randint(0, max(D, 1), (K,), generator=g) if D else torch.zeros(K, dtype=torch.int64)
    shifts = torch.randn(M, generator=g, dtype=dtype) * 10
    sigma = torch.rand(D, generator=g, dtype=dtype) + 0.1
    sign = torch.where(torch.rand(K, generator=g) < 0.5, -1.0, 1.0).to(dtype)
    return tuple(t.to(device) for t in (starts, dims, shifts, sigma, sign))


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(6))
def test_matches_oracle_on_random_shapes(native, device, dtype, seed):
    g = torch.Generator().manual_seed(100 + seed)
    N, D, K, M = (int(torch.randint(1, hi, (1,), generator=g)) for hi in (8, 50, 7, 6))
    args = make_inputs(N, D, K, M, dtype=dtype, device=device, seed=seed)
    out = walk_styles(*args)
    assert out.shape == (N, K, M, D) and out.dtype == dtype and out.device == args[0].device
    assert out.is_contiguous()
    torch.testing.assert_close(out.cpu().double(), oracle(*args), **tol(dtype))
    # The native kernel does the reference's arithmetic, in the same order: identical bits.
    assert torch.equal(out, reference_walk_styles(*args))


def test_repeated_dims_and_paper_sizes(native):
    # A paper-sized style vector (dim S = 5632), with a dimension walked twice in both directions.
    starts, _, shifts, sigma, _ = make_inputs(3, 5632, 3, 7, dtype=torch.float32, seed=1)
    dims = torch.tensor([5631, 0, 5631])
    sign = torch.tensor([1.0, -1.0, -1.0])
    out = walk_styles(starts, dims, shifts, sigma, sign)
    torch.testing.assert_close(out.double(), oracle(starts, dims, shifts, sigma, sign), **tol(torch.float32))
    zero = walk_styles(starts, dims, torch.zeros(2), sigma, sign)
    assert torch.equal(zero, starts[:, None, None, :].expand(3, 3, 2, 5632))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,D,K,M", [(0, 5, 2, 3), (4, 5, 0, 3), (4, 5, 2, 0), (0, 0, 0, 0), (3, 0, 0, 2)])
def test_empty(native, backend, dtype, N, D, K, M):
    args = make_inputs(N, D, K, M, dtype=dtype)
    out = walk_styles(*args, backend=backend)
    assert out.shape == (N, K, M, D) and out.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(native, dtype):
    N, D, K, M = 5, 9, 4, 3
    starts = torch.randn(D, N, dtype=dtype).t()  # transposed
    dims = torch.randint(0, D, (2 * K,))[::2]  # strided
    shifts = torch.randn(M, 2, dtype=dtype)[:, 1]  # a column
    sigma = (torch.rand(2 * D, dtype=dtype) + 0.1)[1::2]
    sign = torch.tensor([1.0, 5.0, -1.0], dtype=dtype).repeat(K)[::3]  # +1, -1, +1, -1
    args = (starts, dims, shifts, sigma, sign)
    assert not any(t.is_contiguous() for t in args)
    out = walk_styles(*args)
    torch.testing.assert_close(out.double(), oracle(*args), **tol(dtype))
    assert torch.equal(out, walk_styles(*(t.contiguous() for t in args)))


def test_large_batch_is_parallel_safe(native):
    # Enough rows that at::parallel_for splits the work across threads.
    args = make_inputs(64, 300, 16, 12, dtype=torch.float32, seed=3)
    assert torch.equal(walk_styles(*args), reference_walk_styles(*args))


def test_opcheck(native):
    starts, dims, shifts, sigma, sign = make_inputs(3, 6, 4, 2, seed=4)
    for t in (starts, shifts, sigma, sign):
        t.requires_grad_(True)
    torch.library.opcheck(torch.ops.failatlas.walk_styles.default, (starts, dims, shifts, sigma, sign))
    torch.library.opcheck(torch.ops.failatlas.walk_styles.default, make_inputs(2, 5, 3, 2, dtype=torch.float32))


def test_gradcheck(native):
    starts, dims, shifts, sigma, sign = make_inputs(2, 5, 4, 3, seed=5)
    dims = torch.tensor([1, 4, 1, 0])  # a repeated dim: its sigma gradient sums two walks
    inputs = [t.clone().requires_grad_(True) for t in (starts, shifts, sigma, sign)]

    def f(starts, shifts, sigma, sign):
        return walk_styles(starts, dims, shifts, sigma, sign)

    assert torch.autograd.gradcheck(f, inputs)
    # Same gradients as autograd through the reference.
    out = f(*inputs)
    w = torch.randn_like(out)
    native_grads = torch.autograd.grad((out * w).sum(), inputs)
    ref_inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    ref = reference_walk_styles(ref_inputs[0], dims, *ref_inputs[1:])
    ref_grads = torch.autograd.grad((ref * w).sum(), ref_inputs)
    for a, b in zip(native_grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_fake_tensor_mode_gives_shape(native):
    with FakeTensorMode():
        starts = torch.empty(7, 11, dtype=torch.float32)
        dims = torch.empty(3, dtype=torch.int64)
        shifts = torch.empty(5, dtype=torch.float32)
        sigma = torch.empty(11, dtype=torch.float32)
        sign = torch.empty(3, dtype=torch.float32)
        out = torch.ops.failatlas.walk_styles(starts, dims, shifts, sigma, sign)
        assert out.shape == (7, 3, 5, 11) and out.dtype == torch.float32
        with pytest.raises(RuntimeError, match="sigma has 10 entries but starts has D = 11"):
            torch.ops.failatlas.walk_styles(starts, dims, shifts, sigma[:10], sign)


def test_meta_tensors_give_shape(native):
    args = [t.to("meta") for t in make_inputs(2, 6, 3, 4)]
    out = walk_styles(*args)
    assert out.device.type == "meta" and out.shape == (2, 3, 4, 6)


def _bad_cases():
    # (name, change to the valid float64 inputs N=4, D=1280, K=5, M=3, expected message text)
    def with_(i, value):
        return lambda a: a[:i] + (value(a),) + a[i + 1 :]

    return [
        ("starts int32", with_(0, lambda a: a[0].int()), "walk_styles: starts must be float32 or float64, got int32"),
        ("starts 1-D", with_(0, lambda a: a[0][0]), "walk_styles: starts must be 2-D [N, D], got a 1-D tensor"),
        ("starts 3-D", with_(0, lambda a: a[0][None]), "walk_styles: starts must be 2-D [N, D], got a 3-D tensor"),
        ("dims 2-D", with_(1, lambda a: a[1][None]), "walk_styles: dims must be 1-D [K], got a 2-D tensor"),
        ("shifts 0-D", with_(2, lambda a: a[2][0]), "walk_styles: shifts must be 1-D [M], got a 0-D tensor"),
        ("sigma 2-D", with_(3, lambda a: a[3][None]), "walk_styles: sigma must be 1-D [D]"),
        ("sign 2-D", with_(4, lambda a: a[4][:, None]), "walk_styles: sign must be 1-D [K]"),
        ("shifts float32", with_(2, lambda a: a[2].float()),
         "walk_styles: shifts must have the dtype of starts (float64), got float32"),
        ("sigma float32", with_(3, lambda a: a[3].float()), "walk_styles: sigma must have the dtype of starts"),
        ("sign float32", with_(4, lambda a: a[4].float()), "walk_styles: sign must have the dtype of starts"),
        ("dims int32", with_(1, lambda a: a[1].int()), "walk_styles: dims must be int64, got int32"),
        ("dims float", with_(1, lambda a: a[1].double()), "walk_styles: dims must be int64, got float64"),
        ("sigma size", with_(3, lambda a: a[3][:-1]), "walk_styles: sigma has 1279 entries but starts has D = 1280"),
        ("sign size", with_(4, lambda a: a[4][:-1]), "walk_styles: sign has 4 entries but dims has K = 5"),
        ("dims too large", with_(1, lambda a: torch.tensor([0, 1, 2, 1500, 1280])),
         "walk_styles: dims[3] = 1500 is out of range for starts with D = 1280"),
        ("dims = D", with_(1, lambda a: torch.tensor([0, 1, 2, 3, 1280])),
         "walk_styles: dims[4] = 1280 is out of range for starts with D = 1280"),
        ("dims negative", with_(1, lambda a: torch.tensor([-1, 1, 2, 3, 4])),
         "walk_styles: dims[0] = -1 is out of range for starts with D = 1280"),
        ("dims on meta", with_(1, lambda a: a[1].to("meta")), "walk_styles: dims is on meta but starts is on cpu"),
        ("sigma on meta", with_(3, lambda a: a[3].to("meta")), "walk_styles: sigma is on meta but starts is on cpu"),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("change,message", [c[1:] for c in _bad_cases()], ids=[c[0] for c in _bad_cases()])
def test_bad_inputs_raise_clear_errors(native, backend, change, message):
    args = change(make_inputs(4, 1280, 5, 3))
    with pytest.raises((RuntimeError, ValueError), match=re.escape(message)):
        walk_styles(*args, backend=backend)


@pytest.mark.parametrize("change,message", [c[1:] for c in _bad_cases()], ids=[c[0] for c in _bad_cases()])
def test_native_op_itself_raises_clear_errors(native, change, message):
    """The C++ checks, without the wrapper's Python-side checks in front of them (what C++ callers get)."""
    args = change(make_inputs(4, 1280, 5, 3))
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.failatlas.walk_styles.default(*args)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be 'native' or 'reference'"):
        walk_styles(*make_inputs(1, 2, 1, 1), backend="cuda")


def test_arguments_that_are_not_tensors_are_named(native):
    one = torch.ones(1, dtype=torch.float64)
    with pytest.raises(TypeError, match="walk_styles: dims must be a Tensor, got list"):
        walk_styles(torch.ones(1, 1), [0], one, one, one)
