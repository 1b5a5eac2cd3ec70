import copy
import dataclasses
import json

import pytest
import torch

from failatlas import FailatlasError
from failatlas._torchscript import save, trace
from failatlas.cli import main
from failatlas.models.classifier import ClassifierConfig, build_classifier, save_classifier
from failatlas.models.stylegan2 import CONFIGS, Generator, save_generator
from failatlas.training import quality
from failatlas.training.quality import CELLS, corruption_cell, evaluate_generator, frechet_distance


@pytest.fixture(autouse=True)
def _quick_judge(monkeypatch):
    """The corruption classifier's training is what takes time; one short epoch on one copy here."""
    real = quality.train_corruption_classifier
    monkeypatch.setattr(quality, "train_corruption_classifier",
                        lambda *a, **k: real(*a, **{**k, "copies": 1, "epochs": 1, "limit": 2000}))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    G = Generator(CONFIGS["tiny"]).eval()
    C = build_classifier(ClassifierConfig()).eval()
    return G, C


def test_frechet_distance_closed_form():
    torch.manual_seed(0)
    a = torch.randn(4000, 3, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), rel=1e-9)
    # N(0, I) vs N(0, 4I) in 3-D: 3·(1 + 4 − 2·2) = 3
    assert frechet_distance(a, 2 * a) == pytest.approx(3 * (1 + 4 - 4) * float(a.var(0).mean()), rel=1e-2)


def test_frechet_distance_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    torch.manual_seed(1)
    a = torch.randn(500, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    b = torch.randn(400, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64) + 0.3
    ca, cb = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    ref = float(((a.mean(0) - b.mean(0)) ** 2).sum()) + ca.trace() + cb.trace() - 2 * linalg.sqrtm(ca @ cb).real.trace()
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)


def test_corruption_cells():
    corrupted = torch.tensor([False, True, True, True])
    blur = torch.tensor([0, 1, 3, 2])
    noise = torch.tensor([0, 1, 3, 1])
    cells = corruption_cell(corrupted, blur, noise)
    assert [CELLS[i] for i in cells] == ["clean", "blur1-noise1", "blur3-noise3", "blur2-noise1"]


def test_evaluate_generator_figures(models):
    G, C = models
    q = evaluate_generator(G, C, n=40, seed=2, n_real=600, progress=False)
    assert 0.0 <= q.conditional_accuracy <= 1.0 and len(q.per_class_accuracy) == 10
    # by hand: the same samples, the same classifier
    imgs, y = quality.generate(G, 40, 2, "const")
    with torch.no_grad():
        pred = C(quality.classifier_view(imgs)).argmax(1)
    assert q.conditional_accuracy == pytest.approx(float((pred == y).float().mean()))
    assert q.per_class_accuracy[3] == pytest.approx(float((pred[y == 3] == 3).float().mean()))
    assert q.fd > q.fd_real_vs_real > 0  # an untrained generator is far from the data
    assert set(q.corruption_tv_by_noise_mode) == {"random", "const", "none"}
    assert all(0.0 <= v <= 1.0 for v in q.corruption_tv_by_noise_mode.values())
    dist = q.corruption_distribution
    assert dist["cells"] == list(CELLS) and sum(dist["real"]) == pytest.approx(1.0)
    assert q.corruption_classifier_accuracy > 0.3  # well above chance (0.1) after one epoch
    # a judge trained on a few hundred images is weak: its corruption_tv comes with a warning
    assert bool(q.warnings) == (q.corruption_classifier_accuracy < quality.JUDGE_MIN_ACCURACY)
    weak = dataclasses.replace(q, corruption_classifier_accuracy=0.5,
                               warnings=quality.judge_warnings(0.5, torch.tensor([0] * 6 + [4] * 3 + [8] * 3)))
    assert len(weak.warnings) == 1 and "commonest cell gives 0.50" in weak.warnings[0]  # half the images clean
    assert "warning: the corruption classifier recognizes only 0.50" in weak.format()
    assert quality.judge_warnings(0.97, torch.zeros(4, dtype=torch.long)) == []
    json.dumps(q.to_json())
    # the styles of the same 40 latents: how many independent directions they span, as the analysis measures it
    from failatlas.analysis.direction import effective_dimension

    z = torch.randn(40, G.z_dim, generator=quality.latent_generator(2))
    with torch.no_grad():
        s = G.styles(G.mapping(z, torch.arange(40) % 10))
    assert q.style_dims == G.style_dim and q.style_effective_dims == pytest.approx(effective_dimension(s), rel=1e-9)
    assert 1 < q.style_effective_dims < 40  # 40 samples span at most 39 directions
    assert f"StyleSpace span        {q.style_effective_dims:.1f} independent directions of {G.style_dim}" in q.format()


def test_eval_gan_cli_json_and_bad_classifier(models, tmp_path, capsys):
    G, C = models
    save_generator(G, tmp_path / "g")
    save_classifier(C, ClassifierConfig(), tmp_path / "c")
    rc = main(["eval-gan", "--generator", str(tmp_path / "g"), "--classifier", str(tmp_path / "c"),
               "--n", "20", "--n-real", "100", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert {"conditional_accuracy", "per_class_accuracy", "fd", "fd_real_vs_real", "corruption_tv"} <= set(out)
    from failatlas._io import sha256
    assert out["generator_sha256"] == sha256(tmp_path / "g" / "generator.safetensors")  # what was judged
    # ... by which classifier, on which data and draw
    assert out["classifier"] == str((tmp_path / "c").absolute())
    assert out["classifier_sha256"] == sha256(tmp_path / "c" / "model.safetensors")
    assert (out["seed"], out["n_real"], out["blur"]) == (0, 100, "paper")
    save_classifier(build_classifier(ClassifierConfig(num_classes=7)), ClassifierConfig(num_classes=7), tmp_path / "c7")
    rc = main(["eval-gan", "--generator", str(tmp_path / "g"), "--classifier", str(tmp_path / "c7"), "--n", "20", "--n-real", "100"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "predicts 7 classes" in err[0]


def test_more_samples_than_the_machines_memory_holds_are_refused_before_any_work(models, one_error):
    G, C = models
    one_error(lambda: evaluate_generator(G, C, n=10**11), "--n 100000000000 samples need about", "lower --n")


def test_inception_fid_only_with_user_weights(models, tmp_path):
    G, C = models
    feats = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())  # 48 features
    save(trace(feats, torch.zeros(1, 3, 299, 299)), tmp_path / "inc.pt")
    q = evaluate_generator(G, C, n=20, inception_weights=tmp_path / "inc.pt", n_real=100, progress=False)
    assert q.inception_fid is not None and q.inception_fid > 0
    (tmp_path / "bad.pt").write_bytes(b"not a torchscript archive")
    with pytest.raises(FailatlasError, match="not a readable TorchScript archive"):
        quality._inception_features(tmp_path / "bad.pt", torch.zeros(2, 1, 32, 32))
    assert evaluate_generator(G, C, n=20, n_real=100, progress=False).inception_fid is None


def test_an_inception_file_for_other_input_is_refused_before_any_work(models, tmp_path, one_error):
    """A TorchScript model that cannot take [N, 3, 299, 299] was a traceback from inside it after every other
    figure was computed."""
    G, C = models
    save(trace(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 5)), torch.zeros(1, 1, 28, 28)),
         tmp_path / "mnist.pt")
    one_error(lambda: evaluate_generator(G, C, n=20, inception_weights=tmp_path / "mnist.pt", n_real=100,
                                         progress=False), "mnist.pt fails on images [2, 3, 299, 299]",
              "RuntimeError")
    save(trace(torch.nn.Flatten(0), torch.zeros(1, 3, 299, 299)), tmp_path / "flat.pt")
    one_error(lambda: evaluate_generator(G, C, n=20, inception_weights=tmp_path / "flat.pt", n_real=100,
                                         progress=False), "flat.pt returns [536406]", "[N, features]")


def test_within_class_diversity_sees_mode_collapse():
    torch.manual_seed(0)
    real = torch.randn(400, 8)
    y = torch.arange(400) % 4
    same = quality.within_class_diversity(real, y, real, y, 4)
    assert same == pytest.approx([1.0] * 4)
    collapsed = real.clone()
    collapsed[y == 2] = collapsed[y == 2][0] + 0.01 * torch.randn_like(collapsed[y == 2])  # one digit for class 2
    d = quality.within_class_diversity(collapsed, y, real, y, 4)
    assert d[2] < 0.05 and d[0] == pytest.approx(1.0)
    half = quality.within_class_diversity(real * 0.5, y, real, y, 4)
    assert half == pytest.approx([0.5] * 4)
    assert quality.within_class_diversity(real[:1], y[:1], real, y, 4)[0] != quality.within_class_diversity(
        real[:1], y[:1], real, y, 4)[0]  # NaN: too few samples


def test_frame_level_and_shares():
    img = -torch.ones(3, 1, 32, 32)
    img[1] = 1.0  # all white: frame level 1
    img[2, :, 2:30, 2:30] = 1.0  # a white digit area, empty frame: level 0
    level = quality.frame_level(img)
    assert level.tolist() == [0.0, 1.0, 0.0]
    shares = quality.frame_shares(img)
    assert shares.tolist() == pytest.approx([2 / 3, 0, 0, 1 / 3])


def test_calibrate_noise_threshold_composes_with_the_layers_own_threshold(models):
    """On a generator that already has a threshold t₀, the returned (threshold, gain) rebuild exactly the
    chosen grid point: threshold = k·(t₀ + t), applied with set_noise_threshold."""
    from failatlas.training.gan import set_noise_threshold

    G = Generator(dataclasses.replace(models[0].cfg, noise_threshold=True)).eval()
    G.load_state_dict(models[0].state_dict(), strict=False)
    conv = G.synthesis_network.layers[G.synthesis_network.names.index("b32.conv0")]
    with torch.no_grad():
        conv.noise_strength.fill_(0.5)
    set_noise_threshold(G, "b32.conv0", 0.1)  # amplitude 0.4
    cal = quality.calibrate_noise_threshold(G, "b32.conv0", n=40, thresholds=(0.0, 0.2, 0.45), gains=(1.0, 3.0))
    assert cal["criterion"] == "frame" and len(cal["grid"]) == 6
    t, k, _ = min(cal["grid"], key=lambda r: r[2])
    assert (cal["gain"], cal["threshold"]) == (k, pytest.approx(k * (0.1 + t)))
    H = copy.deepcopy(G)
    set_noise_threshold(H, "b32.conv0", cal["threshold"], cal["gain"])
    assert quality.frame_shares(quality.generate(H, 40, 0)[0]).tolist() == pytest.approx(cal["generated"])
    # t = 0.45 silences the layer (0.4 ≤ 0.45): the same images as a zero noise strength
    with torch.no_grad():
        conv.noise_strength.zero_()
    silent = quality.frame_shares(quality.generate(G, 40, 0)[0]).tolist()
    assert [tv for t, k, tv in cal["grid"] if t == 0.45] == [pytest.approx(0.5 * sum(
        abs(a - b) for a, b in zip(silent, cal["real"])))] * 2


def test_calibrate_noise_threshold_by_a_judge_and_bad_options(models):
    cal = quality.calibrate_noise_threshold(models[0], "b32.conv0", criterion="judge", n=40,
                                            thresholds=(0.0,), gains=(1.0,))
    assert cal["criterion"] == "judge" and len(cal["real"]) == len(CELLS) == len(cal["generated"])
    assert sum(cal["real"]) == pytest.approx(1.0) and sum(cal["generated"]) == pytest.approx(1.0)
    with pytest.raises(FailatlasError, match="criterion must be one of frame, judge"):
        quality.calibrate_noise_threshold(models[0], "b32.conv0", criterion="fid")
    from failatlas.training.gan import set_noise_threshold

    with pytest.raises(FailatlasError, match="has no noise thresholds"):
        set_noise_threshold(models[0], "b32.conv0", 0.1)


def test_calibrate_noise_threshold_keeps_the_model_and_never_does_worse(models):
    G = models[0]
    z = torch.randn(4, G.z_dim)
    y = torch.arange(4)
    before = G(z, y)
    cal = quality.calibrate_noise_threshold(G, "b32.conv0", n=40, thresholds=(0.0, 0.5), gains=(1.0, 3.0))
    assert torch.equal(G(z, y), before)  # the search leaves the layer as it was
    assert len(cal["grid"]) == 4 and cal["grid"][0][:2] == (0.0, 1.0)
    assert cal["tv"] == min(tv for _, _, tv in cal["grid"]) <= cal["grid"][0][2]
    assert sum(cal["real"]) == pytest.approx(1.0) and sum(cal["generated"]) == pytest.approx(1.0)
    assert cal["threshold"] in (0.0, 1.5) and cal["gain"] in (1.0, 3.0)
    with pytest.raises(FailatlasError, match="no conv layer"):
        quality.calibrate_noise_threshold(G, "b32.torgb", n=40)


def test_eval_gan_names_a_classifier_file_it_cannot_judge_with(tmp_path, one_error):
    from failatlas.training.quality import evaluate_generator_folders

    one_error(lambda: evaluate_generator_folders("mnist/generator", tmp_path / "model.pt", n=10),
              "classifier folder", "penultimate features", "model.pt")


def test_non_finite_images_logits_or_features_give_one_message(models, tmp_path, capsys, one_error):
    """Instead of torch's LinAlgError from inside the Fréchet distance."""
    G, C = models
    bad_G = copy.deepcopy(G)
    real_forward = G.forward

    def nan_for_class_3(z, y, **kwargs):
        img = real_forward(z, y, **kwargs)
        return torch.where((y == 3)[:, None, None, None], torch.full_like(img, float("nan")), img)

    bad_G.forward = nan_for_class_3
    one_error(lambda: evaluate_generator(bad_G, C, n=20, n_real=100, progress=False),
              "the generator made images with NaN or infinite pixels for 2 of the 20 images of noise mode",
              "first for image 3")
    # a classifier whose finite but huge weights overflow: through the CLI, one line
    huge = copy.deepcopy(C)
    with torch.no_grad():
        huge.fc1.weight.fill_(3e38)
    save_generator(G, tmp_path / "g")
    save_classifier(huge, ClassifierConfig(), tmp_path / "c")
    rc = main(["eval-gan", "--generator", str(tmp_path / "g"), "--classifier", str(tmp_path / "c"),
               "--n", "20", "--n-real", "100"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "NaN or infinite" in err[0] and "of the 20 generated images" in err[0], err


def test_eval_gan_shows_progress_and_checks_the_inception_file_first(models, tmp_path, capsys, monkeypatch):
    G, C = models
    evaluate_generator(G, C, n=20, n_real=100, progress=True)
    err = capsys.readouterr().err
    for stage in ("eval-gan: generating", "eval-gan: classifying", "eval-gan: corruption cells"):
        assert stage in err, stage
    assert "60/60" in err  # 20 images in each of the three noise modes

    def no_work(*args, **kwargs):
        raise AssertionError("generated images before checking --inception-weights")

    monkeypatch.setattr(quality, "generate", no_work)
    with pytest.raises(FailatlasError, match="not found: .*missing.pt"):
        evaluate_generator(G, C, n=20, n_real=100, inception_weights=tmp_path / "missing.pt", progress=False)
    (tmp_path / "bad.pt").write_bytes(b"not a torchscript archive")
    with pytest.raises(FailatlasError, match="not a readable TorchScript archive"):
        evaluate_generator(G, C, n=20, n_real=100, inception_weights=tmp_path / "bad.pt", progress=False)


def test_eval_gan_json_writes_null_for_diversity_it_could_not_measure(models, tmp_path, capsys):
    """With a tiny --n-real some classes have fewer than two real test images: their diversity is null (not
    a bare NaN, which is not JSON), and a warning says which classes the average covers."""
    G, C = models
    save_generator(G, tmp_path / "g")
    save_classifier(C, ClassifierConfig(), tmp_path / "c")
    rc = main(["eval-gan", "--generator", str(tmp_path / "g"), "--classifier", str(tmp_path / "c"),
               "--n", "20", "--n-real", "12", "--json"])
    text = capsys.readouterr().out

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    out = json.loads(text, parse_constant=refuse)
    assert rc == 0 and None in out["diversity_per_class"]
    missing = [c for c, d in enumerate(out["diversity_per_class"]) if d is None]
    note = [w for w in out["warnings"] if w.startswith("diversity covers")]
    assert note == [note[0]] and f"covers {10 - len(missing)} of the 10 classes" in note[0]
    assert ", ".join(map(str, missing)) in note[0]


def test_generated_images_carry_no_gradient(models):
    """eval-gan and the noise calibration judge images; they need no graph (torch warned when the
    calibration turned such an image's statistics into Python numbers)."""
    G = models[0]
    assert any(p.requires_grad for p in G.parameters())  # a trainable generator: the graph would be built
    images, labels = quality.generate(G, 6, 0)
    assert not images.requires_grad and images.shape[0] == 6 and labels.tolist() == [0, 1, 2, 3, 4, 5]
