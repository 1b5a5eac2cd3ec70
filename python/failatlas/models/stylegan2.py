"""Conditional StyleGAN2 with StyleSpace access (DESIGN §2–§3).

Built bottom-up: equalized-lr layers → mapping network → style layers (modulated conv, ToRGB) → synthesis
blocks → :class:`Generator`; and the ResNet :class:`Discriminator` with minibatch-stddev and projection
conditioning.

StyleSpace: ``s`` is the concatenation of the outputs of every affine (style) layer in synthesis order
(b4.conv1, b4.torgb, then for r = 8, 16, 32: b{r}.conv0, b{r}.conv1, b{r}.torgb). ToRGB styles are taken
before their 1/√C weight gain, so the image is an exact affine function of every ToRGB style.

Demodulation is done by *input modulation*: scale x by s, run the shared-weight conv, scale the output by
the demodulation coefficients. It equals the per-sample weight form but keeps one conv for the whole
batch, which exports to ONNX with a dynamic batch and is faster on CPU than the grouped-conv form.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .. import _io
from ..errors import FailatlasError
from ..errors import error_line as _error_line

SQRT2 = math.sqrt(2.0)
NOISE_MODES = ("random", "const", "none")


# --- configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleGANConfig:
    """Architecture of a generator/discriminator pair. Saved as JSON beside the weights."""

    name: str = "cpu-small"
    z_dim: int = 64
    w_dim: int = 128
    num_classes: int = 10
    resolution: int = 32
    img_channels: int = 1
    channels: tuple[int, ...] = (128, 128, 128, 64)  # generator channels at 4, 8, ..., resolution
    d_channels: tuple[int, ...] = (128, 128, 128, 64)  # discriminator channels at 4, 8, ..., resolution
    mapping_layers: int = 2
    mapping_lr_mult: float = 0.01
    w_avg_beta: float = 0.995
    mbstd_group: int = 4
    cmap_dim: int = 128
    # Per-sample noise amplitude: each conv layer's noise strength is its learned constant plus a learned
    # linear function of that layer's own style (so it stays a function of s, and dim S is unchanged).
    # With one shared strength per layer every image gets the same noise, yet about half of the corrupted
    # data is clean. Files written before this option existed lack the key and load with it off.
    noise_gain: bool = True
    # Soft threshold of that amplitude: a ↦ a − clamp(a, −t, t) with a learned t ≥ 0 per conv layer, so a
    # sample's noise can vanish exactly (clean digits) while others stay noisy. Off in the presets; t = 0
    # is the model without it. Files without the key load with it off.
    noise_threshold: bool = False

    def __post_init__(self) -> None:
        def whole(name: str, v: Any, minimum: int = 1) -> None:
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise FailatlasError(f"generator config {name} must be a whole number ≥ {minimum}, got {v!r}")

        if not isinstance(self.name, str):
            raise FailatlasError(f"generator config name must be a string, got {self.name!r}")
        for name in ("z_dim", "w_dim", "num_classes", "resolution", "img_channels", "mapping_layers", "mbstd_group",
                     "cmap_dim"):
            whole(name, getattr(self, name))
        for name, ok, words in (("mapping_lr_mult", lambda v: v > 0, "a positive number"),
                                ("w_avg_beta", lambda v: 0 <= v <= 1, "a number in [0, 1]")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
                raise FailatlasError(f"generator config {name} must be {words}, got {v!r}")
        for name in ("noise_gain", "noise_threshold"):
            if not isinstance(getattr(self, name), bool):
                raise FailatlasError(f"generator config {name} must be true or false, got {getattr(self, name)!r}")
        log2 = math.log2(self.resolution)
        if self.resolution < 8 or log2 != int(log2):
            raise FailatlasError(f"resolution must be a power of two ≥ 8, got {self.resolution}")
        n = int(log2) - 1
        for what in ("channels", "d_channels"):
            got = getattr(self, what)
            if isinstance(got, (str, bytes)) or not isinstance(got, (list, tuple)):
                raise FailatlasError(f"generator config {what} must be a list of channel counts, got {got!r}")
            for c in got:
                whole(f"{what} entry", c)
            object.__setattr__(self, what, tuple(int(c) for c in got))
            if len(got) != n:
                raise FailatlasError(
                    f"config {what} needs one entry per resolution 4..{self.resolution} ({n}), got {len(got)}"
                )

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(2 ** i for i in range(2, int(math.log2(self.resolution)) + 1))

    def channels_at(self, res: int) -> int:
        return self.channels[self.resolutions.index(res)]

    @property
    def style_dim(self) -> int:
        """dim S = 2·C(4) + Σ_{r=8..R} [C(r/2) + 2·C(r)]  (DESIGN §3)."""
        c = self.channels_at
        return 2 * c(4) + sum(c(r // 2) + 2 * c(r) for r in self.resolutions[1:])

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "StyleGANConfig":
        if not isinstance(obj, dict):
            raise FailatlasError(f"the generator config must be a JSON object, got {type(obj).__name__}; save the "
                                 "generator again")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise FailatlasError(f"generator config has unknown keys {unknown}; was it written by a newer failatlas?")
        return cls(**{"noise_gain": False, **obj})


CONFIGS: dict[str, StyleGANConfig] = {
    # 1,280 StyleSpace dimensions; trains at ≈60 images/s on 2 CPU cores.
    "cpu-small": StyleGANConfig(),
    # The paper's 32×32 model: 512 channels everywhere → 5,632 StyleSpace dimensions.
    "paper": StyleGANConfig(
        name="paper", z_dim=512, w_dim=512, channels=(512,) * 4, d_channels=(512,) * 4, cmap_dim=512
    ),
    # cpu-small's synthesis (the same 1,280 StyleSpace dimensions, the same analysis cost) with the paper's
    # 512-dimensional z and w: for issue 4, whose separation goal the shipped cpu-small misses while its
    # styles span about 18 independent directions (README, "The analysis"); a wider latent is the first
    # thing to try on a lent GPU (benchmarks/gpu_check.sh trains it beside cpu-small and ranks both).
    "wide-latent": StyleGANConfig(name="wide-latent", z_dim=512, w_dim=512),
    # For tests: a few hundred dimensions, fast enough for a few training steps in a unit test.
    "tiny": StyleGANConfig(
        name="tiny", z_dim=16, w_dim=32, channels=(32, 32, 16, 16), d_channels=(16, 16, 16, 16), cmap_dim=16
    ),
}


def get_config(name: str) -> StyleGANConfig:
    if name not in CONFIGS:
        raise FailatlasError(f"unknown generator config {name!r}; choose one of {sorted(CONFIGS)}")
    return CONFIGS[name]


# --- equalized-learning-rate layers ------------------------------------------------------------------


class FullyConnected(nn.Module):
    """Linear layer with equalized learning rate (weights scaled at run time, not at init)."""

    def __init__(self, in_features: int, out_features: int, *, bias_init: float = 0.0,
                 lr_mult: float = 1.0, activation: str = "linear") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mult)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_mult / math.sqrt(in_features)
        self.bias_gain = lr_mult
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.addmm(self.bias * self.bias_gain, x, (self.weight * self.weight_gain).t())
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * SQRT2
        return x


class Conv2dLayer(nn.Module):
    """Conv with equalized learning rate, optional bias + leaky ReLU and 2× average-pool downsampling."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, bias: bool = True,
                 activation: str = "lrelu", down: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.padding = kernel // 2
        self.activation = activation
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:  # pool first: the conv then runs at the low resolution (4× cheaper)
            x = F.avg_pool2d(x, 2)
        if self.activation != "lrelu":
            return F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        # lrelu(a)·√2 = lrelu(√2·a): the gain goes into the (small) weight and bias, and the activation
        # works in place on the conv's output (whose backward does not need it): one pass over x, not three
        bias = None if self.bias is None else self.bias * SQRT2
        return F.leaky_relu_(F.conv2d(x, self.weight * (self.weight_gain * SQRT2), bias, padding=self.padding), 0.2)


def _normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """2× upsampling with the separable [1, 3, 3, 1] filter (bilinear, half-pixel centres). Linear in x."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


_FIR = torch.tensor([1.0, 3.0, 3.0, 1.0])
_FIR2D_UP = torch.outer(_FIR, _FIR) / _FIR.sum() ** 2 * 4  # gain 4 restores the energy lost to zero insertion


def upconv3x3(x: torch.Tensor, weight: torch.Tensor, fir: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-insertion upsampling, a 3×3 conv and the [1, 3, 3, 1] low-pass, as one stride-2 transposed conv
    (computed at the low resolution, 4× cheaper than upsampling first) plus a depthwise 4×4 filter.

    x: Tensor[N, C_in, H, W], weight: Tensor[C_out, C_in, 3, 3] → Tensor[N, C_out, 2H, 2W]. ``fir``: the
    filter as Tensor[C_out, 1, 4, 4] on x's device (a layer keeps one, so no copy to the device per call)."""
    y = F.conv_transpose2d(x, weight.flip((2, 3)).transpose(0, 1), stride=2)  # [N, C_out, 2H+1, 2W+1]
    c = y.shape[1]
    if fir is None:
        fir = _FIR2D_UP.to(y.dtype).to(y.device).expand(c, 1, 4, 4)
    return F.conv2d(y, fir.to(y.dtype), padding=1, groups=c)


# --- mapping network ---------------------------------------------------------------------------------


class MappingNetwork(nn.Module):
    """(z, y) → w. z and the label embedding are each normalized by their second moment, concatenated, and
    passed through ``mapping_layers`` FC layers with lr multiplier 0.01. Tracks ``w_avg`` for truncation."""

    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = FullyConnected(cfg.num_classes, cfg.w_dim)
        dims = [cfg.z_dim + cfg.w_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.ModuleList(
            FullyConnected(a, b, lr_mult=cfg.mapping_lr_mult, activation="lrelu") for a, b in zip(dims[:-1], dims[1:])
        )
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, y: torch.Tensor, truncation_psi: float = 1.0,
                update_w_avg: bool = False, cond_weight: float = 1.0) -> torch.Tensor:
        """``cond_weight`` scales the label embedding (transitional conditioning while training: 0 makes
        the mapping ignore y; 1, the only value outside training, is the plain conditional mapping)."""
        onehot = F.one_hot(y, self.cfg.num_classes).to(z.dtype)
        e = _normalize_2nd_moment(self.embed(onehot))
        x = torch.cat([_normalize_2nd_moment(z), e if cond_weight == 1.0 else e * cond_weight], dim=1)
        for layer in self.layers:
            x = layer(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.cfg.w_avg_beta))
        if truncation_psi != 1.0:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


# --- synthesis ---------------------------------------------------------------------------------------


class StyleConv(nn.Module):
    """Modulated 3×3 conv with demodulation (input-modulation form), noise, bias and leaky ReLU."""

    kind = "conv"

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool,
                 noise_gain: bool = True, noise_threshold: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.resolution, self.up = in_channels, out_channels, resolution, up
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        if up:  # not saved: a constant that follows the layer to its device
            self.register_buffer("fir", _FIR2D_UP.expand(out_channels, 1, 4, 4).clone(), persistent=False)
        self.noise_gain = None
        if noise_gain:  # per-sample amplitude = noise_strength + noise_gain(s); starts as the constant alone
            self.noise_gain = FullyConnected(in_channels, 1)
            with torch.no_grad():
                self.noise_gain.weight.zero_()
        self.noise_threshold = nn.Parameter(torch.zeros([])) if noise_threshold else None

    def noise_amplitude(self, s: torch.Tensor) -> torch.Tensor:
        """s: Tensor[N, C_in] → the noise amplitude of each sample, Tensor[N, 1, 1, 1]."""
        if self.noise_gain is None:
            a = self.noise_strength.expand(s.shape[0], 1, 1, 1)
        else:
            a = (self.noise_gain(s) + self.noise_strength)[:, :, None, None]
        if self.noise_threshold is not None:  # soft threshold: |a| ≤ t → exactly no noise
            t = self.noise_threshold.clamp(min=0)
            a = a - torch.minimum(torch.maximum(a, -t), t)
        return a

    def forward(self, x: torch.Tensor, s: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """x: Tensor[N, C_in, r/2 or r, ...]; s: Tensor[N, C_in] → Tensor[N, C_out, r, r]."""
        w = self.weight * self.weight_gain
        return self.activate(self.conv(x * s[:, :, None, None], w), s, w, noise_mode)

    def conv(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The (upsampling) 3×3 convolution of the modulated input x with the scaled weight w — linear in x,
        so a walk along one input channel c adds shift × ``conv(x[:, c:c+1], w[:, c:c+1])``."""
        return upconv3x3(x, w, self.fir) if self.up else F.conv2d(x, w, padding=1)

    def activate(self, x: torch.Tensor, s: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """The rest of the layer after :meth:`conv`: demodulation by s, noise, bias and lrelu·√2 (x is
        left as it is)."""
        demod = torch.rsqrt(s.square() @ w.square().sum(dim=(2, 3)).t() + 1e-8)  # [N, C_out]
        # lrelu(x·demod + noise + bias)·√2 with the positive √2 moved inside (lrelu(√2·a) = √2·lrelu(a)) and
        # fused: one addcmul, then the noise and the activation in place on its fresh output (the backward
        # of addcmul needs its inputs, not its output) — three passes over the activations instead of six,
        # the same values to float rounding (style_conv_reference is the step-by-step spec; speed:
        # `benchmarks/run.py --only fused`, 1.0–1.6× on 2 shared CPU cores, most without tcmalloc)
        x = torch.addcmul((self.bias * SQRT2)[None, :, None, None], x, (demod * SQRT2)[:, :, None, None])
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, dtype=x.dtype, device=x.device)
            x = x.add_(noise * (self.noise_amplitude(s) * SQRT2))
        elif noise_mode == "const":
            x = x.add_(self.noise_const * (self.noise_amplitude(s) * SQRT2))
        return F.leaky_relu_(x, 0.2)


def style_conv_reference(layer: StyleConv, x: torch.Tensor, s: torch.Tensor,
                         noise: torch.Tensor | None) -> torch.Tensor:
    """StyleConv's forward one step at a time, as the StyleGAN2 paper writes it (six passes over the
    activations): the spec of the fused :meth:`StyleConv.forward`, for tests and benchmarks. ``noise``:
    Tensor broadcastable to [N, 1, r, r] (``layer.noise_const`` for 'const'), or None for 'none'."""
    w = layer.weight * layer.weight_gain
    x = x * s[:, :, None, None]
    x = upconv3x3(x, w, layer.fir) if layer.up else F.conv2d(x, w, padding=1)
    x = x * torch.rsqrt(s.square() @ w.square().sum(dim=(2, 3)).t() + 1e-8)[:, :, None, None]
    if noise is not None:
        x = x + noise * layer.noise_amplitude(s)
    return F.leaky_relu(x + layer.bias[None, :, None, None], 0.2) * SQRT2


class ToRGB(nn.Module):
    """Modulated 1×1 conv without demodulation: the image is affine in its style s (taken before the
    1/√C gain)."""

    kind = "torgb"

    def __init__(self, in_channels: int, img_channels: int, w_dim: int, resolution: int) -> None:
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.bias = nn.Parameter(torch.zeros(img_channels))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """x: Tensor[N, C, r, r]; s: Tensor[N, C] → Tensor[N, img_channels, r, r]: the 1×1 conv of x·s·gain,
        computed as one batched product of x with the per-sample weights w·s·gain [N, img_channels, C]
        (no modulated copy of x; with channels_last x a plain matrix product — 3× the mkldnn 1×1 conv
        with one output channel on 2 CPU cores, same values to float rounding)."""
        ws = (s * self.weight_gain)[:, None, :] * self.weight[:, :, 0, 0][None]
        return torch.einsum("nchw,noc->nohw", x, ws) + self.bias[None, :, None, None]


@dataclass(frozen=True)
class StyleDim:
    """One StyleSpace dimension: which layer and channel it modulates, and where it sits in s."""

    name: str  # layer name, e.g. "b8.conv0"
    resolution: int
    kind: str  # "conv" or "torgb"
    channel: int
    offset: int  # index in s


@dataclass(frozen=True)
class StyleLayer:
    name: str
    resolution: int
    kind: str
    start: int  # first index in s
    size: int


class SynthesisNetwork(nn.Module):
    """'skip' synthesis 4 → … → resolution, driven by StyleSpace vectors."""

    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels_at
        self.const = nn.Parameter(torch.randn(c(4), 4, 4))
        layers: dict[str, nn.Module] = {}
        noise = dict(noise_gain=cfg.noise_gain, noise_threshold=cfg.noise_threshold)
        for res in cfg.resolutions:
            if res > 4:
                layers[f"b{res}.conv0"] = StyleConv(c(res // 2), c(res), cfg.w_dim, res, up=True, **noise)
            layers[f"b{res}.conv1"] = StyleConv(c(res), c(res), cfg.w_dim, res, up=False, **noise)
            layers[f"b{res}.torgb"] = ToRGB(c(res), cfg.img_channels, cfg.w_dim, res)
        # ModuleDict keys may not contain dots.
        self.names = list(layers)
        self.layers = nn.ModuleList(layers.values())
        table, start = [], 0
        for name, layer in zip(self.names, self.layers):
            table.append(StyleLayer(name, layer.resolution, layer.kind, start, layer.in_channels))
            start += layer.in_channels
        self.table = tuple(table)
        self.style_dim = start
        assert start == cfg.style_dim

    @property
    def num_ws(self) -> int:
        return len(self.layers)

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        """w: Tensor[N, w_dim] or per-layer Tensor[N, num_ws, w_dim] → s: Tensor[N, dim S]."""
        if w.ndim == 2:
            parts = [layer.affine(w) for layer in self.layers]
        else:
            parts = [layer.affine(w[:, i]) for i, layer in enumerate(self.layers)]
        return torch.cat(parts, dim=1)

    def layer_of_dims(self) -> torch.Tensor:
        """int64 Tensor[dim S]: the index (in ``layers``) of the style layer each dimension of s drives."""
        return torch.cat([torch.full((t.size,), i, dtype=torch.long) for i, t in enumerate(self.table)])

    def split_styles(self, s: torch.Tensor) -> list[torch.Tensor]:
        return [s[:, t.start:t.start + t.size] for t in self.table]

    def forward(self, s: torch.Tensor, noise_mode: str = "const", trace: list | None = None) -> torch.Tensor:
        """s: Tensor[N, dim S] → images Tensor[N, img_channels, R, R] (about [-1, 1]).

        ``trace``, when a list, receives ``(layer name, x entering the layer, img entering the layer)`` for
        every style layer: the cached activations a walk along that layer's dimensions can start from."""
        n = s.shape[0]
        x = self.const.unsqueeze(0).expand(n, -1, -1, -1).contiguous(memory_format=torch.channels_last)
        return self.run_from(0, x, None, s, noise_mode, trace)

    def run_from(self, index: int, x: torch.Tensor, img: torch.Tensor | None, s: torch.Tensor,
                 noise_mode: str = "const", trace: list | None = None) -> torch.Tensor:
        """Run style layers ``index``, ``index + 1``, … given the activations entering layer ``index``
        (``x``, and ``img``: the skip image so far, None before the first ToRGB), as recorded by
        ``forward(..., trace=...)``. s: Tensor[N, dim S]; only the styles of layers ≥ index are read."""
        styles = self.split_styles(s)
        for i in range(index, len(self.layers)):
            layer = self.layers[i]
            if trace is not None:
                trace.append((self.names[i], x, img))
            if layer.kind == "conv":
                x = layer(x, styles[i], noise_mode)
            else:
                y = layer(x, styles[i])
                img = y if img is None else upsample2x(img) + y
        return img


class Generator(nn.Module):
    """Conditional StyleGAN2 generator with StyleSpace access.

    ``mapping(z, y) → w``, ``styles(w) → s``, ``synthesis_from_styles(s) → image``,
    ``synthesis(w) = synthesis_from_styles(styles(w))``, ``style_layout()`` → one :class:`StyleDim` per
    dimension of s."""

    def __init__(self, cfg: StyleGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mapping_network = MappingNetwork(cfg)
        self.synthesis_network = SynthesisNetwork(cfg)

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    @property
    def w_dim(self) -> int:
        return self.cfg.w_dim

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def style_dim(self) -> int:
        return self.synthesis_network.style_dim

    @property
    def num_ws(self) -> int:
        return self.synthesis_network.num_ws

    def _check_labels(self, z: torch.Tensor, y: torch.Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise FailatlasError(f"z must have shape [N, {self.z_dim}], got {list(z.shape)}")
        if y.ndim != 1 or y.shape[0] != z.shape[0] or y.dtype not in (torch.int64, torch.int32):
            raise FailatlasError(f"y must be integer labels of shape [{z.shape[0]}], got {y.dtype} {list(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise FailatlasError(f"labels must be in [0, {self.num_classes}), got {int(y.min())}..{int(y.max())}")

    def mapping(self, z: torch.Tensor, y: torch.Tensor, truncation_psi: float = 1.0,
                update_w_avg: bool = False) -> torch.Tensor:
        """z: Tensor[N, z_dim], y: int Tensor[N] → w: Tensor[N, w_dim]."""
        self._check_labels(z, y)
        return self.mapping_network(z, y.long(), truncation_psi, update_w_avg)

    def _check_dtype(self, x: torch.Tensor, what: str) -> None:
        want = next(self.parameters()).dtype
        if x.dtype != want:
            raise FailatlasError(f"{what} must be {want} like the generator's weights, got {x.dtype}; convert them "
                                 f"with .to({want}) (or the generator with .to(dtype))")

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        """w: Tensor[N, w_dim] (or Tensor[N, num_ws, w_dim]) → s: Tensor[N, dim S]."""
        num_ws = self.num_ws
        if w.ndim not in (2, 3) or w.shape[-1] != self.w_dim or (w.ndim == 3 and w.shape[1] != num_ws):
            raise FailatlasError(f"w must have shape [N, {self.w_dim}] (or [N, {num_ws}, {self.w_dim}], one per "
                                 f"style layer), got {list(w.shape)}")
        self._check_dtype(w, "w")
        return self.synthesis_network.styles(w)

    def synthesis_from_styles(self, s: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """s: Tensor[N, dim S] → images Tensor[N, C, R, R] in about [-1, 1]."""
        if s.ndim != 2 or s.shape[1] != self.style_dim:
            raise FailatlasError(f"styles must have shape [N, {self.style_dim}], got {list(s.shape)}")
        self._check_dtype(s, "styles")
        if noise_mode not in NOISE_MODES:
            raise FailatlasError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        return self.synthesis_network(s, noise_mode)

    def synthesis(self, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """w: Tensor[N, w_dim] (or per-layer [N, num_ws, w_dim]) → images Tensor[N, C, R, R]."""
        return self.synthesis_from_styles(self.styles(w), noise_mode)

    def forward(self, z: torch.Tensor, y: torch.Tensor, truncation_psi: float = 1.0,
                noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(self.mapping(z, y, truncation_psi), noise_mode)

    def style_layers(self) -> tuple[StyleLayer, ...]:
        return self.synthesis_network.table

    def style_layout(self) -> list[StyleDim]:
        """One entry per StyleSpace dimension, in the order of s."""
        return [
            StyleDim(t.name, t.resolution, t.kind, c, t.start + c)
            for t in self.synthesis_network.table
            for c in range(t.size)
        ]


# --- discriminator -----------------------------------------------------------------------------------


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, down=True)
        self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, activation="linear", down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append one feature map: the std over groups of samples, averaged over channels and pixels.

    Groups are runs of consecutive samples (0..g-1, g..2g-1, ...), not StyleGAN2's strided groups: the
    trainer scores fakes and reals in one call, [fakes; reals], each half a multiple of the group size,
    so no group mixes the two. A mixed group hides exactly what this statistic is for — a generator that
    covers only part of the data (generators trained with strided groups made no clean digits; the one run
    with consecutive groups did, though it also lost variety within classes: benchmarks/RESULTS.md). The
    trainer therefore also fills each group with one class (``GANTrainConfig.class_groups``)."""
    n, c, h, w = x.shape
    g = math.gcd(min(group, n), n) if n else 1
    y = x.reshape(-1, g, c, h, w)
    y = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1).add(1e-8).sqrt().mean(dim=(1, 2, 3))  # [N/g]
    y = y.repeat_interleave(g).reshape(-1, 1, 1, 1).expand(-1, 1, h, w)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """ResNet discriminator with minibatch-stddev and projection conditioning on the label.

    ``unconditional_head``: also score the image without its label (one more linear output, added to the
    projection term); the trainer's transitional conditioning uses it (Shahbazi et al., ICLR 2022:
    conditional GANs on little data collapse within classes; starting unconditional and fading the
    conditioning in avoids it). The discriminator is never shipped, so this changes no saved generator."""

    def __init__(self, cfg: StyleGANConfig, unconditional_head: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        res = list(reversed(cfg.resolutions))  # e.g. 32, 16, 8, 4
        ch = {r: cfg.d_channels[cfg.resolutions.index(r)] for r in cfg.resolutions}
        self.fromrgb = Conv2dLayer(cfg.img_channels, ch[res[0]], 1)
        self.blocks = nn.ModuleList(DiscriminatorBlock(ch[r], ch[r // 2]) for r in res[:-1])
        c4 = ch[4]
        self.conv = Conv2dLayer(c4 + 1, c4, 3)
        self.fc = FullyConnected(c4 * 16, c4, activation="lrelu")
        self.out = FullyConnected(c4, cfg.cmap_dim)
        self.embed = FullyConnected(cfg.num_classes, cfg.cmap_dim)
        self.uncond = FullyConnected(c4, 1) if unconditional_head else None

    def forward(self, img: torch.Tensor, y: torch.Tensor, cond_weight: float = 1.0) -> torch.Tensor:
        """img: Tensor[N, C, R, R], y: int Tensor[N] → scores Tensor[N]. ``cond_weight`` scales the
        projection (label) term; with an unconditional head the score is uncond(x) + cond_weight · proj."""
        x = self.fromrgb(img.contiguous(memory_format=torch.channels_last))
        for block in self.blocks:
            x = block(x)
        x = self.conv(minibatch_stddev(x, self.cfg.mbstd_group))
        h = self.fc(x.flatten(1))
        x = self.out(h)
        cmap = _normalize_2nd_moment(self.embed(F.one_hot(y, self.cfg.num_classes).to(x.dtype)))
        score = (x * cmap).sum(dim=1) / math.sqrt(self.cfg.cmap_dim)
        if cond_weight != 1.0:
            score = score * cond_weight
        if self.uncond is not None:
            score = score + self.uncond(h).squeeze(1)
        return score


# --- saving and loading ------------------------------------------------------------------------------

GENERATOR_WEIGHTS = "generator.safetensors"
CONFIG_FILE = "config.json"


def save_generator(G: Generator, folder: str | Path, extra: dict | None = None) -> None:
    """Write ``config.json`` and ``generator.safetensors`` into ``folder`` (each atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _io.save_tensors(folder / GENERATOR_WEIGHTS, G.state_dict(), metadata={"format": "failatlas-generator"})
    _io.write_json(folder / CONFIG_FILE, {"kind": "stylegan2-generator", "config": G.cfg.to_json(), **(extra or {})})


#: more mapping layers than this, and more than the weights hold, are not built to be compared (the paper has 8)
MAX_UNCHECKED_MAPPING_LAYERS = 64


@contextlib.contextmanager
def shapes_only(cfg: StyleGANConfig, weights: dict | None, source: str, fix: str) -> Iterator[None]:
    """Build modules of ``cfg`` inside the block on the meta device (shapes, no memory), to compare them with
    the ``weights`` (a state dict; None: not a generator's, no mapping layers to count) before anything is built
    for real: a damaged config (a width of 10¹², ten million mapping layers) is then one
    :class:`FailatlasError` naming ``source`` and the ``fix``, not an attempt to allocate terabytes."""
    held = len({k.split(".")[2] for k in weights if isinstance(k, str) and k.startswith("mapping_network.layers.")}) \
        if isinstance(weights, dict) else 0
    if cfg.mapping_layers > max(held, MAX_UNCHECKED_MAPPING_LAYERS):  # never build millions of layers one by one
        raise FailatlasError(f"{source} gives mapping_layers {cfg.mapping_layers}, but the weights hold {held}; the "
                             f"two disagree, so one of them is damaged: {fix}")
    try:
        with torch.device("meta"):
            yield
    except RuntimeError as exc:  # sizes whose product overflows even on the meta device
        raise FailatlasError(f"{source} gives layer sizes no generator can have ({_error_line(exc)}); {fix}") from None


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Load a generator folder written by :func:`save_generator` (or by the trainer), in eval mode."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise FailatlasError(f"generator folder not found: {path}; pass --generator DIR with a trained generator")
    meta = _io.read_json(path / CONFIG_FILE, "generator config")
    if isinstance(meta, dict) and "architecture" in meta and "num_classes" in meta:
        raise FailatlasError(f"{path} holds a classifier, not a generator; pass a generator folder as --generator "
                             "(e.g. mnist/generator) and the classifier as --classifier")
    if not isinstance(meta, dict) or meta.get("kind") != "stylegan2-generator" or "config" not in meta:
        raise FailatlasError(f"{path / CONFIG_FILE} is not a failatlas generator config")
    cfg = StyleGANConfig.from_json(meta["config"])
    state = _io.load_tensors(path / GENERATOR_WEIGHTS, "generator weights")
    with shapes_only(cfg, state, f"generator config {path / CONFIG_FILE}",
                     f"restore config.json or {path / GENERATOR_WEIGHTS}, or save the generator again"):
        expected = Generator(cfg).state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise FailatlasError(
            f"generator weights {path / GENERATOR_WEIGHTS} do not match its config "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise FailatlasError(
                f"generator weights {path / GENERATOR_WEIGHTS}: {k} has shape {list(state[k].shape)}, "
                f"the config expects {list(v.shape)}"
            )
        if state[k].is_floating_point() != v.is_floating_point() or (
                v.is_floating_point() and not bool(torch.isfinite(state[k]).all())):
            what = f"dtype {state[k].dtype}, expected {v.dtype}" if state[k].is_floating_point() != \
                v.is_floating_point() else "NaN or infinite values"
            raise FailatlasError(f"generator weights {path / GENERATOR_WEIGHTS}: {k} has {what}; the file is damaged: "
                                 "save or train the generator again")
    G = Generator(cfg)
    G.load_state_dict(state)
    return G.eval().requires_grad_(False).to(device)
