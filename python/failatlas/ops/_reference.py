"""Pure-torch references of the native ops: the specification, the fallback and the test oracle.

Each ``reference_<op>`` gives the same results as ``torch.ops.failatlas.<op>`` (bit for bit where the
arithmetic is the same) and raises the same errors, on any device and dtype torch supports.
"""

from __future__ import annotations

import torch

_FLOATS = (torch.float32, torch.float64)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _tensors(op: str, **args) -> None:
    """TypeError naming the first argument that is not a Tensor (torch's ops would fail on it deep
    inside, with an AttributeError)."""
    for name, t in args.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")


def check_walk_styles_args(starts, dims, shifts, sigma, sign, *, values: bool = True) -> None:
    """The checks of ``csrc/ops/walk_styles.cpp``, with the same messages (RuntimeError).

    ``values=False`` skips the data-dependent check that every ``dims`` entry is in [0, D), so that it
    can run on fake tensors.
    """
    _tensors("walk_styles", starts=starts, dims=dims, shifts=shifts, sigma=sigma, sign=sign)
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


def check_dim_stats_args(values, mask, edges=None, *, data: bool = True) -> None:
    """The checks of ``csrc/ops/dim_stats.cpp``, with the same messages (RuntimeError).

    ``data=False`` skips the data-dependent check that every ``edges`` row is non-decreasing and free of
    NaN, so that it can run on fake tensors.
    """
    _tensors("dim_stats", values=values, mask=mask, **({} if edges is None else {"edges": edges}))
    torch._check(
        values.dim() == 2,
        lambda: f"dim_stats: values must be 2-D [N, D], got a {values.dim()}-D tensor of shape {list(values.shape)}",
    )
    torch._check(
        mask.dim() == 1,
        lambda: f"dim_stats: mask must be 1-D [N], got a {mask.dim()}-D tensor of shape {list(mask.shape)}",
    )
    torch._check(
        values.dtype in _FLOATS,
        lambda: f"dim_stats: values must be float32 or float64, got {_dtype_name(values.dtype)}",
    )
    torch._check(mask.dtype == torch.bool, lambda: f"dim_stats: mask must be bool, got {_dtype_name(mask.dtype)}")
    torch._check(
        mask.device == values.device,
        lambda: f"dim_stats: mask is on {mask.device} but values is on {values.device}; all inputs must be on one "
        "device",
    )
    N, D = values.shape
    torch._check(
        mask.shape[0] == N, lambda: f"dim_stats: mask has {mask.shape[0]} entries but values has N = {N} rows"
    )
    if edges is None:
        return
    torch._check(
        edges.dim() == 2,
        lambda: f"dim_stats: edges must be 2-D [D, B + 1], got a {edges.dim()}-D tensor of shape "
        f"{list(edges.shape)}",
    )
    torch._check(
        edges.dtype in _FLOATS, lambda: f"dim_stats: edges must be float32 or float64, got {_dtype_name(edges.dtype)}"
    )
    torch._check(
        edges.device == values.device,
        lambda: f"dim_stats: edges is on {edges.device} but values is on {values.device}; all inputs must be on one "
        "device",
    )
    torch._check(
        edges.shape[0] == D, lambda: f"dim_stats: edges has {edges.shape[0]} rows but values has D = {D} columns"
    )
    torch._check(
        edges.shape[1] >= 2,
        lambda: f"dim_stats: edges must have at least 2 columns (one bin), got {edges.shape[1]}",
    )
    if data and edges.numel():
        e = edges.detach().to("cpu", torch.float64)
        bad = (~(e[:, :-1] <= e[:, 1:])).nonzero()
        if bad.numel():
            d, j = int(bad[0, 0]), int(bad[0, 1])
            raise RuntimeError(
                f"dim_stats: edges[{d}] must be non-decreasing and free of NaN, but edges[{d}, {j}] = "
                f"{float(e[d, j])!r} and edges[{d}, {j + 1}] = {float(e[d, j + 1])!r}"
            )


def reference_dim_stats(
    values: torch.Tensor, mask: torch.Tensor, edges: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference of :func:`failatlas.ops.dim_stats`: (ks, auroc, hist_true, hist_false) of every column.

    The computation of ``failatlas.analysis.separation`` (``ks_statistic``, ``auroc``, ``histograms``), on
    given edges: each column sorted once; the ECDFs compared after each run of tied values, in integer
    arithmetic; AUROC from the mid-ranks of the tie runs; bins from ``searchsorted`` (clamped). ks and
    auroc are NaN when a group is empty. NaN values come after every number and tie with each other (one
    run; the analysis code makes each NaN a run of its own, but never passes NaN to the op).
    """
    check_dim_stats_args(values, mask, edges)
    N, D = values.shape
    device = values.device
    f64 = dict(dtype=torch.float64, device=device)
    B = 0 if edges is None else edges.shape[1] - 1
    ks = torch.full((D,), float("nan"), **f64)
    auroc = torch.full((D,), float("nan"), **f64)
    hist_true = torch.zeros(D, B, dtype=torch.int64, device=device)
    hist_false = torch.zeros(D, B, dtype=torch.int64, device=device)
    if D == 0:
        return ks, auroc, hist_true, hist_false
    n1 = int(mask.sum())
    n0 = N - n1
    if n1 and n0:
        vals, idx = values.detach().sort(dim=0)  # NaNs last
        pos = mask[idx]  # [N, D]: group of each sorted value
        differ = (vals[:-1] != vals[1:]) & ~(vals[:-1].isnan() & vals[1:].isnan())  # NaNs tie
        end = torch.ones_like(vals, dtype=torch.bool)  # last position of each run of tied values
        end[:-1] = differ
        c1 = pos.long().cumsum(dim=0)
        c0 = torch.arange(1, N + 1, device=device).unsqueeze(1) - c1
        diff = (c1 * n0 - c0 * n1).abs() * end  # n0·n1·|F1 − F0|, exact in int64
        ks = diff.max(dim=0).values.to(torch.float64) / (n0 * n1)
        index = torch.arange(N, device=device).unsqueeze(1).expand_as(vals)
        start = torch.ones_like(vals, dtype=torch.bool)
        start[1:] = differ
        first = torch.where(start, index, 0).cummax(dim=0).values
        last = torch.where(end, index, N - 1).flip(0).cummin(dim=0).values.flip(0)
        mid_rank = (first + last).to(torch.float64) / 2 + 1  # average 1-based rank of the run
        rank_sum = (mid_rank * pos).sum(dim=0)
        auroc = (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)
    if B and N:
        x = values.detach().to(torch.float64).t().contiguous()  # [D, N]
        e = edges.detach().to(torch.float64).contiguous()
        index = (torch.searchsorted(e, x, right=True) - 1).clamp_(0, B - 1)  # [D, N]
        for h, group in ((hist_true, mask), (hist_false, ~mask)):
            h.scatter_add_(1, index[:, group], torch.ones_like(index[:, group]))
    return ks, auroc, hist_true, hist_false


def check_bisect_update_args(lo, hi, p) -> None:
    """The checks of ``csrc/ops/bisect_update.cpp``, with the same messages (RuntimeError)."""
    _tensors("bisect_update", lo=lo, hi=hi, p=p)
    for t, name in ((lo, "lo"), (hi, "hi"), (p, "p")):
        torch._check(
            t.dim() == 1,
            lambda: f"bisect_update: {name} must be 1-D [B], got a {t.dim()}-D tensor of shape {list(t.shape)}",
        )
    torch._check(
        lo.dtype in (torch.int64, *_FLOATS),
        lambda: f"bisect_update: lo must be int64, float32 or float64, got {_dtype_name(lo.dtype)}",
    )
    torch._check(
        hi.dtype == lo.dtype,
        lambda: f"bisect_update: hi must have the dtype of lo ({_dtype_name(lo.dtype)}), got {_dtype_name(hi.dtype)}",
    )
    torch._check(
        p.dtype in _FLOATS, lambda: f"bisect_update: p must be float32 or float64, got {_dtype_name(p.dtype)}"
    )
    for t, name in ((lo, "lo"), (hi, "hi"), (p, "p")):
        torch._check(
            t.device == lo.device,
            lambda: f"bisect_update: {name} is on {t.device} but lo is on {lo.device}; all inputs must be on one "
            "device",
        )
    B = lo.shape[0]
    torch._check(hi.shape[0] == B, lambda: f"bisect_update: hi has {hi.shape[0]} entries but lo has B = {B}")
    torch._check(p.shape[0] == B, lambda: f"bisect_update: p has {p.shape[0]} entries but lo has B = {B}")


def reference_bisect_update(
    lo: torch.Tensor, hi: torch.Tensor, p: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of :func:`failatlas.ops.bisect_update`: one bisection step of every bracket.

    ``mid = (lo + hi) // 2`` (int64) or ``(lo + hi) / 2`` (floats); where ``p <= threshold`` (compared in
    float64) ``lo`` becomes ``mid``, elsewhere (NaN included) ``hi`` does.
    """
    check_bisect_update_args(lo, hi, p)
    mid = (lo + hi) // 2 if lo.dtype == torch.int64 else (lo + hi) / 2
    flipped = p.to(torch.float64) <= float(threshold)
    return torch.where(flipped, mid, lo), torch.where(flipped, hi, mid)
