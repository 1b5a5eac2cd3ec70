"""Training and evaluating classifiers (DESIGN §2).

The recipe: Adam, batch 64, 20 epochs, a one-cycle learning-rate schedule (max lr 1e-3) and random
translations of up to ±2 px (a random 28×28 crop of the zero-padded 32×32 image), on the clean training
split or on the corrupted mix. Seeded: the initial weights come from ``torch.manual_seed(seed)``, the
shuffling and the translations from their own ``torch.Generator``, so two runs with the same seed on the
same CPU give identical weights.

Evaluation reports the accuracy overall and per severity cell: ``"clean"`` and every corrupted
``"blur{b}-noise{n}"`` combination (b, n ∈ 1..3).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .._device import resolve_device
from .._io import check_out_folder, staged_files, write_json
from .._paths import absolute_folder
from .._progress import progress, progress_enabled
from ..errors import FailatlasError
from ..models.adapter import PAD
from ..models.classifier import (
    ARCHITECTURES,
    ClassifierConfig,
    build_classifier,
    check_classifier_input,
    classifier_config_of,
    load_classifier,
    save_classifier,
)

CLASSIFIER_DEVICES = ("cpu", "cuda", "mps")  # the classifier commands also run on Apple GPUs

SIZE = 28          # the classifier's input; the 32×32 images carry a PAD-px zero border (DESIGN §1)
SEVERITIES = (1, 2, 3)
TRAINING_LOG_FILE = "training.json"


@dataclass(frozen=True)
class TrainClassifierConfig:
    """A classifier training run. Defaults are the DESIGN §2 recipe.

    ``train_on``: ``"clean"`` images or the ``"corrupted"`` mix (half the images blurred and noised).
    ``translate_px``: random shifts of up to ± this many pixels (0 turns augmentation off; at most 2, the
    padding). ``limit``: train on the first ``limit`` images only (quick checks). ``channels_last``: the
    memory format of the convolutions; off by default because on CPU it measured 2.6× slower
    (PyTorch 2.13, batch 64: 465 vs 118 images/s on 2 EPYC cores).
    """

    dataset: str = "mnist"
    train_on: str = "corrupted"
    blur: str = "paper"
    idx_dir: str | None = None
    data_seed: int = 0
    architecture: str = "paper-cnn"
    epochs: int = 20
    batch_size: int = 64
    max_lr: float = 1e-3
    weight_decay: float = 0.0
    translate_px: int = 2
    seed: int = 0
    limit: int | None = None
    device: str = "cpu"
    channels_last: bool = False

    def validate(self) -> None:
        if self.train_on not in ("clean", "corrupted"):
            raise FailatlasError(f"train_on must be 'clean' or 'corrupted', got {self.train_on!r}")
        if self.architecture not in ARCHITECTURES:
            raise FailatlasError(f"unknown classifier architecture {self.architecture!r}; "
                                 f"known: {', '.join(sorted(ARCHITECTURES))}")
        if self.epochs < 1:
            raise FailatlasError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise FailatlasError(f"batch size must be at least 2 (batch norm needs it), got {self.batch_size}")
        if not (self.max_lr > 0 and math.isfinite(self.max_lr)):
            raise FailatlasError(f"the learning rate (--max-lr) must be a positive number, got {self.max_lr}")
        if not 0 <= self.translate_px <= PAD:
            raise FailatlasError(f"--translate-px must be between 0 and {PAD} (the padding), got {self.translate_px}")
        if self.limit is not None and self.limit < 2:
            raise FailatlasError(f"--limit must be at least 2 images, got {self.limit}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float          # mean training cross-entropy over the epoch
    accuracy: float      # training accuracy (on augmented images, in train mode)
    images_per_s: float
    lr_end: float
    seconds: float


@dataclass(frozen=True)
class TrainClassifierResult:
    folder: str
    config: ClassifierConfig
    n_train: int
    wall_time_s: float
    history: tuple[EpochStats, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "config": self.config.to_dict(), "n_train": self.n_train,
                "wall_time_s": self.wall_time_s, "history": [dataclasses.asdict(h) for h in self.history]}


def _load(name: str, split: str, corruption: str, blur: str, idx_dir, seed: int):
    from ..data import load_dataset

    return load_dataset(name, split, corruption=corruption, blur=blur, idx_dir=idx_dir, seed=seed)


def random_crops(images: torch.Tensor, max_shift: int, generator: torch.Generator | None) -> torch.Tensor:
    """uint8 Tensor[B, 32, 32] (padded) → Tensor[B, 28, 28]: each image shifted by up to ±``max_shift`` px.

    A crop at offset ``PAD + d`` moves the digit by ``-d``; the 2-px zero border fills the gap. With
    ``max_shift = 0`` this is the centre crop the classifier sees at test time.
    """
    b = images.shape[0]
    if max_shift == 0:
        return images[:, PAD:PAD + SIZE, PAD:PAD + SIZE]
    offsets = torch.randint(PAD - max_shift, PAD + max_shift + 1, (2, b), generator=generator)
    ar = torch.arange(SIZE)
    rows = (offsets[0][:, None] + ar)[:, :, None]      # [B, 28, 1]
    cols = (offsets[1][:, None] + ar)[:, None, :]      # [B, 1, 28]
    return images[torch.arange(b)[:, None, None], rows, cols]


def warn_missing_classes(labels: torch.Tensor, num_classes: int, dataset: str, limit: bool = False) -> list[int]:
    """Say on stderr which classes have no training image (a model trained so never predicts them: an IDX
    folder with the wrong labels file, or, when the caller set one, a ``limit`` too small); returns them.
    Fewer than 2 classes with images is refused (:class:`FailatlasError`)."""
    or_limit = " (or a --limit that keeps too few images)" if limit else ""
    counts = torch.bincount(labels.long(), minlength=num_classes)
    missing = [c for c in range(num_classes) if int(counts[c]) == 0]
    present = [c for c in range(num_classes) if int(counts[c]) > 0]
    if len(present) < 2:  # nothing to tell apart: every later step would report a perfect or empty model
        raise FailatlasError(f"the training images of {dataset} hold {len(present)} class"
                             f"{'' if len(present) == 1 else 'es'} ({', '.join(map(str, present)) or 'none'}); a "
                             f"classifier or a conditional generator needs at least 2: check the labels file{or_limit}")
    if missing:
        print(f"failatlas: warning: {len(missing)} of the {num_classes} classes of {dataset} have no training "
              f"image ({', '.join(map(str, missing[:10]))}{', …' if len(missing) > 10 else ''}); the model will "
              f"not learn them: check the dataset{or_limit}", file=sys.stderr, flush=True)
    return missing


def _refuse_generator_folder(out: Path) -> None:
    """--overwrite replaces the classifier's files; in a generator's or a train-gan run's folder that would
    replace the generator's config.json (the two share the name)."""
    from .._io import read_json
    from ..models.stylegan2 import GENERATOR_WEIGHTS

    if not out.is_dir():
        return
    found = [name for name in (GENERATOR_WEIGHTS, "checkpoint.pt") if (out / name).exists()]
    if not found and (out / "config.json").is_file():
        try:
            meta = read_json(out / "config.json")
        except FailatlasError:
            meta = None
        if isinstance(meta, dict) and meta.get("kind") == "stylegan2-generator":
            found = ["config.json of a generator"]
    if found:
        raise FailatlasError(f"--out {out} holds a generator or a train-gan run ({', '.join(found)}); the classifier's "
                             "config.json would replace the generator's: choose another folder for the classifier")


def train_classifier(config: TrainClassifierConfig, out: str | Path, *, train_set=None,
                     verbose: bool = True, overwrite: bool = False) -> TrainClassifierResult:
    """Train a classifier with ``config`` and save it to the folder ``out``.

    ``out`` receives ``config.json`` and ``model.safetensors`` (see :func:`failatlas.load_classifier`) and
    ``training.json`` (per-epoch loss, accuracy and throughput, wall time, machine). ``train_set``: an
    ImageSet to train on instead of loading ``config.dataset`` (then ``train_on``/``blur`` are not used).
    ``verbose``: without a progress bar (stderr not a terminal), print one line per epoch to stderr.
    ``overwrite``: ``out`` may be a non-empty folder (a shipped model's, with its model card): the three
    files are replaced, others stay. Without it a non-empty ``out`` is refused before any training.
    """
    config.validate()
    config = dataclasses.replace(config, idx_dir=absolute_folder(config.idx_dir))
    out = check_out_folder(out, overwrite, "to replace the classifier files in it (other files stay)")
    _refuse_generator_folder(out)
    device = resolve_device(config.device, CLASSIFIER_DEVICES)
    if train_set is None:
        train_set = _load(config.dataset, "train", config.train_on, config.blur, config.idx_dir, config.data_seed)
    if config.limit is not None:
        train_set = train_set.subset(torch.arange(min(config.limit, len(train_set))))
    images = torch.as_tensor(train_set.images)
    labels = torch.as_tensor(train_set.labels, dtype=torch.int64)
    n = int(images.shape[0])
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (SIZE + 2 * PAD,) * 2:
        raise FailatlasError(f"training images must be uint8 [N, 32, 32] (padded 28×28), got "
                             f"{images.dtype} {list(images.shape)}")
    if n < 2:
        raise FailatlasError(f"the training set has {n} images; at least 2 are needed")

    warn_missing_classes(labels, int(train_set.num_classes), str(train_set.name), limit=config.limit is not None)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    class_names = tuple(str(c) for c in train_set.class_names) if getattr(train_set, "class_names", None) else None
    model_config = ClassifierConfig(architecture=config.architecture, num_classes=int(train_set.num_classes),
                                    in_shape=(1, SIZE, SIZE), dataset=str(train_set.name),
                                    class_names=class_names, training=config.to_dict())
    model = build_classifier(model_config).to(device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)

    batches_per_epoch = n // config.batch_size + (1 if n % config.batch_size >= 2 else 0)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.max_lr,
                                                    epochs=config.epochs, steps_per_epoch=batches_per_epoch)
    show_bar = progress_enabled()
    history: list[EpochStats] = []
    start = time.perf_counter()
    model.train()
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = 0
        seen = 0
        with progress(n, desc=f"epoch {epoch}/{config.epochs}", unit="img", leave=False) as bar:
            for idx in order.split(config.batch_size):
                if idx.numel() < 2:       # batch norm cannot train on one image
                    continue
                x = random_crops(images[idx], config.translate_px, generator)
                x = x.to(device, non_blocking=True).unsqueeze(1).float().div_(255)
                x = x.contiguous(memory_format=memory_format)
                y = labels[idx].to(device, non_blocking=True)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                b = idx.numel()
                loss_sum += loss.detach().double().cpu() * b
                correct += int((logits.detach().argmax(1) == y).sum())
                seen += b
                bar.update(b)
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
        seconds = time.perf_counter() - t0
        stats = EpochStats(epoch=epoch, loss=float(loss_sum) / seen, accuracy=correct / seen,
                           images_per_s=seen / seconds, lr_end=float(scheduler.get_last_lr()[0]), seconds=seconds)
        history.append(stats)
        if verbose:
            line = (f"epoch {epoch}/{config.epochs}  loss {stats.loss:.4f}  acc {stats.accuracy:.4f}  "
                    f"{stats.images_per_s:.0f} img/s  {seconds:.1f} s")
            if show_bar:
                from tqdm.auto import tqdm

                tqdm.write(line, file=sys.stderr)
                sys.stderr.flush()  # a log file sees each epoch as it ends
            else:
                print(line, file=sys.stderr, flush=True)
    wall = time.perf_counter() - start

    model = model.to(memory_format=torch.contiguous_format).eval()
    result = TrainClassifierResult(folder=str(out), config=model_config, n_train=n, wall_time_s=wall,
                                   history=tuple(history))
    log = result.to_dict()
    log["machine"] = machine_description(device)
    with staged_files(out) as stage:  # the three files arrive together (--overwrite replaces a model)
        save_classifier(model, model_config, stage)
        write_json(stage / TRAINING_LOG_FILE, log)
    return result


def machine_description(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a timing was measured on: CPU, threads, torch version (and the GPU, on CUDA)."""
    import os

    device = torch.device(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cell(corrupted: bool, blur: int, noise: int) -> str:
    return f"blur{blur}-noise{noise}" if corrupted else "clean"


def evaluate_classifier(model_or_folder, dataset="mnist", on: str = "clean", idx_dir: str | None = None,
                        blur: str = "paper", seed: int = 0, batch_size: int = 500, split: str = "test",
                        device: str = "cpu") -> dict[str, Any]:
    """Accuracy of a classifier on a test split, overall and per severity cell.

    ``model_or_folder``: a classifier module (``Tensor[N, 1, 28, 28]`` → logits), a folder saved by
    failatlas, or the name of a shipped one (``"mnist/classifier-clean"``). ``dataset``: a dataset name for
    :func:`failatlas.data.load_dataset`, or an ImageSet.
    ``on``: ``"clean"`` or ``"corrupted"`` images (the corrupted split holds clean images too).

    Returns ``{"accuracy": float, "n": int, "by_severity": {cell: {"accuracy": float | None, "n": int}},
    "dataset", "split", "on", "blur", "idx_dir", "seed", "model" (the folder, absolute; None for a module),
    "warnings": [str]}`` (a warning when the classifier's class names
    differ from the dataset's: it was trained on another dataset) with cells ``"clean"`` and, on corrupted
    data, every
    ``"blur{b}-noise{n}"`` for b, n ∈ 1..3 (accuracy ``None`` for an empty cell).
    """
    if on not in ("clean", "corrupted"):
        raise FailatlasError(f"--on must be 'clean' or 'corrupted', got {on!r}")
    if batch_size < 1:
        raise FailatlasError(f"batch size must be positive, got {batch_size}")
    dev = resolve_device(device, CLASSIFIER_DEVICES)
    if isinstance(model_or_folder, nn.Module):
        model, model_path = model_or_folder, None
    else:
        from .._paths import find_model

        folder = find_model(model_or_folder)
        model = load_classifier(folder, device=dev)  # its messages name the folder as given
        model_path = str(folder.absolute())
    data = _load(dataset, split, on, blur, idx_dir, seed) if isinstance(dataset, str) else dataset
    config = classifier_config_of(model)
    if config is not None and config.num_classes != int(data.num_classes):
        flags = _data_flags(config)
        trained = f" ({flags})" if flags else ""
        raise FailatlasError(f"the classifier has {config.num_classes} classes but dataset {data.name!r} has "
                             f"{data.num_classes}; evaluate it on the dataset it was trained for{trained} or "
                             f"retrain it on {data.name!r}")
    x_all = data.classifier_input()
    check_classifier_input(x_all, tuple(config.in_shape) if config else (1, SIZE, SIZE))
    labels = torch.as_tensor(data.labels, dtype=torch.int64)
    n = len(labels)
    if n == 0:
        raise FailatlasError(f"dataset {data.name!r} ({split}) has no images to evaluate")

    was_training = model.training
    model.eval()
    hits = torch.empty(n, dtype=torch.bool)
    param = next(model.parameters(), None)
    run_device = param.device if param is not None else dev
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                logits = model(x_all[start:start + batch_size].to(run_device))
                if logits.dim() != 2 or logits.shape[1] != int(data.num_classes):
                    raise FailatlasError(f"the classifier returns logits of shape {list(logits.shape)} but "
                                         f"dataset {data.name!r} has {data.num_classes} classes; evaluate "
                                         "it on the dataset it was trained for or retrain it")
                # argmax of NaN rows would count them as class 0, silently
                refuse_non_finite(logits, "the classifier returned NaN or infinite logits",
                                  f"images {start}..{start + len(logits) - 1} of {data.name!r} ({split}, {on})",
                                  "its accuracy would be meaningless: check its weights (or, for an .onnx file, "
                                  "its graph)", offset=start)
                hits[start:start + batch_size] = (logits.argmax(1).cpu() == labels[start:start + batch_size])
    finally:
        model.train(was_training)

    corrupted = torch.as_tensor(data.corrupted, dtype=torch.bool)
    blur_sev = torch.as_tensor(data.blur, dtype=torch.int64)
    noise_sev = torch.as_tensor(data.noise, dtype=torch.int64)
    any_corrupted = on == "corrupted" or bool(corrupted.any())
    cells = ["clean"] + ([_cell(True, b, s) for b in SEVERITIES for s in SEVERITIES] if any_corrupted else [])
    by_severity: dict[str, dict[str, Any]] = {}
    for name in cells:
        if name == "clean":
            mask = ~corrupted
        else:
            b, s = (int(part[-1]) for part in name.split("-"))
            mask = corrupted & (blur_sev == b) & (noise_sev == s)
        k = int(mask.sum())
        by_severity[name] = {"accuracy": int(hits[mask].sum()) / k if k else None, "n": k}
    counted = sum(c["n"] for c in by_severity.values())
    if counted != n:
        raise FailatlasError(f"{n - counted} images of {data.name!r} have severities outside 1..3; "
                             "the dataset's corruption metadata is inconsistent")
    warnings = []
    if config is not None and config.class_names and tuple(config.class_names) != tuple(data.class_names):
        warnings.append(f"the classifier was trained on {config.dataset or 'another dataset'!r} with classes "
                        f"{_names(config.class_names)}, but {data.name!r} has classes {_names(data.class_names)}: "
                        "these accuracies compare unrelated labels; evaluate it on the dataset it was trained for"
                        + (f": {_data_flags(config)}" if _data_flags(config) else ""))
    return {"accuracy": int(hits.sum()) / n, "n": n, "by_severity": by_severity,
            "dataset": str(data.name), "split": str(getattr(data, "split", split)), "on": on, "blur": blur,
            "idx_dir": absolute_folder(idx_dir) if isinstance(dataset, str) else None, "seed": seed,
            "model": model_path, "warnings": warnings}


def refuse_non_finite(values: torch.Tensor, what: str, which: str, fix: str, offset: int = 0) -> None:
    """Raise :class:`FailatlasError` when a row of ``values`` (Tensor[N, ...], one row per image) holds NaN
    or ±inf: "{what} for k of the N {which}, first for image i; {fix}" (i counted from ``offset``)."""
    finite = torch.isfinite(values.reshape(len(values), -1)).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise FailatlasError(f"{what} for {bad} of the {len(finite)} {which}, first for image "
                             f"{offset + int((~finite).nonzero()[0, 0])}; {fix}")


def _data_flags(config: ClassifierConfig) -> str:
    """The eval-classifier options that name the data a classifier records it was trained on ("--dataset
    fashion --idx-dir /data/fashion"), from its training record, else its dataset name; "" when unknown."""
    training = config.training if isinstance(config.training, dict) else {}
    name = training.get("dataset") if isinstance(training.get("dataset"), str) else None
    if not name:
        return f"--dataset {config.dataset}" if config.dataset else ""
    idx = training.get("idx_dir")
    return f"--dataset {name}" + (f" --idx-dir {idx}" if isinstance(idx, str) and idx else "")


def _names(names, shown: int = 3) -> str:
    names = [str(x) for x in names]
    return ", ".join(names[:shown]) + (", …" if len(names) > shown else "")


def format_evaluation(result: dict[str, Any]) -> str:
    """A readable table of an :func:`evaluate_classifier` result (one row per severity cell)."""
    lines = [f"{result.get('dataset', '?')} {result.get('split', '?')} split, {result.get('on', '?')} images"
             + (f" (blur={result['blur']})" if result.get("on") == "corrupted" else ""),
             f"{'cell':<16}{'n':>7}{'accuracy':>10}"]
    for name, cell in result["by_severity"].items():
        acc = "-" if cell["accuracy"] is None else f"{cell['accuracy']:.4f}"
        lines.append(f"{name:<16}{cell['n']:>7}{acc:>10}")
    lines.append(f"{'all':<16}{result['n']:>7}{result['accuracy']:>10.4f}")
    lines += [f"warning: {w}" for w in result.get("warnings", ())]
    return "\n".join(lines)
