"""benchmarks/run.py's counted figures (its timings are measured, never asserted)."""

import importlib.util

import pytest
import torch


@pytest.fixture(scope="module")
def bench(repo_root):
    spec = importlib.util.spec_from_file_location("bench_run", repo_root / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_walk_flop_bounds_follow_the_walked_layers(bench, tiny_generator):
    from failatlas.models.classifier import PaperCNN

    G, C = tiny_generator, PaperCNN().eval()
    net = G.synthesis_network
    table = G.style_layers()
    torgb = [t.start for t in table if t.kind == "torgb"]
    first, last_conv = table[0], [t for t in table if t.kind == "conv"][-1]

    only_rgb = bench.walk_flop_bounds(G, C, torgb)
    flops = only_rgb["flops_per_image"]
    assert flops["synthesis"] > 0 and flops["classifier"] > 0
    # a ToRGB walk runs the classifier alone: its operations equal the classifier's
    assert only_rgb["walk_vs_classifier_flop_bound"] == pytest.approx(1.0)
    assert only_rgb["walk_cache_speedup_flop_bound"] == pytest.approx(1 + flops["synthesis"] / flops["classifier"])

    # a dimension of the first layer reruns every later layer; one of the last conv only what follows it
    early = bench.walk_flop_bounds(G, C, [first.start])
    late = bench.walk_flop_bounds(G, C, [last_conv.start])
    assert 1.0 < early["walk_cache_speedup_flop_bound"] < late["walk_cache_speedup_flop_bound"]
    assert early["walk_vs_classifier_flop_bound"] > late["walk_vs_classifier_flop_bound"] > 1.0
    # the mean over several dimensions lies between theirs
    both = bench.walk_flop_bounds(G, C, torch.tensor([first.start, last_conv.start]))
    assert (late["walk_vs_classifier_flop_bound"] < both["walk_vs_classifier_flop_bound"]
            < early["walk_vs_classifier_flop_bound"])
    assert len(net.layers) == len(table)


def test_ranking_and_authors_gradients_count_the_same_operations(bench, tiny_generator):
    from failatlas.analysis import sample_population
    from failatlas.analysis.ranking import style_gradients
    from failatlas.models.classifier import PaperCNN

    torch.manual_seed(0)
    G, C = tiny_generator, PaperCNN().eval()
    population = sample_population(G, C, 8, seed=0, progress_bar=False)
    counts = bench.gradient_flops(G, C, population, n=4)
    assert counts["ranking"] > 0
    assert counts["authors"] == pytest.approx(counts["ranking"], rel=0.01)
    # and the authors' hooks read the same gradients as the ranking's
    ours = style_gradients(G, C, population.s, population.y)
    theirs = bench.authors_ranking_gradients(G, C, population)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-6)
