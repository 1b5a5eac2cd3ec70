import json
import os
import pickle
import random

import pytest
import torch

from failatlas import FailatlasError, load_generator
from failatlas.cli import main
from failatlas.training import gan
from failatlas.training.gan import GANTrainConfig, train_gan

# 'tiny' architecture, batch 8: a step takes a few milliseconds.
TINY = dict(config="tiny", batch=8, snapshot_kimg=0.016, sample_kimg=0.032, log_every=1, seed=3)


@pytest.fixture(autouse=True)
def _few_reals(monkeypatch):
    """Train on 64 real images: the loop is what is tested, not the data."""
    real = gan._load_training_images

    def few(cfg):
        x, y, k, missing = real(cfg)
        return x[:64].clone(), y[:64].clone(), k, missing

    monkeypatch.setattr(gan, "_load_training_images", few)


def _states(folder):
    ck = torch.load(folder / "checkpoint.pt", weights_only=True)
    return ck


def test_tiny_run_writes_everything(tmp_path):
    out = tmp_path / "run"
    res = train_gan(GANTrainConfig(kimg=0.032, **TINY), out, progress=False)
    assert res.steps == 4 and res.kimg == 0.032 and not res.interrupted
    names = {p.name for p in out.iterdir()}
    assert {"checkpoint.pt", "generator.safetensors", "config.json", "metrics.jsonl", "samples-latest.png",
            "samples-latest.json"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2, 3, 4]
    assert all(set(l) >= {"kimg", "loss_G", "loss_D", "images_per_s"} for l in lines)
    assert "r1" in lines[0]  # lazy R1 runs on step 0
    meta = json.loads((out / "config.json").read_text())["training"]
    assert meta["kimg"] == 0.032 and meta["step"] == 4 and meta["config"] == "tiny"
    G = load_generator(out)  # the EMA generator is directly usable
    assert G.style_dim == 272
    ck = _states(out)
    assert torch.equal(G.state_dict()["synthesis_network.const"], ck["G_ema"]["synthesis_network.const"])
    assert not torch.equal(ck["G"]["synthesis_network.const"], ck["G_ema"]["synthesis_network.const"])


def test_resume_continues_exactly(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train_gan(GANTrainConfig(kimg=0.048, **TINY), full, progress=False)
    train_gan(GANTrainConfig(kimg=0.024, **TINY), part, progress=False)
    r = train_gan(GANTrainConfig(kimg=0.048, **TINY), part, resume=True, progress=False)
    assert r.steps == 6
    a, b = _states(full), _states(part)
    for key in ("G", "D", "G_ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), (key, name)
    assert a["step"] == b["step"] == 6
    assert torch.equal(a["rng"], b["rng"])
    # the logged losses too: the lazy R1 value of the last R1 step travels in the checkpoint
    logged = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (full, part)]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("images_per_s", "seconds")} for r in rows]  # noqa: E731
    assert strip(logged[0]) == strip(logged[1])


def test_resume_refuses_other_options_and_existing_runs(tmp_path):
    out = tmp_path / "run"
    train_gan(GANTrainConfig(kimg=0.016, **TINY), out, progress=False)
    with pytest.raises(FailatlasError, match="already exists; pass --resume"):
        train_gan(GANTrainConfig(kimg=0.016, **TINY), out, progress=False)
    with pytest.raises(FailatlasError, match=r"trained with --lr 0.0025, not --lr 0.01; resume with the checkpoint's"):
        train_gan(GANTrainConfig(kimg=0.032, **{**TINY, "seed": 3}, lr=0.01), out, resume=True, progress=False)
    with pytest.raises(FailatlasError, match="does not exist"):
        train_gan(GANTrainConfig(kimg=0.016, **TINY), tmp_path / "none", resume=True, progress=False)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/failatlas-pwned",))


def test_corrupt_or_tampered_checkpoint_gives_one_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    train_gan(GANTrainConfig(kimg=0.016, **TINY), out, progress=False)
    ck = out / "checkpoint.pt"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 3])
    with pytest.raises(FailatlasError, match="damaged or not a torch checkpoint .truncated or corrupt"):
        train_gan(GANTrainConfig(kimg=0.032, **TINY), out, resume=True, progress=False)
    if os.path.exists("/tmp/failatlas-pwned"):
        os.unlink("/tmp/failatlas-pwned")
    with open(ck, "wb") as fh:
        pickle.dump({"G": _Evil()}, fh)
    rc = main(["train-gan", "--config", "tiny", "--batch", "8", "--kimg", "0.032", "--seed", "3",
               "--out", str(out), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not loaded" in err[0] and str(ck) in err[0]
    assert not os.path.exists("/tmp/failatlas-pwned")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train_gan(GANTrainConfig(kimg=0.016, **TINY), out, progress=False)
    good = (out / "checkpoint.pt").read_bytes()
    real_forward = gan.Discriminator.forward

    def poisoned(self, img, y, cond_weight=1.0):
        return real_forward(self, img, y, cond_weight) * float("nan")

    monkeypatch.setattr(gan.Discriminator, "forward", poisoned)
    with pytest.raises(FailatlasError) as info:
        train_gan(GANTrainConfig(kimg=0.064, **TINY), out, resume=True, progress=False)
    assert (out / "checkpoint.pt").read_bytes() == good
    said = str(info.value)  # the step and kimg as metrics.jsonl counts them; the checkpoint is the one resumed
    assert "non-finite in step 3 (kimg 0.024;" in said and "(step 2, kimg 0.016, before the divergence) was kept" in said
    assert f"--init-from {out} --lr 0.000625 --out NEW_FOLDER" in said and "last good" not in said
    # a run that diverges before its first checkpoint says so
    with pytest.raises(FailatlasError) as info:
        train_gan(GANTrainConfig(kimg=0.064, **TINY), tmp_path / "new", progress=False)
    said = str(info.value)
    assert "non-finite in step 1 (kimg 0.008;" in said and "no checkpoint was saved" in said
    assert "was kept" not in said and not (tmp_path / "new" / "checkpoint.pt").exists()


def test_bad_options():
    with pytest.raises(FailatlasError, match="unknown --config"):
        GANTrainConfig(config="huge").validate()
    with pytest.raises(FailatlasError, match="--kimg must be a positive"):
        GANTrainConfig(kimg=0).validate()
    with pytest.raises(FailatlasError, match="--batch"):
        GANTrainConfig(batch=1).validate()
    with pytest.raises(FailatlasError, match="multiple of 4"):
        GANTrainConfig(batch=10).validate()
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(FailatlasError, match="--mix-weight"):
            GANTrainConfig(mix_weight=bad).validate()


def test_max_minutes_saves_and_stops_then_resumes(tmp_path):
    out = tmp_path / "run"
    r = train_gan(GANTrainConfig(kimg=0.064, **TINY), out, progress=False, max_minutes=1e-9)
    assert r.time_limited and not r.interrupted and r.steps == 1
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1
    r = train_gan(GANTrainConfig(kimg=0.064, **TINY), out, resume=True, progress=False)
    assert r.steps == 8 and not r.time_limited
    with pytest.raises(FailatlasError, match="--max-minutes must be positive"):
        train_gan(GANTrainConfig(kimg=0.064, **TINY), tmp_path / "x", progress=False, max_minutes=0)


def test_device_option(tmp_path, capsys):
    assert gan.resolve_device("cpu").type == "cpu"
    assert gan.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(FailatlasError, match="not a device"):
        gan.resolve_device("gpu0")
    with pytest.raises(FailatlasError, match="only cpu and cuda"):
        gan.resolve_device("meta")
    if not torch.cuda.is_available():
        rc = main(["train-gan", "--config", "tiny", "--batch", "8", "--kimg", "0.016", "--device", "cuda",
                   "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "sees no CUDA device" in err[0] and "--device cpu" in err[0]
        assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_resumes(tmp_path):
    """On CUDA a resumed run continues from the saved state (RNG of the device included). CUDA kernels
    (atomic adds in backward passes, TF32) are not bit-reproducible, and Adam turns tiny gradient
    differences into steps of the learning rate's size, so two uninterrupted runs already differ (by
    3e-4 on the H200): the resumed run must be as close to an uninterrupted one as a rerun is."""
    full, rerun, part = tmp_path / "full", tmp_path / "rerun", tmp_path / "part"
    train_gan(GANTrainConfig(kimg=0.048, **TINY), full, progress=False, device="cuda")
    train_gan(GANTrainConfig(kimg=0.048, **TINY), rerun, progress=False, device="cuda")
    train_gan(GANTrainConfig(kimg=0.024, **TINY), part, progress=False, device="cuda")
    r = train_gan(GANTrainConfig(kimg=0.048, **TINY), part, resume=True, progress=False, device="cuda")
    assert r.steps == 6 and r.device.startswith("cuda")
    a, b, c = _states(full), _states(part), _states(rerun)
    assert "cuda_rng" in a and a["step"] == b["step"] == 6 and torch.equal(a["rng"], b["rng"])
    for key in ("G", "G_ema", "D"):
        noise = max(float((t - c[key][n]).abs().max()) for n, t in a[key].items())
        resumed = max(float((t - b[key][n]).abs().max()) for n, t in a[key].items())
        assert resumed <= 5 * noise + 1e-6, (key, resumed, noise)
    assert load_generator(full).synthesis_network.const.device.type == "cpu"


def test_class_groups_fill_each_stddev_group_with_one_class():
    labels = torch.arange(10).repeat(7)[:64]  # uneven class counts
    b = gan._Batches(labels, 10, 4, True, 8, torch.device("cpu"))
    torch.manual_seed(0)
    y = b.labels(64)
    assert (y.reshape(16, 4) == y.reshape(16, 4)[:, :1]).all()  # each consecutive run of 4 is one class
    assert len(set(y.tolist())) > 3  # but the runs differ
    idx = b.real_indices(4000)
    runs = labels[idx].reshape(-1, 4)
    assert (runs == runs[:, :1]).all()  # the reals in a run share the class ...
    assert len(set(idx.tolist())) == 64  # ... and every real image gets drawn
    assert b.labels(6).shape == (6,)  # sizes that are no multiple of the group
    off = gan._Batches(labels, 10, 4, False, 8, torch.device("cpu"))
    y = off.labels(4000).reshape(-1, 4)
    assert not (y == y[:, :1]).all()


def test_cond_weight_ramp_and_unconditional_head(tmp_path):
    cfg = GANTrainConfig(kimg=0.032, cond_ramp_kimg=0.016, **TINY)
    assert [cfg.cond_weight(n) for n in (0, 8, 16, 100)] == [0.0, 0.5, 1.0, 1.0]
    assert GANTrainConfig().cond_weight(0) == 1.0
    with pytest.raises(FailatlasError, match="--cond-ramp-kimg"):
        GANTrainConfig(cond_ramp_kimg=-1).validate()
    out = tmp_path / "ramp"
    train_gan(cfg, out, progress=False)
    ck = _states(out)
    assert "uncond.weight" in ck["D"]
    G = load_generator(out)
    z, y = torch.randn(3, G.z_dim), torch.tensor([0, 1, 2])
    # with weight 0 the mapping ignores the label; with 1 it is the plain conditional mapping
    m = G.mapping_network
    assert torch.allclose(m(z, y, cond_weight=0.0), m(z, torch.tensor([5, 5, 5]), cond_weight=0.0))
    assert torch.equal(m(z, y, cond_weight=1.0), G.mapping(z, y))


def test_init_from_warm_starts_with_new_options(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    train_gan(GANTrainConfig(kimg=0.016, **{**TINY, "class_groups": False}), src, progress=False)
    r = train_gan(GANTrainConfig(kimg=0.032, cond_ramp_kimg=0.008, **TINY), dst, progress=False,
                  init_from=src)
    assert r.steps == 4 and r.kimg == 0.032  # continues the image count of the source
    a, b = _states(src), _states(dst)
    assert b["init_from"].endswith("checkpoint.pt") and b["train_config"]["class_groups"]
    assert not torch.equal(a["G"]["synthesis_network.const"], b["G"]["synthesis_network.const"])
    meta = json.loads((dst / "config.json").read_text())["training"]
    assert meta["init_from"] == b["init_from"]
    train_gan(GANTrainConfig(kimg=0.040, cond_ramp_kimg=0.008, **TINY), dst, resume=True, progress=False)
    with pytest.raises(FailatlasError, match="cannot be combined"):
        train_gan(GANTrainConfig(kimg=0.04, **TINY), tmp_path / "x", init_from=src, resume=True, progress=False)
    with pytest.raises(FailatlasError, match="does not exist"):
        train_gan(GANTrainConfig(kimg=0.04, **TINY), tmp_path / "x", init_from=tmp_path / "none", progress=False)
    with pytest.raises(FailatlasError, match="use --config tiny"):
        train_gan(GANTrainConfig(kimg=0.04, **{**TINY, "config": "cpu-small"}), tmp_path / "y", init_from=src,
                  progress=False)


def test_checkpoints_from_before_class_groups_resume(tmp_path):
    out = tmp_path / "old"
    train_gan(GANTrainConfig(kimg=0.016, **{**TINY, "class_groups": False}), out, progress=False)
    ck = _states(out)
    for key in ("class_groups", "cond_ramp_kimg", "mix_weight", "mix_judge_seed"):
        del ck["train_config"][key]
    torch.save(ck, out / "checkpoint.pt")
    r = train_gan(GANTrainConfig(kimg=0.024, **{**TINY, "class_groups": False}), out, resume=True, progress=False)
    assert r.steps == 3
    with pytest.raises(FailatlasError, match=r"trained with --no-class-groups, not --class-groups;"):
        train_gan(GANTrainConfig(kimg=0.032, **TINY), out, resume=True, progress=False)


def test_with_noise_threshold_starts_a_run_with_learned_thresholds(tmp_path):
    src, mid, dst = tmp_path / "src", tmp_path / "mid", tmp_path / "dst"
    train_gan(GANTrainConfig(kimg=0.016, **TINY), src, progress=False)
    gan.with_noise_threshold(src, mid, "b8.conv1", threshold=0.3, gain=2.0)
    a, b = _states(src), _states(mid)
    assert json.loads(json.dumps(b["arch"]))["noise_threshold"] is True
    names = load_generator(src).synthesis_network.names
    i = names.index("b8.conv1")
    for key in ("G", "G_ema"):
        pre = f"synthesis_network.layers.{i}."
        assert torch.equal(b[key][pre + "noise_strength"], 2 * a[key][pre + "noise_strength"])
        assert torch.equal(b[key][pre + "noise_gain.weight"], 2 * a[key][pre + "noise_gain.weight"])
        assert float(b[key][pre + "noise_threshold"]) == pytest.approx(0.3)
        others = [k for k in b[key] if k.endswith("noise_threshold") and not k.startswith(pre)]
        assert others and all(float(b[key][k]) == 0.0 for k in others)
        assert torch.equal(b[key]["synthesis_network.const"], a[key]["synthesis_network.const"])
    # Adam moments: kept for untouched parameters, fresh for the new and the rescaled ones
    convs = sum(layer.kind == "conv" for layer in load_generator(src).synthesis_network.layers)
    assert len(b["G_opt"]["param_groups"][0]["params"]) == len(a["G_opt"]["param_groups"][0]["params"]) + convs
    assert 0 < len(b["G_opt"]["state"]) < len(b["G_opt"]["param_groups"][0]["params"])
    r = train_gan(GANTrainConfig(kimg=0.032, **TINY), dst, progress=False, init_from=mid)
    assert r.steps == 4 and load_generator(dst).cfg.noise_threshold
    # a checkpoint with thresholds is recalibrated: the layer rescaled and re-thresholded, the others kept
    gan.with_noise_threshold(dst, tmp_path / "again", "b8.conv1", 0.1, gain=1.5)
    c, d = _states(dst), _states(tmp_path / "again")
    pre = f"synthesis_network.layers.{i}."
    for key in ("G", "G_ema"):
        assert torch.allclose(d[key][pre + "noise_strength"], 1.5 * c[key][pre + "noise_strength"])
        assert float(d[key][pre + "noise_threshold"]) == pytest.approx(0.1)
        assert all(torch.equal(d[key][k], v) for k, v in c[key].items() if not k.startswith(pre + "noise"))
    assert len(d["G_opt"]["param_groups"][0]["params"]) == len(c["G_opt"]["param_groups"][0]["params"])
    assert len(d["G_opt"]["state"]) == len(c["G_opt"]["state"]) - 4  # strength, gain weight+bias, threshold
    with pytest.raises(FailatlasError, match="no conv layer 'b8.torgb'"):
        gan.with_noise_threshold(src, tmp_path / "bad", "b8.torgb", 0.1)
    with pytest.raises(FailatlasError, match="threshold must be ≥ 0"):
        gan.with_noise_threshold(src, tmp_path / "bad", "b8.conv1", -1.0)


def test_mix_kl_is_zero_for_the_datas_mix_and_pulls_the_batch_towards_it():
    from failatlas.training.quality import CorruptionClassifier

    torch.manual_seed(0)
    judge = CorruptionClassifier().eval().requires_grad_(False)
    real = torch.rand(64, 1, 32, 32) * 2 - 1
    q_real = torch.softmax(judge(real), 1).mean(0)
    assert float(gan.mix_kl(judge, real, q_real)) == pytest.approx(0.0, abs=1e-6)
    fake = torch.full((64, 1, 32, 32), -1.0, requires_grad=True)  # blank images: another mix
    kl = gan.mix_kl(judge, fake, q_real)
    assert float(kl.detach()) > 1e-4
    (g,) = torch.autograd.grad(kl, fake)
    assert float(g.abs().sum()) > 0
    with torch.no_grad():  # a small step against the gradient lowers the distance
        assert float(gan.mix_kl(judge, fake - 0.05 * g / g.abs().max(), q_real)) < float(kl.detach())


@pytest.fixture()
def _untrained_mix_judge(monkeypatch):
    """The mix term's corruption classifier, untrained (seeded): what is tested is the wiring."""
    from failatlas.training import quality

    def judge(*args, seed=0, **kwargs):
        torch.manual_seed(seed)  # as the real one does: the training's RNG must not see it
        return quality.CorruptionClassifier().eval().requires_grad_(False)

    monkeypatch.setattr(quality, "train_corruption_classifier", judge)


def test_mix_weight_adds_the_corruption_mix_term_and_resumes_exactly(tmp_path, _untrained_mix_judge):
    full, part, plain = tmp_path / "full", tmp_path / "part", tmp_path / "plain"
    train_gan(GANTrainConfig(kimg=0.048, mix_weight=1.0, **TINY), full, progress=False)
    train_gan(GANTrainConfig(kimg=0.024, mix_weight=1.0, **TINY), part, progress=False)
    train_gan(GANTrainConfig(kimg=0.048, mix_weight=1.0, **TINY), part, resume=True, progress=False)
    train_gan(GANTrainConfig(kimg=0.048, **TINY), plain, progress=False)
    lines = [json.loads(l) for l in (full / "metrics.jsonl").read_text().splitlines()]
    assert all(l["mix_kl"] >= 0 for l in lines) and len(lines) == 6
    assert "mix_kl" not in json.loads((plain / "metrics.jsonl").read_text().splitlines()[0])
    a, b, c = _states(full), _states(part), _states(plain)
    for name, t in a["G"].items():
        assert torch.equal(t, b["G"][name]), name
    assert torch.equal(a["rng"], b["rng"])
    assert torch.equal(a["rng"], c["rng"])  # training the judge drew nothing from the run's stream
    assert not torch.equal(a["G"]["synthesis_network.const"], c["G"]["synthesis_network.const"])
    assert a["train_config"]["mix_weight"] == 1.0


def test_cli_mix_weight_reaches_the_run_and_bad_values_give_one_line(tmp_path, capsys, _untrained_mix_judge):
    out = tmp_path / "run"
    rc = main(["train-gan", "--config", "tiny", "--batch", "8", "--kimg", "0.016", "--seed", "3",
               "--mix-weight", "0.5", "--mix-judge-seed", "7", "--out", str(out)])
    assert rc == 0
    cfg = _states(out)["train_config"]
    assert cfg["mix_weight"] == 0.5 and cfg["mix_judge_seed"] == 7
    capsys.readouterr()
    rc = main(["train-gan", "--config", "tiny", "--batch", "8", "--kimg", "0.016", "--mix-weight", "-2",
               "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--mix-weight" in err[0]
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_saves_a_checkpoint_and_stops(tmp_path, monkeypatch, capsys, sig):
    """Ctrl-C and `kill` (a scheduler's time limit) alike: the step finishes, a checkpoint is saved, the run
    stops and can be resumed; the handlers in place before the run are back afterwards."""
    import os
    import signal

    calls = []
    real = gan._ema_update

    def ema_then_signal(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), getattr(signal, sig))

    monkeypatch.setattr(gan, "_ema_update", ema_then_signal)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out = tmp_path / "run"
    r = train_gan(GANTrainConfig(kimg=0.064, **TINY), out, progress=False)
    assert r.interrupted and r.steps == 2 and r.terminated == (sig == "SIGTERM")  # the CLI exits 143 or 130
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert {s: signal.getsignal(s) for s in before} == before
    said = capsys.readouterr()
    assert "interrupted at kimg" in said.err and said.out == ""  # stdout keeps the CLI's JSON alone


@pytest.mark.parametrize("option, value, phrase", [
    ("snapshot_kimg", 0.0, "--snapshot-kimg must be at least 0.001"),
    ("snapshot_kimg", 0.0005, "--snapshot-kimg must be at least 0.001"),
    ("snapshot_kimg", float("nan"), "--snapshot-kimg must be at least 0.001"),
    ("snapshot_kimg", float("inf"), "--snapshot-kimg must be at least 0.001"),
    ("snapshot_kimg", -1.0, "--snapshot-kimg must be at least 0.001"),
    ("r1_gamma", float("nan"), "--r1-gamma must be 0 (off) or a positive number"),
    ("r1_gamma", -5.0, "--r1-gamma must be 0 (off) or a positive number"),
    ("pl_weight", -1.0, "--pl-weight must be 0 (off) or a positive number"),
    ("lr", float("inf"), "--lr must be positive"),
])
def test_impossible_options_are_refused_before_the_folder_is_made(tmp_path, option, value, phrase):
    import re

    with pytest.raises(FailatlasError, match=re.escape(phrase)):
        train_gan(GANTrainConfig(kimg=0.064, **{**TINY, option: value}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_resume_past_the_target_trains_nothing_and_rewrites_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    train_gan(GANTrainConfig(kimg=0.064, **TINY), out, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r = train_gan(GANTrainConfig(kimg=0.032, **TINY), out, resume=True, progress=False)
    assert r.steps == 8 and r.kimg == 0.064 and not r.interrupted and r.images_per_second == 0.0
    assert "already at kimg 0.064 (--kimg 0.032): nothing to train" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_run_saved_with_a_relative_idx_folder_resumes_with_the_absolute_one(tmp_path, monkeypatch):
    """train-gan records the IDX folder absolute; a checkpoint saved before (relative) still resumes."""
    monkeypatch.chdir(tmp_path)
    old = GANTrainConfig(dataset="toy", idx_dir="data")
    new = GANTrainConfig(dataset="toy", idx_dir=str(tmp_path / "data"))
    assert old.resumable_with(new) == [] and new.resumable_with(old) == []
    assert GANTrainConfig(dataset="toy", idx_dir="other").resumable_with(new) == ["idx_dir"]


def test_classes_without_training_images_are_recorded_and_noted(tmp_path, monkeypatch):
    """train-gan warns about them; the generator's config.json keeps them, and analyze/compare say so."""
    from failatlas.analysis import real_accuracy

    loader = gan._load_training_images
    monkeypatch.setattr(gan, "_load_training_images", lambda cfg: (*loader(cfg)[:3], [3, 7]))
    out = tmp_path / "run"
    train_gan(GANTrainConfig(kimg=0.008, **TINY), out, progress=False)
    training = json.loads((out / "config.json").read_text())["training"]
    assert training["classes_without_data"] == [3, 7]
    _, notes = real_accuracy(out, {})
    assert notes[0].startswith("the generator's training images held no image of classes 3, 7")


def test_init_from_trains_with_this_runs_learning_rate(tmp_path):
    """The source's optimizer states come with its lr and betas; the warm start must use its own --lr
    (D's scaled by the lazy-R1 ratio, as at creation), which config.json records."""
    src = tmp_path / "src"
    train_gan(GANTrainConfig(kimg=0.016, **TINY), src, progress=False)
    runs = {}
    for lr in (0.0001, 0.01):
        out = tmp_path / f"lr{lr}"
        train_gan(GANTrainConfig(kimg=0.032, **{**TINY, "lr": lr}), out, progress=False, init_from=src)
        ck = _states(out)
        c = 16 / 17  # r1_interval / (r1_interval + 1)
        assert [g["lr"] for g in ck["G_opt"]["param_groups"]] == [lr]
        assert [g["lr"] for g in ck["D_opt"]["param_groups"]] == [pytest.approx(lr * c)]
        assert ck["D_opt"]["param_groups"][0]["betas"][1] == pytest.approx(0.99 ** c)
        assert json.loads((out / "config.json").read_text())["training"]["lr"] == lr
        runs[lr] = ck
    a, b = runs[0.0001]["G"], runs[0.01]["G"]
    assert any(not torch.equal(t, b[k]) for k, t in a.items())


@pytest.mark.parametrize("kind", ["generator", "classifier"])
def test_a_new_run_refuses_a_folder_holding_another_model(tmp_path, capsys, kind):
    """A copy of a shipped generator (no checkpoint.pt) or a classifier folder: nothing is replaced."""
    import shutil

    from failatlas._paths import find_model

    out = tmp_path / kind
    shutil.copytree(find_model("mnist/generator" if kind == "generator" else "mnist/classifier-clean"), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc = main(["train-gan", "--config", "tiny", "--batch", "8", "--kimg", "0.008", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "holds other files" in err[0] and "new or empty folder" in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("src_classes, data_classes", [(3, 10), (10, 3)])
def test_init_from_a_run_with_another_number_of_classes_is_refused(tmp_path, monkeypatch, capsys, src_classes,
                                                                   data_classes):
    few = gan._load_training_images

    def classes(k):
        def load(cfg):
            x, y, _, missing = few(cfg)
            return x, y % k, k, []
        return load

    src = tmp_path / "src"
    monkeypatch.setattr(gan, "_load_training_images", classes(src_classes))
    train_gan(GANTrainConfig(kimg=0.008, **TINY), src, progress=False)
    monkeypatch.setattr(gan, "_load_training_images", classes(data_classes))
    rc = main(["train-gan", "--config", "tiny", "--batch", "8", "--kimg", "0.016", "--init-from", str(src),
               "--out", str(tmp_path / "dst")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert f"makes {src_classes} classes" in err[0] and f"has {data_classes}" in err[0]
    assert not (tmp_path / "dst").exists()


def test_ctrl_c_during_the_final_save_still_writes_the_generator(tmp_path, monkeypatch):
    """The final save runs with signals deferred: a Ctrl-C between the checkpoint and the generator files
    does not leave a checkpoint without its generator."""
    import signal

    real = gan.save_generator

    def interrupted_save(G, folder, extra=None):
        if extra["training"]["step"] == 4:  # the final save
            os.kill(os.getpid(), signal.SIGINT)
        real(G, folder, extra=extra)

    monkeypatch.setattr(gan, "save_generator", interrupted_save)
    out = tmp_path / "run"
    r = train_gan(GANTrainConfig(kimg=0.032, **{**TINY, "snapshot_kimg": 1.0}), out, progress=False)  # one save
    assert r.steps == 4
    assert json.loads((out / "config.json").read_text())["training"]["step"] == 4
    assert (out / "generator.safetensors").is_file() and (out / "samples-latest.png").is_file()


def test_nothing_to_train_rewrites_a_missing_or_older_generator(tmp_path, capsys):
    out = tmp_path / "run"
    train_gan(GANTrainConfig(kimg=0.016, **TINY), out, progress=False)
    older = {n: (out / n).read_bytes() for n in ("config.json", "generator.safetensors")}
    train_gan(GANTrainConfig(kimg=0.032, **TINY), out, resume=True, progress=False)
    final = (out / "generator.safetensors").read_bytes()
    for damage in ("missing", "older"):
        for name, data in older.items():  # as a save interrupted between the checkpoint and these files
            if damage == "missing":
                (out / name).unlink()
            else:
                (out / name).write_bytes(data)
        capsys.readouterr()
        r = train_gan(GANTrainConfig(kimg=0.032, **TINY), out, resume=True, progress=False)
        assert r.steps == 4 and "was rewritten" in capsys.readouterr().err
        assert json.loads((out / "config.json").read_text())["training"]["step"] == 4
        assert (out / "generator.safetensors").read_bytes() == final


def test_cli_stdout_is_the_json_result_alone(tmp_path, capsys):
    """Status lines (--max-minutes stop, nothing to train) go to stderr: stdout parses as JSON."""
    out = str(tmp_path / "run")
    base = ["train-gan", "--config", "tiny", "--batch", "8", "--seed", "3", "--snapshot-kimg", "0.016", "--out", out]
    assert main(base + ["--kimg", "0.064", "--max-minutes", "1e-9"]) == 0
    said = capsys.readouterr()
    assert json.loads(said.out)["time_limited"] and "stopped after" in said.err
    # the command it says to continue with works as printed (a bare --resume is refused: options differ)
    import shlex

    command = shlex.split(said.err.split("continue with: ", 1)[1].strip())
    assert command[:3] == ["failatlas", "train-gan", "--resume"] and "--config" in command
    assert main(command[1:] + ["--max-minutes", "1e-9"]) == 0 and "stopped after" in capsys.readouterr().err
    assert main(base + ["--kimg", "0.008", "--resume"]) == 0
    said = capsys.readouterr()
    assert json.loads(said.out)["steps"] == 2 and "nothing to train" in said.err  # one step per session


@pytest.mark.parametrize("content, phrase", [
    (b"", "an empty file"),
    (random.Random(0).randbytes(3000).replace(b"PK", b"pk").replace(b"\x80", b"\x81"),
     "not a torch checkpoint at all"),
    (b".", "not a torch checkpoint at all: it begins with '.'"),  # torch's unpickler: IndexError (pop from empty list)
    (b"\x80\x02a.", "torch cannot read its content"),  # the same, after a pickle header
    (b'{"G": 1, "step": 3}', "not a torch checkpoint at all: it begins with"),
    ("truncated", "truncated or corrupt"),
    ("unsafe", "(posix.system) and was not loaded"),
])
def test_an_unreadable_checkpoint_is_told_apart_from_an_unsafe_one(tmp_path, capsys, content, phrase):
    """Damaged files are not "objects that are not plain tensors", and torch's advice to set weights_only=False
    is never passed on."""
    out = tmp_path / "run"
    train_gan(GANTrainConfig(kimg=0.016, **TINY), out, progress=False)
    ck = out / "checkpoint.pt"
    if content == "truncated":
        content = ck.read_bytes()[:5000]
    elif content == "unsafe":
        torch.save({"G": _Evil()}, ck)
        content = ck.read_bytes()
    ck.write_bytes(content)
    rc = main(["train-gan", "--config", "tiny", "--batch", "8", "--kimg", "0.032", "--seed", "3",
               "--snapshot-kimg", "0.016", "--out", str(out), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and phrase in err[0], err
    assert "weights_only" not in err[0]
    assert ("damaged" in err[0]) == (phrase != "(posix.system) and was not loaded")
    assert not os.path.exists("/tmp/failatlas-pwned")


@pytest.mark.parametrize("part", ["G", "G_ema", "D"])
def test_checkpoint_weights_that_do_not_fit_their_architecture_give_one_message(tmp_path, capsys, part):
    out = tmp_path / "run"
    base = ["train-gan", "--config", "tiny", "--batch", "8", "--seed", "3", "--snapshot-kimg", "0.016"]
    assert main(base + ["--kimg", "0.016", "--out", str(out)]) == 0
    ck = _states(out)
    ck[part]["synthesis_network.const" if part != "D" else next(iter(ck["D"]))] = torch.zeros(3, 5)
    torch.save(ck, out / "checkpoint.pt")
    for extra in (["--out", str(out), "--resume"], ["--init-from", str(out), "--out", str(tmp_path / "new")]):
        capsys.readouterr()
        rc = main(base + ["--kimg", "0.032"] + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "do not fit the architecture" in err[0] and "[3, 5]" in err[0], err
    assert not (tmp_path / "new").exists()


def _adam_state_without_moments(ck):
    ck["G_opt"]["state"][0] = {"step": torch.tensor(1.0)}


@pytest.mark.parametrize("edit, phrase", [
    (lambda ck: ck.pop("step"), "its step must be a whole number ≥ 0, found nothing"),
    (lambda ck: ck.update(nimg="x"), "its nimg must be a whole number ≥ 0, found 'x'"),
    (lambda ck: ck.update(step=10**30), "its step must be a whole number ≥ 0"),
    (lambda ck: ck.update(pl_mean=7), "its pl_mean must be a one-number float tensor, found 7"),
    (lambda ck: ck.update(r1_last=None), "its r1_last must be a one-number float tensor, found nothing"),
    (lambda ck: ck.update(rng=torch.zeros(3, dtype=torch.uint8)), "its rng must be torch's random state"),
    (lambda ck: ck.update(seconds="x"), "its seconds must be a number ≥ 0"),
    (lambda ck: ck.update(G_opt=None), "G's optimizer state does not fit its weights (found nothing"),
    (lambda ck: ck.update(D_opt="x"), "D's optimizer state does not fit its weights (found str"),
    (_adam_state_without_moments, "has no tensor exp_avg"),
    (lambda ck: ck["arch"].update(w_dim=10**12), "the architecture it records gives layer sizes no generator can"),
    (lambda ck: ck["arch"].update(w_dim=10**6), "the architecture makes [1000000]"),
    (lambda ck: ck["arch"].update(mapping_layers=10**7), "gives mapping_layers 10000000"),
    (lambda ck: ck.pop("train_config"), "is not a failatlas GAN checkpoint (it holds no train_config)"),
    (lambda ck: ck.pop("G"), "found NoneType, not a dict of tensors"),  # not "mapping_layers 2, but … 0 tensors"
    (lambda ck: ck.pop("D"), "the discriminator (D) weights do not fit"),
])
def test_damaged_checkpoint_counters_states_and_sizes_give_one_message(tmp_path, capsys, edit, phrase):
    """Each was a traceback (KeyError, AttributeError from .to() or Adam's step, set_rng_state's TypeError,
    torch's allocation error for the edited sizes; ten million mapping layers were built one by one)."""
    out = tmp_path / "run"
    base = ["train-gan", "--config", "tiny", "--batch", "8", "--seed", "3", "--snapshot-kimg", "0.016"]
    assert main(base + ["--kimg", "0.016", "--out", str(out)]) == 0
    ck = _states(out)
    edit(ck)
    torch.save(ck, out / "checkpoint.pt")
    for extra in (["--out", str(out), "--resume"], ["--init-from", str(out), "--out", str(tmp_path / "new")]):
        capsys.readouterr()
        rc = main(base + ["--kimg", "0.032"] + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and phrase in err[0] and "checkpoint.pt" in err[0], err
    assert not (tmp_path / "new").exists()


def test_resume_drops_the_metrics_logged_after_the_checkpoint(tmp_path):
    """After a kill -9 the lines logged since the last checkpoint stay in metrics.jsonl; the resumed run logs
    those steps again, so they are dropped (and a line cut short) when it starts."""
    out, full = tmp_path / "run", tmp_path / "full"
    train_gan(GANTrainConfig(kimg=0.048, **TINY), full, progress=False)
    train_gan(GANTrainConfig(kimg=0.016, **TINY), out, progress=False)  # checkpoint at step 2
    later = (full / "metrics.jsonl").read_text().splitlines(keepends=True)[2:5]  # steps 3..5, never saved
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write("".join(later) + '{"step": 6, "kim')
    train_gan(GANTrainConfig(kimg=0.032, **TINY), out, resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_init_from_a_run_past_the_target_is_refused_before_out_is_made(tmp_path, capsys):
    src = tmp_path / "src"
    train_gan(GANTrainConfig(kimg=0.016, **TINY), src, progress=False)
    rc = main(["train-gan", "--config", "tiny", "--batch", "8", "--kimg", "0.016", "--init-from", str(src),
               "--out", str(tmp_path / "dst")])
    said = capsys.readouterr()
    err = said.err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "already at kimg 0.016" in err[0] and "above 0.016" in err[0]
    assert said.out == "" and not (tmp_path / "dst").exists()


@pytest.mark.parametrize("threads", ["100000", "-1"])
def test_threads_out_of_range_are_refused_before_any_work(tmp_path, capsys, threads):
    """100000 threads crashed torch (a segfault); the bound is the engine's (failatlas-eval --threads)."""
    rc = main(["train-gan", "--config", "tiny", "--batch", "8", "--kimg", "0.008", "--threads", threads,
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--threads must be between 1 and 4096" in err[0] and threads in err[0]
    assert not (tmp_path / "run").exists()


def test_a_batch_beyond_the_machines_memory_is_refused_before_any_work(tmp_path, capsys):
    """--batch 100000000 was killed for memory a minute in (exit 137, no message)."""
    rc = main(["train-gan", "--config", "tiny", "--batch", "100000000", "--kimg", "0.008", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "--batch 100000000 images need at least" in err[0] and "lower --batch" in err[0]
    assert not (tmp_path / "run").exists()


def test_metrics_seconds_count_the_whole_run_and_init_from_is_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    train_gan(GANTrainConfig(kimg=0.016, **TINY), out, progress=False)
    ck = _states(out)
    assert ck["seconds"] > 0
    ck["seconds"] = 1000.0  # as after a long first session
    torch.save(ck, out / "checkpoint.pt")
    train_gan(GANTrainConfig(kimg=0.032, **TINY), out, resume=True, progress=False)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2, 3, 4]
    assert all(l["seconds"] < 1000 for l in lines[:2]) and all(l["seconds"] > 1000 for l in lines[2:])
    assert _states(out)["seconds"] > 1000
    train_gan(GANTrainConfig(kimg=0.048, **TINY), tmp_path / "warm", progress=False, init_from="run")
    recorded = str(tmp_path / "run" / "checkpoint.pt")
    assert _states(tmp_path / "warm")["init_from"] == recorded
    assert json.loads((tmp_path / "warm" / "config.json").read_text())["training"]["init_from"] == recorded


def test_resume_refusal_names_the_differing_options_as_flags(tmp_path, capsys):
    """With the checkpoint's values and the given ones, as train-gan's flags (not internal names such as
    sample_kimg)."""
    out = tmp_path / "run"
    base = ["train-gan", "--batch", "8", "--seed", "3", "--kimg", "0.008", "--out", str(out)]
    assert main(base + ["--config", "tiny", "--snapshot-kimg", "0.016"]) == 0
    capsys.readouterr()
    rc = main(base + ["--config", "cpu-small", "--snapshot-kimg", "0.5", "--train-on", "clean", "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert ("trained with --train-on corrupted --config tiny --snapshot-kimg 0.016, not --train-on clean "
            "--config cpu-small --snapshot-kimg 0.5;") in err[0], err
    assert "sample_kimg" not in err[0] and "corruption" not in err[0]


def test_status_lines_give_the_real_kimg(tmp_path, capsys):
    r = train_gan(GANTrainConfig(kimg=0.064, **TINY), tmp_path / "run", progress=False, max_minutes=1e-9)
    assert r.kimg == 0.008 and "at kimg 0.008;" in capsys.readouterr().err  # was rounded to 0.0


def test_review_fixes_for_leftovers_heads_optimizer_shapes_protocol_4_and_numpy_options(tmp_path, capsys):
    """A second review: a run killed before its first checkpoint is named as such (the two refusals pointed at
    each other); --init-from a run with the unconditional head into one without drops the head; an optimizer
    moment of the wrong shape is one message; a checkpoint saved with pickle protocol 4 (memoized module
    names) is not called unsafe; numpy numbers in the options give a checkpoint the run can resume."""
    import numpy as np

    base = ["train-gan", "--config", "tiny", "--batch", "8", "--seed", "3", "--snapshot-kimg", "0.016"]
    # leftovers of a run that died before its first checkpoint
    dead = tmp_path / "dead"
    dead.mkdir()
    (dead / "metrics.jsonl").write_text('{"step": 1}\n')
    for extra in ([], ["--resume"]):
        capsys.readouterr()
        assert main(base + ["--kimg", "0.016", "--out", str(dead), *extra]) == 2
        err = capsys.readouterr().err
        assert "before its first checkpoint" in err and "nothing to resume" in err, err
    # the unconditional head of --cond-ramp-kimg is dropped on a warm start without it
    ramp, plain = tmp_path / "ramp", tmp_path / "plain"
    train_gan(GANTrainConfig(kimg=0.016, cond_ramp_kimg=0.008, **TINY), ramp, progress=False)
    r = train_gan(GANTrainConfig(kimg=0.032, **TINY), plain, init_from=ramp, progress=False)
    assert r.steps == 4 and "uncond.weight" not in _states(plain)["D"]
    # an optimizer moment of the wrong shape
    ck = _states(ramp)
    first = next(iter(ck["G_opt"]["state"]))
    ck["G_opt"]["state"][first]["exp_avg"] = torch.zeros(3, 5)
    torch.save(ck, ramp / "checkpoint.pt")
    with pytest.raises(FailatlasError, match=r"G's optimizer state does not fit its weights \(exp_avg has shape "
                                             r"\[3, 5\]"):
        train_gan(GANTrainConfig(kimg=0.032, cond_ramp_kimg=0.008, **TINY), ramp, resume=True, progress=False)
    # pickle protocol 4 memoizes the module names that STACK_GLOBAL reads back
    torch.save(_states(plain), plain / "checkpoint.pt", pickle_protocol=4)
    try:
        train_gan(GANTrainConfig(kimg=0.048, **TINY), plain, resume=True, progress=False)
    except FailatlasError as exc:  # torch's weights-only load may refuse protocol 4; never as unsafe code
        assert "could run code" not in str(exc) and "damaged or not a torch checkpoint" in str(exc)
    # numpy numbers from a library caller: the run's own checkpoint resumes
    npy = tmp_path / "npy"
    train_gan(GANTrainConfig(kimg=0.016, **{**TINY, "lr": np.float64(0.002)}), npy, progress=False)
    assert train_gan(GANTrainConfig(kimg=0.032, **{**TINY, "lr": 0.002}), npy, resume=True, progress=False).steps == 4
