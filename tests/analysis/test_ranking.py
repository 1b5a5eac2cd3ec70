import copy
import json

import pytest
import torch

from failatlas import FailatlasError
from failatlas.analysis import (GradientRanking, Ranking, rank_dimensions, sample_population, style_gradients)
from failatlas.analysis.ranking import CSV_COLUMNS


@pytest.fixture(scope="module")
def ranking(G, C, population):
    return GradientRanking(G, C).rank(population, per_class=True, bootstrap=200, seed=0)


def test_gradient_matches_central_difference(G, C, population):
    G64, C64 = copy.deepcopy(G).double(), copy.deepcopy(C).double()
    s, y = population.s[:2].double(), population.y[:2]
    g = style_gradients(G64, C64, s, y)
    assert g.dtype == torch.float64 and g.shape == s.shape

    def p_y(v):
        with torch.no_grad():
            return float(torch.softmax(C64(G64.synthesis_from_styles(v[None]).add(1).mul(0.5).clamp(0, 1)
                                           [..., 2:30, 2:30]), 1)[0, int(y[1])])

    top = g[1].abs().argsort(descending=True)[:3].tolist()
    layers = {t.name: t for t in G.style_layers()}
    dims = top + [layers["b4.conv1"].start + 5, layers["b16.torgb"].start + 2]
    h = 1e-5
    for k in dims:
        e = torch.zeros_like(s[1])
        e[k] = h
        fd = (p_y(s[1] + e) - p_y(s[1] - e)) / (2 * h)
        assert fd == pytest.approx(float(g[1, k]), rel=1e-5, abs=1e-10), k


def test_batch_independence_and_mean(G, C, population, ranking):
    s, y = population.s[:6], population.y[:6]
    together = style_gradients(G, C, s, y)
    alone = torch.cat([style_gradients(G, C, s[i:i + 1], y[i:i + 1]) for i in range(6)])
    assert torch.allclose(together, alone, rtol=1e-4, atol=1e-9)
    full = style_gradients(G, C, population.s, population.y).double()
    assert torch.allclose(ranking.mean_grad, full.mean(0), rtol=1e-5, atol=1e-12)
    sigma = population.s.double().std(0)
    assert torch.allclose(ranking.sigma, sigma)
    assert torch.allclose(ranking.score, -sigma * ranking.mean_grad)


def test_order_direction_and_rows(G, ranking):
    a = ranking.score.abs()
    assert torch.all(a[ranking.order[:-1]] >= a[ranking.order[1:]])
    assert sorted(ranking.order.tolist()) == list(range(G.style_dim))
    assert torch.equal(ranking.direction, torch.sign(ranking.score).long())
    top = ranking.top(3)
    assert [r.rank for r in top] == [1, 2, 3] and top[0].dim == int(ranking.order[0])
    layout = G.style_layout()[top[0].dim]
    assert (top[0].layer, top[0].channel, top[0].kind) == (layout.name, layout.channel, layout.kind)
    assert int(ranking.rank_of()[top[1].dim]) == 2


def test_ties_broken_by_dimension_index(G, hand_built):
    hb = hand_built
    pop = sample_population(hb.G, hb.left, 40, seed=4)
    r = GradientRanking(hb.G, hb.left).rank(pop)
    zero = (r.score == 0).nonzero().squeeze(1)
    assert len(zero) >= G.style_dim - 2
    assert r.order[-len(zero):].tolist() == sorted(zero.tolist())  # exact ties: ascending dimension


def test_hand_built_region_classifier(hand_built):
    """Only s_a paints the left half, only s_b the right one: the classifier that looks left ranks s_a first
    and finds s_b irrelevant, and vice versa; directions follow the sign of the painting."""
    hb = hand_built
    pop = sample_population(hb.G, hb.left, 60, seed=5)
    left = GradientRanking(hb.G, hb.left, target="logit").rank(pop, per_class=True)
    assert int(left.order[0]) == hb.dim_a
    assert float(left.score[hb.dim_b]) == 0.0
    assert int((left.score != 0).sum()) == 1
    # logit of y: only class 0 has a non-zero logit, gain·brightness, which s_a raises → degrading direction −1
    assert int(left.per_class[0].direction[hb.dim_a]) == -1
    assert all(float(r.score[hb.dim_a]) == 0.0 for c, r in left.per_class.items() if c != 0)
    # p_y: its gradients sum to zero over the classes (Σ_y p_y = 1), so a uniform population has no
    # systematic direction here; over classes 1..9 only, p_y falls as the band's brightness rises
    pop = sample_population(hb.G, hb.left, 60, seed=5, classes=range(1, 10))
    right = GradientRanking(hb.G, hb.right).rank(pop)
    assert int(right.order[0]) == hb.dim_b and float(right.score[hb.dim_a]) == 0.0
    assert int(right.direction[hb.dim_b]) == -1  # s_b darkens the right band: lowering p_y = lowering s_b
    left = GradientRanking(hb.G, hb.left).rank(pop)
    assert int(left.order[0]) == hb.dim_a and int(left.direction[hb.dim_a]) == +1  # s_a brightens the left


def test_per_class_rankings(G, C, population, ranking):
    assert set(ranking.per_class) == set(population.y.unique().tolist())
    total = torch.zeros_like(ranking.mean_grad)
    for c, r in ranking.per_class.items():
        n_c = int((population.y == c).sum())
        assert r.n == n_c and r.label == c and torch.equal(r.sigma, ranking.sigma)
        assert r.ci_low is not None and r.per_class == {}
        total += r.mean_grad * n_c
    assert torch.allclose(total / population.n, ranking.mean_grad, rtol=1e-9, atol=1e-15)
    # class-specific directions are not all the global ones
    assert any(not torch.equal(r.direction, ranking.direction) for r in ranking.per_class.values())


def test_bootstrap_interval_contains_estimate(ranking):
    lo, hi = ranking.ci_low, ranking.ci_high
    assert lo.shape == hi.shape == ranking.score.shape
    tol = 1e-9 * ranking.score.abs().max()
    assert torch.all(lo <= ranking.score + tol) and torch.all(ranking.score <= hi + tol)
    assert torch.all(hi - lo > 0)
    top = ranking.top(1)[0]
    assert top.ci_low == float(lo[top.dim]) and top.ci_high == float(hi[top.dim])


def test_csv_byte_identical_for_same_seed(G, C, tmp_path):
    def run(seed, name):
        pop = sample_population(G, C, 24, seed=seed, batch_size=10)
        r = rank_dimensions(G, C, pop, bootstrap=30, seed=seed, batch_size=10)
        return r.to_csv(tmp_path / name).read_bytes()

    first, second, other = run(7, "a.csv"), run(7, "b.csv"), run(8, "c.csv")
    assert first == second and first != other
    lines = first.decode().split("\n")
    assert b"\r" not in first and lines[-1] == "" and len(lines) == G.style_dim + 2
    assert lines[0] == ",".join(CSV_COLUMNS)
    row = lines[1].split(",")
    assert row[0] == "1" and float(row[6]) != 0 and float(row[11]) <= float(row[6]) <= float(row[12])


def test_json_round_trip(ranking, tmp_path):
    path = tmp_path / "ranking.json"
    path.write_text(json.dumps(ranking.to_json()))
    back = Ranking.read_json(path)
    assert torch.equal(back.order, ranking.order) and torch.equal(back.score, ranking.score)
    assert torch.equal(back.ci_high, ranking.ci_high) and back.layout == ranking.layout
    assert set(back.per_class) == set(ranking.per_class)
    assert torch.equal(back.per_class[3].mean_grad, ranking.per_class[3].mean_grad)
    path.write_text('{"format": "failatlas-ranking", "dims": []}')
    with pytest.raises(FailatlasError, match="not a valid failatlas ranking"):
        Ranking.read_json(path)


def test_logit_target_and_validation(G, C, population, ranking):
    logit = GradientRanking(G, C, target="logit").rank(population)
    assert logit.target == "logit" and logit.ci_low is None and logit.per_class == {}
    assert not torch.allclose(logit.score, ranking.score)
    with pytest.raises(FailatlasError, match="target must be one of probability, logit"):
        GradientRanking(G, C, target="loss")
    with pytest.raises(FailatlasError, match="at least 2 samples"):
        GradientRanking(G, C).rank(population.subset([0]))
    with pytest.raises(FailatlasError, match="bootstrap"):
        GradientRanking(G, C).rank(population, bootstrap=-1)
    with pytest.raises(FailatlasError, match="eval mode"):
        style_gradients(G, copy.deepcopy(C).train(), population.s[:2], population.y[:2])


def test_black_box_ranking_agrees_with_the_gradient_ranking(G, C, population):
    """Central finite differences through the walk engine reproduce the gradient ranking (the issue's
    bar: ≥ 8 of the top 10, Spearman ≥ 0.9 over the top 50), on the same samples."""
    import numpy as np

    from failatlas.analysis import BlackBoxRanking

    n = 16
    grad = GradientRanking(G, C, batch_size=16).rank(population)
    box = BlackBoxRanking(G, C, n=n, h=0.05).rank(population)
    assert box.method == "black-box" and box.images == 2 * n * G.style_dim and box.n == n
    from failatlas.analysis import Ranking

    assert Ranking.from_json(box.to_json()).images == box.images  # the cost survives a round trip
    assert torch.equal(box.sigma, grad.sigma)
    # the gradient ranking on the same n samples (σ from the whole population, as the black box does)
    g_sum = torch.zeros(G.style_dim, dtype=torch.float64)
    from failatlas.analysis.ranking import style_gradients

    g_sum += style_gradients(G, C, population.s[:n], population.y[:n]).double().sum(0)
    ref_score = -grad.sigma * g_sum / n
    ref_order = torch.argsort(-ref_score.abs(), stable=True)
    top10 = set(ref_order[:10].tolist()) & set(box.order[:10].tolist())
    assert len(top10) >= 8
    top50 = ref_order[:50]
    a, b = ref_score[top50].numpy(), box.score[top50].numpy()
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    spearman = np.corrcoef(rank(a), rank(b))[0, 1]
    assert spearman >= 0.9, spearman
    assert (torch.sign(box.score[top50]) == torch.sign(ref_score[top50])).all()


def test_black_box_step_is_larger_for_a_quantized_classifier(G, C):
    """An int8 model's p_y moves in rounding steps: differences over 0.1σ measure those, 1σ the slope."""
    from failatlas.analysis import BlackBoxRanking

    assert BlackBoxRanking(G, C).h == 0.1
    quantized = copy.deepcopy(C)
    quantized.quantized = True
    assert BlackBoxRanking(G, quantized).h == 1.0 and BlackBoxRanking(G, quantized, h=0.2).h == 0.2


def test_black_box_ranking_bad_options(G, C, population):
    from failatlas.analysis import BlackBoxRanking

    with pytest.raises(FailatlasError, match="finite-difference step"):
        BlackBoxRanking(G, C, h=0.0)
    with pytest.raises(FailatlasError, match="positive integer or None"):
        BlackBoxRanking(G, C, n=0)
    with pytest.raises(FailatlasError, match="takes a Population"):
        BlackBoxRanking(G, C).rank(population.s)


def test_black_box_n_may_be_a_numpy_integer(G, C, population):
    import numpy as np

    from failatlas.analysis import BlackBoxRanking

    assert BlackBoxRanking(G, C, n=np.int64(4)).n == 4


def test_bad_bootstrap_or_seed_are_refused_before_the_gradients(G, C, population):
    import numpy as np

    ranker = GradientRanking(G, C, batch_size=16)
    with pytest.raises(FailatlasError, match="seed must be a non-negative integer, got 'x'"):
        ranker.rank(population, bootstrap=2, seed="x")
    with pytest.raises(FailatlasError, match="bootstrap must be a non-negative number of resamples"):
        ranker.rank(population, bootstrap=-1)
    assert ranker.rank(population, bootstrap=np.int64(2), seed=np.int64(1)).bootstrap == 2


def test_a_row_out_of_range_is_named(G, C, population):
    ranking = GradientRanking(G, C, batch_size=16).rank(population)
    with pytest.raises(FailatlasError, match=rf"dim must be a style dimension in \[0, {G.style_dim}\), got 5000"):
        ranking.row(5000)


def test_ranking_json_reads_back_exactly_and_other_files_are_refused(G, C, population, ranking, tmp_path, round_trip,
                                                                     assert_same_result):
    from failatlas import _io
    from failatlas.analysis import AccuracyCurve
    from failatlas.report.figures import plot_separation
    from failatlas.analysis import Separation

    back, path = round_trip(ranking, Ranking.read_json, "ranking.json")  # per-class rankings, bootstrap intervals
    assert_same_result(ranking, back)
    sep = Separation(population, layout=G.style_layout()).compute()  # a figure drawn with it is the same
    plot_separation(sep, ranking, tmp_path / "computed" / "separation.png")
    plot_separation(sep, back, tmp_path / "read" / "separation.png")
    for name in ("separation.json", "separation.png"):
        assert (tmp_path / "computed" / name).read_bytes() == (tmp_path / "read" / name).read_bytes()
    curve = AccuracyCurve(ranking, k=5, per_class=False).compute(population)
    _io.write_json(tmp_path / "curve.json", _io.jsonable(curve.to_json()))
    with pytest.raises(FailatlasError, match=r"ranking file .*curve.json holds one accuracy curve "
                                             r"\(CurveResult.to_json\), not a ranking \(format 'failatlas-ranking'\)"):
        Ranking.read_json(tmp_path / "curve.json")
    (tmp_path / "cut.json").write_text(path.read_text()[:1000])
    with pytest.raises(ValueError, match=r"ranking file .*cut.json is not valid JSON"):  # a FailatlasError too
        Ranking.read_json(tmp_path / "cut.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(FailatlasError, match=r"list.json holds a JSON list, not a ranking"):
        Ranking.read_json(tmp_path / "list.json")
    _io.write_json(tmp_path / "new.json", {**json.loads(path.read_text()), "version": 2})
    with pytest.raises(FailatlasError, match=r"written by a newer failatlas \(format 'failatlas-ranking' version 2"):
        Ranking.read_json(tmp_path / "new.json")
    with pytest.raises(FileNotFoundError, match="ranking file not found") as missing:
        Ranking.read_json(tmp_path / "none.json")
    from failatlas.errors import ResultFileError, ResultFileNotFoundError

    assert isinstance(missing.value, ResultFileNotFoundError) and isinstance(missing.value, FailatlasError)
    with pytest.raises(ResultFileError, match="holds a JSON list") as wrong:  # the CLI prints it as one line
        Ranking.read_json(tmp_path / "list.json")
    assert isinstance(wrong.value, ValueError) and isinstance(wrong.value, FailatlasError)
