"""`failatlas verify`: a run folder checked against its manifest (files, report, models, versions) and run
again; each kind of damage is named, and an intact folder passes."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from failatlas import FailatlasError
from failatlas.analysis import AnalysisOptions, run_analysis
from failatlas.analysis import verify as verify_module
from failatlas.analysis.verify import read_manifest, rerun_options, verify_run
from failatlas.cli import main
from failatlas.models.classifier import ClassifierConfig, build_classifier, save_classifier
from failatlas.report.html import MANIFEST_SECTION, manifest_html


def _analyze(generator, classifier, out):
    """A tiny run (quick, no t-SNE, no margins)."""
    return run_analysis(AnalysisOptions(generator=str(generator), classifiers=(str(classifier),), n=200, seed=2,
                                        quick=True, skip_tsne=True, threads=1, verbose=False, progress_bar=False), out)


@pytest.fixture(scope="module")
def run(tmp_path_factory, saved_models):
    out = tmp_path_factory.mktemp("verify") / "run"
    _analyze(saved_models.generator, saved_models.classifier, out)
    return out


@pytest.fixture
def copy(run, tmp_path):
    """A copy of the run folder, free to damage."""
    return shutil.copytree(run, tmp_path / "copy")


def test_an_intact_run_passes_and_names_its_seal(run, capsys):
    check = verify_run(run)
    assert check.ok and check.intact and check.rerun is None
    assert not (check.missing or check.changed or check.extra or check.unchecked or check.report)
    assert [m.status for m in check.models] == ["same", "same"] and check.models[0].role == "generator"
    assert check.versions == {} and check.unrecorded == ()  # this failatlas made it
    m = json.loads((run / "manifest.json").read_text())
    assert list(check.listed) == m["files"] and check.command == m["command"]
    assert main(["verify", str(run)]) == 0
    out = capsys.readouterr().out
    n = len(m["files"])  # the one file not checked byte for byte is named: the manifest, which holds the digests
    assert f"files: OK, all {n} there and nothing added; {n - 1} have the bytes the run wrote (manifest.json, the " \
        "record of their digests, is the other)" in out
    assert check.manifest_sha256 in out and "files: OK" in out and out.rstrip().endswith(
        "verdict: OK (add --rerun to check that it reproduces)")
    assert main(["verify", str(run), "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["ok"] is True and parsed["format"] == "failatlas-run-check" and parsed["files"] == m["files"]


def test_each_kind_of_damage_is_named(copy, capsys):
    (copy / "ranking.csv").write_text((copy / "ranking.csv").read_text().replace("1", "2", 1))  # an edit
    png = sorted(copy.glob("*.png"))[0]
    png.unlink()  # a figure lost
    (copy / "notes.txt").write_text("added later")  # a file the run did not write
    check = verify_run(copy)
    assert not check.ok and not check.intact
    assert check.changed == ("ranking.csv",) and check.missing == (png.name,) and check.extra == ("notes.txt",)
    assert check.report == ("1 embedded image is none of the run's PNGs",)  # the report still shows the lost one
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "NOT AS WRITTEN" in out and "changed since the run: ranking.csv" in out and out.rstrip().endswith("NOT OK")


def test_the_report_and_the_manifest_vouch_for_each_other(copy):
    """The two files the digests leave out: an edit of the manifest shows against the report's copy, and a
    figure replaced in the report shows against the PNGs."""
    m = json.loads((copy / "manifest.json").read_text())
    m["notes"].append("edited")
    (copy / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    assert verify_run(copy).report == ("shows another manifest than manifest.json (one of the two was edited or "
                                       "replaced)",)
    m["notes"].pop()
    (copy / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    assert verify_run(copy).intact  # the manifest's content is what the report compares, not its bytes
    png = sorted(copy.glob("*.png"))[0]
    png.write_bytes(png.read_bytes() + b"\0")  # the PNG changed: its digest and the report both say so
    check = verify_run(copy)
    assert check.changed == (png.name,)
    assert check.report == ("1 embedded image is none of the run's PNGs", f"does not show {png.name}")


def test_a_changed_or_missing_model_is_named_and_stops_a_rerun(run, tmp_path, saved_models):
    root = tmp_path / "models"
    shutil.copytree(saved_models.generator, root / "generator")
    cls = shutil.copytree(saved_models.classifier, root / saved_models.classifier.name)  # names go into figures
    out = tmp_path / "run"
    result = _analyze(root / "generator", cls, out)
    assert result.format().endswith(f"\ncheck it later, or after copying it: failatlas verify {out}")
    # the same models in other folders give the same files as the module's run
    assert json.loads((out / "manifest.json").read_text())["file_sha256"] == \
        json.loads((run / "manifest.json").read_text())["file_sha256"]
    analysed = (cls / "model.safetensors").read_bytes()
    torch.manual_seed(4)
    save_classifier(build_classifier(ClassifierConfig()), ClassifierConfig(), cls)  # retrained, say
    check = verify_run(out, rerun=True)
    assert check.intact and not check.ok  # the folder is as written; it cannot be redone
    assert check.models[1].status == "changed" and check.models[1].differ == ("model.safetensors",)
    assert check.rerun.skipped == f"classifier {cls.name} has changed: a rerun needs the models the run used"
    assert main(["verify", str(out)]) == 1  # a model that is not the one analysed is a difference
    shutil.rmtree(root / "generator")
    (cls / "model.safetensors").write_bytes(analysed)  # the analysed weights back
    check = verify_run(out)
    assert check.models[0].status == "missing" and check.models[0].found is None and check.models[1].status == "same"
    assert check.ok  # a model not found cannot be checked; the verdict says so, and nothing differs
    text = check.format()
    assert "generator generator: NOT FOUND at" in text
    assert text.endswith("verdict: OK (models not found here, so not checked: generator)")


def test_a_rerun_gives_the_same_bytes_and_can_be_kept(copy, tmp_path, capsys):
    kept = tmp_path / "again"
    assert main(["verify", str(copy), "--rerun-out", str(kept)]) == 0
    out = capsys.readouterr().out
    assert "rerun: IDENTICAL" in out and str(kept) in out
    m = json.loads((copy / "manifest.json").read_text())
    assert sorted(p.name for p in kept.iterdir()) == m["files"]
    # a folder edited after the run still reruns to the recorded bytes: the rerun is checked against the
    # record, the folder against the record, and the two verdicts stay apart
    (copy / "summary.json").write_text("{}\n")
    check = verify_run(copy, rerun=True, verbose=False, progress_bar=False)
    assert check.rerun.identical and check.rerun.folder is None and check.changed == ("summary.json",)
    assert not check.ok
    with pytest.raises(FailatlasError, match="not empty"):  # never into a folder that holds something
        verify_run(copy, rerun_out=kept)


def test_a_run_of_an_older_failatlas_is_checked_for_what_it_records(copy):
    m = json.loads((copy / "manifest.json").read_text())
    del m["file_sha256"]
    for key in ("failatlas_source_sha256", "failatlas_native_source_sha256"):
        del m["versions"][key]
    m["versions"]["torch"] = "1.0"
    del m["report_sha256"]
    text = json.dumps(m, indent=2)
    (copy / "manifest.json").write_text(text + "\n")
    report = (copy / "report.html").read_text()  # the report shows the manifest: give it the edited one
    shown = MANIFEST_SECTION.search(report)
    (copy / "report.html").write_text(report[:shown.start(1)] + manifest_html(m) + report[shown.end(1):])
    check = verify_run(copy)
    assert set(check.unchecked) == set(m["files"]) - {"manifest.json"}  # the report's digest too
    assert check.ok and check.report == ()  # what can be checked (presence, the report against files) is
    assert check.unrecorded == ("failatlas_source_sha256", "failatlas_native_source_sha256")
    assert set(check.versions) == {"torch"} and check.versions["torch"][0] == "1.0"
    text = check.format()
    assert "checked for presence only" in text and "torch 1.0 → " in text and "not recorded by the run" in text
    rerun = verify_run(copy, rerun=True).rerun  # nothing recorded to compare a rerun with: not run, and why
    assert rerun.skipped.startswith("the manifest records no file digests") and not rerun.identical


def test_what_is_not_a_run_folder_gets_one_line(tmp_path, copy, capsys):
    with pytest.raises(FailatlasError, match="run folder not found"):
        verify_run(tmp_path / "nowhere")
    (tmp_path / "t.sh").write_text("a file")  # not "not found": it is there, and is no folder
    with pytest.raises(FailatlasError, match=r"t.sh is a file, not a run folder: give the --out folder"):
        verify_run(tmp_path / "t.sh")
    with pytest.raises(FailatlasError, match="holds no record verify can check"):
        verify_run(tmp_path)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(FailatlasError, match="is not valid JSON"):
        read_manifest(copy)
    (copy / "manifest.json").write_text(json.dumps({"format": "failatlas-ranking"}))
    with pytest.raises(FailatlasError, match="not an analyze run's manifest"):
        verify_run(copy)
    m = {"format": "failatlas-analysis-manifest", "files": ["../../etc/passwd"], "models": {
        "generator": {}, "classifiers": []}}
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FailatlasError, match="names files outside the run folder"):
        verify_run(copy)
    assert main(["verify", str(tmp_path / "nowhere")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_rerun_options_refuse_what_this_version_cannot_redo(run):
    m = read_manifest(run)
    options = rerun_options(m, "g", ("c",))
    assert options.n == 200 and options.seed == 2 and options.quick and options.generator == "g"
    assert options.classifiers == ("c",) and options.overwrite is False
    with pytest.raises(FailatlasError, match="options future_option are unknown here"):
        rerun_options({**m, "options": {**m["options"], "future_option": 1}}, "g", ("c",))
    with pytest.raises(FailatlasError, match="corner_dims differ from this version's"):
        rerun_options({**m, "options": {**m["options"], "corner_dims": 5}}, "g", ("c",))
    older = {k: v for k, v in m["options"].items() if k != "margin_starts"}  # today's default would fill it in
    with pytest.raises(FailatlasError, match="it records no margin_starts"):
        rerun_options({**m, "options": older}, "g", ("c",))
    with pytest.raises(FailatlasError, match="options quick are not true/false"):
        rerun_options({**m, "options": {**m["options"], "quick": "false"}}, "g", ("c",))


def test_the_report_text_is_sealed_too(copy):
    """The manifest records the report's digest without the manifest section it shows: a figure's number
    edited in the report's text shows, a report that is not a file shows."""
    report = (copy / "report.html").read_text()
    edited = re.sub(r"(<td>)0\.(\d)", r"\g<1>0.9", report, count=1)
    assert edited != report
    (copy / "report.html").write_text(edited)
    check = verify_run(copy)
    assert check.report == ("its text differs from what the run wrote (outside the manifest it shows)",)
    assert not check.ok
    (copy / "report.html").unlink()
    (copy / "report.html").mkdir()
    assert verify_run(copy).report == ("not a file",)


def test_a_rerun_that_cannot_be_done_keeps_the_checks_and_says_why(copy, monkeypatch, tmp_path):
    m = json.loads((copy / "manifest.json").read_text())
    m["options"]["future_option"] = 1
    (copy / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    check = verify_run(copy, rerun=True)
    assert check.rerun.skipped.startswith("the run was made by another version of failatlas: options "
                                          "future_option are unknown here") and not check.ok
    assert check.report  # (the manifest edited: the report shows the other one) the file checks are all there
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FailatlasError, match="--rerun-out .* exists and is not empty"):  # before any hashing
        verify_run(copy, rerun_out=tmp_path / "full")
    from failatlas import distributed

    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    with pytest.raises(FailatlasError, match="runs in one process: run it without torchrun"):
        verify_run(copy, rerun=True)


def test_nothing_can_hide_in_the_reports_manifest_section(copy):
    """The section must be manifest.json as the report writes it, character for character: a key given
    twice (JSON keeps the last) could carry markup that hides the real report."""
    report = (copy / "report.html").read_text()
    shown = MANIFEST_SECTION.search(report)
    injected = '{\n  &quot;format&quot;: &quot;&lt;b&gt;NO FAILURES FOUND&lt;/b&gt;&quot;,' + shown.group(1)[1:]
    (copy / "report.html").write_text(report[:shown.start(1)] + injected + report[shown.end(1):])
    assert verify_run(copy).report == ("shows another manifest than manifest.json (one of the two was edited or "
                                       "replaced)",)


def test_a_rerun_that_could_not_be_done_exits_3(copy, capsys, monkeypatch):
    m = json.loads((copy / "manifest.json").read_text())
    m["options"]["future_option"] = 1
    (copy / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    monkeypatch.setattr(verify_module, "_report_problems", lambda *args: [])  # (the manifest edit)
    assert main(["verify", str(copy), "--rerun"]) == 3
    out = capsys.readouterr().out
    assert "rerun: NOT RUN: the run was made by another version" in out
    assert out.rstrip().endswith("verdict: OK (the rerun could not be done)")


def test_a_record_that_is_damaged_or_one_of_several_is_named(saved_models, tmp_path, capsys):
    from failatlas.analysis.ranking import run_rank

    out = tmp_path / "rank"
    run_rank(saved_models.generator, saved_models.classifier, out=out, n=40, seed=2, batch_size=20, verbose=False)
    record = json.loads((out / "ranking.json").read_text())
    for models in ({"generator": None, "classifier": record["models"]["classifier"]},
                   {**record["models"], "classifier": {**record["models"]["classifier"], "sha256": {}}}, "x"):
        (out / "ranking.json").write_text(json.dumps({**record, "models": models}))
        with pytest.raises(FailatlasError, match="ranking.json is damaged: its models are not a generator"):
            verify_run(out)
    (out / "ranking.json").write_text(json.dumps({**record, "file_sha256": {}}))
    with pytest.raises(FailatlasError, match="records no digest of population.npz, ranking.csv"):
        verify_run(out)
    (out / "ranking.json").write_text(json.dumps({**record, "format": []}))  # not hashable: still one line
    with pytest.raises(FailatlasError, match="holds a file of format \\[\\], not the record of failatlas rank"):
        verify_run(out)
    (out / "ranking.json").write_text(json.dumps(record))
    (out / "compare.json").write_text(json.dumps({"format": "failatlas-comparison"}))  # another command's too
    with pytest.raises(FailatlasError, match="compare.json records no file digests"):
        verify_run(out)  # compare.json comes first
    check = verify_run(out, record="ranking.json")
    assert check.ok and check.others == ("compare.json",)
    assert main(["verify", str(out), "--record", "ranking.json"]) == 0
    assert ("also holds compare.json (failatlas compare's record), not checked: verify --record compare.json"
            in capsys.readouterr().out)
    with pytest.raises(FailatlasError, match="--record must be one of"):
        verify_run(out, record="notes.txt")
