"""`failatlas export`: classifier / synthesis / fused graph as ONNX, TorchScript and torch.export, plus int8."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from failatlas import cli
from failatlas._io import sha256
from failatlas.errors import FailatlasError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from failatlas.deploy import OnnxClassifier, export_models, read_metadata  # noqa: E402
from failatlas.deploy import export as export_module  # noqa: E402
from failatlas.engine.fused import FusedModel, load_fused  # noqa: E402
from failatlas.models.adapter import classifier_view  # noqa: E402
from failatlas.models.classifier import ClassifierConfig, PaperCNN, save_classifier  # noqa: E402
from failatlas.models.stylegan2 import save_generator  # noqa: E402

ONNX_FILES = ("classifier.onnx", "synthesis.onnx", "fused.onnx", "classifier-int8.onnx")
FP32_FILES = ("classifier.onnx", "classifier.pt", "classifier.pt2", "synthesis.onnx", "fused.onnx", "fused.pt", "fused.pt2")
ALL_FILES = set(FP32_FILES) | {"classifier-int8.onnx", "export.json"}
BATCHES = (1, 7)  # the exports are traced at batch 5
TOL = 1e-4


@pytest.fixture(scope="module")
def folders(tiny_generator, tmp_path_factory):
    """The tiny generator and an untrained paper CNN (non-trivial BatchNorm statistics) saved to folders."""
    root = tmp_path_factory.mktemp("export-models")
    torch.manual_seed(1)
    classifier = PaperCNN().eval()
    with torch.no_grad():
        for m in classifier.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    save_generator(tiny_generator, root / "generator")
    save_classifier(classifier, ClassifierConfig(), root / "classifier")
    return root / "generator", root / "classifier"


@pytest.fixture(scope="module")
def exported(folders, tmp_path_factory):
    """One export through the CLI (with --int8, 100 calibration images, --json): (out folder, printed JSON)."""
    generator, classifier = folders
    out = tmp_path_factory.mktemp("export-out") / "bundle"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = cli.main(["export", "--generator", str(generator), "--classifier", str(classifier), "--int8",
                       "--calibration", "100", "--json", "--out", str(out)])
    assert rc == 0
    return out, json.loads(stdout.getvalue())


@pytest.fixture(scope="module")
def eager(tiny_generator, folders):
    from failatlas.models.classifier import load_classifier

    return FusedModel(tiny_generator, load_classifier(folders[1]))



def _close(got, want):
    got, want = torch.as_tensor(np.asarray(got)), torch.as_tensor(np.asarray(want))
    assert got.shape == want.shape
    err = float((got - want).abs().max()) / max(1.0, float(want.abs().max()))
    assert err <= TOL, err


def _run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _nothing_written(out):
    assert not out.exists() or not any(out.iterdir())
    assert not [p.name for p in out.parent.iterdir() if ".export-" in p.name]  # no staging folder left


# ------------------------------------------------------------------------------------------- the export


def test_every_file_is_written_and_described(exported, tiny_generator):
    out, printed = exported
    assert {p.name for p in out.iterdir()} == ALL_FILES
    manifest = json.loads((out / "export.json").read_text())
    assert printed == {"out": str(out), **manifest}
    assert manifest["format"] == "failatlas-export"
    assert manifest["style_dim"] == tiny_generator.style_dim == 272 and manifest["num_classes"] == 10
    assert manifest["noise_mode"] == "const"
    from failatlas import _provenance  # the code and libraries that made the files

    assert manifest["versions"] == _provenance.versions() and manifest["versions"]["failatlas_native_source_sha256"]
    assert set(manifest["files"]) == ALL_FILES - {"export.json"}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256(out / name) and entry["bytes"] == (out / name).stat().st_size
        assert entry["inputs"][0]["shape"][0] == "N" and entry["outputs"][0]["shape"][0] == "N"
    files = manifest["files"]
    assert files["synthesis.onnx"]["inputs"][0]["shape"] == ["N", 272]
    assert files["synthesis.onnx"]["outputs"][0]["shape"] == ["N", 1, 32, 32]
    for name in ("fused.onnx", "fused.pt", "fused.pt2"):
        assert files[name]["inputs"][0]["shape"] == ["N", 272] and files[name]["outputs"][0]["shape"] == ["N", 10]
    for name in ("classifier.onnx", "classifier.pt", "classifier.pt2", "classifier-int8.onnx"):
        assert files[name]["inputs"][0]["shape"] == ["N", 1, 28, 28] and files[name]["outputs"][0]["shape"] == ["N", 10]
    assert files["classifier.pt"]["format"] == "torchscript" and files["classifier.pt2"]["format"] == "torch.export"
    for name in FP32_FILES:  # parity measured at other batch sizes than the export's, within tolerance
        parity = files[name]["parity"]
        assert parity["batch_sizes"] == list(BATCHES) and 0 <= parity["max_rel_error"] <= TOL
    assert manifest["parity"]["export_batch"] not in manifest["parity"]["batch_sizes"]


def test_the_record_names_the_models_and_the_command_that_redoes_it(exported, folders, tmp_path):
    """export.json records each model's path and the sha256 of its files, and the export command (an export
    folder once named its models only by the words given, so nothing said which trained weights it held);
    verify checks the models."""
    import shlex
    import shutil

    from failatlas.analysis.verify import verify_run

    out, _ = exported
    manifest = json.loads((out / "export.json").read_text())
    models = manifest["models"]
    assert models["generator"]["path"] == str(folders[0].resolve())
    assert models["classifier"]["sha256"]["model.safetensors"] == sha256(folders[1] / "model.safetensors")
    words = shlex.split(manifest["command"].split("  #")[0])
    assert words[:2] == ["failatlas", "export"] and words[-2:] == ["--out", str(out.absolute())]
    assert ["--int8", "--calibration", "100"] == words[words.index("--int8"):words.index("--int8") + 3]
    assert "--dataset" not in words  # the classifier's own data: not an option
    check = verify_run(out)
    assert [m.status for m in check.models] == ["same", "same"] and check.command == manifest["command"]
    # the command asks for this very export (running it again costs a second export: the options are compared)
    a = cli.build_parser().parse_args(words[1:])
    assert (a.generator, a.classifier, a.int8, a.calibration, a.seed, a.noise_mode, a.dataset) == \
        (str(folders[0].resolve()), str(folders[1].resolve()), True, 100, 0, "const", None)
    # a classifier retrained in place: the export no longer holds it, and verify says so
    moved = shutil.copytree(folders[1], tmp_path / "clf")
    record = json.loads((out / "export.json").read_text())
    copy = shutil.copytree(out, tmp_path / "bundle")
    record["models"]["classifier"]["path"] = str(moved)
    (moved / "model.safetensors").write_bytes((moved / "model.safetensors").read_bytes()[:-8] + bytes(8))
    (copy / "export.json").write_text(json.dumps(record))
    check = verify_run(copy)
    assert not check.ok and [m.status for m in check.models] == ["same", "changed"]


def test_onnx_files_are_single_checked_files_with_a_dynamic_batch(exported):
    out, _ = exported
    for name in ONNX_FILES:
        path = out / name
        onnx.checker.check_model(str(path), full_check=True)
        proto = onnx.load(str(path), load_external_data=False)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer), name
        dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
        assert dim0.dim_param and not dim0.HasField("dim_value"), name
    meta = read_metadata(out / "fused.onnx")
    assert meta["style_dim"] == "272" and meta["num_classes"] == "10" and meta["noise_mode"] == "const"


@pytest.mark.parametrize("n", BATCHES)
def test_onnx_runtime_matches_eager(exported, eager, tiny_generator, n, real_styles):
    out, _ = exported
    s = real_styles(tiny_generator, n, seed=100 + n)
    with torch.no_grad():
        images = eager.synthesis(s, "const")
        logits = eager(s)
        _close(_run_onnx(out / "synthesis.onnx", s), images)
        _close(_run_onnx(out / "fused.onnx", s), logits)
        x = classifier_view(images)
        _close(_run_onnx(out / "classifier.onnx", x), eager.classifier(x))


@pytest.mark.parametrize("name", ["fused.pt", "fused.pt2"])
def test_torch_files_load_with_load_fused_and_match(exported, eager, tiny_generator, name, real_styles):
    out, _ = exported
    graph = load_fused(out / name)
    assert graph.style_dim == 272 and graph.num_classes == 10
    for n in BATCHES:
        s = real_styles(tiny_generator, n, seed=200 + n)
        with torch.no_grad():
            _close(graph(s), eager(s))


@pytest.mark.parametrize("name", ["classifier.pt", "classifier.pt2"])
def test_classifier_files_load_and_match(exported, eager, tiny_generator, name, real_styles):
    from failatlas.deploy import load_any_classifier

    out, _ = exported
    loaded = load_any_classifier(out / name, expected_classes=10)
    x = classifier_view(eager.synthesis(real_styles(tiny_generator, 7, seed=300), "const"))
    with torch.no_grad():
        _close(loaded(x), eager.classifier(x))


def test_int8_file_and_accuracy_table(exported):
    out, _ = exported
    int8 = OnnxClassifier(out / "classifier-int8.onnx", expected_classes=10)
    ops = {node.op_type for node in onnx.load(str(out / "classifier-int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and int8.num_classes == 10
    assert int8.quantized and not OnnxClassifier(out / "classifier.onnx").quantized  # its black-box step: 1σ
    assert read_metadata(out / "classifier-int8.onnx")["calibration_images"] == "100"
    manifest = json.loads((out / "export.json").read_text())
    info = manifest["int8"]
    assert info["file"] == "classifier-int8.onnx" and info["calibration_images"] == 100
    assert set(info["accuracy"]) == {"torch fp32", "onnx fp32", "onnx int8"} and info["accuracy_n"] > 0
    for row in info["accuracy"].values():
        assert 0 <= row["clean"] <= 1 and 0 <= row["corrupted"] <= 1
    # the float32 ONNX classifier is the torch one: same accuracy up to a rare tie
    assert abs(info["accuracy"]["torch fp32"]["clean"] - info["accuracy"]["onnx fp32"]["clean"]) <= 1e-3
    agreement = manifest["files"]["classifier-int8.onnx"]["parity"]
    assert 0 <= agreement["top1_agreement"] <= 1 and agreement["samples"] > 0
    assert manifest["files"]["classifier-int8.onnx"]["bytes"] < manifest["files"]["classifier.onnx"]["bytes"]


# ------------------------------------------------------------------------------------------- errors



def test_missing_generator_folder(folders, tmp_path, capsys, one_error):
    out = tmp_path / "out"
    one_error(lambda: export_models(tmp_path / "no-such-generator", folders[1], out), "generator folder not found",
           "no-such-generator")
    _nothing_written(out)
    rc = cli.main(["export", "--generator", str(tmp_path / "no-such-generator"), "--classifier", str(folders[1]),
                   "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("failatlas: error: generator folder not found") and err.count("\n") == 1
    _nothing_written(out)


def test_classifier_with_other_classes(folders, tmp_path, one_error):
    torch.manual_seed(0)
    seven = save_classifier(PaperCNN(num_classes=7).eval(), ClassifierConfig(num_classes=7), tmp_path / "seven")
    out = tmp_path / "out"
    out.mkdir()  # an existing empty folder stays empty
    one_error(lambda: export_models(folders[0], seven, out, int8=True), "predicts 7 classes", "draws 10")
    _nothing_written(out)


def test_onnx_classifier_is_refused(folders, tmp_path, one_error):
    out = tmp_path / "out"
    one_error(lambda: export_models(folders[0], tmp_path / "model.onnx", out), "ONNX file", "torch classifier")
    one_error(lambda: export_models(folders[0], tmp_path / "model.pt2", out), "torch.export file", "torch classifier")
    _nothing_written(out)


def test_random_noise_and_bad_out_are_refused(folders, tmp_path, one_error):
    one_error(lambda: export_models(*folders, tmp_path / "a", noise_mode="random"), "deterministic", "const")
    _nothing_written(tmp_path / "a")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    one_error(lambda: export_models(*folders, busy), "not empty", "--overwrite")
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    one_error(lambda: export_models(*folders, tmp_path / "file"), "is a file")
    one_error(lambda: export_models(*folders, tmp_path / "b", int8=True, calibration=0), "positive integer")


def test_a_failure_midway_leaves_no_file(folders, tmp_path, monkeypatch, one_error):
    """classifier.onnx is already written when the synthesis export fails: it must not reach --out."""
    calls = []

    def failing(*args, **kwargs):
        calls.append(args[2])
        raise FailatlasError("cannot export the synthesis network to ONNX (simulated)")

    monkeypatch.setattr(export_module, "_export_onnx", failing)
    out = tmp_path / "out"
    one_error(lambda: export_models(*folders, out), "simulated")
    assert calls and calls[0].name == "synthesis.onnx" and calls[0].parent.parent == tmp_path
    _nothing_written(out)


def test_commit_into_an_existing_folder_replaces_only_export_files(tmp_path):
    stage, out = tmp_path / ".out.export-x", tmp_path / "out"
    stage.mkdir()
    out.mkdir()
    for name in ("classifier.onnx", "export.json"):
        (stage / name).write_text("new " + name)
    (out / "classifier.onnx").write_text("old")
    (out / "classifier-int8.onnx").write_text("old int8")
    (out / "notes.txt").write_text("mine")
    export_module._commit(stage, out, ["classifier.onnx", "export.json"], stale=("classifier-int8.onnx",))
    assert sorted(p.name for p in out.iterdir()) == ["classifier.onnx", "export.json", "notes.txt"]
    assert (out / "classifier.onnx").read_text() == "new classifier.onnx" and not stage.exists()


def test_cli_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["export", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--generator", "--classifier", "--int8", "--calibration", "--dataset", "--noise-mode",
                   "--seed", "--overwrite", "--json", "--out"):
        assert option in text
    for word in ("classifier.onnx", "synthesis.onnx", "fused.onnx", "fused.pt2", "classifier-int8.onnx",
                 "export.json", "1e-4"):
        assert word in " ".join(text.split())


def test_a_signal_during_the_commit_waits_for_the_last_file(tmp_path, monkeypatch):
    """Ctrl-C (or kill) while an export's files are renamed into an existing --out: all of them arrive, then
    the interrupt; it used to stop after the first, beside an earlier export's export.json and checksums."""
    import os
    import signal

    stage, out = tmp_path / ".out.export-x", tmp_path / "out"
    stage.mkdir()
    out.mkdir()
    names = ["classifier.onnx", "fused.pt", "export.json"]
    for name in names:
        (stage / name).write_text("new " + name)
        (out / name).write_text("old " + name)
    replace, fired = os.replace, []

    def interrupted_replace(src, dst):
        replace(src, dst)
        if not fired:
            fired.append(dst)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        export_module._commit(stage, out, names, stale=())
    assert fired and {p.name: p.read_text() for p in out.iterdir()} == {n: "new " + n for n in names}
    assert not stage.exists()


def test_verify_checks_an_export_folder_against_its_record(exported, tmp_path, capsys):
    """`failatlas verify` on an export: every exported file has the sha256 and size export.json records;
    a replaced or lost file is named, other files in the folder are not part of the export."""
    import shutil

    from failatlas.analysis.verify import verify_run

    copy = shutil.copytree(exported[0], tmp_path / "bundle")
    (copy / "notes.txt").write_text("not part of the export")
    check = verify_run(copy)
    assert check.ok and check.kind == "export" and set(check.listed) == ALL_FILES and check.versions == {}
    assert cli.main(["verify", str(copy)]) == 0
    assert "files: OK, the 8 files have the bytes export.json records (other files in the folder are not export's)" \
        in capsys.readouterr().out
    (copy / "classifier.onnx").write_bytes((copy / "classifier-int8.onnx").read_bytes())  # the wrong file deployed
    (copy / "fused.pt").unlink()
    check = verify_run(copy)
    assert not check.ok and check.changed == ("classifier.onnx",) and check.missing == ("fused.pt",)
    assert cli.main(["verify", str(copy)]) == 1
    with pytest.raises(FailatlasError, match="holds what failatlas export wrote: --rerun redoes analyze runs"):
        verify_run(copy, rerun=True)
    record = json.loads((copy / "export.json").read_text())
    record["files"]["../model.onnx"] = record["files"].pop("fused.onnx")
    (copy / "export.json").write_text(json.dumps(record))
    with pytest.raises(FailatlasError, match="names files outside the folder"):
        verify_run(copy)
