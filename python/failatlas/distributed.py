"""Sharding failatlas jobs across processes with ``torch.distributed`` (launched by ``torchrun``).

    torchrun --standalone --nproc_per_node=2 -m failatlas -- rank --n 2000 --seed 5 --out DIR

(the ``--`` is needed: torchrun's own parser rejects ``--n`` as an ambiguous abbreviation of its options.)

Every rank draws the same population latents from the seed, works on its own contiguous block of
*whole batches* (so each sample goes through exactly the batch it would be in a single process), and
the shards are all-gathered in rank order; rank 0 alone writes the outputs and prints. Sharded so far:
``rank`` (population and gradients; for an ONNX classifier, the black-box ranking's dimensions, dealt out
round-robin), ``analyze`` (population, re-labelling and the gradient rankings; every later stage runs on
rank 0) and ``compare`` (population, re-labelling, every classifier's ranking, gradient or black-box, and
the black-box agreement's reference ranking; the curves and corner searches run on rank 0). ``train-gan``
splits every batch over the ranks and averages the gradients (:mod:`failatlas.training.gan`). Not yet:
``analyze`` with a classifier without gradients (ONNX), CUDA/NCCL.

Backend: "gloo" (CPU). NCCL is not used yet: the models run on the CPU under torchrun for now.
Each collective times out after :data:`DEFAULT_TIMEOUT_S` seconds (10 minutes; override with the
environment variable ``FAILATLAS_DIST_TIMEOUT``), so a rank that dies cannot hang the others forever
(torchrun itself also stops the other workers when one exits with an error).

Threads: under torchrun each rank uses 1 torch thread unless ``OMP_NUM_THREADS`` is set (torchrun itself
sets ``OMP_NUM_THREADS=1`` for more than one process per node unless the variable is already set).
"""

from __future__ import annotations

import atexit
import datetime
import os

import torch

from .errors import FailatlasError

DEFAULT_TIMEOUT_S = 600
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    if v is None or v.strip() == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise FailatlasError(f"the torchrun variable {name}={v!r} is not an integer; launch with "
                             "`torchrun --nproc_per_node=N -m failatlas ...`") from None


def world() -> tuple[int, int]:
    """(rank, world_size) from the torchrun environment; (0, 1) outside torchrun.

    Raises :class:`FailatlasError` when the variables are inconsistent (only some of RANK, WORLD_SIZE,
    LOCAL_RANK set, WORLD_SIZE < 1, RANK outside [0, WORLD_SIZE))."""
    vals = {k: _env_int(k) for k in _ENV}
    if vals["RANK"] is None and vals["WORLD_SIZE"] is None:
        return 0, 1
    missing = [k for k in ("RANK", "WORLD_SIZE") if vals[k] is None]
    if missing:
        raise FailatlasError(f"inconsistent torchrun environment: {', '.join(missing)} unset while "
                             f"{', '.join(k for k in _ENV if vals[k] is not None)} set; launch with `torchrun` "
                             "or unset RANK, WORLD_SIZE and LOCAL_RANK")
    rank, size = vals["RANK"], vals["WORLD_SIZE"]
    if size < 1 or not 0 <= rank < size:
        raise FailatlasError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={size} "
                             "(need 0 <= RANK < WORLD_SIZE)")
    local = vals["LOCAL_RANK"]
    if local is not None and not 0 <= local <= rank:
        raise FailatlasError(f"inconsistent torchrun environment: LOCAL_RANK={local} with RANK={rank}")
    return rank, size


def is_distributed() -> bool:
    """True when launched by torchrun with more than one process."""
    return world()[1] > 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files and prints."""
    return world()[0] == 0


def _timeout_s() -> float:
    v = os.environ.get("FAILATLAS_DIST_TIMEOUT", "").strip()
    if not v:
        return float(DEFAULT_TIMEOUT_S)
    try:
        t = float(v)
        assert t > 0
    except (ValueError, AssertionError):
        raise FailatlasError(f"FAILATLAS_DIST_TIMEOUT must be a positive number of seconds, got {v!r}") from None
    return t


def init() -> bool:
    """Initialize the default process group once (gloo) when WORLD_SIZE > 1; set 1 torch thread per rank
    unless OMP_NUM_THREADS is set. Returns True when running distributed. Idempotent."""
    rank, size = world()
    if size == 1:
        return False
    import torch.distributed as dist

    if not dist.is_available():
        raise FailatlasError("this torch build has no torch.distributed; run in one process (without torchrun)")
    if dist.is_initialized():
        if dist.get_world_size() != size or dist.get_rank() != rank:
            raise FailatlasError(f"a process group of size {dist.get_world_size()} (rank {dist.get_rank()}) is "
                                 f"already initialized, but the environment says RANK={rank}, WORLD_SIZE={size}")
        return True
    for k in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(k):
            raise FailatlasError(f"inconsistent torchrun environment: WORLD_SIZE={size} but {k} is unset; launch "
                                 "with `torchrun --standalone --nproc_per_node=N -m failatlas ...`")
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size,
                            timeout=datetime.timedelta(seconds=_timeout_s()))
    atexit.register(_destroy)
    return True


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sharding() -> bool:
    """Whether a job asked to shard should: True under torchrun with WORLD_SIZE > 1 once :func:`init` ran,
    False in a single process; raises :class:`FailatlasError` under torchrun before :func:`init`."""
    if not is_distributed():
        return False
    if not _active():
        raise FailatlasError("WORLD_SIZE > 1 but no process group: call failatlas.distributed.init() first")
    return True


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard(n: int, block: int = 1) -> slice:
    """This rank's contiguous part of range(n), in whole blocks of ``block`` items (the last block may be
    short): the ceil(n / block) blocks are split as evenly as possible, earlier ranks taking one more."""
    rank, size = world()
    if n < 0 or block < 1:
        raise ValueError(f"shard needs n >= 0 and block >= 1, got n={n}, block={block}")
    blocks = -(-n // block)
    per, extra = divmod(blocks, size)
    b0 = rank * per + min(rank, extra)
    b1 = b0 + per + (1 if rank < extra else 0)
    return slice(min(b0 * block, n), min(b1 * block, n))


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's tensor along dim 0, in rank order. The ranks' first dimensions may differ
    (even be 0); the other dimensions and the dtype must agree. Sizes are gathered first, each shard is
    padded to the largest, all-gathered, and trimmed. Single process: returns the tensor unchanged."""
    if not _active():
        return tensor
    import torch.distributed as dist

    size = dist.get_world_size()
    t = tensor.detach().contiguous().cpu()
    dtype = t.dtype
    if dtype == torch.bool:  # gloo has no bool collectives
        t = t.to(torch.uint8)
    local = torch.tensor([t.shape[0]], dtype=torch.int64)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(size)]
    dist.all_gather(sizes, local)
    sizes = [int(s) for s in sizes]
    longest = max(sizes)
    padded = torch.zeros((longest,) + tuple(t.shape[1:]), dtype=t.dtype)
    padded[:t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    out = torch.cat([p[:k] for p, k in zip(parts, sizes)])
    return out.to(dtype) if dtype == torch.bool else out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The float64 sum of ``tensor`` over the ranks (a new tensor; single process: a float64 copy)."""
    t = tensor.detach().cpu().to(torch.float64).clone()
    if _active():
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if _active():
        import torch.distributed as dist

        dist.barrier()
