"""Seeds derived from a user's seed, so that two uses of one seed never share random numbers.

Why latents need their own stream: ``train-gan --seed S`` initializes the generator's weights from
``torch.manual_seed(S)``, and StyleGAN's mapping network learns at 1% of the base rate, so its trained
weights stay almost equal to those first draws (correlation 0.9999 on the shipped generator). Latents drawn
from ``torch.Generator().manual_seed(S)`` are the *same* numbers: population row ``20 + 3j`` of seed 0 was
exactly the z-part of row ``j`` of the mapping's first layer, so ``w·z = |z|²`` instead of about ``|z|``, and
128 of the first 401 samples were pushed far out of the generator's usual range (on the shipped models 41 of
them were mis-classified by classifier-corrupted, 32%, against 4.0% of the other 9,872). Every latent that failatlas draws to *evaluate* a generator
(populations, eval-gan, sample grids, export checks) therefore comes from :func:`latent_generator`, a stream
keyed by the seed and a tag that no ``torch.manual_seed`` of a small integer reproduces.
"""

from __future__ import annotations

import numpy as np
import torch

#: tag mixed into the key of latent streams (the ASCII of "LATN"), so they differ from per-rank streams
_LATENT_TAG = 0x4C41544E


def check_seed(seed: object) -> int:
    """``seed`` as an int, or a FailatlasError for anything but a non-negative integer (numpy's included)."""
    from .errors import FailatlasError

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise FailatlasError(f"the seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def derive_seed(key: list[int]) -> int:
    """A 63-bit seed, a fixed function of a list of 32-bit integers (``numpy.random.SeedSequence``)."""
    a, b = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return (int(a) << 31) ^ int(b)


def seed_key(seed: int) -> list[int]:
    """``seed`` (any Python int) as 32-bit words: low, high, sign."""
    return [abs(int(seed)) & 0xFFFFFFFF, abs(int(seed)) >> 32, int(seed < 0)]


def latent_generator(seed: int) -> torch.Generator:
    """The CPU ``torch.Generator`` that latents (z and labels) for evaluating a generator are drawn from for
    ``seed``: a stream of its own (see the module doc), the same on every machine and for every batch size."""
    return torch.Generator().manual_seed(derive_seed(seed_key(seed) + [_LATENT_TAG]))
