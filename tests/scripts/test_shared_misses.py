"""scripts/shared_misses.py: the experiment README "The analysis" reports (issue 4), on a tiny run folder."""

import json

import torch

from failatlas import _io
from failatlas.analysis import GradientRanking, sample_population
from failatlas.models.classifier import ClassifierConfig, build_classifier, save_classifier
from failatlas.models.stylegan2 import save_generator


def test_counts_add_up_and_the_kept_samples_are_those_the_judge_gets_right(tiny_generator, tmp_path, capsys,
                                                                           load_script):
    G = tiny_generator
    save_generator(G, tmp_path / "g")
    for seed, name in ((1, "primary"), (2, "judge")):
        torch.manual_seed(seed)
        save_classifier(build_classifier(ClassifierConfig()), ClassifierConfig(), tmp_path / name)
    import failatlas

    C, J = (failatlas.load_classifier(tmp_path / n) for n in ("primary", "judge"))
    pop = sample_population(G, C, 300, seed=3)
    run = tmp_path / "run"
    run.mkdir()
    pop.to_npz(run / "population.npz")
    _io.write_json(run / "ranking.json", GradientRanking(G, C).rank(pop).to_json())
    _io.write_json(run / "manifest.json", {
        "models": {"generator": {"path": str(tmp_path / "g")}, "primary": "primary",
                   "classifiers": [{"name": "primary", "path": str(tmp_path / "primary")}]},
        "seeds": {"separation_random_dims": 3}})
    load_script("shared_misses").main([str(run), str(tmp_path / "judge")])
    out = json.loads(capsys.readouterr().out)

    from failatlas.analysis import with_classifier

    judge_well = with_classifier(pop, G, J).well
    mis = ~pop.well
    assert out["primary_misses"] == int(mis.sum()) and out["judge_misses"] == int((~judge_well).sum())
    assert out["both"] + out["primary_only"] == out["primary_misses"]
    assert out["both"] == int((mis & ~judge_well).sum())
    for key in ("judge_right_run_ranking", "judge_right_own_ranking"):
        kept = out[key]
        assert kept["n"] == int(judge_well.sum()) and kept["n_mis"] == out["primary_only"]
        assert 0 <= kept["chance_mean_ks"] <= kept["best10_mean_ks"] <= 1
    assert out["all"]["n"] == 300 and out["all"]["n_mis"] == out["primary_misses"]
