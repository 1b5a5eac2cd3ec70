"""The paper's CNN, its registry and its on-disk format (DESIGN §2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import failatlas
from failatlas.errors import FailatlasError
from failatlas.models.classifier import (
    ARCHITECTURES,
    CONFIG_FILE,
    WEIGHTS_FILE,
    ClassifierConfig,
    PaperCNN,
    build_classifier,
    check_classifier_input,
    load_classifier,
    load_classifier_config,
    save_classifier,
)


def _model(num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_classifier(ClassifierConfig(num_classes=num_classes))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clf") / "model"
    model = _model()
    # non-trivial batch-norm statistics, so the round trip checks the buffers too
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 1, 28, 28))
    save_classifier(model.eval(), model.config, folder)
    return folder


def _copy(saved: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (dst / name).write_bytes((saved / name).read_bytes())
    return dst


def test_output_and_penultimate_shapes():
    x = torch.rand(3, 1, 28, 28)
    for k in (10, 4):
        model = _model(k).eval()
        assert model(x).shape == (3, k)
        assert model.penultimate(x).shape == (3, 128)


def test_architecture_is_the_papers():
    model = PaperCNN()
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Flatten]
    assert (model.features[0].in_channels, model.features[0].out_channels) == (1, 32)
    assert (model.features[3].in_channels, model.features[3].out_channels) == (32, 64)
    assert model.features[0].kernel_size == model.features[3].kernel_size == (3, 3)
    assert (model.fc1.in_features, model.fc1.out_features) == (9216, 128)
    assert (model.fc2.in_features, model.fc2.out_features) == (128, 10)
    # no nonlinearity between the two Linear layers: logits are an affine map of the penultimate features
    model.eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(model(x), model.fc2(model.penultimate(x)))
    assert sum(p.numel() for p in model.parameters()) == 320 + 64 + 18496 + 128 + 9216 * 128 + 128 + 1290
    assert "paper-cnn" in ARCHITECTURES


def test_save_load_round_trip_identical_logits(saved):
    reference = _model()
    reference.train()
    with torch.no_grad():
        reference(torch.rand(16, 1, 28, 28))  # not the same statistics: must not matter below
    loaded = failatlas.load_classifier(saved)
    assert not loaded.training
    assert loaded.config == load_classifier_config(saved)
    assert loaded.config.num_classes == 10 and loaded.config.architecture == "paper-cnn"
    state = {k: v for k, v in loaded.state_dict().items()}
    again = load_classifier(saved)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), again(x))
    for k, v in again.state_dict().items():
        assert torch.equal(v, state[k])
    assert json.loads((saved / CONFIG_FILE).read_text())["in_shape"] == [1, 28, 28]


def test_round_trip_matches_the_model_that_was_saved(tmp_path):
    model = _model(seed=3).eval()
    save_classifier(model, model.config, tmp_path / "m")
    loaded = load_classifier(tmp_path / "m")
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # only the two files, no temp leftovers
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]


def test_missing_folder_and_missing_weights(tmp_path, saved):
    with pytest.raises(FailatlasError, match=r"classifier folder not found: .*train-classifier"):
        load_classifier(tmp_path / "nope")
    folder = _copy(saved, tmp_path / "m")
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(FailatlasError, match=r"classifier weights not found: .*model\.safetensors"):
        load_classifier(folder)
    (folder / CONFIG_FILE).unlink()
    with pytest.raises(FailatlasError, match=r"classifier config not found"):
        load_classifier(folder)


def test_truncated_weights_file(tmp_path, saved):
    folder = _copy(saved, tmp_path / "m")
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(FailatlasError, match=r"corrupt or not a safetensors file.*retrain"):
        load_classifier(folder)


def test_num_classes_in_config_does_not_match_weights(tmp_path, saved):
    folder = _copy(saved, tmp_path / "m")
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    cfg["num_classes"] = 5
    (folder / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(FailatlasError) as info:
        load_classifier(folder)
    msg = str(info.value)
    assert "num_classes=5" in msg and "10 output classes" in msg and "\n" not in msg


def test_unknown_architecture_and_bad_config(tmp_path, saved):
    folder = _copy(saved, tmp_path / "m")
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**cfg, "architecture": "resnet-9000"}))
    with pytest.raises(FailatlasError, match=r"unknown classifier architecture 'resnet-9000'.*paper-cnn"):
        load_classifier(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(FailatlasError, match="not valid JSON"):
        load_classifier(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({**cfg, "num_classes": "ten"}))
    with pytest.raises(FailatlasError, match="num_classes must be a positive integer"):
        load_classifier(folder)


def test_weights_of_another_model_are_refused(tmp_path, saved):
    folder = _copy(saved, tmp_path / "m")
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / WEIGHTS_FILE))
    state["fc1.weight"] = state["fc1.weight"][:64].contiguous()
    del state["features.1.running_var"]
    save_file(state, str(folder / WEIGHTS_FILE))
    with pytest.raises(FailatlasError, match=r"missing 'features.1.running_var'.*do not belong together"):
        load_classifier(folder)


def test_save_refuses_a_config_that_does_not_fit(tmp_path):
    model = _model(10)
    with pytest.raises(FailatlasError, match="num_classes=3"):
        save_classifier(model, ClassifierConfig(num_classes=3), tmp_path / "m")
    assert not (tmp_path / "m" / WEIGHTS_FILE).exists()
    with pytest.raises(FailatlasError, match="in_shape"):
        build_classifier(ClassifierConfig(in_shape=(1, 32, 32)))


def test_input_validation():
    check_classifier_input(torch.rand(2, 1, 28, 28))
    with pytest.raises(FailatlasError, match=r"shape \[2, 1, 32, 32\], expected \[N, 1, 28, 28\].*classifier_view"):
        check_classifier_input(torch.rand(2, 1, 32, 32))
    with pytest.raises(FailatlasError, match=r"expected \[N, 1, 28, 28\].*unsqueeze\(1\)"):
        check_classifier_input(torch.rand(2, 28, 28))
    with pytest.raises(FailatlasError, match=r"expected \[N, 1, 28, 28\].*unsqueeze\(0\)"):
        check_classifier_input(torch.rand(1, 28, 28).unsqueeze(0)[0])
    x = torch.rand(2, 1, 28, 28)
    x[1, 0, 3, 3] = float("nan")
    with pytest.raises(FailatlasError, match="NaN"):
        check_classifier_input(x)
    with pytest.raises(FailatlasError, match=r"span \[-1.*\[0, 1\]"):
        check_classifier_input(torch.rand(2, 1, 28, 28) * 2 - 1)
    with pytest.raises(FailatlasError, match=r"dtype torch.uint8.*/ 255"):
        check_classifier_input(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(FailatlasError, match="torch.Tensor"):
        check_classifier_input([[0.0]])


def test_a_classifier_file_given_to_the_folder_loader_is_named(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(FailatlasError, match="is a classifier file, not a folder: load it with "
                                             "failatlas.deploy.load_any_classifier"):
        load_classifier(tmp_path / "model.onnx")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(FailatlasError, match=r"is a file but not a classifier file or folder"):
        load_classifier(tmp_path / "model.bin")
