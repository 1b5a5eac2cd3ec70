"""The `failatlas analyze` job: run folder contents, summary/manifest, the self-contained report, and the
refusals and clean-up that keep a run folder whole."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from failatlas import FailatlasError, _io
from failatlas.analysis import AnalysisOptions, run_analysis
from failatlas.analysis import pipeline
from failatlas.cli import main
from failatlas.models.classifier import ClassifierConfig, build_classifier, save_classifier
from failatlas.models.stylegan2 import save_generator
from failatlas.report.html import render_report

N = "200"
ODD = "cls-<i>b&'q"  # a folder name that must be escaped in the report


@pytest.fixture(scope="module")
def models(tmp_path_factory, G):
    """The tiny generator, two random 10-class paper CNNs (the second in an awkwardly named folder) and a
    7-class one, saved in folders."""
    root = tmp_path_factory.mktemp("analyze-models")
    save_generator(G, root / "generator")
    paths = {}
    for seed, name in ((1, "cls-a"), (2, ODD)):
        torch.manual_seed(seed)
        cfg = ClassifierConfig()
        save_classifier(build_classifier(cfg), cfg, root / name)
        paths[name] = root / name
    cfg7 = ClassifierConfig(num_classes=7)
    save_classifier(build_classifier(cfg7), cfg7, root / "cls7")
    return {"generator": root / "generator", "a": paths["cls-a"], "b": paths[ODD], "c7": root / "cls7"}


def _options(models, **kw) -> AnalysisOptions:
    base = dict(generator=str(models["generator"]), classifiers=(str(models["a"]), str(models["b"])), n=int(N),
                seed=6, quick=True, threads=1, verbose=False, progress_bar=False)
    return AnalysisOptions(**{**base, **kw})


def _cli(models, out, *extra) -> list[str]:
    return ["analyze", "--generator", str(models["generator"]), "--classifier", str(models["a"]), "--classifier",
            str(models["b"]), "--n", N, "--seed", "6", "--quick", "--skip-tsne", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def first(tmp_path_factory, models):
    """One quick run with t-SNE and a small bootstrap, through the library."""
    out = tmp_path_factory.mktemp("analyze-run") / "run"
    return run_analysis(_options(models, bootstrap=20, corner_step=2.5, margin_starts=3), out)


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if not line.startswith("failatlas analyze: [")]


def test_run_writes_every_expected_file(first):
    out = first.out
    names = {p.name for p in out.iterdir()}
    classes = sorted({int(c) for c in first.corner_cases.labels.tolist()})[:3]
    expected = {"population.npz", "ranking.csv", "ranking.json", "ranking-cls-a.csv", f"ranking-{first.classifiers[1].name}.csv",
                "separation.csv", f"separation-{first.classifiers[1].name}.csv", "corner_cases.csv", "corner_cases.json", "curves.csv", "curves.json", "overlap.csv",
                "overlap.json", "tsne.json", "summary.json", "manifest.json", "report.html", "failure_direction.json",
                "margins.csv"}
    figures = {"separation", "tsne", "corner_gallery", "accuracy_curves", "accuracy_curves_per_class", "overlap",
               "failure_direction_walk", "margins",
               *(f"manipulation-class{c}" for c in classes)}
    expected |= {f"{f}.png" for f in figures} | {f"{f}.json" for f in figures}
    assert names == expected
    assert first.classifiers[1].name == "cls-_i_b__q"  # the display name is made file-safe
    assert set(first.files) == names and all(p.parent == out for p in first.files.values())
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    assert (out / "ranking.csv").read_bytes() == (out / "ranking-cls-a.csv").read_bytes()
    assert first.corner_cases.step == 2.5  # --corner-step reaches the search
    assert json.loads((out / "manifest.json").read_text())["options"]["corner_step"] == 2.5
    for info in first.classifiers:  # every classifier with gradients gets bootstrap intervals, not only the first
        ranking = first.rankings[info.name]
        assert ranking.bootstrap == 20 and ranking.ci_low is not None
        assert bool((ranking.ci_low <= ranking.ci_high).all())
        row = (out / f"ranking-{info.name}.csv").read_text().splitlines()[1].split(",")
        assert row[-2] and row[-1]  # ci_low, ci_high filled in
    assert len(classes) == len(first.grids) >= 1
    # the margins (3 starts per class; none by default with --quick), searched with the run's --corner-step
    m = first.margins
    assert m.per_class == 3 and m.step == 2.5 and m.dims == tuple(first.rankings["cls-a"].order[:10].tolist())
    assert json.loads((out / "summary.json").read_text())["margins"]["starts"] == m.index.numel() > 0
    assert json.loads((out / "manifest.json").read_text())["options"]["margin_starts"] == 3
    assert "Margins (beyond the paper)" in (out / "report.html").read_text()
    table = (out / "curves.csv").read_text().splitlines()
    assert table[0].startswith("classifier,class,bin") and {r.split(",")[0] for r in table[1:]} == set(first.curves)


def test_summary_has_the_required_keys_and_types(first):
    s = json.loads((first.out / "summary.json").read_text())
    assert isinstance(s["separation"]["top10_mean_ks"], float) and isinstance(s["separation"]["random10_mean_ks"], float)
    by = s["separation"]["by_classifier"]
    assert list(by) == ["cls-a", "cls-_i_b__q"]  # primary first, each with its own ranking and well/mis split
    assert {k: v for k, v in by["cls-a"].items()} == {k: v for k, v in s["separation"].items() if k != "by_classifier"}
    for name, sep in by.items():
        pop = first.populations[name]
        assert (sep["n_well"], sep["n_mis"]) == (pop.n_well, pop.n_mis)
        assert sep["top_dims"] == first.rankings[name].order[:10].tolist()
        assert sep["best10_mean_ks"] >= max(sep["top10_mean_ks"], sep["random10_mean_ks"], sep["all_mean_ks"])
        ld = sep["latent_direction"]  # the one-direction-of-W diagnostic, per classifier, or why there is none
        if ld is None:  # a random classifier gets few samples right: fewer than 10 per half
            assert "at least 10 well- and 10 mis-classified" in sep["latent_direction_error"]
            continue
        assert ld["n_fit"] + ld["n_heldout"] == pop.n and 0 <= ld["ks_heldout"] <= 1
        assert 1 <= ld["dims_for_half"] <= ld["style_dims"] == pop.style_dim
        assert 1 <= ld["style_effective_dims"] <= pop.style_dim
        from failatlas.analysis.direction import effective_dimension  # one population's styles, computed once

        assert ld["style_effective_dims"] == effective_dimension(first.populations["cls-a"].s)
    fitted = {name for name, sep in by.items() if sep["latent_direction"] is not None}
    assert "cls-a" in fitted  # the primary's is drawn (failure_direction_walk.png)
    directions = json.loads((first.out / "failure_direction.json").read_text())
    assert set(directions) == {"note", *fitted} and len(directions["cls-a"]["direction"]) == first.populations["cls-a"].w.shape[1]
    assert "One direction of W" in (first.out / "report.html").read_text()
    assert "independent directions the styles span" in (first.out / "report.html").read_text()
    other = (first.out / f"separation-{first.classifiers[1].name}.csv").read_text().splitlines()
    assert len(other) == 1 + first.populations["cls-_i_b__q"].style_dim
    cc = s["corner_cases"]
    assert all(isinstance(cc[k], int) for k in ("pairs", "found", "verified")) and cc["verified"] <= cc["found"] <= cc["pairs"]
    assert set(s["accuracy_curves"]) == {"cls-a", "cls-_i_b__q"}
    for name, curves in s["accuracy_curves"].items():
        c = curves["K100"]
        assert len(c["accuracy"]) == int(first.curves[name].plotted.sum()) > 0
        assert all(a is None or 0.0 <= a <= 1.0 for a in c["accuracy"])
        assert c["mean_accuracy"] is None or isinstance(c["mean_accuracy"], float)
        assert len(c["ci_low"]) == len(c["ci_high"]) == len(c["n"]) == len(c["accuracy"])
        for a, lo, hi, n in zip(c["accuracy"], c["ci_low"], c["ci_high"], c["n"]):
            assert (a is None) == (lo is None) == (hi is None) == (n == 0)
            assert a is None or lo <= a <= hi
        assert c["max_rise"] is None or isinstance(c["max_rise"], float)
        assert c["centre"] == first.curves[name].centre_mode == "class"  # the reading the curve used
    assert "NaN" not in (first.out / "summary.json").read_text()


def test_a_run_folder_is_enough_to_redo_its_separation_and_curves(first, models):
    """README "Working from a run folder": population.npz and ranking.json give back the separation and the
    curves exactly, without the generator's gradients or the classifier."""
    from failatlas.analysis import AccuracyCurve, Population, Ranking, Separation
    from failatlas.models.stylegan2 import load_generator

    pop = Population.from_npz(first.out / "population.npz")
    ranking = Ranking.read_json(first.out / "ranking.json")
    sep = Separation(pop, layout=tuple(load_generator(models["generator"]).style_layout())).compute()
    again = sep.to_csv(first.out.parent / "separation-again.csv")
    assert again.read_bytes() == (first.out / "separation.csv").read_bytes()
    summary = json.loads((first.out / "summary.json").read_text())
    ks = sep.summary(ranking, 10, seed=6)
    assert ks["top10_mean_ks"] == summary["separation"]["top10_mean_ks"]
    curve = AccuracyCurve(ranking, k=summary["accuracy_curves"]["cls-a"]["K100"]["k"]).compute(pop)
    assert curve.mean_accuracy == summary["accuracy_curves"]["cls-a"]["K100"]["mean_accuracy"]


def test_a_run_folders_results_read_back_into_the_results_of_the_run(first, tmp_path, assert_same_result):
    """curves.json, corner_cases.json, ranking.json, tsne.json, overlap.json and failure_direction.json read
    back into the run's own results, and the figures drawn from them are the run's, bit for bit: a run folder
    can be re-plotted without the models (the corner gallery renders styles: it takes the generator)."""
    from failatlas.analysis import (ClassOverlap, CornerCases, CurveResult, FailureDirectionResult, Ranking,
                                    TSNEResult, read_curves)
    from failatlas.report.curves_figures import plot_accuracy_curves, plot_accuracy_curves_per_class

    curves = read_curves(first.out / "curves.json")
    assert list(curves) == list(first.curves)
    for name, curve in first.curves.items():
        assert_same_result(curve, curves[name])
    assert_same_result(first.curves[first.primary], CurveResult.read_json(first.out / "curves.json",
                                                                          classifier=first.primary))
    assert_same_result(first.corner_cases, CornerCases.read_json(first.out / "corner_cases.json"))
    assert_same_result(first.rankings[first.primary], Ranking.read_json(first.out / "ranking.json"))
    assert_same_result(first.tsne, TSNEResult.read_json(first.out / "tsne.json"))  # the figures' data: the results
    assert_same_result(first.overlap, ClassOverlap.read_json(first.out / "overlap.json"))
    direction = FailureDirectionResult.read_json(first.out / "failure_direction.json", classifier=first.primary)
    assert direction.summary() == json.loads((first.out / "summary.json").read_text())["separation"][
        "by_classifier"][first.primary]["latent_direction"]
    plot_accuracy_curves(curves, tmp_path / "accuracy_curves.png")
    plot_accuracy_curves_per_class({n: c for n, c in curves.items() if c.per_class},
                                   tmp_path / "accuracy_curves_per_class.png", class_names=first.class_names)
    for name in ("accuracy_curves.png", "accuracy_curves.json", "accuracy_curves_per_class.png",
                 "accuracy_curves_per_class.json"):
        assert (tmp_path / name).read_bytes() == (first.out / name).read_bytes(), name


def test_class_names_and_grid_cells_failing_early_reach_the_run(models, tmp_path, monkeypatch):
    """A classifier that records class names labels the run (summary, report header, corner table, grid
    titles); a grid cell failing short of its corner shift (made here by the wrapped grid) gets the note."""
    import dataclasses

    from failatlas.models.classifier import load_classifier

    names = tuple(f"item{i}" for i in range(10))
    C = load_classifier(models["a"])
    save_classifier(C, dataclasses.replace(C.config, class_names=names), tmp_path / "named")
    real_grid = pipeline.manipulation_grid

    def flagged(*args, **kw):
        grid = real_grid(*args, **kw)
        return dataclasses.replace(grid, earlier_failures=((grid.dims[0], 0.4, 0.25),))

    monkeypatch.setattr(pipeline, "manipulation_grid", flagged)
    run = run_analysis(_options(models, classifiers=(str(tmp_path / "named"),), skip_tsne=True), tmp_path / "run")
    assert run.class_names == names and run.summary["class_names"] == list(names)
    text = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "0 item0, 1 item1" in text
    grids = [f.title for f in run.figures if f.file.startswith("manipulation-class")]
    assert grids and all(re.search(r"class (\d) \(item\1\)", t) for t in grids)
    (note,) = [n for n in run.notes if n.startswith("the manipulation grids show p_y ≤ 0.5 short of")]
    for g in run.grids:
        t = 0.4 * g.directions[0] * g.base_shifts[0]
        assert f"class {g.cls} (item{g.cls}) dim {g.dims[0]} at 0.4 × ({t:+.2f}σ, p_y 0.250)" in note
        assert f"the grid shows p_y 0.250 already at {t:+.2f}σ: a nearer corner case" in text  # its table row
    assert f"short of {len(run.grids)} corner shift(s)" in note and "--corner-step" in note
    skipped = run.curves["named"].skipped_classes  # classes without a panel are named, with their names
    assert skipped, "the random classifier gets some class almost never right"
    (note,) = [n for n in run.notes if n.startswith("named has no per-class accuracy curve")]
    assert all(f"{c} (item{c})" in note for c in skipped)


def test_class_names_reach_the_report_when_a_classifier_records_them(first):
    """Fashion-MNIST's names (recorded by the classifier) label the classes in the report; MNIST's digits,
    named by their own indices, add nothing."""
    import dataclasses
    from types import SimpleNamespace

    from failatlas.analysis.pipeline import class_names

    fashion = tuple(f"item{i}" for i in range(10))
    digits = SimpleNamespace(config=SimpleNamespace(class_names=tuple(map(str, range(10)))))
    named = SimpleNamespace(config=SimpleNamespace(class_names=fashion))
    assert class_names(digits) is None and class_names(named) == fashion
    from failatlas.data.datasets import FASHION_CLASSES  # an ONNX file records no names: the generator's data

    assert class_names(object(), dataset="fashion") == FASHION_CLASSES
    assert class_names(object(), dataset="fashion-mnist") == FASHION_CLASSES  # a generator trained under that name
    assert class_names(digits, dataset="mnist") is None
    assert class_names(named, dataset="fashion") == fashion  # the classifier's own names come first
    assert first.class_names is None and first.summary["class_names"] is None  # random CNNs without names
    text = render_report(dataclasses.replace(first, class_names=fashion))
    row = next(r for r in first.corner_cases.rows if r.found)
    assert f"<td>{row.cls} (item{row.cls})</td>" in text.replace(' class="l"', "")  # the corner table


def test_manifest_has_versions_seeds_checksums_and_timings(first, models):
    m = json.loads((first.out / "manifest.json").read_text())
    assert {"failatlas", "torch", "numpy", "python"} <= set(m["versions"]) and m["versions"]["torch"] == torch.__version__
    assert m["seeds"]["population"] == 6 and m["options"]["n"] == 200 and m["options"]["quick"] is True
    gen = m["models"]["generator"]["sha256"]
    assert gen["generator.safetensors"] == _io.sha256(models["generator"] / "generator.safetensors")
    cls = m["models"]["classifiers"]
    assert [c["name"] for c in cls] == ["cls-a", "cls-_i_b__q"] and m["models"]["primary"] == "cls-a"
    assert cls[1]["sha256"]["model.safetensors"] == _io.sha256(models["b"] / "model.safetensors")
    assert set(m["timings"]) == set(pipeline.STAGES) and all(t >= 0 for t in m["timings"].values())
    assert m["files"] == sorted(p.name for p in first.out.iterdir())
    # each file's sha256 but the manifest's and the report's (which shows the manifest): an edit shows
    assert m["file_sha256"] == {name: _io.sha256(first.out / name) for name in m["files"]
                                if name not in ("manifest.json", "report.html")}


def test_the_manifest_command_reruns_the_run(first, models, tmp_path, capsys):
    """A run redone from its manifest alone: the command it records (every option spelled out, the models
    by absolute path) writes the same files, byte for byte, but for the timings and dates."""
    import shlex

    from failatlas import _provenance

    m = json.loads((first.out / "manifest.json").read_text())
    assert m["versions"]["failatlas_source_sha256"] == _provenance.source_sha256()
    assert m["options"]["batch_size"] == 64  # the batch size chosen on the CPU, not null
    argv = shlex.split(m["command"], comments=True)
    assert argv[:2] == ["failatlas", "analyze"] and argv[argv.index("--out") + 1] == str(first.out.absolute())
    assert argv[argv.index("--generator") + 1] == str(models["generator"].resolve())
    again = tmp_path / "again"
    argv[argv.index("--out") + 1] = str(again)
    assert main(argv[1:]) == 0, capsys.readouterr().err
    redone = json.loads((again / "manifest.json").read_text())
    assert redone["options"] == {**m["options"], "verbose": True, "progress_bar": None}  # the CLI's own
    assert redone["command"] == m["command"].replace(shlex.quote(str(first.out.absolute())), shlex.quote(str(again)))
    names = sorted(p.name for p in first.out.iterdir())
    assert sorted(p.name for p in again.iterdir()) == names
    differ = [n for n in names if (first.out / n).read_bytes() != (again / n).read_bytes()]
    assert differ == ["manifest.json", "report.html"]


def test_the_command_names_shipped_models_and_library_only_options(models):
    """A shipped model keeps its name (it is found again on another machine, and its sha256 says whether it
    is the same model); options without a flag are named after the command."""
    from failatlas._paths import shipped_model

    gen = pipeline.model_info("mnist/generator", shipped_model("mnist/generator"), "generator", folder=True)
    cls = pipeline.model_info(str(models["a"]), models["a"], "cls-a")
    options = AnalysisOptions(n=300, quick=True, skip_tsne=True, grid_classes=5)
    cmd = pipeline.rerun_command(options, "rel/run", gen, [cls])
    assert cmd.startswith(f"failatlas analyze --generator mnist/generator --classifier {models['a'].resolve()} "
                          "--n 300 --seed 0 --k 100 --curve-centre class --corner-step 5.0 --black-box-n 64 "
                          "--bootstrap 0 --margin-starts 0 --quick --skip-tsne --threads 1 --out ")
    assert cmd.endswith(f"--out {Path('rel/run').absolute()}  # --out: name a new folder (this one holds the run); "
                        "and grid_classes=5 (no flag: set in the library)")


def test_report_is_self_contained_escaped_and_drawn_from_the_results(first):
    text = (first.out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    sources = re.findall(r"""\bsrc\s*=\s*["']?([^"'\s>]{0,22})""", text, flags=re.IGNORECASE)
    assert sources and all(src == "data:image/png;base64," for src in sources)
    assert not re.search(r"<(script|link|iframe|object|embed)\b", text) and "url(" not in text
    pngs = [p for p in first.out.iterdir() if p.suffix == ".png"]
    assert text.count("<img") == len(pngs) == len(first.figures)
    files = [f.file for f in first.figures]  # the paper's order: Fig. 3 (t-SNE) before Fig. 4 (separation)
    assert files[:2] == ["tsne.png", "separation.png"] and text.index("(Fig. 3)") < text.index("(Fig. 4)")
    assert ODD not in text and html_escaped(ODD) in text  # the path of the odd folder, escaped
    for needle in ("How to read this report", "Corner cases", "Ranking (top 20)", "Accuracy vs distance",
                   "Shared dimensions", "Manifest", "top vs random", "unweighted mean of the bins' accuracies"):
        assert needle in text
    assert "top10 mean ks" not in text  # summary rows in words, not field names
    # every found corner case with its signed shift, its probabilities to 4 decimals (more where 4 would
    # read 0.5000) and the class predicted there
    from failatlas.report.figures import format_p

    for r in first.corner_cases.rows:
        if r.found and not r.at_start:
            assert (f"<td>{html_escaped(r.signed_shifts())}</td><td>{format_p(r.p_before, 4)}</td>"
                    f"<td>{format_p(r.p_at_shift, 4)}</td><td>{r.pred_verified}</td>") in text
    assert "mean KS of a dimension that does not separate at all" in text and "predicted as another class" in text
    if any(sum(c.not_plotted()[k] for k in ("n_well", "n_mis")) for c in first.curves.values()):
        assert "not plotted: 1 and beyond, or below 0" in text
    assert render_report(first) == text  # re-rendered from the objects alone: the same page


def html_escaped(s: str) -> str:
    import html

    return html.escape(s, quote=True)


def test_existing_out_is_refused_then_replaced_with_overwrite_same_seed_same_ranking(first, models, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("keep me unless --overwrite")
    rc = main(_cli(models, out))
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("failatlas: error: ")
    assert "--overwrite" in err and (out / "old.txt").exists()
    rc = main(_cli(models, out, "--overwrite", "--bootstrap", "20", "--margin-starts", "0"))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert not (out / "old.txt").exists() and not (out / "tsne.png").exists()
    assert (out / "ranking.csv").read_bytes() == (first.out / "ranking.csv").read_bytes()
    assert "corner cases:" in captured.out and "[10/10] overlap done" in captured.err
    # --margin-starts 0: no margins, said so
    assert "[7/10] margins skipped (--margin-starts 0)" in captured.err and "margins:" not in captured.out
    assert not list(out.glob("margins*")) and json.loads((out / "summary.json").read_text())["margins"] is None
    assert not [p for p in tmp_path.iterdir() if p.name != "run"]  # no staging or old-run folder left


def test_a_failure_midway_leaves_no_run_folder(models, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("stage failed")

    monkeypatch.setattr(pipeline, "manipulation_grid", boom)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="stage failed"):
        run_analysis(_options(models, skip_tsne=True), out)
    assert list(tmp_path.iterdir()) == []
    out.mkdir()  # an existing run survives a failed --overwrite
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        run_analysis(_options(models, skip_tsne=True, overwrite=True), out)
    assert [p.name for p in tmp_path.iterdir()] == ["run"] and (out / "old.txt").read_text() == "old"


def test_sigterm_midway_cleans_up_like_ctrl_c(models, tmp_path, monkeypatch, capsys):
    """`kill` (SIGTERM) during a run: the command says so, exits 143 and leaves no staging folder."""
    import os
    import signal

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(pipeline, "manipulation_grid", terminated)
    before = signal.getsignal(signal.SIGTERM)
    rc = main(_cli(models, tmp_path / "run"))
    assert rc == 143 and capsys.readouterr().err.strip().endswith("failatlas: terminated")
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the command's only while it runs


def test_cli_classifier_with_other_class_count_is_one_line(models, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["analyze", "--generator", str(models["generator"]), "--classifier", str(models["a"]),
               "--classifier", str(models["c7"]), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "cls7" in err and "7 classes" in err and "generator" in err and "10" in err
    assert not out.exists()


def test_cli_population_too_small_is_one_clear_line(models, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["analyze", "--generator", str(models["generator"]), "--classifier", str(models["a"]), "--n", "3",
               "--seed", "6", "--skip-tsne", "--out", str(out)])
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("failatlas: error: ")
    assert "separation needs both groups" in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_rejects_unknown_options_and_bad_values(models, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--out", str(tmp_path / "x"), "--no-such-option"])
    assert exc.value.code == 2
    rc = main(_cli(models, tmp_path / "x", "--k", "100000"))
    err = capsys.readouterr().err
    assert rc == 2 and "--k 100000" in err and not (tmp_path / "x").exists()
    with pytest.raises(FailatlasError, match="--n must be"):
        run_analysis(_options(models, n=0), tmp_path / "y")
    for bad in ("0", "nan", "1000"):
        rc = main(_cli(models, tmp_path / "x", "--corner-step", bad))
        err = capsys.readouterr().err
        assert rc == 2 and "--corner-step must be a number of σ between 0.01" in err, err
    rc = main(_cli(models, tmp_path / "x", "--bootstrap", "-1"))
    err = capsys.readouterr().err
    assert rc == 2 and "--bootstrap must be an integer ≥ 0, got -1" in err and not (tmp_path / "x").exists()
    rc = main(_cli(models, tmp_path / "x", "--margin-starts", "-2"))
    err = capsys.readouterr().err
    assert rc == 2 and "--margin-starts must be an integer ≥ 0, got -2" in err and not (tmp_path / "x").exists()
    with pytest.raises(FailatlasError, match="--curve-centre must be one of class, global"):
        run_analysis(_options(models, curve_centre="median"), tmp_path / "y")
    rc = main(_cli(models, tmp_path / "x", "--black-box-n", "0"))
    err = capsys.readouterr().err
    assert rc == 2 and "--black-box-n must be a number of samples of at least 2, got 0" in err
    (tmp_path / "file").write_text("")
    with pytest.raises(FailatlasError, match="is a file"):
        run_analysis(_options(models), tmp_path / "file")


def test_more_threads_than_torch_can_start_are_refused_before_any_work(one_error):
    """--threads 100000 crashed the process (segmentation fault in torch's thread pool, exit 139); train-gan
    and the engine already took at most 4096."""
    one_error(lambda: AnalysisOptions(threads=100000).check(), "--threads must be at most 4096", "got 100000")
    AnalysisOptions(threads=4096).check()


def test_defaults_follow_quick():
    full, quick = AnalysisOptions(), AnalysisOptions(quick=True)
    assert full.classifier_list == ("mnist/classifier-corrupted", "mnist/classifier-clean")
    assert (full.population_size, full.bootstrap_resamples, full.tsne_max_points, full.grid_class_limit) == \
        (10000, 200, 2000, None)
    assert (quick.population_size, quick.bootstrap_resamples, quick.tsne_max_points, quick.grid_class_limit) == \
        (2000, 0, 500, 3)
    assert (full.margin_starts_per_class, quick.margin_starts_per_class) == (10, 0)
    assert AnalysisOptions(quick=True, margin_starts=4).margin_starts_per_class == 4
    assert AnalysisOptions(quick=True, margin_starts=0).margin_starts_per_class == 0
    assert AnalysisOptions(quick=True, n=300).population_size == 300


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Chromium is not installed")
def test_report_renders_in_headless_chromium(first, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,3000", (first.out / "report.html").as_uri()], check=True, timeout=120,
                   capture_output=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def onnx_path(models, tmp_path_factory):
    """The export of classifier a as an .onnx file."""
    from failatlas.deploy import export_classifier_onnx
    from failatlas.models.classifier import load_classifier

    return export_classifier_onnx(load_classifier(models["a"]), tmp_path_factory.mktemp("onnx") / "cls-a.onnx")


def test_an_onnx_classifier_is_analysed_like_a_torch_one(models, onnx_path, tmp_path):
    """An .onnx classifier (here the export of classifier a) goes through the whole job: same labels as its
    torch original, a black-box ranking that agrees with the gradient one at the top, its own curve."""
    run = run_analysis(_options(models, classifiers=(str(models["a"]), str(onnx_path)), skip_tsne=True,
                                bootstrap=10), tmp_path / "run")
    assert run.rankings["cls-a"].ci_low is not None and run.rankings["cls-a.onnx"].ci_low is None
    summary = json.loads((run.out / "summary.json").read_text())
    acc = summary["population"]["accuracy"]
    assert acc["cls-a"] == acc["cls-a.onnx"]
    grad = (run.out / "ranking-cls-a.csv").read_text().splitlines()[1:11]
    box = (run.out / "ranking-cls-a.onnx.csv").read_text().splitlines()[1:11]
    top = lambda rows: {r.split(",")[1] for r in rows}  # noqa: E731  (column 2: dim)
    assert len(top(grad) & top(box)) >= 6  # black-box on 64 samples vs gradients on all 200
    assert "cls-a.onnx" in summary["accuracy_curves"]


def test_an_onnx_classifier_alone_gets_a_run_without_the_class_overlap(models, onnx_path, tmp_path):
    """The class overlap needs per-class rankings, which a finite-difference ranking of 64 samples cannot give:
    the stage is skipped and said so (it used to fail after the ranking, advising an option analyze lacks)."""
    run = run_analysis(_options(models, classifiers=(str(onnx_path),), skip_tsne=True), tmp_path / "run")
    summary = json.loads((run.out / "summary.json").read_text())
    assert run.overlap is None and summary["overlap"] is None
    assert any(n.startswith("no class overlap: cls-a.onnx has no per-class rankings") for n in run.notes)
    assert not (run.out / "overlap.csv").exists() and not (run.out / "overlap.png").exists()
    html = (run.out / "report.html").read_text()
    assert "no class overlap" in html and "Shared dimensions across classes" not in html


def test_real_accuracy_of_each_classifier_gives_the_context_and_flags_a_misread_input(models, tmp_path):
    """analyze measures each classifier on the real test split of the generator's training data (its
    config.json → training); a classifier that gets under half of the real clean images right is named."""
    import shutil

    from failatlas.analysis.pipeline import real_accuracy
    from failatlas.models.classifier import load_classifier
    from failatlas.training.classifier import evaluate_classifier

    folder = tmp_path / "g"
    shutil.copytree(models["generator"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["training"] = {"dataset": "mnist", "blur": "paper"}
    (folder / "config.json").write_text(json.dumps(config))
    C = load_classifier(models["a"])
    real, notes = real_accuracy(folder, {"cls-a": C})
    want = evaluate_classifier(C, dataset="mnist", on="corrupted")["accuracy"]
    assert real["dataset"] == "mnist10k" and real["classifiers"]["cls-a"]["corrupted"] == want
    assert real["classifiers"]["cls-a"]["clean"] < 0.5  # a random CNN: named as probably misreading its input
    assert len(notes) == 1 and notes[0].startswith("cls-a gets") and "README: your own classifier" in notes[0]
    config["training"] = {}
    (folder / "config.json").write_text(json.dumps(config))
    assert real_accuracy(folder, {"cls-a": C}) == (
        None, ["no accuracy on real test images: the generator's config.json names no training dataset"])


def test_a_generator_whose_images_the_classifier_does_not_recognise_is_named():
    """A classifier right on under half as many generated samples as real ones (the lower of clean and
    corrupted) maps the generator's flaws: the run says so and names eval-gan (an untrained generator once gave
    a confident-looking run with 0.055 accuracy and no word about it)."""
    from failatlas.analysis.pipeline import unrecognised_generator

    real = {"dataset": "mnist10k", "classifiers": {"good": {"clean": 0.99, "corrupted": 0.98},
                                                    "clean-only": {"clean": 0.99, "corrupted": 0.588}}}
    assert unrecognised_generator(real, {"good": 0.9588, "clean-only": 0.5224}) == []  # the shipped pair
    assert unrecognised_generator(None, {"good": 0.0}) == []
    notes = unrecognised_generator(real, {"good": 0.055, "clean-only": 0.25})
    assert len(notes) == 2
    assert notes[0].startswith("good gets only 0.055 of the generated samples right, against 0.980 or more of the "
                               "real test images of mnist10k") and "failatlas eval-gan" in notes[0]
    assert notes[1].startswith("clean-only gets only 0.250") and "against 0.588 or more" in notes[1]


def test_the_printed_curve_line_counts_what_the_bins_hold(first):
    """The printed accuracy-curve line says how many samples its plotted bins hold and how many lie beyond
    them: a curve of a few samples (or of none mis-classified) does not read as a robust classifier."""
    text = first.format()
    for name, curve in first.curves.items():
        rest = curve.not_plotted()
        inside = int(curve.n_well[curve.plotted].sum() + curve.n_mis[curve.plotted].sum())
        assert inside + rest["n_well"] + rest["n_mis"] == first.populations[name].n
        line = next(x for x in text.splitlines() if x.startswith(f"accuracy curve (K={first.k}) {name}:"))
        assert line.endswith(f"; {inside} samples in the plotted bins, {rest['n_well'] + rest['n_mis']} beyond "
                             f"them ({rest['n_mis']} mis-classified)")


def test_a_generator_without_its_training_data_is_said_so(first):
    """The test generator is saved without a training record: no real accuracy, and the run says why."""
    assert first.summary["real_accuracy"] is None
    assert "no accuracy on real test images: the generator's config.json names no training dataset" in first.notes
    assert "accuracy on the real test images" not in (first.out / "report.html").read_text()


def test_a_classifier_trained_on_other_data_than_the_generator_is_noted(tmp_path):
    """Both models record their training data: a pair from different datasets gets a note (and the note
    stays when the generator's data cannot be loaded here)."""
    from failatlas.analysis import real_accuracy
    from failatlas.models.classifier import ClassifierConfig, build_classifier

    (tmp_path / "config.json").write_text(json.dumps({"training": {"dataset": "toy", "idx_dir": "/nowhere"}}))
    mnist = build_classifier(ClassifierConfig(training={"dataset": "mnist", "idx_dir": None})).eval()
    same = build_classifier(ClassifierConfig(training={"dataset": "toy", "idx_dir": "/nowhere"})).eval()
    result, notes = real_accuracy(tmp_path, {"m": mnist, "t": same})
    assert result is None and len(notes) == 2
    assert notes[0] == ("m was trained on mnist but the generator on toy (/nowhere): it is judged on images of "
                        "data it was not trained for")
    assert notes[1].startswith("no accuracy on real test images of toy")


def test_classes_restrict_the_population_and_everything_per_class(models, tmp_path, capsys):
    """--classes 2 5: every sample, corner start, grid, per-class curve and per-class ranking is of those
    classes, and the summary, the report and the printed line say so."""
    out = tmp_path / "run"
    rc = main(_cli(models, out, "--classes", "5", "2"))
    captured = capsys.readouterr()
    printed = captured.out
    assert rc == 0 and "(seed 6, classes 2, 5)" in printed
    assert "margins skipped (--quick; --margin-starts M runs them)" in captured.err
    import numpy as np

    with np.load(out / "population.npz") as z:
        assert set(np.unique(z["y"]).tolist()) == {2, 5}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["population"]["classes"] == [2, 5]
    corners = json.loads((out / "corner_cases.json").read_text())
    assert {r["cls"] for r in corners["cases"]} | set(corners["skipped_classes"]) == {2, 5}  # no other class
    assert json.loads((out / "overlap.json").read_text())["classes"] == [2, 5]
    assert {p.name for p in out.glob("manipulation-class*.png")} <= {"manipulation-class2.png",
                                                                     "manipulation-class5.png"}
    assert json.loads((out / "manifest.json").read_text())["options"]["classes"] == [2, 5]
    assert "only classes 2, 5" in (out / "report.html").read_text()


def test_bad_classes_are_one_line_before_any_work(models, tmp_path, capsys):
    for bad in (["10"], ["3", "3"], ["-1"]):
        rc = main(_cli(models, tmp_path / "x", "--classes", *bad))
        lines = _error_lines(capsys.readouterr().err)
        assert rc == 2 and len(lines) == 1 and "the classes (--classes) must be distinct class labels" in lines[0], lines
        assert not (tmp_path / "x").exists()
    with pytest.raises(FailatlasError, match=r"the classes \(--classes\) must be distinct class labels \(indices: 0, 1, …\) ≥ 0, got \[\]"):
        run_analysis(_options(models, classes=()), tmp_path / "y")


def test_p_y_never_rounds_to_one_half_on_the_wrong_side():
    from failatlas.report.figures import format_p

    assert format_p(0.49996) == "0.49996" and format_p(0.500004, 4) == "0.500004"
    assert format_p(0.5) == "0.500" and format_p(0.4321) == "0.432" and format_p(None) == "–"
    assert format_p(float("nan")) == "–"

