"""``make demo`` / ``failatlas demo``: the main job on the shipped models.

1. Both shipped MNIST classifiers on the clean and the corrupted test split of MNIST-10k, in one table:
   overall accuracy per split and in each blur × noise cell (also ``classifiers.json``/``.csv``).
2. ``failatlas analyze --quick`` on the shipped generator and both classifiers, into ``out/analysis``
   (replaced on every run, so the demo is idempotent); open ``out/analysis/report.html``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from . import _io
from ._paths import shipped_model

SHIPPED_CLASSIFIERS = ("mnist/classifier-clean", "mnist/classifier-corrupted")


def evaluate_shipped_classifiers(names: tuple[str, ...] = SHIPPED_CLASSIFIERS, seed: int = 0) -> dict[str, Any]:
    """``{model name: {"clean": eval result, "corrupted": eval result}}`` on the MNIST-10k test split."""
    from .training.classifier import evaluate_classifier

    return {Path(name).name: {on: evaluate_classifier(shipped_model(name), "mnist", on=on, seed=seed)
                              for on in ("clean", "corrupted")}
            for name in names}


def format_table(results: dict[str, Any]) -> str:
    """Rows: models; columns: clean split, corrupted split, then each cell of the corrupted split."""
    first = next(iter(results.values()))
    cells = [c for c in first["corrupted"]["by_severity"] if c != "clean"]
    head = f"{'classifier':<22}{'clean':>8}{'corrupted':>11}  " + " ".join(f"{c.replace('blur', 'b').replace('-noise', 'n'):>5}" for c in cells)
    by = first["corrupted"]["by_severity"]
    n_clean_half = by.get("clean", {}).get("n", 0)
    lines = ["Accuracy on the MNIST-10k test split (2,000 digits).",
             "  clean: every digit as it is; corrupted: the corrupted mix of DESIGN §1, as in training "
             f"({n_clean_half} of its digits left clean, the rest blurred and noised);",
             "  bN nM: the mix's digits of blur severity N and noise severity M only (n: how many; at n = 110 an "
             "accuracy of 0.5 is uncertain by about ±0.09)",
             head, "-" * len(head)]
    for name, r in results.items():
        cell_acc = [r["corrupted"]["by_severity"][c]["accuracy"] for c in cells]
        lines.append(f"{name:<22}{r['clean']['accuracy']:>8.4f}{r['corrupted']['accuracy']:>11.4f}  "
                     + " ".join("    -" if a is None else f"{a:>5.3f}" for a in cell_acc))
    lines.append(f"{'n':<22}{first['clean']['n']:>8}{first['corrupted']['n']:>11}  "
                 + " ".join(f"{by[c]['n']:>5}" for c in cells))
    return "\n".join(lines)


def _csv(results: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["classifier", "split", "cell", "n", "accuracy"])
    for name, r in results.items():
        for on in ("clean", "corrupted"):
            writer.writerow([name, on, "all", r[on]["n"], r[on]["accuracy"]])
            for cell, v in r[on]["by_severity"].items():
                writer.writerow([name, on, cell, v["n"], v["accuracy"]])
    return buf.getvalue()


def run_demo(out: str | Path | None = None, seed: int = 0, analysis: bool = True) -> dict[str, Any]:
    """Evaluate the shipped classifiers and print the table; with ``out``, write it as JSON/CSV and, unless
    ``analysis`` is False, run the quick analysis of the shipped models into ``out/analysis``."""
    if out is not None:
        out = _io.check_out_folder(out)
        if analysis:
            _io.check_out_folder(out / "analysis", overwrite=True)  # replaced on every run
    results = evaluate_shipped_classifiers(seed=seed)
    print(format_table(results))
    if out is not None:
        _io.write_json(out / "classifiers.json", results)
        _io.write_text(out / "classifiers.csv", _csv(results))
        print(f"\nwritten: {out / 'classifiers.json'}, {out / 'classifiers.csv'}")
        if analysis:
            from .analysis.pipeline import AnalysisOptions, run_analysis

            print("\nfailatlas analyze --quick on the shipped models:", flush=True)
            run = run_analysis(AnalysisOptions(quick=True, seed=seed, overwrite=True), out / "analysis")
            print(run.format())
            print(f"\nreport: {out / 'analysis' / 'report.html'}")
    return results
