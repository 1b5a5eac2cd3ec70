"""scripts/shared_misses.py: the experiment README "The analysis" reports (issue 4), on a tiny run folder."""

import json

import pytest
import torch

from failatlas import _io
from failatlas.analysis import GradientRanking, sample_population, with_classifier
from failatlas.models.classifier import ClassifierConfig, build_classifier, save_classifier
from failatlas.models.stylegan2 import save_generator


def _run_folder(G, root):
    """A generator, classifiers 'primary' (seed 1) and 'judge' (seed 2), and the run folder the script
    reads (population.npz, ranking.json, manifest.json) of the primary's population of 300."""
    import failatlas

    save_generator(G, root / "g")
    for seed, name in ((1, "primary"), (2, "judge")):
        torch.manual_seed(seed)
        save_classifier(build_classifier(ClassifierConfig()), ClassifierConfig(), root / name)
    C = failatlas.load_classifier(root / "primary")
    pop = sample_population(G, C, 300, seed=3)
    run = root / "run"
    run.mkdir()
    pop.to_npz(run / "population.npz")
    _io.write_json(run / "ranking.json", GradientRanking(G, C).rank(pop).to_json())
    _io.write_json(run / "manifest.json", {
        "models": {"generator": {"path": str(root / "g")}, "primary": "primary",
                   "classifiers": [{"name": "primary", "path": str(root / "primary")}]},
        "seeds": {"separation_random_dims": 3}})
    return run, pop, failatlas.load_classifier(root / "judge")


def test_counts_add_up_and_the_kept_samples_are_those_the_judge_gets_right(tiny_generator, tmp_path, capsys,
                                                                           load_script):
    G = tiny_generator
    run, pop, J = _run_folder(G, tmp_path)
    load_script("shared_misses").main([str(run), str(tmp_path / "judge")])
    out = json.loads(capsys.readouterr().out)

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

    # --classifier: another primary's misses are counted (not only its ranking); the roles swapped here
    load_script("shared_misses").main([str(run), str(tmp_path / "primary"), "--classifier", str(tmp_path / "judge")])
    swapped = json.loads(capsys.readouterr().out)
    assert swapped["primary_misses"] == out["judge_misses"] and swapped["judge_misses"] == out["primary_misses"]
    assert swapped["both"] == out["both"]


def test_a_judge_that_leaves_no_miss_is_one_line(tiny_generator, tmp_path, load_script):
    """The primary as its own judge drops every miss: one message, not a traceback from the separation."""
    run, _, _ = _run_folder(tiny_generator, tmp_path)
    with pytest.raises(SystemExit, match=r"^shared_misses: the judge misses every one of the primary's \d+ misses"):
        load_script("shared_misses").main([str(run), str(tmp_path / "primary")])
