"""Corner-case search (DESIGN §4.4): bisection against analytic thresholds, against the authors' stepping
procedure, verification, edge cases, serialization and bad input."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from failatlas.analysis import GradientRanking, sample_population
from failatlas.analysis.corners import CornerCases, CornerCaseSearch, authors_corner_search, find_corner_cases
from failatlas.analysis.ranking import Ranking, _order
from failatlas.errors import FailatlasError

LN9 = math.log(9.0)
SQRT2 = math.sqrt(2.0)


def manual_ranking(G, dims: dict[int, int], sigma: dict[int, float]) -> Ranking:
    """A ranking of G's dimensions with the given degrading directions (listed dims first, in order) and σ."""
    S = G.style_dim
    score = torch.zeros(S, dtype=torch.float64)
    for i, (d, direction) in enumerate(dims.items()):
        score[d] = direction * (len(dims) - i)
    sig = torch.ones(S, dtype=torch.float64)
    for d, v in sigma.items():
        sig[d] = v
    return Ranking(order=_order(score), score=score, sigma=sig, direction=torch.sign(score).to(torch.int64),
                   mean_grad=-score / sig, layout=tuple(G.style_layout()), target="probability", n=1)


def start_with(G, values: dict[int, float], n: int = 1) -> torch.Tensor:
    s = torch.zeros(n, G.style_dim)
    for d, v in values.items():
        s[:, d] = v
    return s


def p_region(v: float) -> float:
    """p_0 of RegionClassifier (gain 8) for a region mean v: softmax of [8v, 0 × 9]."""
    return math.exp(8 * v) / (math.exp(8 * v) + 9)


def crossing(f, lo: float, hi: float) -> float:
    """The t in [lo, hi] where the decreasing f(t) crosses 0.5 (float64 bisection to 1e-12)."""
    assert f(lo) > 0.5 >= f(hi)
    while hi - lo > 1e-12:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0.5 else (lo, mid)
    return hi


@pytest.fixture(scope="module")
def sharp(G, sharp_classifier):
    classifier = sharp_classifier
    pop = sample_population(G, classifier, 48, seed=0, batch_size=16)
    ranking = GradientRanking(G, classifier, batch_size=16).rank(pop)
    return SimpleNamespace(C=classifier, population=pop, ranking=ranking)


@pytest.fixture(scope="module")
def left(hand_built):
    """Hand-built G, the left-half classifier, dim a walked down (direction −1, σ 0.37) from s_a = 1."""
    hb = hand_built
    ranking = manual_ranking(hb.G, {hb.dim_a: -1, hb.dim_b: +1}, {hb.dim_a: 0.37, hb.dim_b: 4.0})
    # left 12 view columns are generator columns 2..13 (left half): x = s_a·√2/4, v = (1 + x)/2
    s_a_star = 4 / SQRT2 * (2 * LN9 / 8 - 1)
    return SimpleNamespace(hb=hb, ranking=ranking, t_star=(1.0 - s_a_star) / 0.37,
                           start=start_with(hb.G, {hb.dim_a: 1.0}))


@pytest.mark.parametrize("refine", ["bisection", "secant"])
def test_search_finds_the_analytic_threshold(left, refine):
    hb = left.hb
    cc = find_corner_cases(hb.G, hb.left, left.ranking, starts=left.start, labels=torch.tensor([0]),
                           dims=[hb.dim_a], pairs=False, refine=refine)
    (row,) = cc.cases
    assert row.found and not row.at_start and row.verified
    assert left.t_star - 1e-4 <= row.shift <= left.t_star + 0.01 + 1e-4, (row.shift, left.t_star)
    assert row.p_at_shift <= 0.5 < row.p_before
    assert row.shift_before == pytest.approx(row.shift - 0.01, abs=1e-12)
    assert row.p_verified <= 0.5 < row.p_before_verified
    if refine == "bisection":  # bracket 5σ, 10σ, then at most ⌈log2(500)⌉ = 9 midpoints
        assert 2 + 8 <= row.evaluations <= 2 + 9
    else:  # the same grid point in fewer steps
        (bisected,) = find_corner_cases(hb.G, hb.left, left.ranking, starts=left.start, labels=torch.tensor([0]),
                                        dims=[hb.dim_a], pairs=False, refine="bisection").cases
        assert (row.shift, row.shift_before) == (bisected.shift, bisected.shift_before)
        assert row.evaluations <= 2 + 5 < bisected.evaluations
    assert cc.method == f"batched-{refine}"
    assert cc.rounds == 1 + row.evaluations and cc.evaluations == 1 + row.evaluations
    assert (row.layers, row.kinds, row.directions) == (("b32.torgb",), ("torgb",), (-1,))


def test_pair_moved_together_and_a_dimension_that_never_flips(hand_built):
    """Full-width classifier: v = (vL + vR)/2; a brightens the left half, b darkens the right one (its view
    value clamps at 0, so alone it can never bring p_0 to 0.5)."""
    hb = hand_built
    full = type(hb.left)(slice(0, 28)).eval()
    ranking = manual_ranking(hb.G, {hb.dim_a: -1, hb.dim_b: +1}, {hb.dim_a: 0.5, hb.dim_b: 4.0})
    cc = find_corner_cases(hb.G, full, ranking, starts=start_with(hb.G, {hb.dim_a: 1.0}), labels=torch.tensor([0]),
                           dims=[hb.dim_a, hb.dim_b], n_pairs=2)

    def p(t_a: float, t_b: float) -> float:
        x_l = (1.0 - 0.5 * t_a) * SQRT2 / 4
        x_r = -(4.0 * t_b) * 0.2 * SQRT2 / 4
        v_l, v_r = (min(max((1 + x) / 2, 0.0), 1.0) for x in (x_l, x_r))
        return p_region((v_l + v_r) / 2)

    t_a = crossing(lambda t: p(t, 0.0), 0.0, 20.0)
    t_ab = crossing(lambda t: p(t, t), 0.0, 20.0)
    by = {r.dims: r for r in cc.rows}
    assert by[(hb.dim_a,)].found and 0 <= by[(hb.dim_a,)].shift - t_a <= 0.01 + 1e-4
    assert by[(hb.dim_a, hb.dim_b)].found and 0 <= by[(hb.dim_a, hb.dim_b)].shift - t_ab <= 0.01 + 1e-4
    assert t_ab < t_a - 1  # moving both flips much sooner
    never = by[(hb.dim_b,)]
    assert not never.found and never.shift is None and not never.verified
    assert never.p_last == pytest.approx(p(0.0, 100.0), abs=1e-5) and never.p_last > 0.5
    assert never.evaluations == 20  # 5, 10, …, 100
    pair = by[(hb.dim_a, hb.dim_b)]
    assert pair.kind == "pair" and pair.directions == (-1, 1) and pair.verified
    s = cc.styles(pair)
    assert float(s[hb.dim_a]) == pytest.approx(1.0 - 0.5 * pair.shift) and float(s[hb.dim_b]) == pytest.approx(4.0 * pair.shift)
    summary = cc.summary()
    assert (summary["pairs"], summary["found"], summary["verified"]) == (2, 1, 1)
    assert summary["combinations"] == {"pairs": 1, "found": 1, "verified": 1, "flipped": 0, "at_start": 0}
    # logits [8v, 0, …, 0]: at p_0 = 0.5 class 0 is still the top class (p_0 ≤ 0.5 is not a change of class)
    assert pair.pred_verified == 0 and not pair.flipped and never.pred_verified is None


def test_not_found_beyond_max_shift_and_t_zero(left):
    hb = left.hb
    starts = torch.cat([left.start, left.start])
    cc = find_corner_cases(hb.G, hb.left, left.ranking, starts=starts, labels=torch.tensor([0, 1]),
                           dims=[hb.dim_a], pairs=False, max_shift=5.0)
    beyond, zero = cc.cases
    assert not beyond.found and beyond.shift is None and beyond.p_last > 0.5 and beyond.evaluations == 1
    # class 1 of the region classifier has p ≤ 1/(e^{8v}+9) < 0.1 everywhere: a corner case at t = 0
    assert zero.found and zero.at_start and zero.shift == 0.0 and zero.p_at_shift == zero.p_start < 0.1
    assert zero.evaluations == 0 and zero.verified and zero.p_before is None
    # a start that already fails is no corner case found (its row keeps found and shift 0)
    assert cc.summary()["at_start"] == 1 and cc.summary()["found"] == 0 and cc.summary()["verified"] == 0


def test_verification_reclassifies_from_scratch(left):
    """A classifier that changes its mind after the search: the corner case no longer verifies."""
    hb = left.hb

    class Drifting(nn.Module):
        def __init__(self, inner, after):
            super().__init__()
            self.inner, self.after, self.calls = inner, after, 0

        def forward(self, x):
            self.calls += 1
            out = self.inner(x)
            return out + torch.tensor([10.0] + [0.0] * 9) if self.calls > self.after else out

    kw = dict(starts=left.start, labels=torch.tensor([0]), dims=[hb.dim_a], pairs=False)
    (honest,) = find_corner_cases(hb.G, Drifting(hb.left, 10 ** 6), left.ranking, **kw).cases
    drifting = Drifting(hb.left, 1 + honest.evaluations)  # one call per round: the start, then the row's points
    (row,) = find_corner_cases(hb.G, drifting, left.ranking, **kw).cases
    assert honest.verified and row.found and row.shift == honest.shift
    assert not row.verified and row.p_verified > 0.5
    (unchecked,) = find_corner_cases(hb.G, hb.left, left.ranking, verify=False, **kw).cases
    assert unchecked.found and not unchecked.verified and unchecked.p_verified is None


def _two_classes(sharp) -> list[int]:
    """Two classes with well-classified samples in the population (they have class-mean starts)."""
    have = sorted({int(c) for c in sharp.population.y[sharp.population.well].tolist()})
    assert len(have) >= 2
    return have[-2:]


def test_batched_search_equals_the_authors_procedure(G, sharp):
    kw = dict(dims=3, classes=_two_classes(sharp), n_pairs=2, step=1.0, max_shift=30.0, tol=0.01)
    batched = find_corner_cases(G, sharp.C, sharp.ranking, sharp.population, pairs=True, **kw)
    authors = authors_corner_search(G, sharp.C, sharp.ranking, sharp.population, pairs=True, **kw)
    assert len(batched.rows) == len(authors.rows) == 2 * (3 + 1)
    assert sum(r.found and not r.at_start for r in batched.rows) >= 4
    for b, a in zip(batched.rows, authors.rows):
        assert (b.start, b.dims, b.found, b.at_start) == (a.start, a.dims, a.found, a.at_start)
        if b.found:
            assert abs(b.shift - a.shift) <= 0.01 + 1e-9, (b.dims, b.shift, a.shift)
            assert b.verified
    assert batched.evaluations < authors.evaluations / 3
    assert batched.rounds <= 1 + 30 + 9 < authors.rounds  # start, brackets up to 30σ, 9 halvings
    bisected = find_corner_cases(G, sharp.C, sharp.ranking, sharp.population, pairs=True, refine="bisection", **kw)
    refined = [(b, s) for b, s in zip(bisected.rows, batched.rows) if s.found and not s.at_start]
    assert refined and all(b.shift == s.shift for b, s in refined)  # p_y crosses 0.5 once in each bracket
    assert sum(s.evaluations for _, s in refined) < sum(b.evaluations for b, _ in refined)
    with pytest.raises(FailatlasError, match="refine must be one of secant, bisection"):
        find_corner_cases(G, sharp.C, sharp.ranking, sharp.population, refine="newton", **kw)


def test_engine_backend_equals_reference_backend(G, sharp):
    """The prefix-cached search (default) finds the same corner cases as full synthesis per image, with
    dimensions from several layers (conv and ToRGB) and pairs."""
    kw = dict(dims=6, classes=_two_classes(sharp), n_pairs=3, step=1.0, max_shift=30.0, tol=0.01)
    fast = find_corner_cases(G, sharp.C, sharp.ranking, sharp.population, **kw)
    ref = find_corner_cases(G, sharp.C, sharp.ranking, sharp.population, backend="reference", **kw)
    assert len({layer for r in fast.cases for layer in r.layers}) >= 2
    assert sum(r.found for r in fast.rows) >= 4
    for a, b in zip(fast.rows, ref.rows):
        assert (a.dims, a.found, a.verified, a.evaluations) == (b.dims, b.found, b.verified, b.evaluations)
        if a.found:
            assert abs(a.shift - b.shift) <= 1e-9 and abs(a.p_at_shift - b.p_at_shift) <= 1e-5
    with pytest.raises(FailatlasError, match="backend must be 'engine'"):
        CornerCaseSearch(G, sharp.C, sharp.ranking, backend="fast")


def test_population_starts_are_class_means_and_empty_classes_are_skipped(G, sharp):
    pop = sharp.population
    cc = CornerCaseSearch(G, sharp.C, sharp.ranking).search(pop, dims=2, pairs=False)
    have = sorted({int(c) for c in pop.y[pop.well].tolist()})
    assert cc.labels.tolist() == have
    for n, c in enumerate(have):
        expect = pop.s[(pop.y == c) & pop.well].double().mean(0).float()
        assert torch.equal(cc.starts[n], expect)
    skipped = sorted(set(range(10)) - set(have))
    assert skipped and list(cc.skipped_classes) == skipped
    for c in skipped:
        assert any(w.startswith(f"class {c} skipped") and "well classified" in w for w in cc.warnings)
    assert {r.cls for r in cc.cases} == set(have) and cc.summary()["skipped_classes"] == skipped
    assert cc.summary()["pairs"] == 2 * len(have)
    # a population where no requested class has a well-classified sample cannot start anywhere
    with pytest.raises(FailatlasError, match="no class has a well-classified sample"):
        CornerCaseSearch(G, sharp.C, sharp.ranking).search(pop, dims=2, classes=skipped[:2])


def test_csv_and_json_round_trip(tmp_path, hand_built, left):
    hb = hand_built
    full = type(hb.left)(slice(0, 28)).eval()
    starts = torch.cat([left.start, left.start])
    cc = find_corner_cases(hb.G, full, left.ranking, starts=starts, labels=torch.tensor([0, 3]),
                           dims=[hb.dim_a, hb.dim_b], n_pairs=2)
    assert {r.found for r in cc.rows} == {True, False}
    rows = CornerCases.read_csv(cc.to_csv(tmp_path / "corners.csv"))
    assert rows == cc.rows
    again = CornerCases.from_json(cc.to_json())
    assert again.rows == cc.rows and torch.equal(again.starts, cc.starts)
    assert again.summary() == cc.summary() and again.dims == cc.dims and again.warnings == cc.warnings
    import json

    (tmp_path / "c.json").write_text(json.dumps(cc.to_json()))
    back = CornerCases.read_json(tmp_path / "c.json")
    found = next(r for r in back.rows if r.found and not r.at_start)
    assert torch.equal(back.styles(found), cc.styles(found))
    with pytest.raises(FailatlasError, match="start styles"):
        CornerCases.from_json(cc.to_json(styles=False))
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(FailatlasError, match="not a failatlas corner-case table"):
        CornerCases.read_csv(tmp_path / "bad.csv")
    # files written before the predicted class was recorded still load; what they lack is not counted as 0
    assert cc.summary()["flipped"] == sum(r.flipped for r in cc.cases if r.found and not r.at_start and r.verified)
    old = cc.to_json()
    for row in old["cases"] + old["combinations"]:
        del row["pred_verified"]
    legacy = CornerCases.from_json(old)
    assert all(r.pred_verified is None for r in legacy.rows) and legacy.summary()["flipped"] is None
    assert "the predicted class not recorded" in legacy.format()
    lines = (tmp_path / "corners.csv").read_text().splitlines()
    (tmp_path / "old.csv").write_text("\n".join(",".join(line.split(",")[:-1]) for line in lines) + "\n")
    assert [r.pred_verified for r in CornerCases.read_csv(tmp_path / "old.csv")] == [None] * len(lines[1:])


def test_bad_options_and_mismatched_ranking(G, sharp, left):
    hb = left.hb
    kw = dict(starts=left.start, labels=torch.tensor([0]), dims=[hb.dim_a])
    for name, value in (("step", 0.0), ("tol", -0.01), ("max_shift", float("nan")), ("step", True)):
        with pytest.raises(FailatlasError, match=name):
            find_corner_cases(hb.G, hb.left, left.ranking, **{**kw, name: value})
    for extreme in (dict(step=1e-3, max_shift=1e4, tol=1e-3), dict(step=1e12, max_shift=1e12, tol=1e-9)):
        with pytest.raises(FailatlasError, match="bracket points or 1e"):  # as failatlas-eval refuses them
            find_corner_cases(hb.G, hb.left, left.ranking, **{**kw, **extreme})
    with pytest.raises(FailatlasError, match="dims"):
        find_corner_cases(hb.G, hb.left, left.ranking, **{**kw, "dims": [hb.G.style_dim]})
    with pytest.raises(FailatlasError, match="labels"):
        find_corner_cases(hb.G, hb.left, left.ranking, starts=left.start, dims=[hb.dim_a])
    r = sharp.ranking
    other = Ranking(order=r.order[:100] % 100, score=r.score[:100], sigma=r.sigma[:100], direction=r.direction[:100],
                    mean_grad=r.mean_grad[:100], layout=r.layout[:100], target=r.target, n=r.n)
    with pytest.raises(FailatlasError, match=r"ranking has 100 .* generator has 272"):
        CornerCaseSearch(G, sharp.C, other)
    with pytest.raises(FailatlasError, match=r"100 .*272"):
        find_corner_cases(G, sharp.C, other, sharp.population)


def test_rounds_advance_every_row_together(G, sharp):
    """One batch per round whatever the number of rows: rounds stay at about 1 + brackets + 9 while the
    evaluations grow with the rows."""
    cc = find_corner_cases(G, sharp.C, sharp.ranking, sharp.population, dims=6, n_pairs=3, refine="bisection")
    rows = [r for r in cc.rows if not r.at_start]
    assert len(cc.rows) == len(cc.labels) * (6 + 3)
    assert cc.evaluations == len(cc.labels) + sum(r.evaluations for r in rows)
    assert cc.rounds == 1 + max(r.evaluations for r in rows)
    for r in rows:
        if r.found:
            brackets = math.ceil(r.shift / 5.0 - 1e-9) if r.shift > 0 else 1
            assert brackets + 8 <= r.evaluations <= brackets + 9  # ⌈log2 500⌉ = 9 halvings at most
            assert r.p_at_shift <= 0.5 < r.p_before and r.shift_before == pytest.approx(r.shift - 0.01)
    assert cc.verify_evaluations == sum(2 - r.at_start for r in cc.rows if r.found)
    for r in cc.rows:
        assert float(cc.p_start[r.start]) == r.p_start


def test_unaligned_grid_still_brackets_the_threshold(left):
    """tol that does not divide step, and max_shift that is not a multiple of step: the search still ends
    with p ≤ 0.5 at t and p > 0.5 at t − tol (an extra evaluation when the grid point below t is the bracket
    start), and finds the analytic threshold."""
    hb = left.hb
    kw = dict(starts=left.start, labels=torch.tensor([0]), dims=[hb.dim_a], pairs=False)
    for step, tol, max_shift in ((5.0, 0.03, 100.0), (4.0, 0.07, 6.5), (0.5, 0.01, 7.0)):
        (row,) = find_corner_cases(hb.G, hb.left, left.ranking, step=step, tol=tol, max_shift=max_shift, **kw).cases
        assert row.found and row.verified, (step, tol)
        assert left.t_star - 1e-4 <= row.shift <= left.t_star + tol + 1e-4
        assert row.shift_before == pytest.approx(row.shift - tol) and row.p_at_shift <= 0.5 < row.p_before
    (row,) = find_corner_cases(hb.G, hb.left, left.ranking, step=4.0, max_shift=6.0, **kw).cases
    assert not row.found and row.evaluations == 2  # 4σ, then 6σ (max_shift) and no further
    (same,) = CornerCaseSearch(hb.G, hb.left, left.ranking).search(None, step=4.0, max_shift=6.0, **kw).cases
    assert same == row


def test_a_population_of_some_classes_and_rows_of_another_result(G, sharp):
    """The search follows the classes a population was drawn from (it warned about the 8 others as
    'use a larger population'); styles() refuses a row of another result (it rebuilt it from the wrong
    start, or failed with an IndexError)."""
    import dataclasses

    pop = sharp.population
    have = sorted({int(c) for c in pop.y[pop.well].tolist()})[:2]
    some = dataclasses.replace(pop, classes=tuple(have))
    some = some.subset(torch.isin(pop.y, torch.tensor(have)))
    cc = CornerCaseSearch(G, sharp.C, sharp.ranking).search(some, dims=1, pairs=False)
    assert cc.labels.tolist() == have and cc.skipped_classes == () and not cc.warnings
    other = CornerCaseSearch(G, sharp.C, sharp.ranking).search(pop, dims=2, pairs=False)
    foreign = next(r for r in other.rows if r.start >= len(cc.labels) or r.dims != cc.rows[0].dims)
    with pytest.raises(FailatlasError, match="is not a row of this corner-case result"):
        cc.styles(foreign)
    assert cc.styles(cc.rows[0], "start").shape == (G.style_dim,)


def test_corner_case_json_reads_back_exactly(G, sharp, tmp_path, round_trip, assert_same_result):
    from failatlas import _io
    from failatlas.report.gallery import plot_corner_gallery

    kw = dict(dims=3, classes=_two_classes(sharp), n_pairs=2, step=1.0, max_shift=30.0, tol=0.01)
    cc = find_corner_cases(G, sharp.C, sharp.ranking, sharp.population, pairs=True, **kw)
    assert any(r.found and not r.at_start for r in cc.rows) and cc.combinations
    back, path = round_trip(cc, CornerCases.read_json, "corner_cases.json")
    assert_same_result(cc, back)
    # the gallery drawn from the result read back is the same, bit for bit (the generator renders its styles)
    plot_corner_gallery(cc, G, tmp_path / "computed" / "corners.png")
    plot_corner_gallery(back, G, tmp_path / "read" / "corners.png")
    for name in ("corners.json", "corners.png"):
        assert (tmp_path / "computed" / name).read_bytes() == (tmp_path / "read" / name).read_bytes()
    # another kind of file, a figure's data, a truncated file, a newer version: one line each
    _io.write_json(tmp_path / "ranking.json", sharp.ranking.to_json())
    with pytest.raises(FailatlasError, match=r"corner-case file .*ranking.json holds a ranking \(ranking.json\), not "
                                             r"a corner-case result \(format 'failatlas-corner-cases'\)"):
        CornerCases.read_json(tmp_path / "ranking.json")
    with pytest.raises(FailatlasError, match=r"holds the data plotted in the corner_gallery figure"):
        CornerCases.read_json(tmp_path / "read" / "corners.json")
    text = path.read_text()
    (tmp_path / "cut.json").write_text(text[:len(text) // 3])
    with pytest.raises(FailatlasError, match=r"corner-case file .*cut.json is not valid JSON"):
        CornerCases.read_json(tmp_path / "cut.json")
    _io.write_json(tmp_path / "new.json", {**_io.jsonable(cc.to_json()), "version": 2})
    with pytest.raises(FailatlasError, match=r"written by a newer failatlas \(format 'failatlas-corner-cases' version "
                                             r"2; this one reads up to version 1\); update failatlas"):
        CornerCases.read_json(tmp_path / "new.json")
    with pytest.raises(FailatlasError, match="corner-case file not found"):
        CornerCases.read_json(tmp_path / "none.json")
