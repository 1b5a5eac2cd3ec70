"""``report.html``: one self-contained page for an analysis run.

Drawn from the result objects of a run (:class:`~failatlas.analysis.pipeline.AnalysisRun`, read by
attribute; nothing is recomputed) and the PNGs its figure functions wrote. Self-contained: every figure
is embedded as a ``data:image/png;base64`` URI, the style sheet is inline, and there are no scripts, fonts
or links to anything outside the file. Every string from the run is HTML-escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from .. import _io
from .figures import format_p

TOP_RANKS = 20

_CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222; line-height: 1.35; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 1.8em;
  border-bottom: 1px solid #ccc; } h3 { font-size: 1.02em; margin-bottom: .3em; }
table { border-collapse: collapse; font-size: .82em; margin: .4em 0 1em; }
th, td { border: 1px solid #ccc; padding: 2px 7px; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
pre { background: #f7f7f7; padding: .8em; font-size: .75em; overflow-x: auto; }
.meta td { text-align: left; } .yes { color: #1a7f37; } .no { color: #b42318; }
"""


def _e(x: Any) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape("" if x is None else str(x), quote=True)


def _num(x: Any, spec: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return format(x, spec)


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], left: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped here; columns in ``left`` are left-aligned."""
    cls = lambda i: ' class="l"' if i in left else ""  # noqa: E731
    out = ["<table>", "<tr>" + "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(head)) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td{cls(i)}>{_e(c)}</td>" for i, c in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figure(fig, folder: Path) -> str:
    return (f"<figure>\n<h3>{_e(fig.title)}</h3>\n{_img(folder / fig.file, fig.title)}\n"
            f"<figcaption>{_e(fig.caption)} ({_e(fig.file)})</figcaption>\n</figure>")


def _quick_run(run) -> str:
    """What --quick changed, for the report's header: a reader comparing with a full run must know."""
    from ..analysis.pipeline import DEFAULT_N

    o, pop = run.options, run.populations[run.primary]
    boot = o.bootstrap_resamples
    grids = o.grid_class_limit
    return (f"quick (--quick): N = {pop.n:,} (default {DEFAULT_N:,}), "
            + (f"{boot} bootstrap resamples" if boot else "no bootstrap intervals")
            + ("" if grids is None else f", manipulation grids for {grids} classes")
            + "; figures from fewer samples are noisier than a full run's")


def _header(run) -> str:
    m = run.manifest
    v = m.get("versions", {})
    pop = run.populations[run.primary]
    rows = [
        ("generator", f"{run.generator.name} — {run.generator.path}"),
        *((("primary classifier" if i == 0 else "classifier"), f"{c.name} — {c.path}")
          for i, c in enumerate(run.classifiers)),
        ("population", f"N = {pop.n} generated images (seed {pop.seed}"
                       + ("" if pop.classes is None else f"; only class{'es' if len(pop.classes) > 1 else ''} "
                          f"{', '.join(map(str, pop.classes))}")
                       + "), each labelled with the class the generator was asked for; a classifier is right on "
                         "one when it predicts that class"),
        *((("classes", ", ".join(f"{i} {n}" for i, n in enumerate(run.class_names))),) if run.class_names else ()),
        ("accuracy on the population", ", ".join(f"{name} {p.accuracy:.4f} ({p.n_mis} mis-classified)"
                                                  for name, p in run.populations.items())),
        *((("accuracy on the real test images (clean / corrupted)",
            f"{real['dataset']}: " + ", ".join(f"{name} {r['clean']:.4f} / {r['corrupted']:.4f}"
                                               for name, r in real["classifiers"].items())),)
          if (real := run.summary.get("real_accuracy")) else ()),
        *((("run", _quick_run(run)),) if run.options.quick else ()),
        ("created", m.get("created", "")),
        ("versions", ", ".join(f"{k} {val}" for k, val in v.items())),
        ("platform", m.get("platform", {}).get("system", "")),
    ]
    body = "\n".join(f"<tr><th class=\"l\">{_e(k)}</th><td>{_e(val)}</td></tr>" for k, val in rows)
    return f'<h1>failatlas analysis</h1>\n<table class="meta">\n{body}\n</table>\n{_GLOSSARY}'


_GLOSSARY = """<h2>How to read this report</h2>
<ul>
<li><b>Style dimensions.</b> The generator draws each image from a style vector s (StyleSpace): one number per
channel of each layer. A dimension is named by its layer and channel, e.g. <code>b32.torgb[31]</code> = the
32×32 block's ToRGB layer, channel 31 (<code>b8.conv0</code>: the first convolution of the 8×8 block; early
blocks tend to set shape, late ones intensity, texture, noise and blur). σ is a dimension's standard deviation over the
population; shifts are in σ, signed: the direction that lowers the classifier's confidence.</li>
<li><b>p_y.</b> The classifier's probability for the image's true class. <b>Well- / mis-classified:</b> the
classifier's top class is / is not the true class. At p_y ≤ 0.5 the classifier is no longer more sure of the
true class than of all others together; with ten classes the true class can still be its top class there
(the corner-case table's "predicted" column says which class it predicts).</li>
<li><b>Ranking.</b> Each dimension scored by how much, on average over the population, a move along it
changes p_y (score = −σ · mean ∂p_y/∂s) and ranked by the size of its score, |score|; the sign of the score
is the direction that lowers p_y. The top-ranked dimensions are the failure directions.</li>
<li><b>t-SNE (Fig. 3).</b> A 2-D map that keeps near neighbours near (each space is first reduced to 50
dimensions by PCA where it has more).</li>
<li><b>Separation (Fig. 4).</b> How differently a dimension's values are distributed among mis-classified
samples than among well-classified ones: KS = the Kolmogorov–Smirnov statistic (0: the same distribution,
1: disjoint), AUROC = the chance that a mis-classified sample has a larger value than a well-classified one
(0.5: no difference). Failure directions should separate clearly better than random dimensions.</li>
<li><b>One direction of W.</b> The direction of the mapping network's output W that best separates the
mis-classified samples (fitted on half of the population, measured on the other half). If removing it
explains most of the dimensions' separation and half of its effect is spread over many style dimensions,
one latent factor drives the failures and the generator has not put it in a few channels (it is
entangled): then every dimension separates a little and the top ones stand out less from random ones.
A diagnostic of the generator, beside the paper's analysis.</li>
<li><b>Corner case.</b> From a class's average image, the smallest shift along one failure direction (in its
degrading direction only) at which p_y ≤ 0.5 (DESIGN §4.4: where the classifier stops being sure, not
necessarily where its prediction changes), narrowed to 0.01σ and checked by classifying the image again;
"p_y before" is p_y 0.01σ short of it (> 0.5). Along some directions p_y recovers further on: a corner case
marks where failure starts, not a region that extends without end.</li>
<li><b>Accuracy vs distance (Fig. 6).</b> Samples binned by their distance to the average well-classified
style of their own class (of all classes with <code>--curve-centre global</code>; the figure's title says
which), over the top-K dimensions, normalized so that 0 is the nearest well-classified sample and 1 is 0.7 ×
the farthest one's distance beyond that; the accuracy of each bin, with its 95% interval. Bins from 1 on are
not drawn (DESIGN §4.6, the paper's "too high distance values"); the tables below count what they hold.
"Mean accuracy" of a curve is the unweighted mean over its plotted bins, not the population accuracy above; a steeper slope (accuracy per unit of distance) = less
resilient. A rise between two bins inside their intervals is sampling noise.</li>
<li><b>Jaccard overlap.</b> |A ∩ B| / |A ∪ B| of two classes' top-k sets: 1 = the same failure directions.</li>
</ul>"""


def _ks_label(key: str) -> str:
    """summary.json's KS keys in words: top10_mean_ks → "mean KS of its top-10 dimensions"."""
    for prefix, words in (("top", "its top-{} dimensions"), ("random", "{} random other dimensions"),
                          ("best", "the {} best-separating dimensions (the most any ranking could reach)"),
                          ("all", "all dimensions (what random dimensions give on average){}"),
                          ("chance", "a dimension that does not separate at all{} (from the group sizes: "
                                     "values near it say nothing)")):
        if key.startswith(prefix) and key.endswith("_mean_ks"):
            return "mean KS of " + words.format(key[len(prefix):-len("_mean_ks")])
    return key.replace("_", " ")


def _summary(run) -> str:
    s = run.summary
    cc = s["corner_cases"]
    rows = []
    for name, sep in s["separation"].get("by_classifier", {run.primary: s["separation"]}).items():
        if sep is None:
            rows.append((f"separation ({name})", "none: one of the two groups is empty"))
            continue
        rows += [(f"{_ks_label(k)} ({name}, {sep['n_mis']} mis-classified)", _num(sep[k], ".3f"))
                 for k in sep if k.endswith("_mean_ks")]
        top = next((k for k in sep if k.startswith("top") and k.endswith("_mean_ks")), None)
        rnd = next((k for k in sep if k.startswith("random") and k.endswith("_mean_ks")), None)
        if top and rnd and sep[rnd]:
            rows.append((f"top vs random: how much better its failure directions separate ({name})",
                         f"{sep[top] / sep[rnd]:.2f} ×"))
        ld = sep.get("latent_direction")
        if ld:
            share = ld["share_explained"]
            w = f"one direction of W ({name}; fitted on half the samples, measured on the other half)"
            rows += [(f"{w}: KS of the projection on it", _num(ld["ks_heldout"], ".3f")),
                     (f"{w}: mean KS of all dimensions on the held-out half, as they are → with the direction "
                      "removed (→ with shuffled labels: chance)",
                      f"{_num(ld['mean_ks_heldout'], '.3f')} → {_num(ld['mean_ks_removed'], '.3f')} "
                      f"({_num(ld['mean_ks_shuffled'], '.3f')})"),
                     (f"{w}: share of the separation above chance that it explains",
                      "–" if share is None else f"{100 * share:.0f}%"),
                     (f"{w}: style dimensions holding half its effect",
                      f"{ld['dims_for_half']} of {ld['style_dims']}")]
            if ld.get("style_effective_dims") is not None and not any(r[0].startswith("independent directions")
                                                                      for r in rows):  # one population: once
                rows.append(("independent directions the styles span (participation ratio of their correlations: "
                             "the fewer, the more every dimension mixes the same factors, and the better random "
                             "dimensions separate too)", f"{ld['style_effective_dims']:.1f} of {ld['style_dims']}"))
    rows += [("corner cases found / searched (class, dimension)", f"{cc['found']} / {cc['pairs']}"),
             ("corner cases verified", cc["verified"]),
             ("verified corner cases whose image is predicted as another class (the rest: p_y ≤ 0.5, but the true "
              "class is still the top one)", cc["flipped"]),
             ("pairs of dimensions found / searched",
              f"{cc['combinations']['found']} / {cc['combinations']['pairs']}")]
    for name, curves in s["accuracy_curves"].items():
        for key, c in curves.items():
            k_dims = f"K = {key[1:]} dimensions" if key.startswith("K") else key
            rows.append((f"accuracy vs distance, {name} ({k_dims}): unweighted mean of the bins' accuracies, slope "
                         "(per unit of distance), largest rise between consecutive bins",
                         f"{_num(c['mean_accuracy'], '.3f')}, {_num(c['slope'], '+.3f')}, "
                         f"{_num(c.get('max_rise'), '+.3f')}"))
    ov = s["overlap"]
    if ov is not None:
        rows.append((f"mean pairwise Jaccard of the per-class top-{ov['k']}", _num(ov["mean_pairwise_jaccard"], ".3f")))
    out = ["<h2>Summary</h2>", _table(("quantity", "value"), rows, left=(0,))]
    if run.notes:
        out.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in run.notes) + "</ul>")
    return "\n".join(out)


def _ranking_tables(run) -> str:
    out = [f"<h2>Ranking (top {TOP_RANKS})</h2>",
           "<p>score = −σ · mean ∂p_y/∂s, ranked by |score|; direction: the sign of a shift that lowers p_y; "
           "σ in raw style units (shifts elsewhere are in σ units). The 95% intervals (when the run has a "
           "bootstrap) resample the population's samples; a classifier without gradients (ONNX, ranked by finite differences) has none."
           "</p>"]
    for name, ranking in run.rankings.items():
        has_ci = ranking.ci_low is not None
        head = ["rank", "dim", "layer", "resolution", "kind", "channel", "score", "direction", "σ"]
        if has_ci:
            head.append(f"95% CI ({ranking.bootstrap} resamples)")
        rows = []
        for r in ranking.top(TOP_RANKS):
            row = [r.rank, r.dim, r.layer, r.resolution, r.kind, r.channel, _num(r.score), f"{r.direction:+d}",
                   _num(r.sigma)]
            if has_ci:
                row.append(f"[{_num(r.ci_low)}, {_num(r.ci_high)}]")
            rows.append(row)
        out.append(f"<h3>{_e(name)} ({ranking.n} samples, target {_e(ranking.target)})</h3>")
        out.append(_table(head, rows, left=(2, 4)))
    return "\n".join(out)


def _corner_table(run) -> str:
    cc = run.corner_cases
    earlier = {(g.start, d): (f, q, f * g.directions[g.dims.index(d)] * g.base_shifts[g.dims.index(d)])
               for g in run.grids for d, f, q in g.earlier_failures}
    rows = []
    for r in cc.rows:
        where = " + ".join(f"{l}[{c}]" for l, c in zip(r.layers, r.channels))
        status = "at start" if r.at_start else ("" if r.found else f"not found ≤ {cc.max_shift:g}σ")
        if len(r.dims) == 1 and (r.start, r.dims[0]) in earlier:  # the grid shows a nearer failure
            f, q, t = earlier[r.start, r.dims[0]]
            status = "; ".join(filter(None, [status, f"the grid shows p_y {q:.3f} already at {t:+.2f}σ: a nearer "
                                                     "corner case (smaller --corner-step)"]))
        rows.append([run.class_label(r.cls), "+".join(map(str, r.dims)), where, r.signed_shifts() or "–",
                     format_p(r.p_before, 4), format_p(r.p_at_shift, 4),
                     "–" if r.pred_verified is None else run.class_label(r.pred_verified),
                     ("yes" if r.verified else "no") if r.found else "–", status])
    s = cc.summary()
    return "\n".join([
        "<h2>Corner cases</h2>",
        f"<p>Start: the average image of each class; along each failure direction, in its degrading direction "
        f"only, bracket in steps of {cc.step:g}σ up to {cc.max_shift:g}σ, then narrow to {cc.tol:g}σ. The shift "
        f"is signed (the direction moved); \"p_y before\" is p_y {cc.tol:g}σ short of it (> 0.5), \"p_y at\" "
        f"at it (≤ 0.5), \"predicted\" the class the re-classified image is given there. "
        f"{s['found']}/{s['pairs']} found, {s['verified']} verified by re-classification, {s['flipped']} of them "
        "predicted as another class"
        + (f"; in {s['at_start']} more the start itself already has p_y ≤ 0.5 (\"at start\": nothing to find)"
           if s["at_start"] else "") + ". A shift of many σ takes the image far outside what the generator draws "
        "(a normal variable lies beyond 3σ in 0.3% of samples): such a case shows how the classifier "
        "extrapolates, not a failure met in practice.</p>",
        _table(("class", "dim(s)", "layer[channel]", "shift (σ)", "p_y before", "p_y at", "predicted", "verified",
                "note"), rows, left=(2, 8)),
    ])


def _margin_table(run) -> str:
    m = getattr(run, "margins", None)
    if m is None:
        return ""
    s = m.summary()
    fmt = lambda x: "–" if x is None else ("> limit" if x == float("inf") else f"{x:.2f}")  # noqa: E731
    rows = [[r["rank"], r["dim"], r["layer"], fmt(r["q05"]), fmt(r["q25"]), fmt(r["median"]), r["not_found"],
             r["unverified"], "–" if r["soonest_class"] is None else f"{run.class_label(r['soonest_class'])} "
             f"({fmt(r['soonest_class_median'])})"] for r in s["dims"]]
    at_start = (f" {s['at_start']} of the samples already have p_y ≤ 0.5 at their start: their margin is 0 along "
                "every dimension." if s["at_start"] else "")
    return "\n".join([
        "<h2>Margins (beyond the paper)</h2>",
        f"<p>The corner search above, from {s['starts']} well-classified samples of the population ({s['per_class']} "
        f"per class at most, seed {s['seed']}) instead of each class's average image: how far typical samples are "
        "from failing along each dimension. Quantiles are of the corner shifts in σ, the lower of two neighbouring "
        f"samples; a sample without a corner case within {m.max_shift:g}σ counts as beyond it (\"&gt; limit\"). "
        "\"5%\" = 3σ: 95% of these samples need at least 3σ before p_y ≤ 0.5. \"soonest class\": the class "
        "with the smallest median shift, and that median (– when no class's median is within the limit)."
        f"{at_start}</p>",
        _table(("rank", "dim", "layer", "5% (σ)", "25% (σ)", "median (σ)", "none within the limit",
                "not verified", "soonest class (median σ)"), rows, left=(2,)),
    ])


def _curve_tables(run) -> str:
    out = [f"<h2>Accuracy vs distance (K = {run.k})</h2>"]
    for name, curve in run.curves.items():
        rows = [[f"{row['left']:.3f}–{row['right']:.3f}", _num(row["centre"], ".3f"), row["n_well"], row["n_mis"],
                 _num(row["accuracy"], ".3f")] for row in curve.rows() if row["plotted"]]
        rest = curve.not_plotted()
        if rest["n_well"] + rest["n_mis"]:
            without = f"; {rest['n_without_centre']} without a centre" if rest["n_without_centre"] else ""
            rows.append([f"not plotted: 1 and beyond, or below 0{without}", "", rest["n_well"], rest["n_mis"],
                         _num(rest["accuracy"], ".3f")])
        out.append(f"<h3>{_e(name)}: unweighted mean of the bins' accuracies {_e(_num(curve.mean_accuracy, '.3f'))}, "
                   f"slope {_e(_num(curve.slope, '+.3f'))} per unit of distance</h3>")
        out.append(_table(("bin", "centre", "well", "mis", "accuracy"), rows, left=(0,)))
    return "\n".join(out)


def _overlap_table(run) -> str:
    ov = run.overlap
    if ov is None:
        return ""
    rows = [[d.dim, f"{d.layer}[{d.channel}]", d.count, ", ".join(map(run.class_label, d.classes)), d.global_rank,
             "yes" if d.in_global_top else "no"] for d in ov.shared]
    text = (f"<p>Dimensions in the top-{ov.k} of at least {ov.threshold} of the {len(ov.classes)} classes "
            f"({len(rows)}).</p>")
    return "\n".join(["<h2>Shared dimensions across classes</h2>", text,
                      _table(("dim", "layer[channel]", "classes with it in their top", "classes", "global rank",
                              "in global top"), rows, left=(1, 3))])


def render_report(run, folder: str | Path | None = None) -> str:
    """The HTML text of the report of ``run`` (an AnalysisRun); figures are read from ``folder`` (default:
    ``run.out``)."""
    folder = Path(folder) if folder is not None else Path(run.out)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>failatlas analysis — {_e(run.generator.name)}; "
        f"{_e(', '.join(c.name for c in run.classifiers))}</title>", f"<style>{_CSS}</style>", "</head>",
        "<body>", _header(run), _summary(run), "<h2>Figures</h2>",
        *(_figure(f, folder) for f in run.figures),
        _ranking_tables(run), _corner_table(run), _margin_table(run), _curve_tables(run), _overlap_table(run),
        "<h2>Manifest</h2>", f"<pre>{manifest_html(run.manifest)}</pre>",
        "</body>", "</html>",
    ]
    return "\n".join(parts) + "\n"


def manifest_html(manifest: dict[str, Any]) -> str:
    """The manifest as the report shows it (JSON, HTML-escaped): ``failatlas verify`` requires these very
    characters in the report's manifest section, so nothing can be hidden in it."""
    return _e(json.dumps(manifest, indent=2, ensure_ascii=False))


#: the report's manifest section: its ``<pre>`` holds :func:`manifest_html`
MANIFEST_SECTION = re.compile(r"<h2>Manifest</h2>\s*<pre>(.*?)</pre>", re.S)


def report_sha256(text: str) -> str:
    """The digest of a report's text with its manifest section's content left out: the manifest records it
    (``report_sha256``) while the report shows that manifest, and ``failatlas verify`` recomputes it, so an
    edit anywhere else in the report shows."""
    match = MANIFEST_SECTION.search(text)
    if match is not None:
        text = text[:match.start(1)] + text[match.end(1):]
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def with_manifest(text: str, manifest: dict[str, Any]) -> str:
    """A rendered report whose manifest section shows ``manifest`` (:func:`manifest_html`), the rest as it
    is: the pipeline renders the report once, takes its :func:`report_sha256` into the manifest and puts that
    manifest in, which leaves the digest as it was."""
    match = MANIFEST_SECTION.search(text)
    return text[:match.start(1)] + manifest_html(manifest) + text[match.end(1):]
