"""Image classifiers: the paper's CNN, a registry of architectures, and their on-disk format (DESIGN §2).

A classifier is any ``nn.Module`` mapping ``Tensor[N, 1, 28, 28]`` (intensities in [0, 1]) to logits
``Tensor[N, num_classes]``. The architectures built here also expose ``penultimate(x) → Tensor[N, F]``, the
features in which the Fréchet distance (FD) is measured.

On disk a classifier is a folder::

    config.json         ClassifierConfig (architecture, num_classes, input shape, dataset, training recipe)
    model.safetensors   the state dict (no pickles, nothing executable)

written by :func:`save_classifier` (both staged and moved in together) and read back by :func:`load_classifier`, which
checks the weights against the config and returns the model in eval mode.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .._io import load_tensors, read_json, save_tensors, staged_files, write_json
from ..errors import FailatlasError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to rebuild a classifier, saved as ``config.json`` beside its weights.

    ``training`` is the recipe it was trained with (a plain dict written by
    :mod:`failatlas.training.classifier`; empty for models built elsewhere).
    """

    architecture: str = "paper-cnn"
    num_classes: int = 10
    in_shape: tuple[int, int, int] = (1, 28, 28)
    dataset: str = "mnist"
    class_names: tuple[str, ...] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["in_shape"] = list(self.in_shape)
        d["class_names"] = None if self.class_names is None else list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: Any, source: str = "config") -> "ClassifierConfig":
        """Build from parsed JSON; malformed content raises :class:`FailatlasError` naming ``source``."""
        if not isinstance(d, dict):
            raise FailatlasError(f"{source} must hold a JSON object, found {type(d).__name__}; "
                                 "save the classifier again with failatlas")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FailatlasError(f"{source} has unknown keys {unknown}; expected some of {sorted(known)}")
        if "architecture" not in d or "num_classes" not in d:
            raise FailatlasError(f"{source} must give 'architecture' and 'num_classes'; "
                                 "save the classifier again with failatlas")
        version = d.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise FailatlasError(f"{source} has format_version {version!r}; this failatlas reads version "
                                 f"{FORMAT_VERSION}: upgrade failatlas or re-save the classifier")
        try:
            num_classes = d["num_classes"]
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
                raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
            in_shape = tuple(int(v) for v in d.get("in_shape", (1, 28, 28)))
            if len(in_shape) != 3 or min(in_shape) < 1:
                raise ValueError(f"in_shape must be [channels, height, width], got {d.get('in_shape')!r}")
            names = d.get("class_names")
            names = None if names is None else tuple(str(n) for n in names)
            if names is not None and len(names) != num_classes:
                raise ValueError(f"class_names has {len(names)} names but num_classes is {num_classes}")
            training = d.get("training") or {}
            if not isinstance(training, dict):
                raise ValueError("training must be an object")
            return cls(architecture=str(d["architecture"]), num_classes=num_classes, in_shape=in_shape,
                       dataset=str(d.get("dataset", "")), class_names=names, training=dict(training),
                       format_version=FORMAT_VERSION)
        except (TypeError, ValueError) as exc:
            raise FailatlasError(f"{source} is invalid: {exc}; fix it or save the classifier again") from None


class PaperCNN(nn.Module):
    """The paper's classifier (DESIGN §2), exactly as specified there:

    Conv(1→32, 3×3) – BN – ReLU – Conv(32→64, 3×3) – BN – ReLU – MaxPool2 – Flatten
    – Linear(9216→128) – Linear(128→num_classes).

    There is no nonlinearity between the two Linear layers (the paper's spec). Input
    ``Tensor[N, 1, 28, 28]`` in [0, 1]; output logits ``Tensor[N, num_classes]``.
    """

    feature_dim = 128

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3),   # [N, 32, 26, 26]
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3),            # [N, 64, 24, 24]
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                 # [N, 64, 12, 12]
            nn.Flatten(),                    # [N, 9216]
        )
        self.fc1 = nn.Linear(64 * 12 * 12, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, num_classes)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, 1, 28, 28] → the 128-d features before the last layer, Tensor[N, 128]."""
        return self.fc1(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, 1, 28, 28] in [0, 1] → logits Tensor[N, num_classes]."""
        return self.fc2(self.penultimate(x))


def _paper_cnn(config: ClassifierConfig) -> nn.Module:
    if tuple(config.in_shape) != (1, 28, 28):
        raise FailatlasError(f"architecture 'paper-cnn' takes inputs of shape [1, 28, 28], but the config "
                             f"gives in_shape {list(config.in_shape)}; fix in_shape or pick another architecture")
    return PaperCNN(num_classes=config.num_classes, in_channels=config.in_shape[0])


#: name → builder taking a :class:`ClassifierConfig` and returning an ``nn.Module``.
ARCHITECTURES: dict[str, Callable[[ClassifierConfig], nn.Module]] = {
    "paper-cnn": _paper_cnn,
}


def build_classifier(config: ClassifierConfig) -> nn.Module:
    """A freshly initialized classifier for ``config`` (uses the global torch RNG for the initial weights)."""
    builder = ARCHITECTURES.get(config.architecture)
    if builder is None:
        raise FailatlasError(f"unknown classifier architecture {config.architecture!r}; "
                             f"known: {', '.join(sorted(ARCHITECTURES))}")
    model = builder(config)
    model.config = config
    return model


def check_classifier_input(x: Any, in_shape: tuple[int, int, int] = (1, 28, 28)) -> torch.Tensor:
    """Validate a batch for a classifier at the API boundary and return it.

    Expects a floating-point ``Tensor[N, *in_shape]`` (default ``[N, 1, 28, 28]``) of finite intensities
    in [0, 1]; anything else raises :class:`FailatlasError` saying what was expected.
    """
    expected = f"[N, {', '.join(str(v) for v in in_shape)}]"
    if not isinstance(x, torch.Tensor):
        raise FailatlasError(f"classifier input must be a torch.Tensor of shape {expected}, "
                             f"got {type(x).__name__}")
    if x.dim() != len(in_shape) + 1 or tuple(x.shape[1:]) != tuple(in_shape):
        hint = ""
        if x.dim() == 4 and tuple(x.shape[-2:]) == (32, 32):
            hint = " (generator images are 32×32 in [-1, 1]: pass them through failatlas.models.adapter.classifier_view)"
        elif tuple(x.shape) == tuple(in_shape):
            hint = " (add the batch dimension, e.g. x.unsqueeze(0))"
        elif x.dim() == len(in_shape) and tuple(x.shape[1:]) == tuple(in_shape[1:]):
            hint = " (add the channel dimension, e.g. x.unsqueeze(1))"
        raise FailatlasError(f"classifier input has shape {list(x.shape)}, expected {expected}{hint}")
    if not x.is_floating_point():
        raise FailatlasError(f"classifier input has dtype {x.dtype}; expected floating-point intensities in "
                             "[0, 1] (convert uint8 images with x.float() / 255)")
    if x.numel():
        with torch.no_grad():
            if not bool(torch.isfinite(x).all()):
                raise FailatlasError("classifier input contains NaN or infinite values; check the images "
                                     "(or the generator) that produced them")
            lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise FailatlasError(f"classifier input values span [{lo:.3g}, {hi:.3g}]; expected intensities "
                                 "in [0, 1] (generator images in [-1, 1] go through "
                                 "failatlas.models.adapter.classifier_view)")
    return x


def classifier_config_of(model: nn.Module) -> ClassifierConfig | None:
    """The :class:`ClassifierConfig` a model was built or loaded with, if any."""
    config = getattr(model, "config", None)
    return config if isinstance(config, ClassifierConfig) else None


def save_classifier(model: nn.Module, config: ClassifierConfig, folder: str | Path) -> Path:
    """Write ``model`` and ``config`` to ``folder`` (created if needed). Both are written into a staging
    folder inside it and moved in together, so an interrupted save never leaves a mismatched pair.

    The weights are checked against ``config`` first, so a folder that :func:`load_classifier` would refuse
    is never written. Other files in the folder (a model card) are left alone. Returns the folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FailatlasError(f"cannot save the classifier to {folder}: it is a file; choose a folder")
    state = {k: v for k, v in model.state_dict().items()}
    _check_state(state, config, source="the model being saved")
    with staged_files(folder) as stage:
        save_tensors(stage / WEIGHTS_FILE, state, metadata={"format": "pt", "architecture": config.architecture,
                                                           "num_classes": str(config.num_classes)})
        write_json(stage / CONFIG_FILE, config.to_dict())
    return folder


def load_classifier_config(folder: str | Path) -> ClassifierConfig:
    """Read and validate ``folder/config.json``."""
    folder = _classifier_folder(folder)
    path = folder / CONFIG_FILE
    meta = read_json(path, what="classifier config")
    if isinstance(meta, dict) and meta.get("kind") == "stylegan2-generator":
        raise FailatlasError(f"{folder} holds a generator, not a classifier; pass a classifier folder here "
                             "(e.g. mnist/classifier-corrupted) and the generator as --generator")
    return ClassifierConfig.from_dict(meta, source=f"classifier config {path}")


def load_classifier(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a classifier saved by :func:`save_classifier`, in eval mode, on ``device``.

    The returned module carries its :class:`ClassifierConfig` as ``model.config``. A missing folder or
    file, a corrupt weights file, an unknown architecture or weights that do not match the config raise
    :class:`FailatlasError`.
    """
    folder = _classifier_folder(folder)
    config = load_classifier_config(folder)
    if config.architecture not in ARCHITECTURES:
        raise FailatlasError(f"{folder / CONFIG_FILE} names an unknown classifier architecture "
                             f"{config.architecture!r}; known: {', '.join(sorted(ARCHITECTURES))} "
                             "(fix 'architecture' or upgrade failatlas)")
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FailatlasError(f"classifier weights not found: {weights_path}; the folder must hold "
                             f"{CONFIG_FILE} and {WEIGHTS_FILE} (retrain or copy the weights there)")
    state = load_tensors(weights_path, what="classifier weights")
    _check_state(state, config, source=str(weights_path), config_path=folder / CONFIG_FILE)
    model = build_classifier(config)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _classifier_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if folder.is_file() and folder.name in (CONFIG_FILE, WEIGHTS_FILE):
        folder = folder.parent
    if not folder.exists():
        raise FailatlasError(f"classifier folder not found: {folder}; train one with `failatlas "
                             f"train-classifier --out {folder}` or pass the folder holding {CONFIG_FILE} "
                             f"and {WEIGHTS_FILE}")
    if not folder.is_dir() and folder.suffix in (".onnx", ".pt", ".pt2"):
        raise FailatlasError(f"{folder} is a classifier file, not a folder: load it with "
                             "failatlas.deploy.load_any_classifier (the commands take it as it is)")
    if not folder.is_dir():
        raise FailatlasError(f"{folder} is a file but not a classifier file or folder; a classifier is a folder "
                             f"holding {CONFIG_FILE} and {WEIGHTS_FILE}, or a file named .onnx (ONNX), .pt "
                             "(TorchScript) or .pt2 (torch.export)")
    return folder


def _check_state(state: dict[str, torch.Tensor], config: ClassifierConfig, source: str,
                 config_path: Path | None = None) -> None:
    """Compare a state dict with the one ``config`` describes; mismatches raise :class:`FailatlasError`."""
    with torch.device("meta"):
        reference = build_classifier(config).state_dict()
    where = f" ({config_path})" if config_path else ""
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        raise FailatlasError(f"{source} does not hold a {config.architecture!r} classifier: "
                             f"{'; '.join(parts)}; the config{where} and the weights do not belong together "
                             "(retrain or restore the matching files)")
    for key, ref in reference.items():
        got = tuple(state[key].shape)
        if got != tuple(ref.shape):
            out_classes = _output_classes(state, reference)
            if out_classes is not None and out_classes != config.num_classes:
                raise FailatlasError(f"the config{where} says num_classes={config.num_classes} but {source} "
                                     f"has {out_classes} output classes; set num_classes to {out_classes} "
                                     "in config.json or retrain the classifier")
            raise FailatlasError(f"{source}: tensor {key!r} has shape {list(got)}, the config{where} implies "
                                 f"{list(ref.shape)}; the config and the weights do not belong together "
                                 "(retrain or restore the matching files)")
        if state[key].dtype.is_floating_point != ref.dtype.is_floating_point:
            raise FailatlasError(f"{source}: tensor {key!r} has dtype {state[key].dtype}, expected {ref.dtype}")
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise FailatlasError(f"{source}: tensor {key!r} contains NaN or infinite values; the training "
                                 "diverged or the file is damaged (retrain)")


def _output_classes(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> int | None:
    """Rows of the last 2-D weight: the number of classes the weights were trained for."""
    last = [k for k, v in reference.items() if k.endswith("weight") and v.dim() == 2]
    if not last or last[-1] not in state or state[last[-1]].dim() != 2:
        return None
    return int(state[last[-1]].shape[0])


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def parameter_count(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
