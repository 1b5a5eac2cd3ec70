"""`failatlas rank` under torchrun (2 CPU processes, gloo) against one process, and the collectives."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from failatlas import FailatlasError
from failatlas import distributed as fdist
from failatlas.analysis import Population, Ranking
from failatlas.cli import main

FILES = ["population.npz", "ranking.csv", "ranking.json", "separation.csv", "separation.json", "separation.png"]
N = 200


def _torchrun(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMP_NUM_THREADS",
                                                            "MASTER_ADDR", "MASTER_PORT")}
    env["FAILATLAS_PROGRESS"] = "0"
    env["FAILATLAS_DIST_TIMEOUT"] = "120"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] + args
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from failatlas.models.classifier import ClassifierConfig, build_classifier, save_classifier
    from failatlas.models.stylegan2 import CONFIGS, Generator, save_generator

    root = tmp_path_factory.mktemp("dist_models")
    torch.manual_seed(3)
    save_generator(Generator(CONFIGS["tiny"]).eval(), root / "generator")
    save_classifier(build_classifier(ClassifierConfig()), ClassifierConfig(), root / "classifier")
    return root / "generator", root / "classifier"


def _csv_rows(path):
    lines = path.read_text().splitlines()
    head = lines[0].split(",")
    return [dict(zip(head, line.split(","))) for line in lines[1:]]


def _close(a, b, tol=1e-6):
    if a is None or b is None:
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)
    return a == b


def _compare(dist_out, single_out):
    rows_d, rows_s = _csv_rows(dist_out / "ranking.csv"), _csv_rows(single_out / "ranking.csv")
    assert [r["dim"] for r in rows_d[:50]] == [r["dim"] for r in rows_s[:50]]
    for a, b in zip(rows_d, rows_s):
        for col in ("score", "sigma", "mean_grad", "ci_low", "ci_high"):
            if a[col] or b[col]:
                assert math.isclose(float(a[col]), float(b[col]), rel_tol=1e-6, abs_tol=1e-6), (col, a, b)
    jd, js = Ranking.read_json(dist_out / "ranking.json"), Ranking.read_json(single_out / "ranking.json")
    assert sorted(jd.per_class) == sorted(js.per_class)
    for c in js.per_class:
        assert torch.equal(jd.per_class[c].order[:50], js.per_class[c].order[:50])
        assert torch.allclose(jd.per_class[c].score, js.per_class[c].score, rtol=1e-6, atol=1e-6)
    sd = json.loads((dist_out / "ranking.json").read_text())["summary"]
    ss = json.loads((single_out / "ranking.json").read_text())["summary"]
    assert sd.keys() == ss.keys()
    for k in ss:
        if isinstance(ss[k], list):
            assert all(_close(x, y) for x, y in zip(sd[k], ss[k])), k
        else:
            assert _close(sd[k], ss[k]), k
    pd, ps = Population.from_npz(dist_out / "population.npz"), Population.from_npz(single_out / "population.npz")
    for k in ("z", "y", "w", "s", "pred", "well"):
        assert torch.equal(getattr(pd, k), getattr(ps, k)), k
    assert torch.allclose(pd.logits, ps.logits, rtol=0, atol=1e-5)
    sep_d = (dist_out / "separation.csv").read_text().splitlines()
    sep_s = (single_out / "separation.csv").read_text().splitlines()
    assert len(sep_d) == len(sep_s) and sep_d[0] == sep_s[0]


@pytest.mark.parametrize("extra", [[], ["--per-class", "--bootstrap", "20", "--target", "logit"]],
                         ids=["plain", "per-class-bootstrap"])
def test_rank_under_torchrun_matches_one_process(models, tmp_path, capsys, extra):
    gen, cls = models
    common = ["--generator", str(gen), "--classifier", str(cls), "--n", str(N), "--seed", "5",
              "--batch-size", "32"] + extra  # 7 batches: rank 0 gets 4 (128 samples), rank 1 3 (72)
    # "--": torchrun's own parser would otherwise reject --n as an ambiguous abbreviation of its options
    proc = _torchrun(["-m", "failatlas", "--", "rank"] + common + ["--out", str(tmp_path / "dist")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["rank"] + common + ["--out", str(tmp_path / "single")]) == 0
    capsys.readouterr()
    # rank 0 alone wrote, and wrote everything (no temporary or duplicate files)
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "single"]
    assert proc.stdout.count("population: ") == 1 and "rank 1 of 2: shard done" in proc.stdout
    _compare(tmp_path / "dist", tmp_path / "single")


_COLLECTIVES = textwrap.dedent("""
    import json, sys, torch
    from failatlas import distributed as d
    assert d.init() and d.init()
    rank, size = d.world()
    res = {"rank": rank, "size": size, "threads": torch.get_num_threads()}
    for sizes in ([3, 0], [1, 4], [0, 0]):
        x = torch.arange(sizes[rank] * 2, dtype=torch.float32).reshape(-1, 2) + 100 * rank
        res[f"gather_{sizes}"] = d.all_gather_cat(x).tolist()
    res["gather_bool"] = d.all_gather_cat(torch.tensor([True, False][: rank + 1])).tolist()
    res["gather_int"] = d.all_gather_cat(torch.tensor([rank + 1] * (2 - rank), dtype=torch.int64)).tolist()
    res["sum"] = d.all_reduce_sum(torch.tensor([0.1 * (rank + 1), 1.0], dtype=torch.float32)).tolist()
    res["shard"] = [(s.start, s.stop) for s in (d.shard(10, 3), d.shard(1, 4), d.shard(200, 32))]
    res["main"] = d.is_main()
    json.dump(res, open(sys.argv[1] + f"/rank{rank}.json", "w"))
""")


def test_collectives_with_uneven_shards(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(_COLLECTIVES)
    proc = _torchrun([str(script), str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["size"]) == (0, 1, 2) and r0["main"] and not r1["main"]
    assert r0["threads"] == r1["threads"] == 1  # OMP_NUM_THREADS unset: one thread per rank
    for r in (r0, r1):
        assert r["gather_[3, 0]"] == [[0, 1], [2, 3], [4, 5]]
        assert r["gather_[1, 4]"] == [[0, 1]] + [[100 + 2 * i, 101 + 2 * i] for i in range(4)]
        assert r["gather_[0, 0]"] == []
        assert r["gather_bool"] == [True, True, False]
        assert r["gather_int"] == [1, 1, 2]
        assert r["sum"] == pytest.approx([0.1 + 0.2, 2.0], abs=1e-7)
    assert r0["shard"] == [[0, 6], [0, 1], [0, 128]] and r1["shard"] == [[6, 10], [1, 1], [128, 200]]


def test_world_outside_and_inconsistent_torchrun(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert fdist.world() == (0, 1) and fdist.is_main() and not fdist.init()
    assert fdist.shard(10, 3) == slice(0, 10)
    x = torch.arange(4.0)
    assert fdist.all_gather_cat(x) is x and torch.equal(fdist.all_reduce_sum(x), x.double())
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(FailatlasError, match="WORLD_SIZE unset"):
        fdist.world()
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(FailatlasError, match="RANK=1, WORLD_SIZE=1"):
        fdist.world()
    monkeypatch.setenv("WORLD_SIZE", "x")
    with pytest.raises(FailatlasError, match="not an integer"):
        fdist.world()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(FailatlasError, match="MASTER_ADDR is unset"):
        fdist.init()


def test_one_rank_failing_does_not_hang_the_other(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent("""
        import torch
        from failatlas import distributed as d
        d.init()
        if d.world()[0] == 1:
            raise SystemExit(3)
        d.all_gather_cat(torch.zeros(2))  # rank 0 waits for rank 1, which is gone
    """))
    proc = _torchrun([str(script)], tmp_path)  # subprocess timeout 300 s; gloo's 120 s; fails in seconds
    assert proc.returncode != 0


@pytest.fixture(scope="module")
def classifier2(models):
    """A second random classifier beside the first (another seed)."""
    from failatlas.models.classifier import ClassifierConfig, build_classifier, save_classifier

    path = models[1].parent / "classifier2"
    torch.manual_seed(4)
    save_classifier(build_classifier(ClassifierConfig()), ClassifierConfig(), path)
    return path


def test_analyze_under_torchrun_matches_one_process(models, classifier2, tmp_path, capsys):
    gen, cls = models
    common = ["--generator", str(gen), "--classifier", str(cls), "--classifier", str(classifier2), "--n", str(N),
              "--seed", "5", "--batch-size", "32", "--quick", "--skip-tsne"]  # 7 batches: 4 on rank 0, 3 on rank 1
    proc = _torchrun(["-m", "failatlas", "--", "analyze"] + common + ["--out", str(tmp_path / "dist")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["analyze"] + common + ["--out", str(tmp_path / "single")]) == 0
    capsys.readouterr()
    # one run folder from rank 0, no staging folder left by any rank; rank 1 printed its one line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "single"]
    assert proc.stdout.count("population: ") == 1
    assert [line for line in proc.stdout.splitlines() if "shard done" in line] == [
        f"rank 1 of 2: shard done; rank 0 writes the run to {tmp_path / 'dist'}"]
    dist_out, single_out = tmp_path / "dist", tmp_path / "single"
    assert sorted(p.name for p in dist_out.iterdir()) == sorted(p.name for p in single_out.iterdir())
    names = [p.name for p in sorted(single_out.glob("ranking*.csv"))]
    assert len(names) == 3  # ranking.csv, ranking-classifier.csv, ranking-classifier2.csv
    for name in names:
        rows_d, rows_s = _csv_rows(dist_out / name), _csv_rows(single_out / name)
        assert [r["dim"] for r in rows_d] == [r["dim"] for r in rows_s], name
        for a, b in zip(rows_d, rows_s):
            for col in ("score", "sigma", "mean_grad"):
                assert math.isclose(float(a[col]), float(b[col]), rel_tol=1e-6, abs_tol=1e-6), (name, col, a, b)
    sd, ss = (json.loads((d / "summary.json").read_text()) for d in (dist_out, single_out))
    assert sd["population"] == ss["population"]  # accuracies and mis-classified counts of both classifiers
    assert set(ss["population"]["accuracy"]) == {"classifier", "classifier2"}
    assert sd["top_dims"] == ss["top_dims"]
    for k in ("top10_mean_ks", "random10_mean_ks"):
        assert _close(sd["separation"][k], ss["separation"][k]), k
    assert sd["corner_cases"] == ss["corner_cases"]
    assert sd["overlap"] == ss["overlap"]
    pd, ps = Population.from_npz(dist_out / "population.npz"), Population.from_npz(single_out / "population.npz")
    for k in ("z", "y", "s", "pred", "well"):
        assert torch.equal(getattr(pd, k), getattr(ps, k)), k
    md = json.loads((dist_out / "manifest.json").read_text())
    assert md["platform"]["world_size"] == 2 and md["files"] == sorted(p.name for p in dist_out.iterdir())


_COMPARE = textwrap.dedent("""
    import json, sys
    from failatlas.analysis.compare import run_compare
    gen, out, dump, *classifiers = sys.argv[1:]
    run = run_compare(gen, classifiers, out=out, n=200, seed=5, k=3, batch_size=32)
    print(run.format())
    if run.comparison is not None:  # rank 0: the rankings, which compare.json only names
        json.dump({name: {"order": r.order.tolist(), "score": r.score.tolist(), "method": r.method, "n": r.n,
                          "images": r.images} for name, r in run.comparison.rankings.items()}, open(dump, "w"))
""")


@pytest.fixture(scope="module")
def onnx_classifier(models):
    """The first classifier exported to ONNX: no gradients, so it is ranked by the black-box ranking."""
    pytest.importorskip("onnxruntime")
    from failatlas.deploy import export_classifier_onnx
    from failatlas.models.classifier import load_classifier

    return export_classifier_onnx(load_classifier(models[1]).eval(), models[1].parent / "classifier.onnx")


def test_compare_under_torchrun_matches_one_process(models, onnx_classifier, tmp_path):
    from failatlas.analysis.compare import run_compare

    gen, cls = models
    # a random classifier and its ONNX export (the same predictions, so the corner search has common starts;
    # two random classifiers agree on too few samples): re-labelling, a gradient and a black-box ranking
    classifiers = [str(cls), str(onnx_classifier)]
    script = tmp_path / "compare.py"
    script.write_text(_COMPARE)
    # 7 batches of 32: 4 on rank 0, 3 on rank 1; the black-box ranking deals its 272 dims out 136 / 136
    proc = _torchrun([str(script), str(gen), str(tmp_path / "dist"), str(tmp_path / "rankings.json")] + classifiers,
                     tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = run_compare(gen, classifiers, out=tmp_path / "single", n=200, seed=5, k=3, batch_size=32,
                         progress_bar=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare.py", "dist", "rankings.json", "single"]
    assert [line for line in proc.stdout.splitlines() if "shard done" in line] == [
        f"rank 1 of 2: shard done; rank 0 writes the results to {tmp_path / 'dist'}"]
    dist_out, single_out = tmp_path / "dist", tmp_path / "single"
    assert sorted(p.name for p in dist_out.iterdir()) == sorted(p.name for p in single_out.iterdir())
    # the rankings: identical order, scores within 1e-6 (the black-box one by finite differences)
    dumped = json.loads((tmp_path / "rankings.json").read_text())
    c = single.comparison
    assert list(dumped) == list(c.names) == ["classifier", "classifier.onnx"]
    for name, r in c.rankings.items():
        d = dumped[name]
        assert (d["method"], d["n"], d["images"]) == (r.method, r.n, r.images), name
        assert d["order"] == r.order.tolist(), name
        assert all(_close(a, b) for a, b in zip(d["score"], r.score.tolist())), name
    assert dumped["classifier.onnx"]["method"] == "black-box" and dumped["classifier.onnx"]["images"] == 64 * 272 * 2
    jd, js = (json.loads((d / "compare.json").read_text()) for d in (dist_out, single_out))
    assert jd.keys() == js.keys()
    # the command that redoes each names its own --out, and only that differs
    assert jd.pop("command").replace(str(dist_out.absolute()), "OUT") == \
        js.pop("command").replace(str(single_out.absolute()), "OUT")

    def same(a, b, path="compare.json"):
        if isinstance(a, dict):
            assert a.keys() == b.keys(), path
            for key in a:
                same(a[key], b[key], f"{path}/{key}")
        elif isinstance(a, list):
            assert len(a) == len(b), path
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, f"{path}/{i}")
        else:
            assert _close(a, b), (path, a, b)

    same(jd, js)
    assert js["black_box_agreement"]["classifier.onnx"]["reference"] == "classifier"
    assert (dist_out / "corner_shifts.csv").read_text() == (single_out / "corner_shifts.csv").read_text()


def test_rank_black_box_under_torchrun_matches_one_process(models, onnx_classifier, tmp_path, capsys):
    gen, _ = models
    common = ["--generator", str(gen), "--classifier", str(onnx_classifier), "--n", str(N), "--seed", "5",
              "--batch-size", "32"]  # finite differences on the first 64 samples; 136 of the 272 dims per rank
    proc = _torchrun(["-m", "failatlas", "--", "rank"] + common + ["--out", str(tmp_path / "dist")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["rank"] + common + ["--out", str(tmp_path / "single")]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == FILES
    assert json.loads((tmp_path / "dist" / "ranking.json").read_text())["method"] == "black-box"
    _compare(tmp_path / "dist", tmp_path / "single")



_TRAIN = textwrap.dedent("""
    import sys, torch
    from failatlas import distributed as d
    from failatlas.training import gan
    out, kimg, dump, resume = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4] == "resume"
    real = gan._load_training_images
    def few(cfg):  # 64 real images: the loop is what is tested, not the data
        x, y, k, missing = real(cfg)
        return x[:64].clone(), y[:64].clone(), k, missing
    gan._load_training_images = few
    held = {}
    ema_update = gan._ema_update
    def spy(G_ema, G, beta):  # keeps this rank's G and G_ema for the dump below
        held.update(G=G, G_ema=G_ema)
        ema_update(G_ema, G, beta)
    gan._ema_update = spy
    cfg = gan.GANTrainConfig(config="tiny", batch=16, kimg=kimg, snapshot_kimg=0.032, sample_kimg=0.032,
                             log_every=1, seed=3, pl_weight=2.0, pl_interval=2, r1_interval=2)
    res = gan.train_gan(cfg, out, resume=resume, progress=False)
    torch.save({"G": held["G"].state_dict(), "G_ema": held["G_ema"].state_dict(), "steps": res.steps,
                "rng": torch.get_rng_state()}, f"{dump}.{d.world()[0]}.pt")
""")


def _train_cfg(kimg):
    from failatlas.training.gan import GANTrainConfig

    return GANTrainConfig(config="tiny", batch=16, kimg=kimg, snapshot_kimg=0.032, sample_kimg=0.032, log_every=1,
                          seed=3, pl_weight=2.0, pl_interval=2, r1_interval=2)


def test_train_gan_under_torchrun_then_resume_in_one_process(tmp_path, monkeypatch):
    from failatlas import load_generator
    from failatlas.training import gan

    script = tmp_path / "train.py"
    script.write_text(_TRAIN)
    # 3 steps of 16 images, 8 per rank (two class groups of 4 each); R1 and path length on steps 0 and 2
    proc = _torchrun([str(script), str(tmp_path / "run"), "0.048", str(tmp_path / "held"), "new"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "generator.safetensors",
                                                     "metrics.jsonl", "samples-latest.json", "samples-latest.png"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3] and lines[-1]["kimg"] == 0.048  # rank 0 alone wrote
    assert all(math.isfinite(line["loss_G"]) and math.isfinite(line["loss_D"]) for line in lines)
    h0, h1 = (torch.load(tmp_path / f"held.{r}.pt", weights_only=True) for r in (0, 1))
    assert h0["steps"] == h1["steps"] == 3
    for key in ("G", "G_ema"):  # the same averaged gradients on both ranks: the same weights, w_avg included
        for name, v in h0[key].items():
            assert torch.equal(v, h1[key][name]), (key, name)
    assert not torch.equal(h0["rng"], h1["rng"])  # each rank drew its own part of every batch
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 3 and ck["nimg"] == 48 and ck["world_size"] == 2
    assert torch.equal(ck["rng"], h0["rng"]) and torch.equal(ck["rng_ranks"][1], h1["rng"])
    for name, v in ck["G"].items():
        assert torch.equal(v, h0["G"][name]), name
    assert load_generator(run).style_dim == 272

    # resumed in one process (batch 16 all in one): it continues from the checkpoint with rank 0's RNG
    real = gan._load_training_images
    monkeypatch.setattr(gan, "_load_training_images",
                        lambda cfg: tuple(v[:64].clone() if torch.is_tensor(v) else v for v in real(cfg)))
    res = gan.train_gan(_train_cfg(0.080), run, resume=True, progress=False)
    assert res.steps == 5 and res.kimg == 0.080
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 5 and "world_size" not in ck and "rng_ranks" not in ck
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5]


def test_train_gan_resume_with_the_same_processes_is_exact(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_TRAIN)
    for args in (["full", "0.064", "new"], ["part", "0.032", "new"], ["part", "0.064", "resume"]):
        out, kimg, mode = args
        proc = _torchrun([str(script), str(tmp_path / out), kimg, str(tmp_path / f"held-{out}"), mode], tmp_path)
        assert proc.returncode == 0, (args, proc.stderr[-3000:])
    a, b = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True) for name in ("full", "part"))
    assert a["step"] == b["step"] == 4
    for key in ("G", "D", "G_ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), (key, name)
    assert all(torch.equal(x, y) for x, y in zip(a["rng_ranks"], b["rng_ranks"]))
