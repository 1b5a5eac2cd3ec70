"""Figures of corner cases: the manipulation grid (Fig. 5) and a before/after gallery.

Like :mod:`failatlas.report.figures`: each function writes a PNG atomically and, beside it (same stem,
``.json``), the data it drew. Probabilities and shifts come from the result objects; the gallery only
renders the images of the styles a :class:`~failatlas.analysis.corners.CornerCases` result describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import _io
from ..errors import FailatlasError
from .figures import _new_figure, _save_png, class_label, format_p


def _image_cell(ax, image: torch.Tensor, p: float, digits: int, fontsize: float) -> None:
    """One grid cell: a uint8 image without ticks, its p_y in a corner (red ≤ 0.5, green above)."""
    ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.03, 0.97, format_p(p, digits), transform=ax.transAxes, va="top", ha="left", fontsize=fontsize,
            color="white", bbox=dict(boxstyle="square,pad=0.1", fc="tab:red" if p <= 0.5 else "tab:green",
                                     ec="none", alpha=0.8))


def plot_manipulation_grid(grid, path: str | Path, classifier: str | None = None) -> Path:
    """Fig. 5: rows = fractions of each column's corner shift, columns = dimensions; every cell shows its
    image and p_y (red when ≤ 0.5). Columns without a corner case (walked to max_shift) are marked "∅".
    Each column's header gives its corner shift with the sign of its degrading direction; ``classifier``
    names the classifier in the title.

    grid: a :class:`~failatlas.analysis.manipulation.ManipulationGrid`. Writes ``path`` (PNG) and
    ``path`` with suffix ``.json`` (the grid's data without the images). Returns the PNG path.
    """
    path = Path(path)
    rows, cols = grid.p_y.shape
    fig = _new_figure(1.05 * cols + 0.9, 1.1 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            _image_cell(ax, grid.images[i, j], float(grid.p_y[i, j]), 3, 7)
            if i == 0:
                mark = "" if grid.found[j] else " ∅"
                ax.set_title(f"dim {grid.dims[j]}{mark}\n{grid.layers[j]}[{grid.channels[j]}]\n"
                             f"t={grid.directions[j] * grid.base_shifts[j]:+.2f}σ", fontsize=6.5)
            if j == 0:
                ax.set_ylabel(f"×{grid.fractions[i]:g}", fontsize=8)
    who = f" ({classifier})" if classifier else ""
    fig.suptitle(f"Class {grid.cls}{who}: row × the column's corner shift t (signed: the degrading direction); "
                 f"p_y per cell, red ≤ 0.5; ∅ = no corner case, walked to {grid.max_shift:g}σ", fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    _io.write_json(path.with_suffix(".json"), {"figure": "manipulation_grid", "png": path.name, **grid.to_json()})
    return path


def plot_failure_direction(walk, path: str | Path, classifier: str | None = None, class_names=None) -> Path:
    """Each class's average image (rows) moved along the one direction of W that separates the
    mis-classified samples (columns: steps in units of the projection's spread among the well-classified
    samples); p_y on every cell (red ≤ 0.5); the column nearest the mis-classified samples' mean position
    is marked "◆".

    walk: a :class:`~failatlas.analysis.direction.DirectionWalk`. Writes ``path`` (PNG) and ``path`` with
    suffix ``.json`` (the walk's data without the images). Returns the PNG path.
    """
    path = Path(path)
    rows, cols = walk.p_y.shape
    near = min(range(cols), key=lambda j: abs(walk.steps[j] - walk.mis_position))
    fig = _new_figure(0.95 * cols + 0.9, 0.95 * rows + 1.0)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            _image_cell(ax, walk.images[i, j], float(walk.p_y[i, j]), 2, 6.5)
            if i == 0:
                ax.set_title(f"{walk.steps[j]:+g}{' ◆' if j == near else ''}", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"class {class_label(walk.classes[i], class_names)}", fontsize=7)
    who = f" of {classifier}" if classifier else ""
    fig.suptitle(f"The failure direction{who} in W: each class's average image moved by the steps shown\n"
                 "(in standard deviations of the well-classified samples along it); "
                 f"◆ nearest the misses' mean ({walk.mis_position:+.2f}); p_y, red ≤ 0.5", fontsize=7.5)
    fig.tight_layout()
    _save_png(fig, path)
    _io.write_json(path.with_suffix(".json"), {"figure": "failure_direction", "png": path.name, **walk.to_json()})
    return path


def plot_corner_gallery(corner_cases, generator, path: str | Path, max_rows: int = 12,
                        combinations: bool = True, verified_only: bool = False,
                        classifier: str | None = None, class_names=None) -> Path:
    """Before/after pairs: found corner cases (not the ones already at p_y ≤ 0.5 at the start) as their
    start image beside the corner-case image, titled with the dimensions, the signed shift (σ, in the
    degrading direction) and p_y before and after. At most ``max_rows`` pairs, two per figure row, chosen
    to cover classes and directions: one single-dimension case per class, each along a dimension not
    shown for an earlier class where it has one (in ranking order), then (``combinations=True``) pairs of
    dimensions moved together, then the rest. The title says how many of the found cases are shown; ``classifier`` names the classifier.

    corner_cases: a :class:`~failatlas.analysis.corners.CornerCases`; generator: the generator it was
    searched with (to render the images of the stored styles). Writes ``path`` (PNG) and ``path`` with
    suffix ``.json`` (one entry per pair shown). Returns the PNG path.
    """
    from ..analysis.corners import CornerCases
    from ..analysis.manipulation import to_uint8
    from ..analysis.population import _eval_mode, _model_dtype_device

    if not isinstance(corner_cases, CornerCases):
        raise FailatlasError(f"plot_corner_gallery takes a CornerCases result, got {type(corner_cases).__name__}")
    if corner_cases.style_dim != generator.style_dim:
        raise FailatlasError(f"the corner cases have {corner_cases.style_dim} style dimensions but the generator "
                             f"has {generator.style_dim}; pass the generator they were searched with")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise FailatlasError(f"max_rows must be a positive integer, got {max_rows!r}")
    path = Path(path)
    pool = list(corner_cases.cases) + (list(corner_cases.combinations) if combinations else [])
    chosen = _spread_over_classes(
        [r for r in pool if r.found and not r.at_start and (r.verified or not verified_only)], max_rows)
    entries: list[dict[str, Any]] = []
    images = []
    if chosen:
        s = torch.stack([corner_cases.styles(r, which) for r in chosen for which in ("start", "shift")])
        dtype, device = _model_dtype_device(generator)
        with _eval_mode(generator), torch.no_grad():
            images = to_uint8(generator.synthesis_from_styles(s.to(device, dtype), noise_mode="const"))
    per_row = 2
    n_rows = max(1, -(-len(chosen) // per_row))
    fig = _new_figure(1.45 * 2 * per_row + 0.4, 1.85 * n_rows + 0.9)
    axes = fig.subplots(n_rows, 2 * per_row, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, r in enumerate(chosen):
        row, col = divmod(i, per_row)
        before, after = axes[row, 2 * col], axes[row, 2 * col + 1]
        before.imshow(images[2 * i].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        after.imshow(images[2 * i + 1].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        p_after = r.p_verified if r.p_verified is not None else r.p_at_shift
        before.set_title(f"class {class_label(r.cls, class_names)}, start\n\n\np_y={format_p(r.p_start)}", fontsize=6)
        word = "dim" if len(r.dims) == 1 else "dims"
        where = "+".join(f"{l}[{c}]" for l, c in zip(r.layers, r.channels))
        pred = "" if r.pred_verified is None else f", predicted {class_label(r.pred_verified, class_names)}"
        after.set_title(f"{word} {'+'.join(map(str, r.dims))}\n{where}\n{r.signed_shifts()}{pred}\n"
                        f"p_y={format_p(p_after)}{'' if r.verified else ' (unverified)'}", fontsize=6)
        entries.append({"start": r.start, "cls": r.cls, "kind": r.kind, "dims": list(r.dims),
                        "layers": list(r.layers), "channels": list(r.channels), "directions": list(r.directions),
                        "shift": r.shift, "p_start": r.p_start, "p_at_shift": r.p_at_shift,
                        "p_verified": r.p_verified, "verified": r.verified, "pred_verified": r.pred_verified})
    if not chosen:
        axes[0, 0].text(0, 0.5, "no corner case found between the start and max_shift", fontsize=8)
    s = corner_cases.summary()
    available = sum(r.found and not r.at_start for r in pool)
    who = f" of {classifier}" if classifier else ""
    fig.suptitle(f"Corner cases{who}: start (left), first shift with p_y ≤ 0.5 (right)\nshowing {len(chosen)} of "
                 f"{available} found ({s['found']} along one dimension, {available - s['found']} along pairs)\n"
                 f"single dimensions: {s['found']}/{s['pairs']} found, {s['verified']} verified, {s['flipped']} "
                 "predicted as another class\nshifts in σ (each dimension's spread over the population)", fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    _io.write_json(path.with_suffix(".json"), {
        "figure": "corner_gallery", "png": path.name, "max_rows": max_rows, "combinations": combinations,
        "verified_only": verified_only, "summary": s, "shown": len(entries),
        "available": available, "pairs": entries})
    return path


def _spread_over_classes(rows: list, limit: int) -> list:
    """Up to ``limit`` of ``rows``, covering classes and directions first: for each class (in order of
    appearance) one single case, its first along a dimension no earlier class showed (else its first);
    then each class's first pair; then the rest in order."""
    chosen: list = []
    for kind in ("single", "pair"):
        shown_dims: set = set()
        classes = list(dict.fromkeys(r.cls for r in rows if r.kind == kind))
        for c in classes:
            own = [r for r in rows if r.kind == kind and r.cls == c]
            pick = next((r for r in own if r.dims not in shown_dims), own[0])
            shown_dims.add(pick.dims)
            chosen.append(pick)
    picked = {id(r) for r in chosen}
    chosen += [r for r in rows if id(r) not in picked]
    return chosen[:limit]


def plot_margins(result, path: str | Path, cases=None, classifier: str | None = None) -> Path:
    """The corner shifts of many starts along each top dimension (one row per dimension, rank 1 on top): a
    dot per searched sample, the 5% and 25% quantiles and the median as ticks, the samples without a corner
    case within the search's limit counted at the right edge. ``cases``: the class-average corner cases
    (:class:`~failatlas.analysis.corners.CornerCases`) drawn as crosses, to show where the average image
    falls among the samples.

    result: a :class:`~failatlas.analysis.margins.MarginResult`. Writes ``path`` (PNG) and its ``.json``
    twin (the result's data, and the class-average shifts drawn). Returns the PNG path."""
    import math

    path = Path(path)
    dims = result.dims
    fig = _new_figure(7.5, 0.45 * len(dims) + 1.4)
    ax = fig.subplots()
    gen = torch.Generator().manual_seed(0)  # the dots' vertical jitter, the same on every run
    limit = result.max_shift
    averages: dict[str, list[float]] = {}
    summary = result.summary()
    for j, (d, row) in enumerate(zip(dims, summary["dims"])):
        y = len(dims) - 1 - j
        col = result.shifts[:, j]
        found = col[torch.isfinite(col)]
        jitter = (torch.rand(found.numel(), generator=gen) - 0.5) * 0.35
        ax.scatter(found.numpy(), (y + jitter).numpy(), s=7, color="tab:blue", alpha=0.5, linewidths=0)
        for key, marker, size in (("q05", "|", 160), ("q25", "|", 110), ("median", "D", 30)):
            if row[key] is not None and math.isfinite(row[key]):
                ax.scatter([row[key]], [y], marker=marker, s=size, color="black", linewidths=1.4, zorder=3)
        if row["not_found"]:
            ax.text(limit * 1.01, y, f"{row['not_found']} > {limit:g}σ", va="center", fontsize=7, color="dimgray")
        if cases is not None:
            shifts = [r.shift for r in cases.cases if r.dims == (d,) and r.found and not r.at_start]
            averages[str(d)] = shifts
            ax.scatter(shifts, [y] * len(shifts), marker="x", s=22, color="tab:red", linewidths=1.0, zorder=4)
    ax.set_yticks(range(len(dims)))
    ax.set_yticklabels([f"#{r['rank']} dim {r['dim']} ({r['layer']})" for r in reversed(summary["dims"])], fontsize=7)
    ax.set_xlim(0, limit * 1.16)
    ax.set_xlabel("corner shift (σ, in the degrading direction): the smallest at which p_y ≤ 0.5", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    who = f"{classifier}: " if classifier else ""
    crosses = "; red ×: the classes' average images" if cases is not None else ""
    ax.set_title(f"{who}corner shifts of {result.index.numel()} well-classified samples ({result.per_class} per "
                 f"class at most)\ndots: samples; ticks: 5% and 25% quantiles; diamond: median{crosses}",
                 fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    _io.write_json(path.with_suffix(".json"), {"figure": "margins", "png": path.name, **result.to_json(),
                                               "class_average_shifts": averages if cases is not None else None})
    return path
