"""Figures, drawn from result dataclasses (never recomputed here).

Each ``plot_*`` function writes a PNG atomically and, next to it (same stem, ``.json``), the data it
plotted. Matplotlib runs on its Agg canvas without pyplot, so no global backend state is touched.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .. import _io


def class_label(c: int, names=None) -> str:
    """``"6 (Shirt)"`` with class names (a sequence indexed by class), ``"6"`` without."""
    return f"{c} ({names[c]})" if names is not None and 0 <= c < len(names) else str(c)


def format_p(p: float | None, digits: int = 3) -> str:
    """p_y with ``digits`` decimals, or more where rounding would show 0.5 for a p_y that is not exactly
    0.5 (0.49996 → "0.49996", not "0.500": every cell must read on the side of 0.5 it lies on); "–" for
    None or NaN."""
    if p is None or p != p:
        return "–"
    for d in range(digits, 10):
        text = f"{p:.{d}f}"
        if float(text) != 0.5 or p == 0.5:
            return text
    return f"{p:.10f}"


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    _io.write_bytes(path, buf.getvalue())


def plot_separation(result, ranking, path: str | Path, k: int = 3, seed: int = 0,
                    classifier: str | None = None) -> Path:
    """Fig. 4: histograms of s_k for well- vs mis-classified samples, top-k dimensions of ``ranking`` in
    the first row, k random other dimensions (seeded; the first k of the summary's random 10) in the
    second; each panel titled with its rank, the dimension, its layer and channel, KS and AUROC. Histograms
    are shown as fractions of each group (the groups differ in size by ~30×). ``classifier`` names the
    classifier in the title.

    result: a :class:`~failatlas.analysis.separation.SeparationResult`; ranking: a
    :class:`~failatlas.analysis.ranking.Ranking`. Writes ``path`` (PNG) and ``path`` with suffix ``.json``
    (the panels' data: edges, counts, KS, AUROC). Returns the PNG path.
    """
    path = Path(path)
    panels: list[dict[str, Any]] = result.panels(ranking, k=k, seed=seed)
    cols = max(1, k)
    fig = _new_figure(3.3 * cols, 5.6)
    axes = fig.subplots(2, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    row_of = {"top": 0, "random": 1}
    col_next = {"top": 0, "random": 0}
    for p in panels:
        ax = axes[row_of[p["group"]], col_next[p["group"]]]
        col_next[p["group"]] += 1
        ax.set_visible(True)
        nw, nm = max(p["n_well"], 1), max(p["n_mis"], 1)
        # well-classified filled, mis-classified as an outline on top: two colours, no blend to explain
        ax.stairs([c / nw for c in p["hist_well"]], p["edges"], fill=True, alpha=0.35, color="tab:blue",
                  label=f"well-classified ({p['n_well']})")
        ax.stairs([c / nm for c in p["hist_mis"]], p["edges"], fill=False, linewidth=1.6, color="tab:red",
                  label=f"mis-classified ({p['n_mis']})")
        where = f"{p['layer']}[{p['channel']}]" if p["layer"] is not None else ""
        ax.set_title(f"{p['group']}, rank {p['rank']}: dim {p['dim']} {where}\nKS {p['ks']:.3f}  "
                     f"AUROC {p['auroc']:.3f}", fontsize=8.5)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("s (style units)", fontsize=7.5)
    for row, label in enumerate(("top dimensions", "random dimensions")):
        if axes[row, 0].get_visible():
            axes[row, 0].set_ylabel(f"{label}\nfraction of group", fontsize=8)
    first = next((ax for ax in axes.ravel() if ax.get_visible()), None)
    if first is not None:
        first.legend(fontsize=7, frameon=False)
    who = f" by {classifier}" if classifier else ""
    target = "p_y" if ranking.target == "probability" else "the logit of y"
    fig.suptitle(f"Style values of samples well- and mis-classified{who}: top-ranked vs random dimensions "
                 f"(ranked by the gradient of {target})", fontsize=9.5)
    fig.tight_layout()
    _save_png(fig, path)
    _io.write_json(path.with_suffix(".json"), {
        "figure": "separation", "png": path.name, "k": k, "seed": seed, "target": ranking.target,
        "n_well": result.n_well, "n_mis": result.n_mis, "panels": panels,
    })
    return path
