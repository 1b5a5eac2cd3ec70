"""CornerMargins: the corner search from many well-classified samples, and the quantiles of their shifts."""

from __future__ import annotations

import json
import math

import pytest
import torch

from failatlas import FailatlasError
from failatlas.analysis import CornerCaseSearch, CornerMargins, GradientRanking, MarginResult, sample_population
from failatlas.analysis.margins import lower_quantile, pick_starts


@pytest.fixture(scope="module")
def sharp(G, sharp_classifier):
    pop = sample_population(G, sharp_classifier, 48, seed=0, batch_size=16)
    return pop, GradientRanking(G, sharp_classifier, batch_size=16).rank(pop)


@pytest.fixture(scope="module")
def margins(G, sharp_classifier, sharp) -> MarginResult:
    pop, ranking = sharp
    return CornerMargins(G, sharp_classifier, ranking, batch_size=16).compute(pop, per_class=2, dims=3, seed=1)


def test_lower_quantile_never_interpolates_and_sorts_inf_last():
    x = torch.tensor([3.0, math.inf, 1.0, 2.0], dtype=torch.float64)
    assert lower_quantile(x, 0.0) == 1.0 and lower_quantile(x, 0.5) == 2.0 and lower_quantile(x, 1.0) == math.inf
    assert lower_quantile(x, 0.05) == 1.0  # the cautious side: the smaller of the two neighbours
    assert math.isnan(lower_quantile(torch.zeros(0), 0.5))


def test_starts_are_well_classified_samples_per_class_drawn_with_the_seed(sharp):
    pop, _ = sharp
    index, skipped = pick_starts(pop, 2, seed=1)
    assert bool(pop.well[index].all())
    per = torch.bincount(pop.y[index], minlength=pop.num_classes)
    for c in range(pop.num_classes):
        assert int(per[c]) == min(2, int(((pop.y == c) & pop.well).sum()))
        assert (c in skipped) == (int(((pop.y == c) & pop.well).sum()) == 0)
    assert torch.equal(index, pick_starts(pop, 2, seed=1)[0])  # the seed decides
    assert any(not torch.equal(index, pick_starts(pop, 2, seed=s)[0]) for s in range(2, 6))


def test_each_shift_is_the_corner_search_from_that_sample(G, sharp_classifier, sharp, margins):
    pop, ranking = sharp
    m = margins
    assert m.dims == tuple(ranking.order[:3].tolist()) and m.ranks == (1, 2, 3)
    assert m.shifts.shape == (m.index.numel(), 3) and torch.equal(m.labels, pop.y[m.index])
    # the same search, started from those samples directly
    cases = CornerCaseSearch(G, sharp_classifier, ranking, batch_size=16).search(
        starts=pop.s[m.index], labels=pop.y[m.index], dims=3, pairs=False)
    for r in cases.cases:
        t = float(m.shifts[r.start, m.dims.index(r.dims[0])])
        assert t == (r.shift if r.found else math.inf)
    finite = m.shifts[torch.isfinite(m.shifts)]
    assert finite.numel() > 0 and bool((finite >= 0).all())  # a real search: some samples fail
    s = m.summary()
    assert s["starts"] == m.index.numel() and [r["dim"] for r in s["dims"]] == list(m.dims)
    for j, r in enumerate(s["dims"]):
        col = m.shifts[:, j]
        assert r["not_found"] == int(torch.isinf(col).sum())
        assert r["q05"] <= r["q25"] <= r["median"] == m.quantile(0.5, m.dims[j])
        medians = {c: lower_quantile(col[m.labels == c], 0.5) for c in m.classes}
        if math.isfinite(min(medians.values())):
            assert r["soonest_class_median"] == min(medians.values()) == medians[r["soonest_class"]]
        else:  # no class fails along it: none is named
            assert r["soonest_class"] is None and r["soonest_class_median"] is None
    assert s["at_start"] == int((m.p_start <= 0.5).sum())
    assert torch.equal(m.p_start, cases.p_start.double())


def test_files_and_figure(margins, tmp_path):
    from failatlas.report.gallery import plot_margins

    m = margins
    lines = m.to_csv(tmp_path / "margins.csv").read_text().splitlines()
    assert lines[0] == "index,class,dim,rank,layer,shift,found,at_start,verified"
    assert len(lines) == 1 + m.shifts.numel()
    for i, line in enumerate(lines[1:]):
        cells = line.split(",")
        start, j = divmod(i, len(m.dims))
        assert (int(cells[0]), int(cells[2])) == (int(m.index[start]), m.dims[j])
        not_found = math.isinf(float(m.shifts[start, j]))
        assert (cells[5] == "") == (cells[6] == "false") == (cells[8] == "") == not_found  # nothing to verify
        assert cells[7] == str(bool(m.p_start[start] <= 0.5)).lower()
    png = plot_margins(m, tmp_path / "margins.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    data = json.loads((tmp_path / "margins.json").read_text())  # strict JSON: inf is null
    assert data["figure"] == "margins" and data["dims"] == list(m.dims) and data["class_average_shifts"] is None
    assert [[None if math.isinf(v) else v for v in row] for row in m.shifts.tolist()] == data["shifts"]
    assert "q05" in m.format() and str(m.dims[0]) in m.format()


def test_bad_input_is_one_clear_error(G, sharp_classifier, sharp):
    pop, ranking = sharp
    cm = CornerMargins(G, sharp_classifier, ranking, batch_size=16)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(FailatlasError, match="per_class must be a positive number"):
            cm.compute(pop, per_class=bad)
    with pytest.raises(FailatlasError, match="takes a Population"):
        cm.compute(pop.s)
    wrong = (pop.y + 1) % pop.num_classes  # every prediction wrong: no start anywhere
    nobody = type(pop)(**{**{f: getattr(pop, f) for f in ("z", "y", "w", "s", "logits", "p_y")},
                          "pred": wrong, "well": torch.zeros_like(pop.well)})
    with pytest.raises(FailatlasError, match="no class has a well-classified sample"):
        cm.compute(nobody)
    with pytest.raises(FailatlasError, match="was not searched"):
        cm.compute(pop, per_class=1, dims=2).quantile(0.5, dim=int(ranking.order[5]))


def test_read_back_exactly_from_the_result_or_the_figure_data(margins, tmp_path):
    from failatlas import _io
    from failatlas.errors import ResultFileError, ResultFileNotFoundError
    from failatlas.report.gallery import plot_margins

    m = margins
    _io.write_json(tmp_path / "m.json", m.to_json())
    back = MarginResult.read_json(tmp_path / "m.json")
    for f in ("dims", "ranks", "layers", "per_class", "seed", "step", "max_shift", "tol", "evaluations",
              "skipped_classes"):
        assert getattr(back, f) == getattr(m, f), f
    for f in ("index", "labels", "shifts", "verified"):
        assert torch.equal(getattr(back, f), getattr(m, f)), f
    assert back.to_json() == m.to_json() and back.summary() == m.summary()
    plot_margins(m, tmp_path / "fig.png")  # the figure's data holds the result too
    assert MarginResult.read_json(tmp_path / "fig.json").to_json() == m.to_json()
    with pytest.raises(ResultFileNotFoundError, match="margins file not found"):
        MarginResult.read_json(tmp_path / "none.json")
    (tmp_path / "other.json").write_text('{"format": "failatlas-ranking"}')
    with pytest.raises(ResultFileError, match="not corner-shift margins"):
        MarginResult.read_json(tmp_path / "other.json")
    obj = m.to_json()
    short_rows = [row[:-1] for row in obj["shifts"]]  # (a transposed square table cannot be told apart)
    for bad in ({"shifts": obj["shifts"][:-1]}, {"shifts": short_rows}, {"ranks": obj["ranks"][:-1]},
                {"index": [-1] * len(obj["index"])}, {"seed": 1e999}, {"p_start": obj["p_start"][:1]}):
        (tmp_path / "broken.json").write_text(json.dumps({**obj, **bad}))  # 1e999: a float too large for an int
        with pytest.raises(ResultFileError, match="not a valid failatlas margins result"):
            MarginResult.read_json(tmp_path / "broken.json")


def test_a_sample_that_never_fails_reads_back_as_beyond_the_limit(margins, tmp_path):
    from dataclasses import replace

    from failatlas import _io

    shifts = margins.shifts.clone()
    shifts[0, 0] = math.inf
    m = replace(margins, shifts=shifts)
    assert m.to_json()["shifts"][0][0] is None and m.summary()["dims"][0]["not_found"] >= 1
    never = replace(margins, shifts=torch.full_like(margins.shifts, math.inf))  # no class fails: none is named
    assert all(r["soonest_class"] is None and r["median"] == math.inf for r in never.summary()["dims"])
    ambiguous = replace(margins, p_start=torch.full_like(margins.p_start, 0.4))  # every start fails already
    n = margins.index.numel()
    assert ambiguous.summary()["at_start"] == n
    assert f"{n} of them at p_y ≤ 0.5 already (margin 0)" in ambiguous.format()
    _io.write_json(tmp_path / "m.json", m.to_json())
    assert math.isinf(float(MarginResult.read_json(tmp_path / "m.json").shifts[0, 0]))


def test_the_starts_follow_the_classes_a_population_was_drawn_from(G, sharp_classifier, sharp):
    _, ranking = sharp
    pop = sample_population(G, sharp_classifier, 48, seed=0, batch_size=16, classes=[2, 5])
    m = CornerMargins(G, sharp_classifier, ranking, batch_size=16).compute(pop, per_class=3, dims=2)
    assert set(m.labels.tolist()) <= {2, 5} and m.index.numel() > 0
