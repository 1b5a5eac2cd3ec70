"""``walk_styles``: batches of single-dimension walks in StyleSpace (DESIGN §4.4, §5).

The native kernels are in ``csrc/ops/`` (schema ``walk_styles.cpp``, ``cpu/``, ``cuda/``); this module
is their Python face: the wrapper, the fake-tensor implementation and autograd, registered by
:func:`_register` once :func:`failatlas._ext.load` has loaded the schema.
"""

from __future__ import annotations

import torch

from .. import _ext
from ._reference import check_walk_styles_args, reference_walk_styles


def walk_styles(
    starts: torch.Tensor,
    dims: torch.Tensor,
    shifts: torch.Tensor,
    sigma: torch.Tensor,
    sign: torch.Tensor,
    *,
    backend: str = "native",
) -> torch.Tensor:
    """Walk every start along every listed StyleSpace dimension by every shift.

    Args:
        starts (Tensor[N, D]): style vectors s to start from (float32 or float64).
        dims (Tensor[K], int64): the dimensions to walk, each in [0, D).
        shifts (Tensor[M]): the shifts, in σ units (0 leaves a start unchanged).
        sigma (Tensor[D]): σ_d, the population standard deviation of each dimension (s units per σ).
        sign (Tensor[K]): direction of each walk, usually ±1 (the degrading direction of ``dims[k]``).
        backend: ``"native"`` (``torch.ops.failatlas.walk_styles``; needs the built native module) or
            ``"reference"`` (the pure-torch specification, any device; slower).

    Returns:
        Tensor[N, K, M, D]: ``out[n, k, m]`` is ``starts[n]`` with dimension ``dims[k]`` moved by
        ``shifts[m] * sigma[dims[k]] * sign[k]`` (s units). Same dtype and device as ``starts``.

    All inputs must be on one device and ``shifts``, ``sigma``, ``sign`` share the dtype of ``starts``;
    anything else raises ``RuntimeError`` naming the argument. Differentiable with respect to
    ``starts``, ``shifts``, ``sigma`` and ``sign``.
    """
    if backend == "native":
        _ext.load()
        # The shape, dtype and device checks again on the Python side (free: no data is read), so that
        # Python callers get the error even from a native build that mishandles one; the kernels still
        # check everything themselves (C++ callers), the dims range included.
        check_walk_styles_args(starts, dims, shifts, sigma, sign, values=False)
        return torch.ops.failatlas.walk_styles.default(starts, dims, shifts, sigma, sign)
    if backend == "reference":
        return reference_walk_styles(starts, dims, shifts, sigma, sign)
    raise ValueError(f"walk_styles: backend must be 'native' or 'reference', got {backend!r}")


def _walk_styles_fake(starts, dims, shifts, sigma, sign):
    check_walk_styles_args(starts, dims, shifts, sigma, sign, values=False)
    return starts.new_empty((starts.shape[0], dims.shape[0], shifts.shape[0], starts.shape[1]))


def _setup_context(ctx, inputs, output):
    starts, dims, shifts, sigma, sign = inputs
    ctx.save_for_backward(dims, shifts, sigma, sign)
    ctx.D = starts.shape[1]


def _backward(ctx, grad):
    # grad [N, K, M, D]. Only out[:, k, :, dims[k]] depends on shifts, sigma and sign.
    dims, shifts, sigma, sign = ctx.saved_tensors
    _, need_dims, need_shifts, need_sigma, need_sign = ctx.needs_input_grad
    grad_starts = grad.sum(dim=(1, 2)) if ctx.needs_input_grad[0] else None
    grad_shifts = grad_sigma = grad_sign = None
    if need_shifts or need_sigma or need_sign:
        K, M = dims.shape[0], shifts.shape[0]
        g = grad.sum(dim=0).gather(2, dims.view(K, 1, 1).expand(K, M, 1)).squeeze(2)  # [K, M]
        sig = sigma[dims]  # [K]
        if need_shifts:
            grad_shifts = (g * (sig * sign)[:, None]).sum(dim=0)
        if need_sign:
            grad_sign = (g * shifts[None, :]).sum(dim=1) * sig
        if need_sigma:
            per_k = (g * shifts[None, :]).sum(dim=1) * sign  # [K]
            grad_sigma = sigma.new_zeros(ctx.D).index_add(0, dims, per_k)
    return grad_starts, None, grad_shifts, grad_sigma, grad_sign


def _register() -> None:
    torch.library.register_fake("failatlas::walk_styles")(_walk_styles_fake)
    torch.library.register_autograd("failatlas::walk_styles", _backward, setup_context=_setup_context)
