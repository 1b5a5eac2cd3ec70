"""Classifiers as TorchScript (.pt) and torch.export (.pt2) files: export, TorchFileClassifier (a
differentiable drop-in), the analyses through it, and one clear error per bad file."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import pytest
import torch
from torch import nn

from failatlas import _torchscript
from failatlas.analysis import GradientRanking, sample_population
from failatlas.deploy import (TorchFileClassifier, export_classifier_program, export_classifier_torchscript,
                              load_any_classifier)
from failatlas.models.classifier import ClassifierConfig, build_classifier

WRITERS = {".pt": export_classifier_torchscript, ".pt2": export_classifier_program}


@pytest.fixture(scope="module")
def model():
    """An untrained paper CNN in eval mode with non-trivial BatchNorm statistics and class names."""
    torch.manual_seed(0)
    config = ClassifierConfig(class_names=tuple("abcdefghij"))
    m = build_classifier(config).eval()
    with torch.no_grad():
        for bn in (m.features[1], m.features[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch-files")
    return {suffix: write(model, folder / f"classifier{suffix}") for suffix, write in WRITERS.items()}


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_logits_and_input_gradients_equal_the_eager_model(model, files, suffix):
    loaded = load_any_classifier(files[suffix], expected_classes=10)
    assert isinstance(loaded, TorchFileClassifier) and loaded.differentiable
    assert loaded.format == {".pt": "torchscript", ".pt2": "torch.export"}[suffix]
    for n in (1, 5):
        x = torch.rand(n, 1, 28, 28, requires_grad=True)
        got, want = loaded(x), model(x)
        assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-5)
        (g_got,) = torch.autograd.grad(got[:, 3].sum(), x)
        (g_want,) = torch.autograd.grad(want[:, 3].sum(), x)
        assert torch.allclose(g_got, g_want, atol=1e-6)
    assert loaded(torch.zeros(0, 1, 28, 28)).shape == (0, 10)


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_metadata_config_modes_and_copies(files, suffix):
    loaded = TorchFileClassifier(files[suffix])
    assert loaded.metadata["num_classes"] == "10" and json.loads(loaded.metadata["class_names"]) == list("abcdefghij")
    assert loaded.config.architecture == loaded.format and loaded.config.class_names == tuple("abcdefghij")
    assert loaded.num_classes == 10 and not any(p.requires_grad for p in loaded.parameters())
    loaded.train()
    assert not loaded.training
    x = torch.rand(2, 1, 28, 28)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a copy (the analyses make frozen ones) warns about nothing
        twin = copy.deepcopy(loaded)
    assert torch.equal(twin(x), loaded(x))


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_the_gradient_ranking_runs_through_the_file_and_equals_the_eager_one(tiny_generator, model, files, suffix):
    G = tiny_generator
    pop = sample_population(G, model, 64, seed=0, batch_size=32)
    want = GradientRanking(G, model, batch_size=32).rank(pop)
    got = GradientRanking(G, load_any_classifier(files[suffix]), batch_size=32).rank(pop)
    assert torch.allclose(got.score, want.score, rtol=1e-5, atol=1e-9)
    assert [r.dim for r in got.top(10)] == [r.dim for r in want.top(10)]


class _UserModel(nn.Module):
    """What a user ships: flat input reshaped inside, MNIST normalization inside, its own layers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.reshape(x.shape[0], 784) - 0.1307) / 0.3081
        return self.fc(x)


def test_files_saved_by_the_user_load_without_metadata(tmp_path):
    torch.manual_seed(3)
    user = _UserModel().eval()
    x = torch.rand(4, 1, 28, 28)
    with _torchscript.quiet_jit():
        torch.jit.save(torch.jit.script(user), str(tmp_path / "scripted.pt"))
    program = torch.export.export(user, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, tmp_path / "user.pt2")
    for name in ("scripted.pt", "user.pt2"):
        loaded = load_any_classifier(tmp_path / name)
        assert loaded.metadata == {} and loaded.config.class_names is None and loaded.num_classes == 10
        assert torch.allclose(loaded(x), user(x), atol=1e-5)


def test_a_scripted_model_saved_in_training_mode_is_switched_to_eval(tmp_path):
    torch.manual_seed(4)
    m = build_classifier(ClassifierConfig())
    with _torchscript.quiet_jit():
        torch.jit.save(torch.jit.script(m.train()), str(tmp_path / "train-mode.pt"))
    loaded = TorchFileClassifier(tmp_path / "train-mode.pt")
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(loaded(x), m.eval()(x), atol=1e-5)


# ------------------------------------------------------------------------------------------ bad files

def test_missing_empty_garbage_and_truncated_files(files, tmp_path, one_error):
    one_error(lambda: TorchFileClassifier(tmp_path / "nope.pt"), "not found", "nope.pt")
    (tmp_path / "empty.pt2").write_bytes(b"")
    one_error(lambda: TorchFileClassifier(tmp_path / "empty.pt2"), "is empty")
    (tmp_path / "garbage.pt").write_bytes(b"not a model at all")
    message = one_error(lambda: TorchFileClassifier(tmp_path / "garbage.pt"), "not a readable TorchScript",
                        "an ONNX file must be named .onnx")
    assert "internal miniz error" not in message  # torch's speculation about the file is left out
    (tmp_path / "weights.bin").write_bytes(b"state dict")  # a suffix failatlas does not read
    one_error(lambda: load_any_classifier(tmp_path / "weights.bin"), "is a file but not a classifier",
              ".onnx (ONNX), .pt (TorchScript) or .pt2 (torch.export)")
    for suffix, path in files.items():
        data = path.read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        one_error(lambda: TorchFileClassifier(cut), f"cut{suffix}", "not a readable")
    (tmp_path / "folder.pt").mkdir()
    one_error(lambda: TorchFileClassifier(tmp_path / "folder.pt"), "is not a file")
    one_error(lambda: TorchFileClassifier(tmp_path / "x.onnx"), ".pt", ".pt2")


class _Marker:
    """Unpickling this creates a file: proof that pickled code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_torch_save_file_is_refused_without_unpickling_it(tmp_path, one_error):
    marker = tmp_path / "ran"
    torch.save({"model": _Marker(marker)}, tmp_path / "pickled.pt")
    message = one_error(lambda: load_any_classifier(tmp_path / "pickled.pt"), "torch.save file", "never unpickles",
                        "torch.jit.save", ".onnx")
    assert "pickled.pt" in message and not marker.exists()


def test_a_pt2_with_a_pickled_weight_is_refused_without_running_it(files, tmp_path, one_error):
    marker = tmp_path / "ran"
    buf = io.BytesIO()
    torch.save(_Marker(marker), buf)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(files[".pt2"]) as zin, zipfile.ZipFile(evil, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("weights/model_weights_config.json"):
                config = json.loads(data)
                config["config"][next(iter(config["config"]))]["use_pickle"] = True
                data = json.dumps(config).encode()
            elif info.filename.endswith("weights/weight_0"):
                data = buf.getvalue()
            zout.writestr(info, data)
    one_error(lambda: TorchFileClassifier(evil), "pickled Python objects", "evil.pt2")
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_a_fused_graph_given_as_the_classifier(tiny_generator, model, tmp_path, suffix, one_error):
    G = tiny_generator
    from failatlas.engine.fused import export_program, export_torchscript

    path = tmp_path / f"fused{suffix}"
    (export_torchscript if suffix == ".pt" else export_program)(G, model, path)
    one_error(lambda: TorchFileClassifier(path), "fused graph", f"classifier{suffix}")


def _traced(module: nn.Module, path, x=None):
    x = torch.rand(3, 1, 28, 28) if x is None else x
    _torchscript.save(_torchscript.trace(module, (x,), check_trace=False), path)
    return path


class _ThreeChannel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 32)

    def forward(self, x):
        return self.conv(x).flatten(1)


class _Pair(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10], x.mean()


class _Scaled(nn.Module):
    def __init__(self, classes: int = 10, scale: float = 1.0) -> None:
        super().__init__()
        self.fc = nn.Linear(784, classes)
        self.scale = scale

    def forward(self, x):
        return self.fc(x.flatten(1)) * self.scale


def test_models_that_are_not_classifiers_of_the_images(tmp_path, one_error):
    path = tmp_path / "rgb.pt"
    _torchscript.save(_torchscript.trace(_ThreeChannel().eval(), (torch.rand(2, 3, 32, 32),)), path)
    one_error(lambda: TorchFileClassifier(path), "fails on a batch of [3, 1, 28, 28]", "[0, 1]")
    path = _traced(_Pair().eval(), tmp_path / "pair.pt")
    one_error(lambda: TorchFileClassifier(path), "one tensor of logits")
    path = _traced(_Scaled(scale=float("nan")).eval(), tmp_path / "nan.pt")
    one_error(lambda: TorchFileClassifier(path), "NaN or infinite")
    path = _traced(_Scaled(classes=7).eval(), tmp_path / "seven.pt")
    one_error(lambda: load_any_classifier(path, expected_classes=10), "7 classes", "10 are expected")


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_a_model_traced_in_training_mode_is_refused(tmp_path, one_error):
    torch.manual_seed(5)
    path = _traced(build_classifier(ClassifierConfig()).train(), tmp_path / "batchstats.pt")
    one_error(lambda: TorchFileClassifier(path), "training mode", "model.eval()")


def test_metadata_that_disagrees_with_the_model(tmp_path, one_error):
    torch.manual_seed(6)
    traced = _torchscript.trace(_Scaled().eval(), (torch.rand(3, 1, 28, 28),))
    _torchscript.save(traced, tmp_path / "liar.pt", extra_files={"failatlas.json": json.dumps({"num_classes": "7"})})
    one_error(lambda: TorchFileClassifier(tmp_path / "liar.pt"), "num_classes='7'", "10 logits")
    _torchscript.save(traced, tmp_path / "broken.pt", extra_files={"failatlas.json": "{not json"})
    one_error(lambda: TorchFileClassifier(tmp_path / "broken.pt"), "damaged failatlas.json")


def test_call_time_checks(files, one_error):
    loaded = TorchFileClassifier(files[".pt"])
    one_error(lambda: loaded(torch.rand(2, 1, 32, 32)), "[2, 1, 32, 32]", "classifier_view")
    one_error(lambda: loaded(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)), "uint8", "/ 255")
    one_error(lambda: loaded([1, 2]), "torch.Tensor")


def test_export_refuses_bad_targets(model, tmp_path, one_error):
    one_error(lambda: export_classifier_torchscript(model, tmp_path / "c.onnx"), "must end in .pt")
    (tmp_path / "dir.pt2").mkdir()
    one_error(lambda: export_classifier_program(model, tmp_path / "dir.pt2"), "is a folder")
    one_error(lambda: export_classifier_torchscript(_Pair().eval(), tmp_path / "pair.pt"), "logits")
    assert not (tmp_path / "pair.pt").exists()


def test_a_model_that_returns_probabilities_is_refused(tmp_path, one_error):
    class Softmaxed(_Scaled):
        def forward(self, x):
            return torch.softmax(super().forward(x), 1)

    path = _traced(Softmaxed().eval(), tmp_path / "softmax.pt")
    one_error(lambda: TorchFileClassifier(path), "returns probabilities", "softmax.pt", "log_softmax")


def test_eval_classifier_takes_the_files(model, files, capsys):
    """`failatlas eval-classifier --model FILE`: how a user checks that the model reads failatlas's images."""
    from failatlas.cli import main
    from failatlas.training.classifier import evaluate_classifier

    want = evaluate_classifier(model, on="corrupted")["accuracy"]
    for path in files.values():
        assert main(["eval-classifier", "--model", str(path), "--on", "corrupted", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(want, abs=1e-9)


def test_files_under_the_other_suffix_and_legacy_pickles(files, tmp_path, one_error):
    (tmp_path / "ts.pt2").write_bytes(files[".pt"].read_bytes())
    one_error(lambda: TorchFileClassifier(tmp_path / "ts.pt2"), "a TorchScript file", "rename it to ts.pt")
    (tmp_path / "ep.pt").write_bytes(files[".pt2"].read_bytes())
    one_error(lambda: TorchFileClassifier(tmp_path / "ep.pt"), "a torch.export program", "rename it to ep.pt2")
    marker = tmp_path / "ran"
    torch.save({"m": _Marker(marker)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    one_error(lambda: TorchFileClassifier(tmp_path / "legacy.pt"), "torch.save file", "never unpickles")
    assert not marker.exists()


def test_a_fixed_batch_program_is_named_as_such(tmp_path, one_error):
    torch.manual_seed(7)
    program = torch.export.export(_Scaled().eval(), (torch.rand(2, 1, 28, 28),))  # the batch of 2 baked in
    torch.export.save(program, tmp_path / "static.pt2")
    one_error(lambda: TorchFileClassifier(tmp_path / "static.pt2"), "batch of 2 images only", "Dim('batch')")


class _Double(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10).double()

    def forward(self, x):
        return self.fc(x.flatten(1))


class _Reshapes(nn.Module):
    def forward(self, x):
        return x.view(-1, 3, 32, 32).flatten(1)[:, :10]


def test_a_float64_model_runs_and_script_errors_show_their_cause(tmp_path, one_error):
    torch.manual_seed(8)
    model = _Double().eval()
    with _torchscript.quiet_jit():
        torch.jit.save(torch.jit.script(model), str(tmp_path / "double.pt"))
        torch.jit.save(torch.jit.script(_Reshapes()), str(tmp_path / "reshapes.pt"))
    x = torch.rand(3, 1, 28, 28)
    loaded = TorchFileClassifier(tmp_path / "double.pt")
    assert loaded(x).dtype == torch.float32 and torch.allclose(loaded(x), model(x.double()).float(), atol=1e-6)
    message = one_error(lambda: TorchFileClassifier(tmp_path / "reshapes.pt"), "is invalid for input of size")
    assert "TorchScript interpreter" not in message


def test_out_of_memory_passes_through_and_frozen_models_take_their_buffers_dtype(files, tmp_path):
    loaded = TorchFileClassifier(files[".pt"])

    class Hungry(nn.Module):
        def forward(self, x):
            raise torch.OutOfMemoryError("out of memory")

    loaded.model = Hungry()
    with pytest.raises(torch.OutOfMemoryError):
        loaded(torch.rand(2, 1, 28, 28))
    torch.manual_seed(9)
    model = _Scaled().eval().to(torch.bfloat16)
    with _torchscript.quiet_jit():
        frozen = torch.jit.freeze(torch.jit.script(model))
        torch.jit.save(frozen, str(tmp_path / "frozen.pt"))
    x = torch.rand(3, 1, 28, 28)
    got = TorchFileClassifier(tmp_path / "frozen.pt")(x)
    assert got.dtype == torch.float32 and torch.allclose(got, model(x.bfloat16()).float(), atol=1e-2)
