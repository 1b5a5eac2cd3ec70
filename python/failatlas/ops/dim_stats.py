"""``dim_stats``: per-dimension KS statistic, AUROC and histograms of two groups (DESIGN §4.2, §5).

The native kernels are in ``csrc/ops/`` (schema ``dim_stats.cpp``, the per-column computations
``dim_stats_merge.h``, ``cpu/``, ``cuda/``); this module is their Python face: the wrapper and the
fake-tensor implementation, registered by :func:`_register` once :func:`failatlas._ext.load` has loaded the
schema. The statistics are not differentiable (ranks and counts): the op has no autograd formula and the
wrapper reads ``values`` detached.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .. import _ext
from ._reference import check_dim_stats_args, reference_dim_stats


class DimStats(NamedTuple):
    """What :func:`dim_stats` returns (D dimensions, B bins)."""

    ks: torch.Tensor  # float64 [D]
    auroc: torch.Tensor  # float64 [D]
    hist_true: torch.Tensor  # int64 [D, B]
    hist_false: torch.Tensor  # int64 [D, B]


def dim_stats(
    values: torch.Tensor, mask: torch.Tensor, edges: torch.Tensor | None = None, *, backend: str = "native"
) -> DimStats:
    """Per-column statistics of ``values`` split into two groups by ``mask``.

    Args:
        values (Tensor[N, D]): one sample per row (float32 or float64), e.g. style vectors s.
        mask (bool Tensor[N]): the group of each row (e.g. True = mis-classified).
        edges (Tensor[D, B + 1], optional): bin edges of each column (float32 or float64, each row
            non-decreasing); None computes no histograms.
        backend: ``"native"`` (``torch.ops.failatlas.dim_stats``; needs the built native module) or
            ``"reference"`` (the pure-torch specification, any device; slower).

    Returns:
        :class:`DimStats` ``(ks, auroc, hist_true, hist_false)``:

        * ``ks`` (float64 [D]): the two-sample Kolmogorov–Smirnov statistic sup_x |F_true(x) − F_false(x)|,
          exact (the ECDFs are compared after each run of tied values, in integer arithmetic);
        * ``auroc`` (float64 [D]): the AUROC of each column as a score for ``mask`` = True, i.e.
          P(true > false) + ½ P(tie) (Mann–Whitney U / (n_true · n_false)); 0.5 = no separation;
        * ``hist_true``, ``hist_false`` (int64 [D, B]; [D, 0] without edges): counts of each group per bin,
          bins [e_j, e_{j+1}) with the last one closed, as ``np.histogram``; values below ``e_0`` count in
          the first bin and values above ``e_B`` in the last (the analysis's edges span every value).

        ks and auroc are NaN for every column when a group is empty. The results equal those of
        ``failatlas.analysis.separation`` (``ks_statistic(values, ~mask)``, ``auroc(values, mask)``,
        ``histograms`` on the same edges) bit for bit. NaN values count as larger than every number
        (+inf included) and tie with each other; they fall in the last bin. (The analysis code makes
        each NaN a run of its own; it keeps columns with NaN away from the op.)

    All inputs must be on one device; anything else raises ``RuntimeError`` naming the argument.
    """
    if backend == "native":
        _ext.load()
        # The shape, dtype and device checks again on the Python side (free: no data is read), so that
        # Python callers get the error even from a native build that mishandles one; the kernels still
        # check everything themselves (C++ callers), the edges' order included.
        check_dim_stats_args(values, mask, edges, data=False)
        return DimStats(*torch.ops.failatlas.dim_stats.default(values.detach(), mask, edges))
    if backend == "reference":
        return DimStats(*reference_dim_stats(values, mask, edges))
    raise ValueError(f"dim_stats: backend must be 'native' or 'reference', got {backend!r}")


def _dim_stats_fake(values, mask, edges=None):
    check_dim_stats_args(values, mask, edges, data=False)
    D = values.shape[1]
    B = 0 if edges is None else edges.shape[1] - 1
    f64 = values.new_empty((D,), dtype=torch.float64)
    return (f64, values.new_empty((D,), dtype=torch.float64), values.new_empty((D, B), dtype=torch.int64),
            values.new_empty((D, B), dtype=torch.int64))


def _register() -> None:
    torch.library.register_fake("failatlas::dim_stats")(_dim_stats_fake)
