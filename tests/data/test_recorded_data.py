"""The data a saved model was trained on travels with it: IDX folders are recorded absolute, and
eval-classifier / eval-gan / export judge a model on its own data unless told otherwise."""

import json

from failatlas._paths import recorded_data, training_data
from failatlas.deploy import evaluate_any_classifier
from failatlas.training.classifier import TrainClassifierConfig, train_classifier


def test_a_relative_idx_folder_is_recorded_absolute_and_used_by_default(idx_folder, tmp_path, monkeypatch):
    folder, _ = idx_folder(gz=False, n_train=40, n_test=20, classes=3)
    monkeypatch.chdir(folder.parent)
    cfg = TrainClassifierConfig(dataset="toy", idx_dir=folder.name, train_on="clean", epochs=1, batch_size=16,
                                translate_px=0)
    train_classifier(cfg, tmp_path / "clf", verbose=False)
    recorded = json.loads((tmp_path / "clf" / "config.json").read_text())["training"]
    assert recorded["idx_dir"] == str(folder.absolute())
    monkeypatch.chdir(tmp_path / "clf")  # elsewhere: the recorded folder still finds the data
    assert recorded_data(tmp_path / "clf") == {"dataset": "toy", "idx_dir": str(folder.absolute()), "blur": "paper"}
    result = evaluate_any_classifier(tmp_path / "clf")  # no dataset named: the classifier's own, not MNIST
    assert result["n"] == 20 and result["dataset"] == "toy"
    mnist = evaluate_any_classifier("mnist/classifier-clean", on="clean")  # a shipped model records MNIST
    assert mnist["n"] == 2000


def test_training_data_reads_only_what_it_understands():
    assert training_data({"dataset": "fashion", "idx_dir": "", "blur": "nope"}) == \
        {"dataset": "fashion", "idx_dir": None, "blur": "paper"}
    assert training_data({"idx_dir": "x"}) is None and training_data("mnist") is None
    assert recorded_data("model.onnx") is None and recorded_data("/nonexistent/folder") is None


def test_training_data_with_one_class_is_refused_before_training(idx_folder, tmp_path):
    import pytest

    from failatlas.errors import FailatlasError

    folder, _ = idx_folder(gz=False, n_train=20, n_test=10, classes=1)
    cfg = TrainClassifierConfig(dataset="one", idx_dir=str(folder), train_on="clean", epochs=1, translate_px=0)
    with pytest.raises(FailatlasError, match=r"hold 1 class \(0\).*needs at least 2"):
        train_classifier(cfg, tmp_path / "clf", verbose=False)
    assert not (tmp_path / "clf" / "model.safetensors").exists()
