"""Corruptions (DESIGN §1): determinism, metadata, the paper's vertical-only blur, scipy agreement, noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from failatlas.data.corruptions import (
    NOISE_STD,
    apply_corruption,
    blur_images,
    corrupt,
    gaussian_blur1d,
    gaussian_kernel1d,
)
from failatlas.errors import FailatlasError


def _digits(n: int = 600, seed: int = 0) -> torch.Tensor:
    """Random uint8 images [n, 32, 32] with a zero 2-px border, like padded digits."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 32, 32, dtype=torch.uint8)
    x[:, 2:30, 2:30] = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    return x


def _blur_only(images: torch.Tensor, severity: int, mode: str) -> torch.Tensor:
    n = len(images)
    sev = torch.full((n,), severity, dtype=torch.int64)
    return apply_corruption(images, sev, torch.zeros(n, dtype=torch.int64), torch.Generator(), mode)


def test_same_seed_same_bytes_different_seed_different():
    x = _digits()
    a, b, c = corrupt(x, 5), corrupt(x, 5), corrupt(x, 6)
    for field in ("images", "corrupted", "blur", "noise"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.images, c.images) and not torch.equal(a.corrupted, c.corrupted)
    # the generator is private: the global torch RNG is neither used nor disturbed
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    corrupt(x, 5)
    assert torch.equal(torch.rand(3), before)


def test_metadata_consistent_and_uniform():
    x = _digits(6000)
    c = corrupt(x, 0)
    assert c.images.dtype == torch.uint8 and c.images.shape == x.shape
    assert c.blur.dtype == torch.int64 and c.noise.dtype == torch.int64 and c.corrupted.dtype == torch.bool
    clean = ~c.corrupted
    assert torch.equal(c.images[clean], x[clean])                       # untouched, bit for bit
    assert (c.blur[clean] == 0).all() and (c.noise[clean] == 0).all()
    assert ((c.blur[c.corrupted] >= 1) & (c.blur[c.corrupted] <= 3)).all()
    assert ((c.noise[c.corrupted] >= 1) & (c.noise[c.corrupted] <= 3)).all()
    assert (c.images[c.corrupted] != x[c.corrupted]).flatten(1).any(1).all()
    assert abs(c.corrupted.float().mean().item() - 0.5) < 0.03           # 4.6 binomial std
    k = int(c.corrupted.sum())
    cells = torch.bincount((c.blur[c.corrupted] - 1) * 3 + c.noise[c.corrupted] - 1, minlength=9).double() / k
    assert (cells - 1 / 9).abs().max() < 0.025                          # independent and uniform


def test_paper_blur_is_vertical_only_isotropic_is_not():
    # a vertical line stays sharp under a blur along rows only; a horizontal line is smeared
    vertical = torch.zeros(1, 32, 32, dtype=torch.uint8)
    vertical[0, 4:28, 16] = 255
    horizontal = vertical[0].T.clone().unsqueeze(0)
    for severity in (1, 2, 3):
        v = _blur_only(vertical, severity, "paper")[0]
        h = _blur_only(horizontal, severity, "paper")[0]
        assert v[:, [c for c in range(32) if c != 16]].eq(0).all()         # no spread across columns
        assert v[16, 16] >= 250                                              # middle of the line intact
        assert h[16, 16] < 255 and h[15, 16] > 0 and h[17, 16] > 0           # spread across rows
        assert h[:, [c for c in range(32) if not 4 <= c < 28]].eq(0).all()  # not along the line's ends
        iso = _blur_only(vertical, severity, "isotropic")[0]
        assert iso[16, 15] > 0 and iso[16, 17] > 0 and iso[16, 16] < 255
    assert torch.equal(_blur_only(horizontal, 2, "isotropic"), _blur_only(vertical, 2, "isotropic").transpose(1, 2))


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_kernel_matches_scipy_definition(sigma):
    k = gaussian_kernel1d(sigma)
    radius = int(4.0 * sigma + 0.5)
    assert k.numel() == 2 * radius + 1 and k.dtype == torch.float64
    assert abs(k.sum().item() - 1) < 1e-12 and torch.equal(k, k.flip(0))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    assert torch.allclose(k[radius] / k, torch.exp(0.5 * (x / sigma) ** 2))


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_blur_matches_scipy(sigma):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _digits(40, seed=3)
    # edges non-zero too, so the 'nearest' boundary mode matters
    x[:, 0, :] = 200
    x[:, :, -1] = 90
    f = x.double() / 255
    for dim in (1, 2):
        ours = gaussian_blur1d(f, sigma, dim).numpy()
        ref = ndimage.gaussian_filter1d(f.numpy(), sigma, axis=dim, mode="nearest", truncate=4.0)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    # skimage's gaussian(img, sigma, multichannel=True) on a 2-D image = gaussian_filter(sigma=(sigma, 0))
    paper = blur_images(f, sigma, "paper").numpy()
    ref_paper = np.stack([ndimage.gaussian_filter(img, (sigma, 0), mode="nearest", truncate=4.0) for img in f.numpy()])
    np.testing.assert_allclose(paper, ref_paper, rtol=0, atol=1e-12)
    iso = blur_images(f, sigma, "isotropic").numpy()
    ref_iso = np.stack([ndimage.gaussian_filter(img, sigma, mode="nearest", truncate=4.0) for img in f.numpy()])
    np.testing.assert_allclose(iso, ref_iso, rtol=0, atol=1e-12)
    # and the uint8 result of the blur step
    expected = np.rint(np.clip(ref_paper, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(_blur_only(x, int(sigma), "paper").numpy(), expected)


@pytest.mark.parametrize("severity", [1, 2, 3])
def test_noise_std_per_severity(severity):
    n = 400
    gray = torch.full((n, 32, 32), 128, dtype=torch.uint8)
    out = apply_corruption(gray, torch.zeros(n, dtype=torch.int64), torch.full((n,), severity),
                           torch.Generator().manual_seed(severity))
    delta = (out.double() - 128) / 255
    # 409,600 draws: the std estimate is good to ~0.2%; clipping at 0/255 (>2.8 std) and rounding move it <1%
    assert abs(delta.std().item() / NOISE_STD[severity] - 1) < 0.02
    assert abs(delta.mean().item()) < 0.002


def test_bad_inputs():
    with pytest.raises(FailatlasError, match="paper, isotropic"):
        corrupt(_digits(2), 0, blur="box")
    with pytest.raises(FailatlasError, match="uint8"):
        corrupt(torch.zeros(2, 32, 32), 0)
    assert corrupt(torch.zeros(0, 32, 32, dtype=torch.uint8), 0).images.shape == (0, 32, 32)
