"""Summaries and preview grids of an :class:`~failatlas.data.datasets.ImageSet`.

:func:`describe_dataset` counts what a set holds (per class, corrupted fraction, per blur × noise
severity cell); :func:`write_preview` draws a PNG grid, one row of clean images and one row per blur ×
noise cell, and writes beside it (``out.json`` for ``out.png``) which samples each cell shows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_path, check_out_file, write_json
from ..errors import FailatlasError
from .datasets import ImageSet, load_dataset

SEVERITIES = (1, 2, 3)
COLUMNS = 10       # at least this many images per row
MAX_COLUMNS = 50   # and one per class up to this many classes (the first MAX_COLUMNS classes beyond it)


def describe_dataset(imageset: ImageSet) -> dict[str, Any]:
    """JSON-ready counts: per class, fraction corrupted, and per blur × noise severity cell."""
    n = len(imageset)
    per_class = torch.bincount(imageset.labels, minlength=imageset.num_classes).tolist()
    cells = [{"blur": b, "noise": s, "count": int(((imageset.blur == b) & (imageset.noise == s)).sum())}
             for b in SEVERITIES for s in SEVERITIES]
    return {
        "name": imageset.name,
        "split": imageset.split,
        "num_samples": n,
        "num_classes": imageset.num_classes,
        "class_names": list(imageset.class_names),
        "per_class": dict(zip(imageset.class_names, per_class)),
        "class_counts": list(per_class),  # by class index (per_class merges classes that share a name)
        "num_corrupted": int(imageset.corrupted.sum()),
        "fraction_corrupted": float(imageset.corrupted.float().mean()) if n else 0.0,
        "cells": cells,
    }


def format_description(description: dict[str, Any]) -> str:
    """The human-readable form of :func:`describe_dataset`'s result."""
    d = description
    lines = [
        f"dataset {d['name']} ({d['split']}): {d['num_samples']} images, {d['num_classes']} classes",
        # a class named other than its index is shown with the index that --classes and the reports use
        "per class: " + ", ".join(f"{name}={count}" if name == str(i) else f"{i} {name}={count}"
                                  for i, (name, count) in enumerate(zip(d["class_names"], d["class_counts"]))),
        f"corrupted: {d['num_corrupted']} ({100 * d['fraction_corrupted']:.1f}%)",
        "blur \\ noise      1      2      3",
    ]
    counts = {(c["blur"], c["noise"]): c["count"] for c in d["cells"]}
    for b in SEVERITIES:
        lines.append(f"  blur {b}     " + "".join(f"{counts[b, s]:7d}" for s in SEVERITIES))
    if "preview" in d:
        lines.append(f"preview: {d['preview']} (+ {d['preview_json']})")
    return "\n".join(lines)


def _pick(imageset: ImageSet, mask: torch.Tensor, count: int) -> list[int]:
    """Up to ``count`` indices where ``mask`` holds: the first of each class in turn, then the next ones."""
    candidates = torch.nonzero(mask).flatten().tolist()
    picked: list[int] = []
    labels = imageset.labels.tolist()
    for c in range(imageset.num_classes):
        first = next((i for i in candidates if labels[i] == c), None)
        if first is not None and len(picked) < count:
            picked.append(first)
    chosen = set(picked)
    rest = [i for i in candidates if i not in chosen][: count - len(picked)]
    return sorted(picked + rest, key=lambda i: (labels[i], i))


def preview_columns(imageset: ImageSet) -> int:
    """Images per row: one per class where the classes fit (so no class is left out), never fewer than
    :data:`COLUMNS` nor more than :data:`MAX_COLUMNS`."""
    return min(max(COLUMNS, imageset.num_classes), MAX_COLUMNS)


def preview_cells(imageset: ImageSet, columns: int | None = None) -> list[dict[str, Any]]:
    """The grid's rows: clean, then blur b × noise s for b, s in 1..3; each with the sample indices it shows.
    columns: images per row (None: :func:`preview_columns`)."""
    columns = preview_columns(imageset) if columns is None else columns
    rows = [("clean", ~imageset.corrupted, 0, 0)]
    rows += [(f"blur {b} / noise {s}", imageset.corrupted & (imageset.blur == b) & (imageset.noise == s), b, s)
             for b in SEVERITIES for s in SEVERITIES]
    cells = []
    for label, mask, b, s in rows:
        idx = _pick(imageset, mask, columns)
        cells.append({"row": label, "blur": b, "noise": s, "indices": idx,
                      "labels": [imageset.class_names[int(imageset.labels[i])] for i in idx]})
    return cells


def write_preview(imageset: ImageSet, path: str | os.PathLike, columns: int | None = None) -> dict[str, Any]:
    """Write the preview grid to ``path`` (.png) and its data to the same name with .json; return the data.
    columns: images per row (None: :func:`preview_columns`, one per class up to :data:`MAX_COLUMNS`)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise FailatlasError(f"preview path {path} must end in .png (its data goes to {path.with_suffix('.json')})")
    check_out_file(path, "--preview")
    check_out_file(path.with_suffix(".json"), "--preview's data file")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = preview_columns(imageset) if columns is None else columns
    cells = preview_cells(imageset, columns)
    # one mosaic drawn with a single imshow: ~20× faster than a grid of 100 axes
    tile = imageset.images.shape[-1] + 2
    mosaic = torch.full((len(cells) * tile, columns * tile), 128, dtype=torch.uint8)
    for r, cell in enumerate(cells):
        for c, i in enumerate(cell["indices"]):
            mosaic[r * tile + 1:(r + 1) * tile - 1, c * tile + 1:(c + 1) * tile - 1] = imageset.images[i]
    fig, ax = plt.subplots(figsize=(columns * 0.6 + 1.8, len(cells) * 0.6 + 0.5))
    ax.imshow(mosaic.numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(r + 0.5) * tile for r in range(len(cells))])
    ax.set_yticklabels([cell["row"] if cell["indices"] else f"{cell['row']} (none)" for cell in cells], fontsize=8)
    ax.tick_params(length=0)
    shown = "" if imageset.num_classes <= columns else f"; the first {columns} of {imageset.num_classes} classes"
    ax.set_title(f"{imageset.name} ({imageset.split}), {len(imageset)} images{shown}", fontsize=9)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    data = {"image": path.name, "columns": columns, "dataset": describe_dataset(imageset), "rows": cells}
    write_json(path.with_suffix(".json"), data)
    return data


def summarize_dataset(name: str = "mnist", split: str = "train", *, corruption: str = "corrupted",
                      blur: str = "paper", idx_dir: str | os.PathLike | None = None, seed: int = 0,
                      preview: str | os.PathLike | None = None) -> dict[str, Any]:
    """Load a dataset, describe it, write its preview if ``preview`` is a .png path (the ``data`` command)."""
    imageset = load_dataset(name, split, corruption=corruption, blur=blur, idx_dir=idx_dir, seed=seed)
    description = describe_dataset(imageset)
    description.update({"blur_mode": blur, "corruption": corruption, "seed": seed})
    if preview is not None:
        write_preview(imageset, preview)
        description["preview"] = str(preview)
        description["preview_json"] = str(Path(preview).with_suffix(".json"))
    return description
