"""Figures of the accuracy curves (Fig. 6), the t-SNE maps (Fig. 3) and the class-overlap matrix.

Same conventions as :mod:`failatlas.report.figures`: drawn from result dataclasses (never recomputed), a
PNG written atomically on an Agg canvas and, beside it (same stem, ``.json``), the data plotted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import _io
from ..errors import FailatlasError
from .figures import _new_figure, _save_png, class_label

_WELL, _MIS = "tab:blue", "tab:red"


def _none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _colours(names) -> dict[str, str]:
    """One colour per classifier, the same in every panel."""
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def _draw_curves(ax, curves: Mapping[str, Any], colours: Mapping[str, str], fontsize: float = 8) -> dict[str, Any]:
    lines = {}
    for name, curve in curves.items():
        pts = curve.plotted_bins()
        ys = [float("nan") if a is None else a for a in pts["accuracy"]]
        slope = curve.slope
        label = f"{name} (slope {slope:+.2f})" if not math.isnan(slope) else name
        lines[name] = ax.plot(pts["centres"], ys, marker="o", markersize=3, linewidth=1.4, label=label,
                              color=colours[name])[0]
        nan = float("nan")
        ax.fill_between(pts["centres"], [nan if a is None else a for a in pts["ci_low"]],
                        [nan if a is None else a for a in pts["ci_high"]], color=colours[name], alpha=0.15,
                        linewidth=0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=fontsize - 1)
    return lines


def _check_curves(curves: Mapping[str, Any]) -> None:
    if not curves:
        raise FailatlasError("no accuracy curves to plot; pass {classifier name: CurveResult}")


def plot_accuracy_curves(curves: Mapping[str, Any], path: str | Path) -> Path:
    """Fig. 6: accuracy vs normalized distance to the well-classified centre, one line per classifier
    (plotted bins only; an empty bin is a gap) in its shaded 95% band, each labelled with its slope.

    curves: ``{name: CurveResult}``. Writes ``path`` (PNG) and its ``.json`` twin; returns the PNG path.
    """
    from matplotlib.patches import Patch

    _check_curves(curves)
    path = Path(path)
    ks = sorted({c.k for c in curves.values()})
    shown = {name: _n_plotted(c) for name, c in curves.items()}
    fig = _new_figure(6.4, 5.0 + 0.16 * len(curves))
    ax = fig.subplots()
    lines = _draw_curves(ax, curves, _colours(curves), fontsize=9)
    ax.set_xlabel("normalized distance to the well-classified centre"
                  + (" of the sample's class" if next(iter(curves.values())).centre_mode == "class" else ""),
                  fontsize=9)
    ax.set_ylabel("accuracy (fraction of the bin's samples classified as their class)", fontsize=8)
    ax.set_title(f"Accuracy vs distance (top-{'/'.join(map(str, ks))} dimensions)", fontsize=10)
    band = Patch(color="grey", alpha=0.25, linewidth=0, label="95% interval of each bin (Wilson)")
    ax.legend(handles=[*lines.values(), band], fontsize=8, frameon=False, loc="lower left")
    notes = ["not plotted (distance 1 and beyond, DESIGN §4.6, or no distance: a class without a "
             "well-classified sample):"] + [_not_plotted_line(name, c) for name, c in curves.items()]
    fig.text(0.01, 0.01, "\n".join(notes), fontsize=7.5, color="dimgray", va="bottom")
    fig.tight_layout(rect=(0, 0.035 * len(notes), 1, 1))
    _save_png(fig, path)
    _io.write_json(path.with_suffix(".json"), {
        "figure": "accuracy_curves", "png": path.name,
        "curves": {name: {"k": c.k, "mean_accuracy": _none(c.mean_accuracy), "slope": _none(c.slope),
                          "n": c.n, "n_plotted": shown[name], "not_plotted": c.not_plotted(), **c.plotted_bins()}
                   for name, c in curves.items()},
    })
    return path


def _not_plotted_line(name: str, curve) -> str:
    """"classifier-clean: 277 of 2000 samples, 267 mis-classified (accuracy 0.036)"."""
    rest = curve.not_plotted()
    n = rest["n_well"] + rest["n_mis"]
    acc = "" if rest["accuracy"] is None else f" (accuracy {rest['accuracy']:.3f})"
    none = f", {rest['n_without_centre']} of them without a centre" if rest["n_without_centre"] else ""
    return f"  {name}: {n} of {curve.n + curve.n_without_centre} samples, {rest['n_mis']} mis-classified{acc}{none}"


def _n_plotted(curve) -> int:
    """Samples in the plotted bins (the rest lie beyond them, below the first edge, or have no centre)."""
    bins = curve.plotted_bins()
    return int(sum(bins["n_well"]) + sum(bins["n_mis"]))


def plot_accuracy_curves_per_class(curves: Mapping[str, Any], path: str | Path, cols: int = 5,
                                   class_names: Sequence[str] | None = None) -> Path:
    """Small multiples: one panel per class (the union of the classes with a curve and those a classifier
    has none for: ``skipped_classes``), one line per classifier; a panel names the classifiers without a
    curve for its class.

    curves: ``{name: CurveResult}`` computed with ``per_class=True``; class_names: each panel is titled
    with its class's name too. Writes ``path`` and its ``.json`` twin (``no_curve``: class → the classifiers
    without a curve for it).
    """
    _check_curves(curves)
    path = Path(path)
    classes = sorted({c for r in curves.values() for c in (*r.per_class, *r.skipped_classes)})
    if not any(r.per_class for r in curves.values()):
        raise FailatlasError("the curves have no per-class curves; compute them with per_class=True")
    cols = max(1, min(int(cols), len(classes)))
    rows = math.ceil(len(classes) / cols)
    fig = _new_figure(2.4 * cols, 2.1 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    data: dict[str, Any] = {}
    no_curve: dict[str, list[str]] = {}
    colours = _colours(curves)
    handles: dict[str, Any] = {}
    for ax in axes.ravel()[len(classes):]:
        ax.set_visible(False)
    for ax, c in zip(axes.ravel(), classes):
        present = {name: r.per_class[c] for name, r in curves.items() if c in r.per_class}
        for name, line in _draw_curves(ax, present, colours, fontsize=7).items():
            handles.setdefault(name, line)
        ax.set_title(f"class {class_label(c, class_names)}", fontsize=8)
        off = {name: r.n - _n_plotted(r) for name, r in present.items()}
        missing = [name for name in curves if name not in present]
        several = len(curves) > 1
        # what the panel does not show, where it could mislead (a few plotted samples, a curve left out)
        text = [f"{name + ': ' if several else ''}{off[name]} of {r.n} not plotted"
                for name, r in present.items() if off[name]]
        text += [f"{name + ': ' if several else ''}no curve (under 2 well-classified at distinct distances)"
                 for name in missing]
        if text:
            ax.text(0.03, 0.03, "\n".join(text), transform=ax.transAxes, fontsize=6, color="dimgray",
                    va="bottom")
        data[str(c)] = {name: {"k": r.k, "mean_accuracy": _none(r.mean_accuracy), "slope": _none(r.slope),
                               "n": r.n, "n_plotted": r.n - off[name], "not_plotted": r.not_plotted(),
                               **r.plotted_bins()} for name, r in present.items()}
        if missing:
            no_curve[str(c)] = missing
    names = [name for name in curves if name in handles]  # one legend for the figure, without slopes
    ks = "/".join(map(str, sorted({r.k for r in curves.values()})))
    fig.legend([handles[n] for n in names], names, loc="upper center", ncol=min(len(names), 4), fontsize=8,
               frameon=False, title=f"Accuracy vs distance per class (top-{ks} dimensions)", title_fontsize=9)
    fig.supxlabel("normalized distance to the class's well-classified centre (shaded: 95% interval)", fontsize=8)
    fig.supylabel("accuracy", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.1 * rows + 0.6)))
    _save_png(fig, path)
    _io.write_json(path.with_suffix(".json"), {"figure": "accuracy_curves_per_class", "png": path.name,
                                               "classes": data, "no_curve": no_curve})
    return path


def plot_tsne(result, path: str | Path, size: float = 4.0, classifier: str | None = None) -> Path:
    """Fig. 3: t-SNE maps of Z, W and S side by side, well-classified in blue, mis-classified in red (drawn
    on top), each class's cluster labelled at its median point. result: a
    :class:`~failatlas.analysis.tsne.TSNEResult`; ``classifier`` names whose verdicts colour the points.
    Writes ``path`` and its ``.json`` twin (the result's data)."""
    import numpy as np

    path = Path(path)
    fig = _new_figure(3 * size, size + 0.4)
    axes = fig.subplots(1, 3, squeeze=False)[0]
    well = result.well.numpy()
    n_well, n_mis = int(well.sum()), int((~well).sum())
    for ax, space in zip(axes, ("z", "w", "s")):
        e = result.embedding(space).numpy()
        ax.scatter(e[well, 0], e[well, 1], s=4, c=_WELL, alpha=0.5, linewidths=0, label=f"well ({n_well})")
        ax.scatter(e[~well, 0], e[~well, 1], s=8, c=_MIS, alpha=0.9, linewidths=0, label=f"mis ({n_mis})")
        if space != "z":  # Z carries no class: its points are mixed
            labels = result.y.numpy()
            for c in sorted(set(labels.tolist())):
                x, y = np.median(e[labels == c], axis=0)
                ax.text(x, y, str(c), fontsize=8, fontweight="bold", ha="center", va="center",
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7))
        pca = result.pca_components[space]
        ax.set_title(f"t-SNE of {space.upper()}" + (f" (PCA {pca})" if pca else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=7, frameon=False, markerscale=2)
    who = f"coloured by {classifier}'s verdict; " if classifier else ""
    fig.suptitle(f"{result.n} samples, {who}in W and S each digit marks its class's median point; perplexity "
                 f"{result.perplexity:.3g}, seed {result.seed}", fontsize=9)
    fig.tight_layout()
    _save_png(fig, path)
    _io.write_json(path.with_suffix(".json"), {"figure": "tsne", "png": path.name, **result.to_json()})
    return path


def plot_overlap(result, path: str | Path, classifier: str | None = None, class_names=None) -> Path:
    """Heatmap of the Jaccard overlap of the per-class top-k sets, values written in the cells, with a
    last column for each class vs the global top-k. The diagonal (1 by definition) is grey and left out of
    the colour scale, which spans the other cells (at least 0–0.5), so that their differences show. result: a
    :class:`~failatlas.analysis.overlap.ClassOverlap`; ``classifier``: whose rankings, for the title.
    Writes ``path`` and its ``.json`` twin."""
    import numpy as np

    path = Path(path)
    classes = list(result.classes)
    C = len(classes)
    matrix = np.concatenate([result.jaccard.numpy(), result.jaccard_global.numpy()[:, None]], axis=1)
    diagonal = np.zeros(matrix.shape, dtype=bool)
    diagonal[np.arange(C), np.arange(C)] = True
    off = matrix[~diagonal]
    top = max(0.5, float(off.max()) if off.size else 0.5)
    fig = _new_figure(1.4 + 0.55 * (C + 1), 1.2 + 0.5 * C)
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_array(matrix, diagonal), vmin=0, vmax=top, cmap="viridis", aspect="auto")
    ax.imshow(np.ma.masked_array(np.ones_like(matrix), ~diagonal), cmap="Greys", vmin=0, vmax=4, aspect="auto")
    for i in range(C):
        for j in range(C + 1):
            v = matrix[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if diagonal[i, j] or v > 0.6 * top else "white")
    ax.axvline(C - 0.5, color="white", linewidth=2)
    ax.set_xticks(range(C + 1), [str(c) for c in classes] + ["global"], fontsize=7)
    ax.set_yticks(range(C), [class_label(c, class_names) for c in classes], fontsize=7)  # names, when known
    ax.set_xlabel("class (last column: the global ranking)", fontsize=8)
    ax.set_ylabel("class", fontsize=8)
    who = f" ({classifier})" if classifier else ""
    mean = result.mean_pairwise
    ax.set_title(f"Jaccard overlap of the per-class top-{result.k} dimensions{who}"
                 + ("" if mean != mean else f"\nmean over pairs of classes {mean:.3f}"), fontsize=9)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.ax.tick_params(labelsize=7)
    bar.set_label("Jaccard |A ∩ B| / |A ∪ B|", fontsize=7)
    fig.tight_layout()
    _save_png(fig, path)
    _io.write_json(path.with_suffix(".json"), {"figure": "class_overlap", "png": path.name, **result.to_json()})
    return path
