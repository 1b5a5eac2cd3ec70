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


def _folder_with_record(tmp_path, training, name="model"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"training": training}))
    return folder


def test_data_to_judge_takes_the_record_unless_told_otherwise(tmp_path):
    import pytest

    from failatlas._paths import data_to_judge
    from failatlas.errors import FailatlasError

    data = tmp_path / "data"
    data.mkdir()
    model = _folder_with_record(tmp_path, {"dataset": "toy", "idx_dir": str(data), "blur": "isotropic"})
    assert data_to_judge(model) == {"dataset": "toy", "idx_dir": str(data), "blur": "isotropic", "recorded": True}
    assert data_to_judge(model, blur="paper")["blur"] == "paper"  # an option given overrides the record's
    assert data_to_judge(model, "fashion") == {"dataset": "fashion", "idx_dir": None, "blur": "paper",
                                               "recorded": False}  # a named dataset: the record is not used
    moved = _folder_with_record(tmp_path, {"dataset": "toy", "idx_dir": "gone/data"}, "moved")
    with pytest.raises(FailatlasError, match=r"records that it was trained on toy from the IDX folder gone/data, "
                                             r"which is not there; pass --idx-dir"):
        data_to_judge(moved)
    assert data_to_judge(moved, idx_dir=data)["idx_dir"] == str(data)  # the folder given instead
    embedded = _folder_with_record(tmp_path, {"dataset": "mnist10k"}, "embedded")
    assert data_to_judge(embedded, idx_dir=data)["dataset"] == "mnist"  # full MNIST from that folder
    assert data_to_judge(tmp_path / "nothing")["dataset"] == "mnist"


def test_same_data_compares_the_images_not_the_spelling(tmp_path, monkeypatch):
    from failatlas._paths import same_data

    monkeypatch.chdir(tmp_path)
    assert same_data({"dataset": "mnist", "idx_dir": None}, {"dataset": "mnist10k", "idx_dir": None})
    assert same_data({"dataset": "toy", "idx_dir": "d"}, {"dataset": "toy", "idx_dir": str(tmp_path / "d")})
    assert not same_data({"dataset": "toy", "idx_dir": "d"}, {"dataset": "toy", "idx_dir": "e"})
    assert not same_data({"dataset": "mnist", "idx_dir": None}, {"dataset": "fashion", "idx_dir": None})
    # one folder under two names is the same images (a user's "fm5" and "fm5-renamed" were called other data)
    assert same_data({"dataset": "fm5", "idx_dir": "d"}, {"dataset": "fm5-renamed", "idx_dir": str(tmp_path / "d")})
    assert same_data({"dataset": "fashion", "idx_dir": None}, {"dataset": "fm", "idx_dir": "/usr/share/datasets/fashion-mnist"})
    assert same_data({"dataset": "fashion", "idx_dir": None}, {"dataset": "Fashion-MNIST", "idx_dir": None})
    assert not same_data({"dataset": "mnist", "idx_dir": "d"}, {"dataset": "mnist", "idx_dir": None})  # full vs 10k


def test_data_notes_name_empty_classes_and_models_of_other_data(tmp_path):
    from types import SimpleNamespace

    from failatlas._paths import data_notes

    gen = _folder_with_record(tmp_path, {"dataset": "toy", "idx_dir": str(tmp_path), "classes_without_data": [4]})
    same = SimpleNamespace(config=SimpleNamespace(training={"dataset": "toy", "idx_dir": str(tmp_path)}))
    other = SimpleNamespace(config=SimpleNamespace(training={"dataset": "mnist"}))
    unknown = SimpleNamespace()  # a file or module without a record: nothing to compare
    notes = data_notes(gen, {"same": same, "other": other, "unknown": unknown})
    assert len(notes) == 2
    assert notes[0].startswith("the generator's training images held no image of class 4 ")
    assert notes[1].startswith(f"other was trained on mnist but the generator on toy ({tmp_path})")
    assert data_notes("mnist/generator", {"c": other}) == []  # the shipped pair: same data, no empty class
    # a population without class 4 (--classes 0 1 2 3) has nothing to say about it
    assert data_notes(gen, {"same": same}, classes=(0, 1, 2, 3)) == []
    assert data_notes(gen, {"same": same}, classes=(3, 4))[0].startswith("the generator's training images held")
