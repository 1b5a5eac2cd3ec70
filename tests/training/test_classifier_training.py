"""Training and evaluating classifiers, and their two subcommands."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest
import torch

from failatlas import cli
from failatlas.errors import FailatlasError
from failatlas.models.classifier import ClassifierConfig, build_classifier, load_classifier, save_classifier
from failatlas.training.classifier import (
    TRAINING_LOG_FILE,
    TrainClassifierConfig,
    evaluate_classifier,
    format_evaluation,
    random_crops,
    train_classifier,
)


@dataclass
class TinySet:
    """The parts of the data module's ImageSet that training and evaluation use."""

    images: torch.Tensor                     # uint8 [N, 32, 32]
    labels: torch.Tensor                     # int64 [N]
    corrupted: torch.Tensor                  # bool [N]
    blur: torch.Tensor                       # int64 [N]
    noise: torch.Tensor                      # int64 [N]
    name: str = "tiny"
    split: str = "test"
    num_classes: int = 10
    class_names: tuple = field(default_factory=lambda: tuple(str(i) for i in range(10)))

    def __len__(self):
        return len(self.labels)

    def classifier_input(self):
        return (self.images.float() / 255)[:, None, 2:30, 2:30]

    def subset(self, index):
        return TinySet(self.images[index], self.labels[index], self.corrupted[index], self.blur[index],
                       self.noise[index], self.name, self.split, self.num_classes, self.class_names)


def tiny_set(n: int, seed: int = 0) -> TinySet:
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 32, 32, dtype=torch.uint8)
    images[:, 4:28, 4:28] = torch.randint(0, 256, (n, 24, 24), generator=g, dtype=torch.uint8)
    corrupted = torch.rand(n, generator=g) < 0.5
    blur = torch.randint(1, 4, (n,), generator=g) * corrupted
    noise = torch.randint(1, 4, (n,), generator=g) * corrupted
    return TinySet(images, torch.randint(0, 10, (n,), generator=g), corrupted, blur, noise)


def _has_data_module() -> bool:
    try:
        from failatlas.data import load_dataset  # noqa: F401
    except ImportError:
        return False
    return True


needs_mnist = pytest.mark.skipif(not _has_data_module(), reason="failatlas.data.load_dataset not available")


def test_random_crops_shift_without_loss():
    g = torch.Generator().manual_seed(1)
    images = torch.zeros(50, 32, 32, dtype=torch.uint8)
    images[:, 6:26, 6:26] = torch.randint(1, 256, (50, 20, 20), generator=g, dtype=torch.uint8)
    assert torch.equal(random_crops(images, 0, None), images[:, 2:30, 2:30])
    crops = random_crops(images, 2, g)
    assert crops.shape == (50, 28, 28)
    # the digit lies inside the centre 20×20, so a ±2 px shift keeps every pixel
    assert torch.equal(crops.sum((1, 2), dtype=torch.int64), images.sum((1, 2), dtype=torch.int64))
    shifts = set()
    for img, crop in zip(images, crops):
        match = [(r, c) for r in range(5) for c in range(5) if torch.equal(img[r:r + 28, c:c + 28], crop)]
        assert match
        shifts.add(match[0])
    assert len(shifts) > 5  # shifts really vary


def test_two_step_training_is_deterministic_and_writes_the_model(tmp_path):
    data = tiny_set(256)
    cfg = TrainClassifierConfig(epochs=1, batch_size=128, seed=7)
    r1 = train_classifier(cfg, tmp_path / "a", train_set=data, verbose=False)
    r2 = train_classifier(cfg, tmp_path / "b", train_set=data, verbose=False)
    r3 = train_classifier(TrainClassifierConfig(epochs=1, batch_size=128, seed=8), tmp_path / "c",
                          train_set=data, verbose=False)
    for name in ("config.json", "model.safetensors", TRAINING_LOG_FILE):
        assert (tmp_path / "a" / name).is_file()
    a, b, c = (load_classifier(tmp_path / d).state_dict() for d in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert int(a["features.1.num_batches_tracked"]) == 2  # exactly two optimizer steps
    assert r1.n_train == 256 and len(r1.history) == 1 and r1.history[0].loss == r2.history[0].loss
    assert r3.history[0].images_per_s > 0
    saved = load_classifier(tmp_path / "a").config
    assert saved.training["seed"] == 7 and saved.training["max_lr"] == 1e-3 and saved.dataset == "tiny"
    log = json.loads((tmp_path / "a" / TRAINING_LOG_FILE).read_text())
    assert log["n_train"] == 256 and log["machine"]["torch"] == torch.__version__


def test_training_limit_and_options_are_checked(tmp_path):
    with pytest.raises(FailatlasError, match="train_on must be 'clean' or 'corrupted'"):
        train_classifier(TrainClassifierConfig(train_on="dirty"), tmp_path / "x", train_set=tiny_set(8))
    with pytest.raises(FailatlasError, match="--translate-px must be between 0 and 2"):
        train_classifier(TrainClassifierConfig(translate_px=3), tmp_path / "x", train_set=tiny_set(8))
    for lr in (float("inf"), float("nan"), -1.0):  # inf used to train a whole epoch, then fail on saving
        with pytest.raises(FailatlasError, match=r"--max-lr\) must be a positive number"):
            train_classifier(TrainClassifierConfig(max_lr=lr), tmp_path / "x", train_set=tiny_set(8))
    assert not (tmp_path / "x").exists()
    r = train_classifier(TrainClassifierConfig(epochs=1, batch_size=4, limit=9), tmp_path / "y",
                         train_set=tiny_set(40), verbose=False)
    # 9 images in batches of 4: two steps; the single leftover image is skipped (batch norm)
    assert r.n_train == 9
    assert int(load_classifier(tmp_path / "y").state_dict()["features.1.num_batches_tracked"]) == 2


def test_evaluate_counts_keys_and_hand_computed_accuracy():
    data = tiny_set(60, seed=3)
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig()).eval()
    with torch.no_grad():
        pred = model(data.classifier_input()).argmax(1)
    # make the labels agree with the predictions on a known subset, so accuracy is far from chance
    data.labels = torch.where(torch.arange(60) % 3 == 0, pred, (pred + 1) % 10)
    model.train()  # evaluation must switch to eval mode and back
    res = evaluate_classifier(model, data, on="corrupted", batch_size=7)
    assert model.training
    hits = data.labels == pred
    assert res["n"] == 60 and res["accuracy"] == pytest.approx(hits.float().mean().item())
    expected = ["clean"] + [f"blur{b}-noise{n}" for b in (1, 2, 3) for n in (1, 2, 3)]
    assert list(res["by_severity"]) == expected
    assert sum(c["n"] for c in res["by_severity"].values()) == 60
    clean = ~data.corrupted
    assert res["by_severity"]["clean"] == {"n": int(clean.sum()), "accuracy": pytest.approx(hits[clean].float().mean().item())}
    cell = data.corrupted & (data.blur == 2) & (data.noise == 3)
    got = res["by_severity"]["blur2-noise3"]
    assert got["n"] == int(cell.sum())
    assert got["accuracy"] == (pytest.approx(hits[cell].float().mean().item()) if cell.any() else None)
    json.dumps(res)
    table = format_evaluation(res)
    assert "blur2-noise3" in table and f"{res['accuracy']:.4f}" in table


def test_evaluate_refuses_a_classifier_with_other_classes():
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(num_classes=4))
    with pytest.raises(FailatlasError, match=r"classifier has 4 classes but dataset 'tiny' has 10"):
        evaluate_classifier(model, tiny_set(8), on="clean")
    bare = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3))  # no config: caught from the logits
    with pytest.raises(FailatlasError, match=r"logits of shape \[8, 3\].*10 classes"):
        evaluate_classifier(bare, tiny_set(8), on="clean")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    for k in (10, 4):
        model = build_classifier(ClassifierConfig(num_classes=k)).eval()
        save_classifier(model, model.config, root / f"k{k}")
    return root


@needs_mnist
def test_cli_eval_classifier_json(tiny_models, capsys):
    rc = cli.main(["eval-classifier", "--model", str(tiny_models / "k10"), "--dataset", "mnist",
                   "--on", "corrupted", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    res = json.loads(out)
    assert res["n"] == 2000 and set(res) >= {"accuracy", "n", "by_severity"}
    assert len(res["by_severity"]) == 10 and sum(c["n"] for c in res["by_severity"].values()) == 2000
    assert 0 <= res["accuracy"] <= 1
    # what was evaluated, on what: the model folder (absolute), the corruption seed, the IDX folder (none here)
    assert res["model"] == str((tiny_models / "k10").absolute()) and res["seed"] == 0 and res["idx_dir"] is None
    rc = cli.main(["eval-classifier", "--model", str(tiny_models / "k10"), "--dataset", "mnist", "--on", "clean",
                   "--seed", "5", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["seed"] == 5


@needs_mnist
def test_cli_eval_classifier_wrong_classes_is_one_line(tiny_models, capsys):
    rc = cli.main(["eval-classifier", "--model", str(tiny_models / "k4"), "--dataset", "mnist", "--on", "clean"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("failatlas: error:") and "4 classes" in lines[0]


def test_cli_eval_classifier_missing_model(tmp_path, capsys):
    rc = cli.main(["eval-classifier", "--model", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "classifier folder not found" in err[0]


@needs_mnist
def test_load_dataset_training_path(tmp_path):
    r = train_classifier(TrainClassifierConfig(train_on="corrupted", epochs=1, batch_size=64, limit=128),
                         tmp_path / "m", verbose=False)
    assert r.n_train == 128 and r.config.dataset == "mnist10k" and r.config.num_classes == 10
    assert r.config.class_names is not None and len(r.config.class_names) == 10


def test_evaluate_warns_when_the_dataset_has_other_class_names():
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(class_names=tuple(str(i) for i in range(10)))).eval()
    same = evaluate_classifier(model, tiny_set(20), on="clean")
    assert same["warnings"] == [] and "warning" not in format_evaluation(same)
    other = tiny_set(20)
    other.class_names = ("T-shirt/top", "Trouser") + tuple(f"c{i}" for i in range(8))
    res = evaluate_classifier(model, other, on="clean")
    assert len(res["warnings"]) == 1 and "T-shirt/top" in res["warnings"][0]
    assert "warning: the classifier was trained on" in format_evaluation(res)


def test_train_into_a_non_empty_folder_needs_overwrite(tmp_path, one_error):
    out = tmp_path / "card"
    out.mkdir()
    (out / "README.md").write_text("model card")
    cfg = TrainClassifierConfig(epochs=1, batch_size=4, limit=8)
    one_error(lambda: train_classifier(cfg, out, train_set=tiny_set(8), verbose=False), "--out", "not empty",
              "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]
    train_classifier(cfg, out, train_set=tiny_set(8), verbose=False, overwrite=True)
    assert (out / "README.md").read_text() == "model card"  # other files stay
    assert load_classifier(out).config.num_classes == 10


def test_cli_classifier_commands_refuse_bad_options_before_any_work(tmp_path, capsys):
    # a bad device, a file in the --out path: one line, exit 2, nothing trained or written
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        (["train-classifier", "--train-on", "clean", "--device", "bogus", "--out", str(tmp_path / "a")], "bogus"),
        (["train-classifier", "--train-on", "clean", "--out", str(blocker / "sub")], "is a file, not a folder"),
        (["eval-classifier", "--model", "mnist/classifier-clean", "--device", "bogus"], "bogus"),
    ]
    for argv, words in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("failatlas: error:") and words in err and "\n" not in err
    assert not (tmp_path / "a").exists()


def test_cli_eval_classifier_takes_a_shipped_name_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval-classifier", "--model", "mnist/classifier-clean", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 2000 and res["accuracy"] > 0.95 and res["warnings"] == []


def test_classes_without_a_training_image_are_named_on_stderr(tmp_path, capsys):
    data = tiny_set(12)
    data.labels[:] = torch.arange(12) % 3  # only classes 0, 1, 2 (an IDX folder with the wrong labels file)
    train_classifier(TrainClassifierConfig(epochs=1, batch_size=4), tmp_path / "m", train_set=data, verbose=False)
    err = capsys.readouterr().err
    assert "warning: 7 of the 10 classes of tiny have no training image (3, 4, 5, 6, 7, 8, 9)" in err
    train_classifier(TrainClassifierConfig(epochs=1, batch_size=4), tmp_path / "n", train_set=tiny_set(200),
                     verbose=False)
    assert "warning" not in capsys.readouterr().err


def test_missing_class_messages_name_limit_only_where_one_was_set(capsys):
    from failatlas.training.classifier import warn_missing_classes

    labels = torch.tensor([0, 1, 1, 0])
    assert warn_missing_classes(labels, 3, "toy") == [2]  # the CLI commands have no --limit option
    assert "check the dataset\n" in capsys.readouterr().err
    warn_missing_classes(labels, 3, "toy", limit=True)  # TrainClassifierConfig(limit=...) in the library
    assert "check the dataset (or a --limit that keeps too few images)" in capsys.readouterr().err
    with pytest.raises(FailatlasError, match=r"needs at least 2: check the labels file$"):
        warn_missing_classes(torch.zeros(4, dtype=torch.long), 3, "toy")


def test_evaluate_refuses_nan_logits_on_some_real_images():
    """A model finite on blank and random probes but NaN on some digits: its argmax counted them as class 0
    and the accuracy looked plausible."""
    class NanOnBright(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(784, 10)

        def forward(self, x):
            logits = self.linear(x.flatten(1))
            bright = x.flatten(1).mean(1, keepdim=True) > 0.378
            return torch.where(bright, torch.full_like(logits, float("nan")), logits)

    data = tiny_set(20)
    mean = data.classifier_input().flatten(1).mean(1)
    assert not bool((mean[:8] > 0.378).any()) and bool((mean[8:16] > 0.378).any())
    with pytest.raises(FailatlasError, match=r"NaN or infinite logits for \d+ of the 8 images 8\.\.15 of 'tiny'"
                                             r".*accuracy would be meaningless"):
        evaluate_classifier(NanOnBright(), data, on="clean", batch_size=8)


def test_overwrite_refuses_a_generator_or_train_gan_folder(tmp_path, one_error):
    """--overwrite replaces config.json: in a generator's folder that is the generator's config."""
    cfg = TrainClassifierConfig(epochs=1, batch_size=4, limit=8)
    for name, text in (("generator.safetensors", "x"), ("checkpoint.pt", "x"),
                       ("config.json", json.dumps({"kind": "stylegan2-generator", "config": {}}))):
        out = tmp_path / name
        out.mkdir()
        (out / name).write_text(text)
        one_error(lambda: train_classifier(cfg, out, train_set=tiny_set(8), verbose=False, overwrite=True),
                  "holds a generator", "another folder")
        assert [p.name for p in out.iterdir()] == [name] and (out / name).read_text() == text


def test_an_interrupted_overwrite_leaves_the_old_model_whole(tmp_path, monkeypatch):
    """config.json, model.safetensors and training.json are staged and moved in together: a Ctrl-C while they
    are written leaves the previous model's files (no mismatched pair), and one during the moves is held
    until all three are in place."""
    import os
    import signal

    from failatlas import _io
    from failatlas.models import classifier as models_classifier

    out = tmp_path / "m"
    cfg = TrainClassifierConfig(epochs=1, batch_size=4, limit=8)
    train_classifier(cfg, out, train_set=tiny_set(8), verbose=False)
    names = ("config.json", "model.safetensors", TRAINING_LOG_FILE)
    before = {n: (out / n).read_bytes() for n in names}
    real_write = models_classifier.write_json

    def ctrl_c(*args, **kwargs):  # after the weights, before the config
        raise KeyboardInterrupt

    monkeypatch.setattr(models_classifier, "write_json", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(dataclasses.replace(cfg, seed=5), out, train_set=tiny_set(8), verbose=False, overwrite=True)
    assert {n: (out / n).read_bytes() for n in names} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no staging folder left
    monkeypatch.setattr(models_classifier, "write_json", real_write)

    real_replace, moved = os.replace, []

    def replace_then_signal(src, dst):
        real_replace(src, dst)
        moved.append(dst)
        if str(dst) == str(out / "config.json"):  # the first move into --out (the others are staged)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(_io.os, "replace", replace_then_signal)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(dataclasses.replace(cfg, seed=5), out, train_set=tiny_set(8), verbose=False, overwrite=True)
    monkeypatch.setattr(_io.os, "replace", real_replace)
    assert [n for n in names if (out / n).read_bytes() == before[n]] == []
    assert load_classifier(out).config.training["seed"] == 5
    assert sorted(p.name for p in out.iterdir()) == sorted(names)


def test_the_other_dataset_warning_gives_the_flags_of_the_recorded_data():
    """A model whose record names its training data: the warning says exactly what to pass."""
    torch.manual_seed(0)
    names = ("T-shirt/top", "Trouser") + tuple(f"c{i}" for i in range(8))
    recorded = ClassifierConfig(dataset="fashion", class_names=names,
                                training={"dataset": "fashion", "idx_dir": "/data/fashion"})
    res = evaluate_classifier(build_classifier(recorded).eval(), tiny_set(20), on="clean")
    assert res["warnings"][0].endswith("evaluate it on the dataset it was trained for: "
                                       "--dataset fashion --idx-dir /data/fashion")
    unrecorded = build_classifier(ClassifierConfig(dataset="", class_names=names)).eval()
    assert evaluate_classifier(unrecorded, tiny_set(20), on="clean")["warnings"][0].endswith("trained for")


def test_cli_texts(monkeypatch, capsys):
    """One epoch is not "1 epochs"; --lr says what D gets; --snapshot-kimg that it also redraws the samples;
    eval-gan's --n says when it is balanced."""
    from failatlas.training import classifier as training_classifier

    real = training_classifier.train_classifier
    monkeypatch.setattr(training_classifier, "train_classifier",
                        lambda cfg, out, **kw: real(dataclasses.replace(cfg, limit=8), out, train_set=tiny_set(8),
                                                    verbose=False, **kw))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        assert cli.main(["train-classifier", "--train-on", "clean", "--epochs", "1", "--batch-size", "4",
                         "--out", f"{tmp}/m"]) == 0
    assert "(8 images, 1 epoch, " in capsys.readouterr().out
    helps = {}
    for command in ("train-gan", "eval-gan"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        helps[command] = " ".join(capsys.readouterr().out.split())
    assert "D's is lr · 16/17" in helps["train-gan"]
    assert "redraw samples-latest.png every this many kimg" in helps["train-gan"]
    assert "multiple of the number of classes is balanced" in helps["eval-gan"]


@needs_mnist
def test_cli_train_classifier_limit(tmp_path, capsys):
    """--limit reaches the library (training.json records it) and its check names the flag."""
    out = tmp_path / "m"
    rc = cli.main(["train-classifier", "--train-on", "clean", "--epochs", "1", "--batch-size", "8", "--limit", "16",
                   "--out", str(out)])
    said = capsys.readouterr()
    assert rc == 0 and "(16 images, 1 epoch," in said.out
    assert "epoch 1/1  loss" in said.err  # the per-epoch line (stderr is no terminal here)
    log = json.loads((out / TRAINING_LOG_FILE).read_text())
    assert log["n_train"] == 16 and log["config"]["training"]["limit"] == 16
    rc = cli.main(["train-classifier", "--train-on", "clean", "--limit", "1", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--limit must be at least 2 images" in err[0]
    assert not (tmp_path / "x").exists()
