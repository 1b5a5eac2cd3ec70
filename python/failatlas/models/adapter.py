"""The adapter between generator images and classifier inputs (DESIGN §1).

Generator images are ``[N, 1, 32, 32]`` in [-1, 1] (the 28×28 digit zero-padded by 2 px). The classifier
sees the 28×28 centre crop as intensities in [0, 1]:  ``((x + 1) / 2).clamp(0, 1)[..., 2:30, 2:30]``.
This adapter is part of every fused graph.
"""

from __future__ import annotations

import torch
from torch import nn

PAD = 2


def classifier_view(x: torch.Tensor) -> torch.Tensor:
    """Tensor[N, 1, 32, 32] in [-1, 1] → Tensor[N, 1, 28, 28] in [0, 1]."""
    return ((x + 1) * 0.5).clamp(0, 1)[..., PAD:-PAD, PAD:-PAD]


def uint8_to_generator(images: torch.Tensor) -> torch.Tensor:
    """uint8 Tensor[N, 32, 32] → float32 Tensor[N, 1, 32, 32] in [-1, 1]."""
    return images.to(torch.float32).div(127.5).sub(1.0).unsqueeze(1)


class ClassifierAdapter(nn.Module):
    """:func:`classifier_view` as a module, so it can be traced into a fused graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return classifier_view(x)
