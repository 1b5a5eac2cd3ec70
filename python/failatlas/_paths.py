"""Where the shipped models are.

A wheel carries the repository's ``models/`` folder as ``failatlas/_models/`` (installed by
CMakeLists.txt); an editable install reads ``models/`` from the checkout, two folders above this file.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Sequence

from .errors import FailatlasError

_PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED_MODELS = _PACKAGE_DIR / "_models"
_CHECKOUT = _PACKAGE_DIR.parent.parent
CHECKOUT_MODELS = _CHECKOUT / "models"


def _roots() -> list[Path]:
    """Where to look, in order: the installed copy, then the checkout's (only when running from one)."""
    roots = [INSTALLED_MODELS]
    if _PACKAGE_DIR.parent.name == "python" and (_CHECKOUT / "pyproject.toml").is_file():
        roots.append(CHECKOUT_MODELS)
    return roots


def _available() -> list[str]:
    names = set()
    for root in _roots():
        if root.is_dir():
            names.update(p.parent.relative_to(root).as_posix() for p in root.rglob("config.json"))
    return sorted(names)


def shipped_model(relpath: str) -> Path:
    """Path of a shipped model file or folder, e.g. ``shipped_model("mnist/classifier-clean")``.

    ``relpath`` is relative to the repository's ``models/`` folder. Returns the copy installed inside
    the package when there is one, else the checkout's; raises
    :class:`~failatlas.errors.FailatlasError` naming what is missing otherwise.
    """
    rel = PurePosixPath(str(relpath).replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise FailatlasError(
            f"shipped model path {str(relpath)!r} must be relative to models/, e.g. 'mnist/classifier-clean'"
        )
    roots = _roots()
    for root in roots:
        candidate = root.joinpath(*rel.parts)
        if candidate.exists():
            return candidate
    available = ", ".join(_available()) or "none"
    searched = " nor in ".join(str(r) for r in roots)
    raise FailatlasError(
        f"shipped model {rel.as_posix()!r} not found in {searched}; models available: {available}. "
        "Check the name, or reinstall failatlas (`make install`, or "
        "`pip install --no-build-isolation -e .` in a checkout that has models/)"
    )


def resolve_model(path: str | os.PathLike) -> Path:
    """A model folder given by the user, or the name of a shipped model such as ``mnist/generator``.

    An existing path (or any absolute one, so that a missing folder is reported by its loader) is
    returned as it is; anything else is looked up with :func:`shipped_model`.
    """
    p = Path(path)
    return p if p.exists() or p.is_absolute() else shipped_model(str(path))


#: suffix → format of a classifier given as one file (the suffix decides, as for fused graphs)
CLASSIFIER_FILE_FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".pt2": "torch.export"}


def classifier_file_format(path_or_name: str | os.PathLike) -> str | None:
    """``"onnx"``, ``"torchscript"`` or ``"torch.export"`` for a classifier given as a file (``.onnx``,
    ``.pt``, ``.pt2``); None for anything else (a classifier folder or a shipped model name)."""
    return CLASSIFIER_FILE_FORMATS.get(Path(str(path_or_name)).suffix.lower())


def resolve_classifier(path_or_name: str | os.PathLike) -> Path:
    """A classifier file (``.onnx``, ``.pt``, ``.pt2``) as it is, so that its loader reports a missing one;
    a folder or a shipped model name through :func:`resolve_model`."""
    return Path(path_or_name) if classifier_file_format(path_or_name) else resolve_model(path_or_name)


def find_model(path: str | os.PathLike) -> Path:
    """:func:`resolve_model` for the Python loaders: a path that is neither on disk nor the name of a shipped
    model comes back unchanged, so that its loader reports it as a missing folder."""
    try:
        return resolve_model(path)
    except FailatlasError:
        return Path(path)


def absolute_folder(folder: str | os.PathLike | None) -> str | None:
    """A data folder as recorded in a model's config.json: absolute, so the record holds from anywhere."""
    return None if folder is None else str(Path(folder).absolute())


def training_data(training: object) -> dict[str, object] | None:
    """``{"dataset", "idx_dir", "blur"}`` of the data a model was trained on, from the ``training`` record
    of its config.json (as train-gan and train-classifier write it); None when it names no dataset."""
    if not isinstance(training, dict):
        return None
    dataset = training.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        return None
    idx_dir = training.get("idx_dir")
    blur = training.get("blur")
    return {"dataset": dataset, "idx_dir": idx_dir if isinstance(idx_dir, str) and idx_dir else None,
            "blur": blur if blur in ("paper", "isotropic") else "paper"}


def recorded_training(folder_or_name: object) -> dict:
    """The ``training`` record of a saved model folder's config.json (or a shipped model's name); {} for a
    classifier file or a folder without a readable record."""
    import json

    if not isinstance(folder_or_name, (str, os.PathLike)) or classifier_file_format(folder_or_name):
        return {}
    try:
        config = json.loads((resolve_model(folder_or_name) / "config.json").read_text())
    except (OSError, ValueError, FailatlasError):
        return {}
    training = config.get("training") if isinstance(config, dict) else None
    return training if isinstance(training, dict) else {}


def recorded_data(folder_or_name: object) -> dict[str, object] | None:
    """:func:`training_data` of a saved model folder (or a shipped model's name): the data to judge it on
    when the user names none. None for a classifier file, a folder without a readable config.json, or a
    config.json that records no dataset."""
    return training_data(recorded_training(folder_or_name))


def data_to_judge(source: object, dataset: str | None = None, idx_dir: str | os.PathLike | None = None,
                  blur: str | None = None, *, training: object = None) -> dict[str, object]:
    """The data to judge the saved model ``source`` on: what the user named (``dataset``, with ``idx_dir`` and
    ``blur``) or, without a ``dataset``, what ``source`` records it was trained on (:func:`recorded_data`;
    ``idx_dir`` and ``blur`` given here override the recorded ones), else MNIST. Returns ``{"dataset",
    "idx_dir", "blur", "recorded"}`` (``recorded``: True when the dataset came from the record). ``training``:
    the record itself (a loaded model's ``config.training``) instead of ``source``'s config.json. A recorded
    IDX folder that is not there (a model moved from another machine, or saved with a relative path) is one
    :class:`FailatlasError` that names the record and the options that override it."""
    if dataset is not None:
        return {"dataset": dataset, "idx_dir": None if idx_dir is None else str(idx_dir),
                "blur": blur or "paper", "recorded": False}
    recorded = training_data(training) if training is not None else recorded_data(source)
    if recorded is None:
        return {"dataset": "mnist", "idx_dir": None if idx_dir is None else str(idx_dir), "blur": blur or "paper",
                "recorded": False}
    name = str(recorded["dataset"])
    folder = str(idx_dir) if idx_dir is not None else recorded["idx_dir"]
    if folder is not None and name == "mnist10k":  # the embedded subset takes no folder: MNIST from that folder
        name = "mnist"
    if idx_dir is None and folder is not None and not Path(str(folder)).is_dir():
        raise FailatlasError(f"{source} records that it was trained on {name} from the IDX folder {folder}, which "
                             "is not there; pass --idx-dir with that data's folder, or --dataset (and --idx-dir) "
                             "to judge it on other data")
    return {"dataset": name, "idx_dir": folder, "blur": blur or str(recorded["blur"]), "recorded": True}


def same_data(a: dict[str, object], b: dict[str, object]) -> bool:
    """Whether two ``{"dataset", "idx_dir"}`` records name the same images: the embedded MNIST-10k under
    either name, a named dataset's default folder written out, and folders compared resolved (one IDX
    folder is the same images under any dataset name)."""
    from .data.datasets import FASHION_DIR, canonical_name

    def key(d: dict[str, object]) -> tuple[str, str | None]:
        name, folder = canonical_name(d["dataset"]), d.get("idx_dir")
        if folder is None:
            if name == "mnist":
                name = "mnist10k"
            elif name == "fashion":
                folder = FASHION_DIR
        if folder is not None:  # the folder's files are the images, whatever name they were given
            return "", str(Path(str(folder)).resolve())
        return name, None

    return key(a) == key(b)


def data_notes(generator: object, classifiers: dict[str, object],
               classes: Sequence[int] | None = None) -> list[str]:
    """Notes about the data behind a generator (a folder or shipped name) and the classifiers judged on its
    images (name → a loaded model, whose ``config.training`` is its record): classes the generator had no
    training images of (only those among ``classes``, the population's, when given), and a classifier
    recorded as trained on other data than the generator."""
    training = recorded_training(generator)
    empty = [c for c in training.get("classes_without_data") or [] if classes is None or c in classes]
    notes = ([f"the generator's training images held no image of class{'es' if len(empty) > 1 else ''} "
              f"{', '.join(map(str, empty))} (train-gan warned): it draws them without having learnt them, so "
              "read their rows, curves and corner cases with care, or leave them out (--classes with the other "
              "classes, in rank, analyze and compare)"] if empty else [])
    data = training_data(training)
    if data is None:
        return notes
    where = lambda d: str(d["dataset"]) + (f" ({d['idx_dir']})" if d["idx_dir"] else "")  # noqa: E731
    for name, model in classifiers.items():
        config = getattr(model, "config", None)
        own = training_data(getattr(config, "training", None))
        if own is not None and not same_data(own, data):
            notes.append(f"{name} was trained on {where(own)} but the generator on {where(data)}: it is judged on "
                         "images of data it was not trained for")
    return notes
