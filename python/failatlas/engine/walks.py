"""The walk engine: N starts × K StyleSpace dimensions × M shifts, evaluated by a classifier
(DESIGN §3, §5; issue 5 item 2).

A walk moves one dimension d of a start s₀ by ``shift · σ_d · sign``; what matters is p_y (and the
prediction) of every moved image. Two facts about the synthesis network make most of the work unneeded:

* **Prefix cache.** A dimension of layer ℓ changes nothing before ℓ. The engine synthesizes each start once,
  keeping the activations that enter every style layer, and runs only layers ℓ, ℓ+1, … per shift.
* **ToRGB linearity.** The image is an affine function of every ToRGB style (it is taken before the
  layer's 1/√C gain, and the skip path only upsamples and adds). Moving ToRGB channel c of layer ℓ by δ
  adds δ · (x_c · gain · w_c), upsampled to the output resolution, to the start's image: one small tensor per
  (start, dimension), then one multiply-add per shift. Only the classifier runs per shift.
* **Linear modulated convolution.** A conv layer modulates its input (x·s) before a convolution that is
  linear in it, so moving input channel c by δ adds δ · conv(x_c, w_c) (a one-channel convolution, once
  per start and dimension) to the start's convolution output; per shift only the demodulation, noise and
  activation of that layer run, then the layers after it. This skips the walked layer's own convolution,
  the largest cost when it is the 16→32 upsampling layer.

``cache=False`` recomputes every image from its full style vector instead (the reference the cached path
is tested against, ≤ 1e-5). Memory stays bounded whatever N: starts are processed in chunks, and no more
than ``batch_size`` images exist at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._progress import progress
from ..analysis.population import _eval_mode, _model_dtype_device, check_batch_size, check_class_counts, check_logits
from ..errors import FailatlasError
from ..models.adapter import classifier_view
from ..models.stylegan2 import NOISE_MODES, upsample2x


@dataclass(frozen=True)
class WalkResult:
    """p_y: float64 Tensor[N, K, M], the softmax probability of each start's label on each moved image;
    pred: int64 Tensor[N, K, M], the predicted class; images: how many images the classifier saw."""

    p_y: torch.Tensor
    pred: torch.Tensor
    images: int

    def accuracy(self, labels: torch.Tensor) -> torch.Tensor:
        """float64 Tensor[K, M]: fraction of starts still classified as their label, per dim and shift."""
        return (self.pred == labels[:, None, None]).double().mean(dim=0)


def check_label_range(labels: torch.Tensor, num_classes: int) -> None:
    """Labels must be classes of the model (shared by :class:`WalkEngine` and the native engine)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise FailatlasError(f"labels must be classes in [0, {num_classes}), got "
                             f"{int(labels.min())}..{int(labels.max())}")


def check_scales(style_dim: int, dims: torch.Tensor, sigma: torch.Tensor, sign: torch.Tensor) -> None:
    """A walk's scales: ``sigma`` one entry ≥ 0 per style dimension (a standard deviation), ``sign`` one
    direction, +1 or -1, per walked dimension."""
    if sigma.shape != (style_dim,):
        raise FailatlasError(f"sigma must have one entry per style dimension ({style_dim}), got {list(sigma.shape)}")
    if sign.shape != dims.shape:
        raise FailatlasError(f"sign needs one entry per walked dimension ({dims.numel()}), got {sign.numel()}")
    if bool((sigma < 0).any()):
        raise FailatlasError(f"sigma holds a negative value ({float(sigma.min()):g}); it is a standard deviation "
                             "(the direction of a walk is sign)")
    if not bool(((sign == 1) | (sign == -1)).all()):
        bad = sign[(sign != 1) & (sign != -1)][0]
        raise FailatlasError(f"sign must be +1 or -1 for each walked dimension, got {float(bad):g} (the size of a "
                             "step is its shift)")


class WalkEngine:
    """Evaluate walks with a generator and a classifier.

    ``WalkEngine(G, classifier, batch_size=512, cache=True).walk(starts, labels, dims, shifts, sigma, sign)``
    → :class:`WalkResult`. The models run in eval mode under ``no_grad`` with 'const' noise (the analysis
    default), on their own device and dtype."""

    def __init__(self, generator: nn.Module, classifier: nn.Module, *, batch_size: int | None = 512,
                 cache: bool = True, noise_mode: str = "const") -> None:
        if noise_mode not in ("const", "none"):
            raise FailatlasError(f"walks need deterministic images: noise_mode must be 'const' or 'none', got "
                                 f"{noise_mode!r}" + (" (random noise differs per call)" if noise_mode in NOISE_MODES
                                                      else ""))
        check_class_counts(generator, classifier)
        self.G, self.C = generator, classifier
        self.batch_size = check_batch_size(batch_size, generator)
        self.cache, self.noise_mode = bool(cache), noise_mode
        self.dtype, self.device = _model_dtype_device(generator)
        self.cdtype, self.cdevice = _model_dtype_device(classifier)
        self._layer_of = generator.synthesis_network.layer_of_dims()
        self._table = generator.style_layers()
        self._net = generator.synthesis_network

    # --- checks -------------------------------------------------------------------------------------

    def _check(self, starts, labels, dims, shifts, sigma, sign):
        D = self.G.style_dim
        if not isinstance(starts, torch.Tensor) or starts.ndim != 2 or starts.shape[1] != D:
            raise FailatlasError(f"starts must be a Tensor [N, {D}] of style vectors, got "
                                 f"{list(starts.shape) if isinstance(starts, torch.Tensor) else type(starts).__name__}")
        n = starts.shape[0]
        labels = torch.as_tensor(labels)
        if labels.shape != (n,) or labels.dtype not in (torch.int64, torch.int32):
            raise FailatlasError(f"labels must be integer Tensor [{n}], got {labels.dtype} {list(labels.shape)}")
        check_label_range(labels, self.G.num_classes)
        dims = torch.as_tensor(dims, dtype=torch.long).reshape(-1)
        if dims.numel() and (int(dims.min()) < 0 or int(dims.max()) >= D):
            raise FailatlasError(f"dims must be in [0, {D}), got {int(dims.min())}..{int(dims.max())}")
        shifts = torch.as_tensor(shifts, dtype=torch.float64).reshape(-1)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
        sign = torch.as_tensor(sign, dtype=torch.float64).reshape(-1)
        check_scales(D, dims, sigma, sign)
        for name, t in (("starts", starts), ("shifts", shifts), ("sigma", sigma), ("sign", sign)):
            if not torch.isfinite(t).all():
                raise FailatlasError(f"{name} contains NaN or infinite values")
        return starts, labels.long(), dims, shifts, sigma, sign

    # --- evaluation ---------------------------------------------------------------------------------

    def _classify(self, img: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = check_logits(self.C(classifier_view(img).to(self.cdevice, self.cdtype)), img.shape[0], self.C)
        p = torch.softmax(logits.double(), dim=1).gather(1, y.to(logits.device)[:, None]).squeeze(1)
        return p.cpu(), logits.argmax(dim=1).cpu()

    def walk(self, starts: torch.Tensor, labels: torch.Tensor, dims, shifts, sigma, sign,
             progress_bar: bool | None = None) -> WalkResult:
        """Every start moved along every dimension by every shift.

        starts: Tensor[N, dim S]; labels: int Tensor[N]; dims: int Tensor[K]; shifts: Tensor[M] (σ units);
        sigma: Tensor[dim S] (s units per σ); sign: Tensor[K] (±1: the direction of each dimension)."""
        starts, labels, dims, shifts, sigma, sign = self._check(starts, labels, dims, shifts, sigma, sign)
        N, K, M = starts.shape[0], dims.numel(), shifts.numel()
        p_y = torch.empty(N, K, M, dtype=torch.float64)
        pred = torch.empty(N, K, M, dtype=torch.long)
        if N * K * M == 0:
            return WalkResult(p_y, pred, 0)
        chunk = max(1, self.batch_size // M)  # starts per chunk: chunk × M images per classifier call
        with _eval_mode(self.G, self.C), torch.no_grad(), \
                progress(N * K * M, desc="walks", unit="img",
                         disable=None if progress_bar is None else not progress_bar) as bar:
            for a in range(0, N, chunk):
                s0 = starts[a:a + chunk].to(self.device, self.dtype)
                y = labels[a:a + chunk]
                steps = (shifts[None, :] * sign[:, None] * sigma[dims][:, None])  # [K, M] in s units
                if self.cache:
                    self._walk_cached(s0, y, dims, steps, p_y[a:a + chunk], pred[a:a + chunk])
                else:
                    self._walk_full(s0, y, dims, steps, p_y[a:a + chunk], pred[a:a + chunk])
                bar.update(len(s0) * K * M)
        return WalkResult(p_y, pred, N * K * M)

    def _walk_full(self, s0, y, dims, steps, p_out, pred_out) -> None:
        n, M = s0.shape[0], steps.shape[1]
        yy = y.repeat_interleave(M)
        for k in range(dims.numel()):
            s = s0.repeat_interleave(M, dim=0)
            s[:, dims[k]] += steps[k].to(s.dtype).repeat(n).to(s.device)
            img = self._net(s, self.noise_mode)
            p, c = self._classify(img, yy)
            p_out[:, k] = p.reshape(n, M)
            pred_out[:, k] = c.reshape(n, M)

    def _walk_cached(self, s0, y, dims, steps, p_out, pred_out) -> None:
        n, M = s0.shape[0], steps.shape[1]
        trace: list = []
        base = self._net(s0, self.noise_mode, trace)
        yy = y.repeat_interleave(M)
        R = base.shape[-1]
        conv_out: dict[int, torch.Tensor] = {}  # layer → the starts' convolution output, shared by its dims
        for k in range(dims.numel()):
            d = int(dims[k])
            li = int(self._layer_of[d])
            layer, info = self._net.layers[li], self._table[li]
            _, x_in, img_in = trace[li]
            step = steps[k].to(self.device, self.dtype)  # [M]
            if layer.kind == "torgb":
                c = d - info.start
                # ∂img/∂s_c at this layer's resolution, then through the skip path's upsamplings (linear)
                direction = x_in[:, c:c + 1] * (layer.weight_gain * layer.weight[:, c].reshape(1, -1, 1, 1))
                while direction.shape[-1] < R:
                    direction = upsample2x(direction)
                img = (base[:, None] + step[None, :, None, None, None] * direction[:, None]).flatten(0, 1)
            else:
                c = d - info.start
                s = s0.repeat_interleave(M, dim=0)
                s[:, d] += step.repeat(n)
                w = layer.weight * layer.weight_gain
                if li not in conv_out:
                    conv_out[li] = layer.conv(x_in * s0[:, info.start:info.start + info.size, None, None], w)
                pre = conv_out[li]
                delta = layer.conv(x_in[:, c:c + 1], w[:, c:c + 1])  # ∂(conv output)/∂s_c
                pre = (pre[:, None] + step[None, :, None, None, None] * delta[:, None]).flatten(0, 1)
                x = layer.activate(pre, s[:, info.start:info.start + info.size], w, self.noise_mode)
                im = None if img_in is None else img_in.repeat_interleave(M, dim=0)
                img = self._net.run_from(li + 1, x, im, s, self.noise_mode)
            p, c_ = self._classify(img, yy)
            p_out[:, k] = p.reshape(n, M)
            pred_out[:, k] = c_.reshape(n, M)


def walk(generator: nn.Module, classifier: nn.Module, starts, labels, dims, shifts, sigma, sign, *,
         batch_size: int | None = 512, cache: bool = True, progress_bar: bool | None = None) -> WalkResult:
    """Functional form of :meth:`WalkEngine.walk`."""
    return WalkEngine(generator, classifier, batch_size=batch_size, cache=cache).walk(
        starts, labels, dims, shifts, sigma, sign, progress_bar=progress_bar)


__all__ = ["WalkEngine", "WalkResult", "walk"]
