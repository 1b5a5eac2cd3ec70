"""``bisect_update``: one step of a batch of bisections, as the corner-case search takes it (DESIGN §4.4, §5).

The native kernels are in ``csrc/ops/`` (schema ``bisect_update.cpp``, the step ``bisect_update_step.h``,
``cpu/``, ``cuda/``); this module is their Python face: the wrapper and the fake-tensor implementation,
registered by :func:`_register` once :func:`failatlas._ext.load` has loaded the schema. Brackets are not
differentiable: the op has no autograd formula.
"""

from __future__ import annotations

import torch

from .. import _ext
from ._reference import check_bisect_update_args, reference_bisect_update


def bisect_update(
    lo: torch.Tensor, hi: torch.Tensor, p: torch.Tensor, threshold: float = 0.5, *, backend: str = "native"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Narrow every bracket after measuring ``p`` at its midpoint.

    Args:
        lo (Tensor[B]): the end of each bracket known to have p ≤ threshold (int64, float32 or float64).
        hi (Tensor[B]): the end known to have p > threshold (the dtype of ``lo``). Either end may be the
            larger: in :mod:`failatlas.analysis.corners` they are the grid steps ``a`` and ``b`` counted back
            from the bracket's top, so ``lo`` < ``hi``; for shifts t, pass the flipped shift as ``lo``.
        p (Tensor[B]): the probability measured at ``mid = (lo + hi) // 2`` (int64: floor division, as
            Python's ``//``) or ``(lo + hi) / 2`` (floats, in their dtype); float32 or float64.
        threshold: p ≤ threshold means "flipped"; compared in float64 (corners.py: 0.5).
        backend: ``"native"`` (``torch.ops.failatlas.bisect_update``) or ``"reference"`` (pure torch).

    Returns:
        (lo', hi'), new tensors: ``(mid, hi)`` where ``p <= threshold``, ``(lo, mid)`` elsewhere (a NaN p
        included), exactly the update of ``corners.py``'s batched bisection (``a``/``b``). Converged
        brackets (int64 ``hi − lo == 1``) are the caller's to leave out: a step would close them.

    All inputs must be on one device; anything else raises ``RuntimeError`` naming the argument.
    """
    threshold = float(threshold)
    if backend == "native":
        _ext.load()
        check_bisect_update_args(lo, hi, p)
        return tuple(torch.ops.failatlas.bisect_update.default(lo, hi, p, threshold))
    if backend == "reference":
        return reference_bisect_update(lo, hi, p, threshold)
    raise ValueError(f"bisect_update: backend must be 'native' or 'reference', got {backend!r}")


def _bisect_update_fake(lo, hi, p, threshold):
    check_bisect_update_args(lo, hi, p)
    return torch.empty_like(lo), torch.empty_like(lo)


def _register() -> None:
    torch.library.register_fake("failatlas::bisect_update")(_bisect_update_fake)
