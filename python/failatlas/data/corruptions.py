"""ImageNet-C style corruption of padded digits (DESIGN §1).

Each image is corrupted with probability 0.5; a corrupted image is blurred (sigma = severity, 1..3) and
then gets additive Gaussian noise (std 0.08 / 0.12 / 0.18 on [0, 1] intensities), the two severities drawn
uniformly and independently. After each step the image is clipped to [0, 1] and rounded to uint8.

Blur modes:

* ``"paper"`` (default): what the authors' code computed. It called skimage's
  ``gaussian(image, sigma, multichannel=True)`` on a 2-D image, so the last axis was taken as channels and
  the blur ran along axis 0 (rows, i.e. vertically) only. skimage delegates to
  ``scipy.ndimage.gaussian_filter`` with ``truncate=4.0`` (kernel radius ``int(4 * sigma + 0.5)``) and
  ``mode="nearest"`` (edge replication); this module reproduces exactly that, in float64.
* ``"isotropic"``: the same separable kernel along both axes (axis 0, then axis 1), the textbook blur.

All randomness comes from one ``torch.Generator`` seeded with ``seed``: the same seed gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FailatlasError

BLUR_MODES = ("paper", "isotropic")
BLUR_SIGMA = {1: 1.0, 2: 2.0, 3: 3.0}
NOISE_STD = {1: 0.08, 2: 0.12, 3: 0.18}
TRUNCATE = 4.0  # scipy.ndimage / skimage default
CHUNK = 4096    # images corrupted at a time


@dataclass(frozen=True)
class Corruption:
    """Corrupted images and what was done to each one."""

    images: torch.Tensor     # uint8 [N, H, W]
    corrupted: torch.Tensor  # bool [N]
    blur: torch.Tensor       # int64 [N], 0 = none, 1..3 = severity
    noise: torch.Tensor      # int64 [N], 0 = none, 1..3 = severity


def gaussian_kernel1d(sigma: float, truncate: float = TRUNCATE) -> torch.Tensor:
    """float64 Tensor[2r + 1], r = int(truncate · sigma + 0.5), normalized to sum 1 (scipy's kernel)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return weights / weights.sum()


def blur_matrix(length: int, sigma: float) -> torch.Tensor:
    """float64 Tensor[L, L] M with ``M @ line`` = scipy's ``gaussian_filter1d(line, sigma, mode="nearest")``.

    The 1-D correlation with edge replication written as a matrix: tap k of output i reads input
    ``clamp(i + k, 0, L - 1)``, so the taps beyond an edge add onto the edge pixel's column. One small
    matmul per batch is ~25× faster on CPU than ``conv1d`` over padded lines for sigma = 3.
    """
    kernel = gaussian_kernel1d(sigma)
    radius = (kernel.numel() - 1) // 2
    rows = torch.arange(length).view(-1, 1)
    cols = (rows + torch.arange(-radius, radius + 1).view(1, -1)).clamp(0, length - 1)
    matrix = torch.zeros(length, length, dtype=torch.float64)
    matrix.scatter_add_(1, cols, kernel.expand(length, -1).contiguous())
    return matrix


def gaussian_blur1d(x: torch.Tensor, sigma: float, dim: int) -> torch.Tensor:
    """Blur float Tensor[N, H, W] along ``dim`` (1 = rows/vertical, 2 = columns/horizontal), edges replicated."""
    if dim == 1:
        return torch.matmul(blur_matrix(x.shape[1], sigma).to(x.dtype), x)
    if dim == 2:
        return torch.matmul(x, blur_matrix(x.shape[2], sigma).to(x.dtype).T)
    raise ValueError(f"dim must be 1 (rows) or 2 (columns), got {dim}")


def blur_images(x: torch.Tensor, sigma: float, mode: str = "paper") -> torch.Tensor:
    """Gaussian blur of float Tensor[N, H, W] in ``mode`` ("paper": rows only; "isotropic": both axes)."""
    check_blur_mode(mode)
    x = gaussian_blur1d(x, sigma, dim=1)
    if mode == "isotropic":
        x = gaussian_blur1d(x, sigma, dim=2)
    return x


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [0, 1] (any range) → uint8: clip, scale by 255, round half to even."""
    return x.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def check_blur_mode(mode: str) -> None:
    if mode not in BLUR_MODES:
        raise FailatlasError(f"unknown blur mode {mode!r}; choose one of: {', '.join(BLUR_MODES)}")


def apply_corruption(images: torch.Tensor, blur: torch.Tensor, noise: torch.Tensor, generator: torch.Generator,
                     mode: str = "paper") -> torch.Tensor:
    """Corrupt uint8 Tensor[N, H, W] with given per-image severities, int Tensor[N] each (0 = step skipped).

    The noise of the M images with ``noise > 0`` is one float64 ``randn(M, H, W)`` draw from ``generator``,
    in index order; image i gets ``NOISE_STD[noise[i]]`` times its field. Images with both severities 0
    are returned unchanged.
    """
    check_blur_mode(mode)
    out = images.clone()
    for severity, sigma in BLUR_SIGMA.items():
        idx = torch.nonzero(blur == severity).flatten()
        if idx.numel():
            x = out[idx].to(torch.float64) / 255.0
            out[idx] = _to_uint8(blur_images(x, sigma, mode))
    idx = torch.nonzero(noise > 0).flatten()
    if idx.numel():
        std = torch.tensor([0.0] + [NOISE_STD[s] for s in (1, 2, 3)], dtype=torch.float64)[noise[idx]]
        # float64 draws: on CPU, float32 randn takes an AVX2 path where the CPU has one, whose last bits
        # may differ from the scalar path; float64 takes the scalar path, so bytes should match across CPUs
        field = torch.randn((idx.numel(), *images.shape[1:]), generator=generator, dtype=torch.float64)
        out[idx] = _to_uint8(out[idx].to(torch.float64) / 255.0 + std.view(-1, 1, 1) * field)
    return out


def corrupt(images: torch.Tensor, seed: int, *, blur: str = "paper", probability: float = 0.5) -> Corruption:
    """Corrupt uint8 Tensor[N, H, W] (padded 32×32 digits) as DESIGN §1 says, deterministically from ``seed``.

    Draw order from ``torch.Generator().manual_seed(seed)``: corrupted flags ``rand(N) < probability``,
    blur severities ``randint(1, 4, (N,))``, noise severities ``randint(1, 4, (N,))``, then, chunk by chunk
    of ``CHUNK`` images, the noise fields of that chunk's corrupted images (bounded memory for 60k images).
    Severities of uncorrupted images are reported as 0.
    """
    check_blur_mode(blur)
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise FailatlasError(f"corrupt() needs uint8 images [N, H, W], got {images.dtype} {tuple(images.shape)}")
    images = images.cpu()
    n = images.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    corrupted = torch.rand(n, generator=gen, dtype=torch.float64) < probability
    blur_sev = torch.randint(1, 4, (n,), generator=gen) * corrupted
    noise_sev = torch.randint(1, 4, (n,), generator=gen) * corrupted
    out = torch.cat([apply_corruption(images[i:i + CHUNK], blur_sev[i:i + CHUNK], noise_sev[i:i + CHUNK], gen, blur)
                     for i in range(0, n, CHUNK)]) if n else images.clone()
    return Corruption(out, corrupted, blur_sev.to(torch.int64), noise_sev.to(torch.int64))
