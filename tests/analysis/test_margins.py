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
        assert r["soonest_class_median"] == min(medians.values())


def test_files_and_figure(margins, tmp_path):
    from failatlas.report.gallery import plot_margins

    m = margins
    lines = m.to_csv(tmp_path / "margins.csv").read_text().splitlines()
    assert lines[0] == "index,class,dim,rank,layer,shift,found,verified" and len(lines) == 1 + m.shifts.numel()
    first = lines[1].split(",")
    assert (int(first[0]), int(first[2])) == (int(m.index[0]), m.dims[0])
    assert (first[5] == "") == (first[6] == "false") == math.isinf(float(m.shifts[0, 0]))
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
    broken = {**m.to_json(), "shifts": m.to_json()["shifts"][:-1]}
    _io.write_json(tmp_path / "broken.json", broken)
    with pytest.raises(ResultFileError, match="not a valid failatlas margins result"):
        MarginResult.read_json(tmp_path / "broken.json")


def test_a_sample_that_never_fails_reads_back_as_beyond_the_limit(margins, tmp_path):
    from dataclasses import replace

    from failatlas import _io

    shifts = margins.shifts.clone()
    shifts[0, 0] = math.inf
    m = replace(margins, shifts=shifts)
    assert m.to_json()["shifts"][0][0] is None and m.summary()["dims"][0]["not_found"] >= 1
    _io.write_json(tmp_path / "m.json", m.to_json())
    assert math.isinf(float(MarginResult.read_json(tmp_path / "m.json").shifts[0, 0]))


def test_the_starts_follow_the_classes_a_population_was_drawn_from(G, sharp_classifier, sharp):
    _, ranking = sharp
    pop = sample_population(G, sharp_classifier, 48, seed=0, batch_size=16, classes=[2, 5])
    m = CornerMargins(G, sharp_classifier, ranking, batch_size=16).compute(pop, per_class=3, dims=2)
    assert set(m.labels.tolist()) <= {2, 5} and m.index.numel() > 0
