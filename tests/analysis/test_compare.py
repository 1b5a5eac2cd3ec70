"""failatlas compare: agreement, curves and corner shifts side by side on one population."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from failatlas import FailatlasError, _io
from failatlas.analysis.compare import compare_classifiers, run_compare


def test_compare_same_predictions_different_confidence(G, C, sharp_classifier, population):
    import copy

    soft = copy.deepcopy(sharp_classifier)
    soft.gain = 3.0
    cmp = compare_classifiers(G, {"sharp": sharp_classifier, "soft": soft}, population=population, k=4, seed=0)
    assert cmp.names == ("sharp", "soft") and cmp.n == population.n
    assert cmp.agreement["sharp"]["soft"] == 1.0 and cmp.accuracy["sharp"] == cmp.accuracy["soft"]
    assert len(cmp.dims) == 4 and len(cmp.classes) >= 1
    rows = cmp.shift_rows()
    assert len(rows) == 4 * len(cmp.classes)
    assert any(r["shift[sharp]"] is not None for r in rows)
    for r in rows:
        a, b = r["shift[sharp]"], r["shift[soft]"]
        if a is not None and b is not None:
            assert r["difference[soft]"] == pytest.approx(b - a)
            assert r["fails_first"] == ("sharp" if a <= b else "soft")
    js = cmp.to_json()
    assert js["ranking_method"] == {"sharp": "gradient", "soft": "gradient"}
    assert set(js["mean_shift_by_dim"]) == {"sharp", "soft"}
    with pytest.raises(FailatlasError, match="at least two classifiers"):
        compare_classifiers(G, {"one": sharp_classifier}, population=population)


def test_run_compare_torch_against_its_onnx_torchscript_and_torch_export_files(G, tmp_path, capfd):
    from failatlas.deploy import export_classifier_onnx, export_classifier_program, export_classifier_torchscript
    from failatlas.models.classifier import ClassifierConfig, build_classifier, save_classifier
    from failatlas.models.stylegan2 import save_generator

    save_generator(G, tmp_path / "g")
    config = json.loads((tmp_path / "g" / "config.json").read_text())  # as train-gan records its data
    (tmp_path / "g" / "config.json").write_text(json.dumps({**config, "training": {"dataset": "mnist"}}))
    torch.manual_seed(5)
    cfg = ClassifierConfig()
    model = build_classifier(cfg).eval()
    save_classifier(model, cfg, tmp_path / "c")
    onnx = export_classifier_onnx(model, tmp_path / "c.onnx")
    files = [export_classifier_torchscript(model, tmp_path / "c.pt"), export_classifier_program(model, tmp_path / "c.pt2")]
    run = run_compare(tmp_path / "g", [str(tmp_path / "c"), str(onnx), *map(str, files)], out=tmp_path / "cmp", n=160,
                      seed=1, k=3)
    names = run.comparison.names
    assert names == ("c", "c.onnx", "c.pt", "c.pt2")
    for name in ("c.pt", "c.pt2"):  # deployed as TorchScript / torch.export: differentiated like the folder's model
        assert run.comparison.agreement["c"][name] == 1.0 and run.comparison.rankings[name].method == "gradient"
        assert torch.allclose(run.comparison.rankings[name].score, run.comparison.rankings["c"].score, rtol=1e-5)
    done = [line for line in capfd.readouterr().err.splitlines()
            if line.startswith("failatlas compare: [") and " done in " in line]
    assert [line.split("] ")[1].split(" done")[0] for line in done] == \
        ["population", "labels", "rankings", "curves", "corner cases", "real test images"]
    assert [line.split("]")[0][-3:] for line in done] == [f"{i}/6" for i in range(1, 7)]  # one count for all
    assert run.comparison.agreement["c"]["c.onnx"] == 1.0
    assert run.comparison.rankings["c.onnx"].method == "black-box"
    # the bar for the black-box ranking of a float classifier, on the same samples
    agree = run.comparison.black_box_agreement["c.onnx"]
    assert agree["reference"] == "c" and agree["top_overlap"] >= 8 and agree["spearman"] >= 0.9
    for f in ("compare.json", "corner_shifts.csv", "corner_shifts.png", "corner_shifts.json", "report.html"):
        assert (tmp_path / "cmp" / f).is_file(), f
    from failatlas.analysis.compare import COMPARE_FILES  # the names checked up front are the ones written
    assert sorted(COMPARE_FILES) == sorted(p.name for p in (tmp_path / "cmp").iterdir())
    js = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert {c["centre"] for c in js["curves"].values()} == {"class"}  # the reading every curve used
    # every deployed form on the real test split: the same weights, the same accuracy (a random CNN: named)
    real = js["real_accuracy"]["classifiers"]
    assert real == run.real_accuracy["classifiers"] and len({json.dumps(r) for r in real.values()}) == 1
    assert js["notes"][0].startswith("c gets") and "real mnist10k test, clean / corrupted" in \
        (tmp_path / "cmp" / "report.html").read_text()
    bars = json.loads((tmp_path / "cmp" / "corner_shifts.json").read_text())
    assert bars["directions"] == js["directions"] and set(bars["directions"]) <= {-1, 1}
    # the same weights: corner shifts agree to the search's tolerance wherever both found one
    for i in range(len(js["classes"])):
        for j in range(len(js["dims"])):
            a, b = js["shifts"]["c"][i][j], js["shifts"]["c.onnx"][i][j]
            if a is not None and b is not None:
                assert abs(a - b) <= 0.01 + 1e-9
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 1 and "Corner shifts side by side" in html
    # every curve along the reference's dimensions (the ONNX file's own, black-box ranking differs): the
    # same weights give the same curve
    curves = run.comparison.curves
    assert js["curve_dims"] == "reference" and all(c.dims == curves["c"].dims for c in curves.values())
    assert torch.equal(curves["c.onnx"].accuracy.nan_to_num(-1), curves["c"].accuracy.nan_to_num(-1))
    assert "along the top 100 dimensions of c&#x27;s ranking" in html
    # which files were compared, with their checksums (two exports may share a file name)
    models = js["models"]["classifiers"]
    assert [m["name"] for m in models] == list(names) and models[1]["path"] == str(onnx.resolve())
    assert models[1]["sha256"] == {"c.onnx": _io.sha256(onnx)} and js["models"]["generator"]["sha256"]
    assert _io.sha256(onnx)[:16] in html


def test_compare_curves_along_each_ones_own_dimensions(G, C, tmp_path):
    from failatlas.analysis.population import sample_population

    import copy

    pop = sample_population(G, C, 120, seed=0)
    other = copy.deepcopy(C)  # nearly the same predictions (common starts), another ranking
    with torch.no_grad():
        other.fc2.weight.add_(0.05 * torch.randn(other.fc2.weight.shape, generator=torch.Generator().manual_seed(1)))
    cmp = compare_classifiers(G, {"a": C, "b": other}, population=pop, k=2, curve_dims="own")
    assert cmp.curve_dims == "own" and cmp.to_json()["curve_dims"] == "own"
    assert cmp.curves["b"].dims == tuple(cmp.rankings["b"].order[:100].tolist()) != cmp.curves["a"].dims
    with pytest.raises(FailatlasError, match="--curve-dims must be 'reference'"):
        compare_classifiers(G, {"a": C, "b": other}, population=pop, k=2, curve_dims="mine")


def test_cli_compare_needs_two_classifiers(G, tmp_path, capsys):
    from failatlas.cli import main
    from failatlas.models.classifier import ClassifierConfig, build_classifier, save_classifier
    from failatlas.models.stylegan2 import save_generator

    save_generator(G, tmp_path / "g")
    cfg = ClassifierConfig()
    save_classifier(build_classifier(cfg), cfg, tmp_path / "c")
    rc = main(["compare", "--generator", str(tmp_path / "g"), "--classifier", str(tmp_path / "c"),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "at least two classifiers" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_classifier_with_other_classes_is_named(G, C, population, one_error):
    from failatlas.models.classifier import ClassifierConfig, build_classifier

    seven = build_classifier(ClassifierConfig(num_classes=7)).eval()
    one_error(lambda: compare_classifiers(G, {"ten": C, "seven": seven}, population=population),
              "the classifier seven has 7 classes", "generator has 10")


def test_a_curve_figure_left_by_an_earlier_run_is_not_reported(G, C, tmp_path, monkeypatch):
    """compare writes into an existing folder: when this run has no curve, an older accuracy_curves.png
    there must neither be embedded in the new report nor stay beside it."""
    from failatlas.analysis import compare as cmp
    from failatlas.models.classifier import ClassifierConfig, save_classifier
    from failatlas.models.stylegan2 import save_generator

    save_generator(G, tmp_path / "g")
    for name in ("a", "b"):
        save_classifier(C, ClassifierConfig(), tmp_path / name)
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "accuracy_curves.png").write_bytes(b"old figure")
    (out / "accuracy_curves.json").write_text("{}")

    class NoCurve:
        def __init__(self, *args, **kwargs):
            pass

        def compute(self, population):
            raise FailatlasError("no curve")

    monkeypatch.setattr(cmp, "AccuracyCurve", NoCurve)
    run = cmp.run_compare(tmp_path / "g", [str(tmp_path / "a"), str(tmp_path / "b")], out=out, n=60, seed=0, k=2,
                          verbose=False)
    assert not run.comparison.curves
    assert not (out / "accuracy_curves.png").exists() and not (out / "accuracy_curves.json").exists()
    assert "Accuracy against distance" not in (out / "report.html").read_text()


def _earlier_run(G, C, tmp_path):
    """A generator and two classifiers saved under tmp_path (g, a, b), and the --out of an earlier run (cmp)."""
    from failatlas.models.classifier import ClassifierConfig, save_classifier
    from failatlas.models.stylegan2 import save_generator

    save_generator(G, tmp_path / "g")
    for name in ("a", "b"):
        save_classifier(C, ClassifierConfig(), tmp_path / name)
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.json").write_text('{"old": true}')
    return out


def test_a_failure_while_writing_leaves_the_folder_as_it_was(G, C, tmp_path, monkeypatch):
    import failatlas.report.curves_figures as figures
    from failatlas.analysis import compare as cmp

    out = _earlier_run(G, C, tmp_path)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(figures, "plot_accuracy_curves", broken)
    with pytest.raises(OSError, match="disk full"):
        cmp.run_compare(tmp_path / "g", [str(tmp_path / "a"), str(tmp_path / "b")], out=out, n=60, seed=0, k=2,
                        verbose=False)
    assert [p.name for p in out.iterdir()] == ["compare.json"]  # no staging folder, nothing half-replaced
    assert (out / "compare.json").read_text() == '{"old": true}'


def test_a_signal_while_the_files_move_in_waits_for_the_last_one(G, C, tmp_path, monkeypatch):
    """Ctrl-C (or kill) while the staged files are renamed into --out: every file of this run arrives, then the
    interrupt; it used to stop after the first rename, beside an earlier run's compare.json and report."""
    import os
    import signal
    from pathlib import Path

    from failatlas.analysis import compare as cmp

    out = _earlier_run(G, C, tmp_path)
    replace, fired = os.replace, []

    def interrupted_replace(src, dst):
        replace(src, dst)
        if Path(dst).parent == out and not fired:
            fired.append(dst)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        cmp.run_compare(tmp_path / "g", [str(tmp_path / "a"), str(tmp_path / "b")], out=out, n=60, seed=0, k=2,
                        verbose=False)
    assert fired
    record = json.loads((out / "compare.json").read_text())
    assert record["n"] == 60
    # what the rest of the command was given, for a rerun: the batch size is the one chosen (CPU: 64)
    assert record["options"] == {"k": 2, "black_box_n": 64, "batch_size": 64}
    assert record["versions"]["failatlas_source_sha256"]
    # the command that redoes it, run into another folder: the same comparison
    import shlex

    from failatlas.cli import main

    argv = shlex.split(record["command"], comments=True)
    assert argv[:2] == ["failatlas", "compare"] and argv[argv.index("--out") + 1] == str(out.absolute())
    assert argv[argv.index("--batch-size") + 1] == "64" and argv.count("--classifier") == 2
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert main(argv[1:]) == 0
    for name in ("corner_shifts.csv", "corner_shifts.json", "accuracy_curves.json"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    assert {p.name for p in out.iterdir()} >= {"compare.json", "corner_shifts.csv", "report.html"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_ties_and_starts_that_already_fail_are_not_credited():
    """A start one classifier already gets wrong has shift 0 on every dimension; where every classifier is at
    0 nothing is compared (left out of the mean shifts), and equal shifts name no classifier as failing first."""
    from failatlas.analysis.compare import Comparison

    names = ("a", "b")
    shifts = {"a": [[0.0, 0.0], [2.0, 5.0], [0.0, 0.0]],   # class 0: a's start fails; class 2: both fail at start
              "b": [[3.0, None], [2.0, 4.0], [0.0, 0.0]]}
    c = Comparison(names=names, n=10, seed=0, accuracy={"a": 1.0, "b": 1.0},
                   agreement={"a": {"a": 1.0, "b": 1.0}, "b": {"a": 1.0, "b": 1.0}}, dims=(7, 9),
                   layers=("l", "l"), directions=(1, -1), sigmas=(1.0, 1.0), classes=(0, 1, 2), shifts=shifts,
                   verified={k: [[True, True]] * 3 for k in names})
    rows = {(r["class"], r["dim"]): r for r in c.shift_rows()}
    assert rows[0, 7]["fails_first"] == "a" and rows[0, 7]["tied"] == ""
    assert rows[1, 7]["fails_first"] is None and rows[1, 7]["tied"] == "a b"
    assert rows[1, 9]["fails_first"] == "b"
    assert rows[2, 7]["fails_first"] is None and rows[2, 7]["tied"] == "a b"
    assert c.failing_starts() == {"a": [0, 2], "b": [2]}
    means = c.mean_shift_by_dim()  # dim 7: classes 0 and 1 (class 2 all zero); dim 9: class 1 only
    assert means["a"] == [1.0, 5.0] and means["b"] == [2.5, 4.0]
    notes = c.notes()
    assert any(n.startswith("a already gets the common start of classes 0, 2 wrong") for n in notes)
    assert "3 (class, dimension) rows have several classifiers failing first at the same shift (a = b in 3)" in \
        " ".join(notes)
    assert c.tie_groups() == {("a", "b"): 3}
    # a tie is for first place: a third classifier that fails later is not part of it (int8 after an exact export)
    c3 = dataclasses.replace(c, names=("a", "b", "c"), shifts={**shifts, "c": [[1.0, 1.0], [9.0, 9.0], [0.0, 0.0]]},
                             verified={k: [[True, True]] * 3 for k in "abc"})
    rows3 = {(r["class"], r["dim"]): r for r in c3.shift_rows()}
    assert rows3[1, 7]["tied"] == "a b" and rows3[1, 7]["shift[c]"] == 9.0
    assert c3.tie_groups() == {("a", "b"): 1, ("a", "b", "c"): 2}
    assert "(a = b = c in 2, a = b in 1)" in " ".join(c3.notes())
    from failatlas.analysis.compare import _first_cell
    assert [_first_cell(c3, rows3[k]) for k in ((0, 7), (1, 7), (1, 9), (2, 7))] == ["a", "a = b", "b", "a = b = c"]
    # classes without a common start, and a classifier without a curve, are said (a run once dropped 2 silently)
    c2 = dataclasses.replace(c, classes_without_start=(4, 6), no_curve={"b": "only 1 well-classified sample"})
    notes = c2.notes()
    assert any(n.startswith("classes 4, 6 left out of the corner shifts") for n in notes)
    assert "no accuracy curve for b: only 1 well-classified sample" in notes
    js = c2.to_json()
    assert js["classes_without_start"] == [4, 6] and js["no_curve"] == {"b": "only 1 well-classified sample"}


def test_compare_draws_its_population_from_the_chosen_classes(G, C, tmp_path, capsys):
    from failatlas.cli import main
    from failatlas.models.classifier import ClassifierConfig, save_classifier
    from failatlas.models.stylegan2 import save_generator

    from failatlas.analysis.population import sample_population

    save_generator(G, tmp_path / "g")
    names = tuple(f"item{i}" for i in range(10))  # the first classifier's class names label the comparison
    for name in ("a", "b"):
        save_classifier(C, ClassifierConfig(class_names=names), tmp_path / name)
    pop = sample_population(G, C, 200, seed=0)  # the random-weight classifier gets few classes right: use those
    right = torch.bincount(pop.y[pop.well], minlength=10)
    # the class it gets right most, and one it gets none of right (no common start: named, not dropped)
    never = int(torch.nonzero(right == 0)[0])
    chosen = sorted([int(torch.argmax(right)), never])
    rc = main(["compare", "--generator", str(tmp_path / "g"), "--classifier", str(tmp_path / "a"), "--classifier",
               str(tmp_path / "b"), "--n", "60", "--k", "2", "--classes", *map(str, chosen[::-1]),
               "--out", str(tmp_path / "cmp")])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.splitlines()
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    # one model twice: every row is a tie for first, so neither fails first alone (the printed table says so)
    assert printed[0].split()[-2:] == ["fails", "first"]
    assert [line.split()[0] for line in printed[1:3]] == ["a", "b"] and [line.split()[-1] for line in printed[1:3]] == ["0", "0"]
    assert printed[3].startswith(f"(fails first: of the {len(saved['classes']) * 2} (class, dimension) rows")
    assert saved["population_classes"] == chosen and set(saved["classes"]) <= set(chosen)
    # every chosen class is either compared or named as without a common start; no class outside them is named
    assert sorted(saved["classes"] + saved["classes_without_start"]) == chosen and never in saved["classes_without_start"]
    assert f"class {never} (item{never}) left out of the corner shifts: no sample of it is classified right" in \
        " ".join(saved["notes"])
    assert saved["class_names"] == list(names)
    report = (tmp_path / "cmp" / "report.html").read_text(encoding="utf-8")
    assert all(f"{c} (item{c})" in report for c in chosen)  # the population line and the shift table
    rc = main(["compare", "--generator", str(tmp_path / "g"), "--classifier", str(tmp_path / "a"), "--classifier",
               str(tmp_path / "b"), "--n", "60", "--classes", "12", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert rc == 2 and "the classes (--classes) must be distinct class labels (indices: 0, 1, …) in [0, 10), got [12]" in err
    assert not (tmp_path / "bad").exists()


def test_a_given_population_is_relabelled_by_the_reference(G, C, tmp_path):
    """A population labelled by another classifier must not lend its verdicts to the reference."""
    import copy

    from failatlas.analysis.curves import with_classifier
    from failatlas.analysis.population import sample_population

    pop = sample_population(G, C, 80, seed=0)
    third = copy.deepcopy(C)
    with torch.no_grad():
        third.fc2.weight.mul_(-1.0)  # other verdicts
    mislabelled = with_classifier(pop, G, third)
    assert not torch.equal(mislabelled.well, pop.well)
    cmp = compare_classifiers(G, {"a": C, "b": copy.deepcopy(C)}, population=mislabelled, k=2)
    assert cmp.accuracy["a"] == cmp.accuracy["b"] == pop.accuracy != mislabelled.accuracy
    with pytest.raises(FailatlasError, match="pass classes or a population, not both"):
        compare_classifiers(G, {"a": C, "b": third}, population=pop, classes=[1])
    with pytest.raises(FailatlasError, match="curve_k must be a number of dimensions"):
        compare_classifiers(G, {"a": C, "b": third}, population=pop, curve_k=0)


def test_compare_json_reads_back_exactly(G, C, tmp_path, round_trip, assert_same_result):
    import copy

    from failatlas.analysis import Comparison
    from failatlas.analysis.compare import plot_shift_comparison
    from failatlas.models.classifier import ClassifierConfig, save_classifier
    from failatlas.models.stylegan2 import save_generator
    from failatlas.report.curves_figures import plot_accuracy_curves

    other = copy.deepcopy(C)  # nearly the same predictions (common starts), another ranking and curve
    with torch.no_grad():
        other.fc2.weight.add_(0.05 * torch.randn(other.fc2.weight.shape, generator=torch.Generator().manual_seed(1)))
    save_generator(G, tmp_path / "g")
    names = tuple(f"item{i}" for i in range(10))
    for name, model in (("a", C), ("b", other)):
        save_classifier(model, ClassifierConfig(class_names=names), tmp_path / name)
    out = tmp_path / "cmp"
    run = run_compare(tmp_path / "g", [str(tmp_path / "a"), str(tmp_path / "b")], out=out, n=120, seed=0, k=2,
                      verbose=False)
    cmp = run.comparison
    assert set(cmp.curves) == set(cmp.rankings) == {"a", "b"} and cmp.class_names == names
    back = Comparison.read_json(out / "compare.json")
    assert_same_result(cmp, back)
    # compare.json written again from what was read back (and the keys compare adds beside it): the same bytes
    saved = json.loads((out / "compare.json").read_text())
    again = tmp_path / "compare-again.json"
    added = ("models", "command", "real_accuracy", "notes", "versions", "options", "file_sha256")  # in its order
    _io.write_json(again, _io.jsonable({**back.to_json(), **{k: saved[k] for k in added}}))
    assert again.read_bytes() == (out / "compare.json").read_bytes()
    assert_same_result(cmp, round_trip(cmp, Comparison.read_json, "compare.json")[0])
    # the figures drawn from it are the run's, bit for bit
    plot_shift_comparison(back, tmp_path / "corner_shifts.png")
    plot_accuracy_curves(back.curves, tmp_path / "accuracy_curves.png")
    for name in ("corner_shifts.png", "corner_shifts.json", "accuracy_curves.png", "accuracy_curves.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    # another kind of file, a figure's data, a truncated file, a file of version 1 or of a newer one
    with pytest.raises(FailatlasError, match=r"comparison file .*corner_shifts.json holds a JSON object without a "
                                             r"failatlas format, not a comparison \(format 'failatlas-comparison'\); "
                                             r"pass the compare.json"):
        Comparison.read_json(out / "corner_shifts.json")
    _io.write_json(tmp_path / "ranking.json", cmp.rankings["a"].to_json())
    with pytest.raises(FailatlasError, match=r"holds a ranking \(ranking.json\), not a comparison"):
        Comparison.read_json(tmp_path / "ranking.json")
    text = (out / "compare.json").read_text()
    (tmp_path / "cut.json").write_text(text[:len(text) // 2])
    with pytest.raises(FailatlasError, match=r"comparison file .*cut.json is not valid JSON"):
        Comparison.read_json(tmp_path / "cut.json")
    old = {k: v for k, v in saved.items() if k not in ("version", "rankings", "curve_results")}
    _io.write_json(tmp_path / "old.json", old)
    with pytest.raises(FailatlasError, match="written by an older failatlas, before compare.json held each "
                                             "classifier's ranking and curve"):
        Comparison.read_json(tmp_path / "old.json")
    _io.write_json(tmp_path / "new.json", {**saved, "version": 3})
    with pytest.raises(FailatlasError, match="written by a newer failatlas"):
        Comparison.read_json(tmp_path / "new.json")
    _io.write_json(tmp_path / "bad.json", {**saved, "verified": {"a": [["yes"]]}})
    with pytest.raises(FailatlasError, match=r"not a valid failatlas comparison \(TypeError: verified must be true"):
        Comparison.read_json(tmp_path / "bad.json")
    with pytest.raises(FailatlasError, match="comparison file not found"):
        Comparison.read_json(tmp_path / "none.json")


def test_verify_checks_a_compare_folder_against_compare_json(G, C, tmp_path, capsys):
    """compare.json lists the sha256 of the run's other files (the report included) and its models."""
    from failatlas.analysis.verify import verify_run
    from failatlas.cli import main

    _earlier_run(G, C, tmp_path)
    out = tmp_path / "fresh"
    run_compare(tmp_path / "g", [tmp_path / "a", tmp_path / "b"], out=out, n=60, seed=1, k=2, verbose=False)
    record = json.loads((out / "compare.json").read_text())
    assert set(record["file_sha256"]) == {p.name for p in out.iterdir()} - {"compare.json"}
    assert "report.html" in record["file_sha256"]
    check = verify_run(out)
    assert check.ok and check.kind == "compare" and [m.status for m in check.models] == ["same"] * 3
    assert [m.role for m in check.models] == ["generator", "classifier", "classifier"]
    report = (out / "report.html").read_text()
    (out / "report.html").write_text(report.replace("<td>", "<td>9", 1))
    (out / "corner_shifts.png").unlink()
    check = verify_run(out)
    assert check.changed == ("report.html",) and check.missing == ("corner_shifts.png",) and not check.ok
    assert main(["verify", str(out), "--rerun"]) == 2
    assert "holds what failatlas compare wrote: --rerun redoes analyze runs" in capsys.readouterr().err
