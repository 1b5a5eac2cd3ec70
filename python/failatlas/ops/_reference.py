"""Pure-torch references of the native ops: the specification, the fallback and the test oracle.

Each ``reference_<op>`` gives the same results as ``torch.ops.failatlas.<op>`` (bit for bit where the
arithmetic is the same) and raises the same errors, on any device and dtype torch supports.
"""

from __future__ import annotations

import torch

_FLOATS = (torch.float32, torch.float64)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_walk_styles_args(starts, dims, shifts, sigma, sign, *, values: bool = True) -> None:
    """The checks of ``csrc/ops/walk_styles.cpp``, with the same messages (RuntimeError).

    ``values=False`` skips the data-dependent check that every ``dims`` entry is in [0, D), so that it
    can run on fake tensors.
    """
    torch._check(
        starts.dim() == 2,
        lambda: f"walk_styles: starts must be 2-D [N, D], got a {starts.dim()}-D tensor of shape "
        f"{list(starts.shape)}",
    )
    for t, name, shape in ((dims, "dims", "[K]"), (shifts, "shifts", "[M]"), (sigma, "sigma", "[D]"),
                           (sign, "sign", "[K]")):
        torch._check(
            t.dim() == 1,
            lambda: f"walk_styles: {name} must be 1-D {shape}, got a {t.dim()}-D tensor of shape "
            f"{list(t.shape)}",
        )
    torch._check(
        starts.dtype in _FLOATS,
        lambda: f"walk_styles: starts must be float32 or float64, got {_dtype_name(starts.dtype)}",
    )
    for t, name in ((shifts, "shifts"), (sigma, "sigma"), (sign, "sign")):
        torch._check(
            t.dtype == starts.dtype,
            lambda: f"walk_styles: {name} must have the dtype of starts ({_dtype_name(starts.dtype)}), "
            f"got {_dtype_name(t.dtype)}",
        )
    torch._check(
        dims.dtype == torch.int64, lambda: f"walk_styles: dims must be int64, got {_dtype_name(dims.dtype)}"
    )
    for t, name in ((dims, "dims"), (shifts, "shifts"), (sigma, "sigma"), (sign, "sign")):
        torch._check(
            t.device == starts.device,
            lambda: f"walk_styles: {name} is on {t.device} but starts is on {starts.device}; all inputs "
            "must be on one device",
        )
    D, K = starts.shape[1], dims.shape[0]
    torch._check(
        sigma.shape[0] == D,
        lambda: f"walk_styles: sigma has {sigma.shape[0]} entries but starts has D = {D} columns",
    )
    torch._check(
        sign.shape[0] == K, lambda: f"walk_styles: sign has {sign.shape[0]} entries but dims has K = {K}"
    )
    if values and K > 0:
        bad = ((dims < 0) | (dims >= D)).nonzero()
        if bad.numel():
            k = int(bad[0, 0])
            raise RuntimeError(
                f"walk_styles: dims[{k}] = {int(dims[k])} is out of range for starts with D = {D}"
            )


def reference_walk_styles(
    starts: torch.Tensor, dims: torch.Tensor, shifts: torch.Tensor, sigma: torch.Tensor, sign: torch.Tensor
) -> torch.Tensor:
    """Reference of :func:`failatlas.ops.walk_styles`: every start walked along every dim by every shift.

    ``out[n, k, m] = starts[n]`` except ``out[n, k, m, dims[k]] += shifts[m] * sigma[dims[k]] * sign[k]``.
    """
    check_walk_styles_args(starts, dims, shifts, sigma, sign)
    N, D = starts.shape
    K, M = dims.shape[0], shifts.shape[0]
    out = starts[:, None, None, :].expand(N, K, M, D).clone()
    if out.numel() == 0:
        return out
    k = torch.arange(K, device=starts.device)
    delta = shifts[None, :] * sigma[dims][:, None] * sign[:, None]  # [K, M]
    # out[:, k, :, dims[k]] indexes as [K, N, M] (advanced indices first).
    out[:, k, :, dims] = out[:, k, :, dims] + delta[:, None, :]
    return out
