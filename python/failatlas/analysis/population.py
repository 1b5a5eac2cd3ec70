"""The population every analysis starts from (DESIGN §4, "Population").

N samples with labels y drawn uniformly over the classes (or over a chosen subset), z ~ N(0, I), ψ = 1 and
'const' noise; for each sample we record z, w, the StyleSpace vector s, the classifier's logits, p_y (the
softmax probability of the conditioning label), the prediction, and whether it is well classified
(argmax = y).

Everything random comes from one ``torch.Generator`` keyed by ``seed`` (:func:`failatlas._seeding.latent_generator`,
a stream of its own, not the one ``torch.manual_seed(seed)`` gives, which seeded the generator's weights) and is
drawn up front, so the population depends on the seed only: not on the batch size, the device or the global RNG.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .. import _io
from .._alloc import require_memory
from .._progress import progress
from .._seeding import check_seed, latent_generator
from ..errors import FailatlasError, error_line
from ..models.adapter import classifier_view

NPZ_FORMAT = "failatlas-population"
NPZ_VERSION = 1
_FIELDS = ("z", "y", "w", "s", "logits", "p_y", "pred", "well")


@dataclass(frozen=True, eq=False)
class Population:
    """A sampled population (CPU tensors; floats are float32).

    z: Tensor[N, z_dim], y: int64 Tensor[N] (conditioning labels), w: Tensor[N, w_dim],
    s: Tensor[N, S] (StyleSpace, S = dim S), logits: Tensor[N, C], p_y: Tensor[N] (softmax probability of
    y, in [0, 1]), pred: int64 Tensor[N] (argmax of the logits), well: bool Tensor[N] (pred == y).
    ``seed`` and ``classes`` record how it was drawn (``classes`` None: all classes).
    """

    z: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    s: torch.Tensor
    logits: torch.Tensor
    p_y: torch.Tensor
    pred: torch.Tensor
    well: torch.Tensor
    seed: int | None = None
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _check_fields({k: getattr(self, k) for k in _FIELDS}, "population")

    @property
    def n(self) -> int:
        """Number of samples N."""
        return int(self.y.shape[0])

    @property
    def style_dim(self) -> int:
        return int(self.s.shape[1])

    @property
    def num_classes(self) -> int:
        """C, the classifier's number of classes."""
        return int(self.logits.shape[1])

    @property
    def accuracy(self) -> float:
        """Fraction of well-classified samples."""
        return float(self.well.double().mean()) if self.n else float("nan")

    @property
    def n_well(self) -> int:
        return int(self.well.sum())

    @property
    def n_mis(self) -> int:
        return self.n - self.n_well

    def subset(self, mask: torch.Tensor | np.ndarray | Sequence[int]) -> "Population":
        """The samples selected by a bool mask [N] or by an index list (in that order)."""
        index = torch.as_tensor(mask)
        if index.dtype == torch.bool:
            if index.shape != (self.n,):
                raise FailatlasError(f"subset mask must have shape [{self.n}], got {list(index.shape)}")
        elif index.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            index = index.long().reshape(-1)
            if index.numel() and (int(index.min()) < -self.n or int(index.max()) >= self.n):
                raise FailatlasError(f"subset indices must be in [0, {self.n}), got {int(index.min())}..{int(index.max())}")
        else:
            raise FailatlasError(f"subset takes a bool mask or integer indices, got dtype {index.dtype}")
        return Population(**{k: getattr(self, k)[index] for k in _FIELDS}, seed=self.seed, classes=self.classes)

    def to_npz(self, path: str | Path) -> Path:
        """Write the population as an uncompressed ``.npz`` (atomically). Returns the path."""
        path = Path(path)
        meta = {"format": NPZ_FORMAT, "version": NPZ_VERSION, "seed": self.seed,
                "classes": None if self.classes is None else list(self.classes)}
        arrays = {k: getattr(self, k).numpy() for k in _FIELDS}
        buf = io.BytesIO()  # np.savez appends '.npz' to names without it: write to a buffer instead
        np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
        _io.write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def from_npz(cls, path: str | Path) -> "Population":
        """Read a file written by :meth:`to_npz`; a missing, corrupt or inconsistent file raises
        :class:`FailatlasError`."""
        path = Path(path)
        if not path.is_file():
            raise FailatlasError(f"population file not found: {path}; write one with `failatlas rank --out DIR`")
        fix = "delete it and sample the population again"
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except Exception as exc:  # zipfile, pickle refusal, truncated member, ...: all mean a bad file
            raise FailatlasError(f"population file {path} is corrupt or not an .npz file "
                                 f"({type(exc).__name__}: {exc}); {fix}") from None
        missing = [k for k in ("meta",) + _FIELDS if k not in data]
        if missing:
            raise FailatlasError(f"population file {path} lacks {missing}; it was not written by failatlas ({fix})")
        try:
            meta = json.loads(str(data["meta"][()]))
            assert isinstance(meta, dict) and meta.get("format") == NPZ_FORMAT
        except Exception:
            raise FailatlasError(f"population file {path} has no failatlas header; {fix}") from None
        if meta.get("version") != NPZ_VERSION:
            raise FailatlasError(f"population file {path} has format version {meta.get('version')!r}; this "
                                 f"failatlas reads version {NPZ_VERSION} ({fix})")
        tensors = {k: torch.from_numpy(np.ascontiguousarray(data[k])) for k in _FIELDS}
        _check_fields(tensors, f"population file {path}", fix)
        classes = meta.get("classes")
        return cls(**tensors, seed=meta.get("seed"), classes=None if classes is None else tuple(classes))


def _check_fields(t: dict[str, torch.Tensor], source: str, fix: str = "build it with sample_population") -> None:
    """Shapes, dtypes and values consistent with one population; raises :class:`FailatlasError`."""
    def bad(msg: str) -> FailatlasError:
        return FailatlasError(f"{source}: {msg}; {fix}")

    for k, v in t.items():
        if not isinstance(v, torch.Tensor):
            raise bad(f"{k} must be a tensor, got {type(v).__name__}")
    n = t["y"].shape[0] if t["y"].ndim == 1 else -1
    if n < 0:
        raise bad(f"y must be 1-D, got shape {list(t['y'].shape)}")
    ndims = {"z": 2, "w": 2, "s": 2, "logits": 2, "y": 1, "p_y": 1, "pred": 1, "well": 1}
    for k, nd in ndims.items():
        if t[k].ndim != nd or t[k].shape[0] != n:
            want = f"[{n}]" if nd == 1 else f"[{n}, ...]"
            raise bad(f"{k} has shape {list(t[k].shape)}, expected {want}")
    for k in ("z", "w", "s", "logits", "p_y"):
        if not t[k].is_floating_point():
            raise bad(f"{k} must be floating point, got {t[k].dtype}")
    for k in ("y", "pred"):
        if t[k].dtype != torch.int64:
            raise bad(f"{k} must be int64, got {t[k].dtype}")
    if t["well"].dtype != torch.bool:
        raise bad(f"well must be bool, got {t['well'].dtype}")
    c = t["logits"].shape[1]
    if n and (int(t["y"].min()) < 0 or int(t["y"].max()) >= c):
        raise bad(f"labels y span {int(t['y'].min())}..{int(t['y'].max())}, outside the {c} classes of the logits")
    if not torch.equal(t["well"], t["pred"] == t["y"]):
        raise bad("well does not equal (pred == y)")
    for k in ("s", "w", "z"):
        if not bool(torch.isfinite(t[k]).all()):
            raise bad(f"{k} contains NaN or infinite values")


def _model_dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    if not isinstance(module, nn.Module):
        raise FailatlasError(f"expected a loaded model (torch.nn.Module), got {type(module).__name__} {module!r:.60}; "
                             "load a generator with failatlas.load_generator and a classifier with "
                             "failatlas.deploy.load_any_classifier (both take a folder or a shipped name)")
    p = next(iter(module.parameters()), None)
    return (p.dtype, p.device) if p is not None else (torch.float32, torch.device("cpu"))


def default_batch_size(module: nn.Module) -> int:
    """64 samples per pass on CPU, 512 on an accelerator.

    On CPU small batches are faster per image (cache-resident activations): measured with 'cpu-small', 1
    thread, population of 1,000: 3.9–4.6 s with batches of 32–125 vs 7.9 s with 500; gradients: 8.8 s with
    16–64 vs 13.5 s with 250. Backward memory also grows with the batch (~33 MB per sample for 'paper').
    """
    return 64 if _model_dtype_device(module)[1].type == "cpu" else 512


def check_batch_size(batch_size: int | None, module: nn.Module) -> int:
    if batch_size is None:
        return default_batch_size(module)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise FailatlasError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def classifier_num_classes(classifier: nn.Module) -> int | None:
    """The number of classes a classifier's config declares (None when it has no failatlas config)."""
    from ..models.classifier import classifier_config_of

    config = classifier_config_of(classifier)
    return None if config is None else int(config.num_classes)


def _who(classifier: nn.Module | None) -> str:
    """'the classifier' and, for one loaded from a file, its path: how messages name a classifier."""
    where = getattr(classifier, "path", None)
    return f"the classifier {where}" if where is not None else "the classifier"


def classify(classifier: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``classifier(images)`` for images ``[N, 1, 28, 28]`` in [0, 1]; a model that fails on them (a user's
    model made for other input) raises one :class:`FailatlasError` naming the input and the usual wrappers."""
    try:
        return classifier(images)
    except (FailatlasError, MemoryError, torch.OutOfMemoryError):  # out of memory is no input problem
        raise
    except Exception as exc:  # noqa: BLE001 - a user's module can fail in any way
        raise FailatlasError(
            f"{_who(classifier)} fails on the generator's images, given as float [N, 1, 28, 28] with intensities in "
            f"[0, 1] ({error_line(exc)}); wrap the model so that it takes them: e.g. x.flatten(1) for [N, 784] input, "
            "torch.nn.functional.pad(x, (2, 2, 2, 2)) for 32×32, its normalization inside (README: your "
            "classifier)") from None


def check_logits(logits: torch.Tensor, n: int, classifier: nn.Module | None = None,
                 first: int | None = None) -> torch.Tensor:
    """Raise :class:`FailatlasError` unless ``logits`` is [n, C] and finite; ``first``: the index of the
    batch's first image in the population or grid (None: the rows are not numbered that way, e.g. walk
    rows); the message names an ONNX classifier's file. Returns ``logits``."""
    who = _who(classifier)
    if logits.ndim != 2 or logits.shape[0] != n:
        raise FailatlasError(f"{who} returned shape {list(logits.shape)} for {n} images; expected logits "
                             "[N, num_classes]")
    finite = torch.isfinite(logits).all(dim=1)
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0, 0])
        where = f"row {row} of a batch of {n}" if first is None else f"image {first + row}"
        raise FailatlasError(f"{who} returned NaN or infinite logits (first for {where}); check its weights (or, "
                             "for an .onnx file, its graph), and that the styles or shifts are not so large that "
                             "the images overflow")
    return logits


def check_not_probabilities(logits: Any, who: str) -> None:
    """Raise :class:`FailatlasError` when every row of ``logits`` (an array or tensor ``[N, C]``, N ≥ 2) is
    non-negative and sums to 1: the model returns probabilities, which failatlas would softmax a second time
    (p_y could never exceed e/(e + C − 1) and every corner case would be found at the start)."""
    x = np.asarray(logits.detach().cpu().double() if isinstance(logits, torch.Tensor) else logits, dtype=np.float64)
    if x.ndim == 2 and x.shape[0] >= 2 and x.shape[1] >= 2 and np.all(x >= 0) \
            and np.allclose(x.sum(axis=1), 1.0, rtol=0, atol=1e-3):
        raise FailatlasError(f"{who} returns probabilities (every row is non-negative and sums to 1), not logits; "
                             "failatlas applies the softmax itself: return the logits (drop the final softmax) or "
                             "log-probabilities (torch.log_softmax)")


def check_class_counts(G: nn.Module, classifier: nn.Module, found: int | None = None, name: str | None = None) -> None:
    """Raise :class:`FailatlasError` unless the classifier (called ``name`` in the message) has as many
    classes as the generator (and unless G is a failatlas generator and the classifier a model)."""
    if isinstance(G, (str, os.PathLike)) or not hasattr(G, "num_classes"):
        raise FailatlasError(f"the generator must be a failatlas Generator (failatlas.load_generator(folder or "
                             f"shipped name)), got {type(G).__name__}; pass the generator first, then the classifier")
    if not callable(classifier) or isinstance(classifier, (str, os.PathLike)):
        raise FailatlasError(f"the classifier must be a loaded model, got {type(classifier).__name__}; load it "
                             "with failatlas.deploy.load_any_classifier (a folder, a shipped name or a file)")
    got = found if found is not None else classifier_num_classes(classifier)
    if got is not None and got != G.num_classes:
        which = f"the classifier {name}" if name else _who(classifier)
        raise FailatlasError(
            f"{which} has {got} classes but the generator has {G.num_classes}; they must describe the "
            f"same labels: pass a classifier trained on the generator's {G.num_classes} classes (or a "
            f"generator conditioned on {got})")


def check_classes(classes: Sequence[int] | None, num_classes: int | None = None) -> tuple[int, ...] | None:
    """``classes`` as a sorted tuple of distinct labels (None stays None: every class), or a
    :class:`FailatlasError` naming ``--classes``; with ``num_classes`` each must lie in [0, num_classes)."""
    if classes is None:
        return None
    if isinstance(classes, (torch.Tensor, np.ndarray)) and classes.ndim == 1 and \
            not (classes.dtype.is_floating_point if isinstance(classes, torch.Tensor)
                 else np.issubdtype(classes.dtype, np.floating)):
        classes = classes.tolist()  # a tensor or array of labels, from a library caller
    shown = list(classes) if isinstance(classes, (list, tuple)) else classes
    bad = FailatlasError(f"the classes (--classes) must be distinct class labels (indices: 0, 1, …)"
                         f"{' ≥ 0' if num_classes is None else f' in [0, {num_classes})'}, got {shown!r} "
                         "(e.g. --classes 3 8)")
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise bad
    chosen = list(classes)
    if not chosen or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in chosen):
        raise bad
    chosen = [int(c) for c in chosen]
    if len(set(chosen)) != len(chosen) or min(chosen) < 0 or (num_classes is not None and max(chosen) >= num_classes):
        raise bad
    return tuple(sorted(chosen))


def describe_classes(classes: Sequence[int] | None) -> str:
    """", classes 3, 8" for a chosen subset, "" for every class (stage lines)."""
    return "" if classes is None else f", class{'es' if len(classes) > 1 else ''} {', '.join(map(str, classes))}"


def check_population_size(n: object) -> int:
    """``n`` as an int, or a :class:`FailatlasError` naming ``--n`` unless it is a positive integer."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise FailatlasError(f"the population size must be a positive integer, got {n!r} (use e.g. --n 10000)")
    return int(n)


def sample_population(G: nn.Module, classifier: nn.Module, n: int, seed: int = 0,
                      classes: Sequence[int] | None = None, batch_size: int | None = None,
                      progress_bar: bool | None = None, distributed: bool = False) -> Population:
    """Sample ``n`` labelled generator samples and classify them (DESIGN §4).

    y is uniform over ``classes`` (default: all of the generator's classes), z ~ N(0, I), both from
    ``latent_generator(seed)`` (all n z first, then all n y: with one seed, a smaller population's z are
    the first rows of a larger one's, but its labels are not); w = mapping(z, y) with ψ = 1,
    s = styles(w), the image is synthesized from s with 'const' noise and classified through the adapter. Runs under
    ``torch.no_grad`` in batches of ``batch_size`` (None: :func:`default_batch_size`) on the generator's
    device, with the models in eval mode
    (their modes are restored afterwards). Returns CPU tensors (floats as float32; images are synthesized
    from the stored float32 s, so re-evaluating a stored s gives the stored logits).

    distributed: under ``torchrun`` (after :func:`failatlas.distributed.init`), every rank draws the same
    z and y, classifies only its contiguous block of whole batches (:func:`failatlas.distributed.shard`,
    so every sample is in the same batch as in one process) and the shards are all-gathered: every rank
    returns the full population. Without an initialized process group it changes nothing.
    """
    n = check_population_size(n)
    seed = check_seed(seed)
    check_class_counts(G, classifier)  # first: it names a path or a swapped model given for one
    batch_size = check_batch_size(batch_size, G)
    num_classes = G.num_classes
    if classes is None:
        allowed = torch.arange(num_classes)
        chosen = None
    else:
        chosen = check_classes(classes, num_classes)
        allowed = torch.tensor(chosen)

    # z, y, w, s and the logits of every sample stay in memory (float32; y int64)
    require_memory(n * (4 * (G.z_dim + G.w_dim + G.style_dim + num_classes) + 8), f"--n {n} samples",
                   "lower --n (e.g. --n 10000)")
    rng = latent_generator(seed)  # not torch.manual_seed(seed)'s stream: see failatlas._seeding
    z_all = torch.randn(n, G.z_dim, generator=rng)
    y_all = allowed[torch.randint(0, len(allowed), (n,), generator=rng)]

    dtype, device = _model_dtype_device(G)
    cdtype, cdevice = _model_dtype_device(classifier)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("w", "s", "logits")}
    part = slice(0, n)
    if distributed:
        from .. import distributed as dist

        distributed = dist.sharding()
        if distributed:
            part = dist.shard(n, block=batch_size)
    with _eval_mode(G, classifier), torch.no_grad(), \
            progress(part.stop - part.start, desc="population", unit="img",
                     disable=None if progress_bar is None else not progress_bar) as bar:
        for start in range(part.start, part.stop, batch_size):
            z = z_all[start:start + batch_size].to(device, dtype)
            y = y_all[start:start + batch_size].to(device)
            w = G.mapping(z, y, truncation_psi=1.0)
            s = G.styles(w).float()
            if not bool(torch.isfinite(s).all()):
                raise FailatlasError(f"the generator produced NaN or infinite styles (samples {start}.."
                                     f"{start + len(z) - 1}, seed {seed}); its weights are damaged: retrain it "
                                     "or load an earlier checkpoint")
            img = G.synthesis_from_styles(s.to(dtype), noise_mode="const")
            logits = check_logits(classify(classifier, classifier_view(img).to(cdevice, cdtype)), len(z), classifier,
                                  start)
            if start == 0 and not distributed:  # sharded: after the gather (a rank raising alone hangs the rest)
                check_class_counts(G, classifier, found=int(logits.shape[1]))
                check_not_probabilities(logits, _who(classifier))
            out["w"].append(w.float().cpu())
            out["s"].append(s.cpu())
            out["logits"].append(logits.float().cpu())
            bar.update(len(z))
    if distributed:
        empty = {"w": (0, G.w_dim), "s": (0, G.style_dim), "logits": (0, num_classes)}  # a rank with no batch
        out = {k: [dist.all_gather_cat(torch.cat(v) if v else torch.zeros(empty[k]))] for k, v in out.items()}
    logits = torch.cat(out["logits"])
    if distributed:  # every rank has every sample now, so all of them reach the same verdict
        check_class_counts(G, classifier, found=int(logits.shape[1]))
        check_not_probabilities(logits[:batch_size], _who(classifier))
    p_y = torch.softmax(logits.double(), dim=1).gather(1, y_all[:, None]).squeeze(1).float()
    pred = logits.argmax(dim=1)
    return Population(z=z_all, y=y_all, w=torch.cat(out["w"]), s=torch.cat(out["s"]), logits=logits, p_y=p_y,
                      pred=pred, well=pred == y_all, seed=seed, classes=chosen)


class _eval_mode:
    """Put modules (and all their submodules) in eval mode; restore each submodule's mode on exit."""

    def __init__(self, *modules: nn.Module) -> None:
        self.modules = modules
        self.saved: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> None:
        self.saved = [(m, m.training) for root in self.modules for m in root.modules()]
        for root in self.modules:
            root.eval()

    def __exit__(self, *exc) -> None:
        for m, training in self.saved:
            m.training = training
