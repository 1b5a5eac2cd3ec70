import json

import pytest

from failatlas import FailatlasError
from failatlas._paths import resolve_model
from failatlas.analysis import Population, Ranking
from failatlas.cli import main

FILES = ["population.npz", "ranking.csv", "ranking.json", "separation.csv", "separation.json", "separation.png"]


def test_rank_command_writes_everything(saved_models, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["rank", "--generator", str(saved_models.generator), "--classifier", str(saved_models.classifier),
               "--n", "40", "--seed", "2", "--batch-size", "20", "--bootstrap", "20", "--per-class", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == FILES
    from failatlas.analysis.ranking import RANK_FILES  # the names checked up front are the ones written
    assert sorted(RANK_FILES) == FILES
    text = captured.out.splitlines()
    header = next(i for i, line in enumerate(text) if line.lstrip().startswith("rank"))
    assert len([line for line in text[header + 1:] if line[:4].strip().isdigit()]) == 10
    ranking = Ranking.read_json(out / "ranking.json")
    assert ranking.n == 40 and ranking.bootstrap == 20 and ranking.per_class
    summary = json.loads((out / "ranking.json").read_text())["summary"]
    assert summary["top_dims"] == ranking.order[:10].tolist()
    # the failure direction, as analyze reports it: the fit's summary, or why there is none
    from failatlas import FailatlasError, load_generator
    from failatlas.analysis import FailureDirection

    try:
        expected, why = FailureDirection(load_generator(saved_models.generator), Population.from_npz(
            out / "population.npz"), seed=2).fit().summary(), None
    except FailatlasError as exc:
        expected, why = None, str(exc)
    assert summary["latent_direction"] == expected and summary.get("latent_direction_error") == why
    assert ("failure direction in W: none (" + why if why else "failure direction in W (held-out") in captured.out
    from failatlas.analysis.separation import weak_separation  # a weak separation is named, as analyze does

    weak = weak_separation({saved_models.classifier.name: summary})  # an untrained classifier: weak
    notes = json.loads((out / "ranking.json").read_text())["notes"]
    assert weak and notes[len(notes) - len(weak):] == weak and all(f"note: {n}" in captured.out for n in weak)
    pop = Population.from_npz(out / "population.npz")
    assert pop.n == 40 and pop.seed == 2
    assert (out / "ranking.csv").read_text().splitlines()[1].split(",")[1] == str(int(ranking.order[0]))
    # stderr is not a terminal here: no bars, but every stage is announced (logs of long runs need them)
    stages = [line for line in captured.err.splitlines() if line.startswith("failatlas rank: [")]
    assert [line.split("] ")[1].split(" ")[0] for line in stages if " done in " in line] == \
        ["population", "ranking", "separation", "files"]
    assert "bootstrap 20" in captured.err and "per class" in captured.err


def test_rank_command_class_mismatch_is_one_line(saved_models, tmp_path, capsys):
    rc = main(["rank", "--generator", str(saved_models.generator), "--classifier", str(saved_models.classifier7),
               "--n", "8", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("failatlas: error: ")
    assert "7 classes" in err and "has 10" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_resolve_model(saved_models):
    assert resolve_model(saved_models.generator) == saved_models.generator
    with pytest.raises(FailatlasError, match="shipped model 'no/such-model' not found"):
        resolve_model("no/such-model")


def test_rank_a_torchscript_file_as_the_folder_model(saved_models, tmp_path, capsys):
    """A classifier deployed as TorchScript is ranked by gradients like its folder: the same ranking.csv."""
    from failatlas.deploy import export_classifier_torchscript

    pt = export_classifier_torchscript(str(saved_models.classifier), tmp_path / "deployed.pt")
    for name, classifier in (("folder", saved_models.classifier), ("file", pt)):
        rc = main(["rank", "--generator", str(saved_models.generator), "--classifier", str(classifier), "--n", "40",
                   "--seed", "2", "--batch-size", "20", "--out", str(tmp_path / name)])
        assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "file" / "ranking.csv").read_bytes() == (tmp_path / "folder" / "ranking.csv").read_bytes()
    capsys.readouterr()
    rc = main(["rank", "--generator", str(saved_models.generator), "--classifier", str(tmp_path / "missing.pt"),
               "--n", "8", "--out", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.pt" in err and "not found" in err and len(err.strip().splitlines()) == 1


def test_black_box_n_sets_the_samples_of_a_finite_difference_ranking(saved_models, tmp_path, capsys):
    from failatlas.deploy import export_classifier_onnx

    onnx = export_classifier_onnx(str(saved_models.classifier), tmp_path / "c.onnx")
    rc = main(["rank", "--generator", str(saved_models.generator), "--classifier", str(onnx), "--n", "40",
               "--black-box-n", "8", "--out", str(tmp_path / "run")])
    assert rc == 0, capsys.readouterr().err
    ranking = Ranking.read_json(tmp_path / "run" / "ranking.json")
    assert ranking.method == "black-box" and ranking.n == 8
    capsys.readouterr()
    assert main(["rank", "--classifier", str(onnx), "--black-box-n", "1", "--out", str(tmp_path / "x")]) == 2
    assert "--black-box-n must be a number of samples of at least 2" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_rank_command_draws_from_the_chosen_classes(saved_models, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["rank", "--generator", str(saved_models.generator), "--classifier", str(saved_models.classifier),
               "--n", "30", "--classes", "4", "--per-class", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    pop = Population.from_npz(out / "population.npz")
    assert pop.classes == (4,) and set(pop.y.tolist()) == {4} and "class 4" in captured.err
    assert sorted(Ranking.read_json(out / "ranking.json").per_class) == [4]
    assert json.loads((out / "ranking.json").read_text())["population_classes"] == [4]
    assert "population: 30 samples, class 4, accuracy" in captured.out


def test_an_interrupted_rank_leaves_the_earlier_run_whole(saved_models, tmp_path, monkeypatch):
    """Ctrl-C (or kill) while rank writes its files: the folder keeps the earlier run's files, all of them;
    each file used to be renamed into place as it was done, so a new population.npz and ranking.csv could
    sit beside the earlier run's ranking.json and separation files."""
    import failatlas.report.figures as figures
    from failatlas.analysis.ranking import run_rank

    out = tmp_path / "run"
    run_rank(saved_models.generator, saved_models.classifier, out=out, n=40, seed=2, batch_size=20, verbose=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(figures, "plot_separation", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_rank(saved_models.generator, saved_models.classifier, out=out, n=40, seed=3, batch_size=20,
                 verbose=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder left either


def test_ranking_json_records_the_models_and_the_code(saved_models, tmp_path, monkeypatch):
    """ranking.json names the models by absolute path with their sha256 and the code by its source digest:
    it recorded the paths as given, relative to a working directory it did not record, and no checksum."""
    import shutil

    from failatlas import _io, _provenance
    from failatlas.analysis.ranking import run_rank

    shutil.copytree(saved_models.generator, tmp_path / "gen")
    monkeypatch.chdir(tmp_path)
    run_rank("gen", str(saved_models.classifier), out="run", n=20, seed=1, batch_size=20, verbose=False)
    record = json.loads((tmp_path / "run" / "ranking.json").read_text())
    assert record["generator"] == "gen"  # as given, as before
    gen, cls = record["models"]["generator"], record["models"]["classifier"]
    assert gen["path"] == str(tmp_path.resolve() / "gen") and gen["given"] == "gen"
    assert gen["sha256"]["generator.safetensors"] == _io.sha256(saved_models.generator / "generator.safetensors")
    assert cls["sha256"]["model.safetensors"] == _io.sha256(saved_models.classifier / "model.safetensors")
    assert record["versions"]["failatlas_source_sha256"] == _provenance.source_sha256()
    assert record["batch_size"] == 20  # it changes the last digits of the scores
    # the command that redoes it (the models by absolute path), run from elsewhere into another folder
    import shlex

    argv = shlex.split(record["command"], comments=True)
    assert argv[:2] == ["failatlas", "rank"] and argv[argv.index("--generator") + 1] == gen["path"]
    assert record["command"].endswith("  # --out: name a new folder (this one holds the run)")
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    monkeypatch.chdir(tmp_path.parent)
    assert main(argv[1:]) == 0
    for name in ("ranking.csv", "separation.csv", "population.npz"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "run" / name).read_bytes(), name


def test_ranking_json_records_the_batch_size_chosen(saved_models, tmp_path):
    from failatlas.analysis.ranking import run_rank

    run_rank(saved_models.generator, saved_models.classifier, out=tmp_path, n=40, seed=2, verbose=False)
    assert json.loads((tmp_path / "ranking.json").read_text())["batch_size"] == 64  # the CPU's default


def test_verify_checks_a_rank_folder_against_ranking_json(saved_models, tmp_path, capsys):
    """ranking.json lists the sha256 of the run's other files: verify names an edited one, a changed model,
    and leaves other files of the folder alone (rank writes into folders that may hold more)."""
    import shutil

    from failatlas.analysis.ranking import run_rank
    from failatlas.analysis.verify import verify_run

    models = tmp_path / "models"
    shutil.copytree(saved_models.classifier, models / "cls")
    out = tmp_path / "run"
    run_rank(saved_models.generator, models / "cls", out=out, n=40, seed=2, batch_size=20, verbose=False)
    (out / "mine.txt").write_text("the user's")
    check = verify_run(out)
    record = json.loads((out / "ranking.json").read_text())
    assert check.ok and check.kind == "rank" and set(record["file_sha256"]) == set(FILES) - {"ranking.json"}
    assert [m.role for m in check.models] == ["generator", "classifier"] and check.command == record["command"]
    assert main(["verify", str(out)]) == 0
    assert "files: OK, the 5 files have the bytes ranking.json records" in capsys.readouterr().out
    (out / "separation.csv").write_text("edited\n")
    weights = models / "cls" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    check = verify_run(out)
    assert check.changed == ("separation.csv",) and check.models[1].status == "changed" and not check.ok
    assert main(["verify", str(out)]) == 1
    del record["file_sha256"]  # a ranking.json of an older failatlas
    (out / "ranking.json").write_text(json.dumps(record))
    with pytest.raises(FailatlasError, match="records no file digests: it was written by an older failatlas"):
        verify_run(out)
