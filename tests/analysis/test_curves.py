import dataclasses
import json

import numpy as np
import pytest
import torch

from failatlas import FailatlasError
from failatlas.analysis import GradientRanking, Population
from failatlas.analysis.curves import AccuracyCurve, accuracy_curve, classifier_curves, with_classifier
from failatlas.analysis.ranking import Ranking
from failatlas.models.adapter import classifier_view
from failatlas.models.classifier import ClassifierConfig, build_classifier
from failatlas.models.stylegan2 import StyleDim


def make_population(s, well, y=None, num_classes=10) -> Population:
    """A Population with the given s and well flags (pred = y when well, y+1 otherwise)."""
    s = torch.as_tensor(s, dtype=torch.float32)
    well = torch.as_tensor(well, dtype=torch.bool)
    n = s.shape[0]
    y = torch.zeros(n, dtype=torch.int64) if y is None else torch.as_tensor(y, dtype=torch.int64)
    pred = torch.where(well, y, (y + 1) % num_classes)
    logits = 5 * torch.nn.functional.one_hot(pred, num_classes).float()
    p_y = torch.softmax(logits.double(), 1).gather(1, y[:, None]).squeeze(1).float()
    gen = torch.Generator().manual_seed(0)
    return Population(z=torch.randn(n, 4, generator=gen), y=y, w=torch.randn(n, 6, generator=gen), s=s,
                      logits=logits, p_y=p_y, pred=pred, well=well)


def make_ranking(order, per_class=None) -> Ranking:
    """A Ranking whose order is ``order`` (scores S, S−1, …, 1 along it)."""
    order = torch.as_tensor(order, dtype=torch.int64)
    S = order.numel()
    score = torch.empty(S, dtype=torch.float64)
    score[order] = torch.arange(S, 0, -1, dtype=torch.float64)
    layout = tuple(StyleDim("b4.conv1", 4, "conv", d, d) for d in range(S))
    return Ranking(order=order, score=score, sigma=torch.ones(S, dtype=torch.float64),
                   direction=torch.sign(score).long(), mean_grad=-score, layout=layout, target="probability", n=10,
                   per_class={c: make_ranking(o) for c, o in (per_class or {}).items()})


@pytest.fixture()
def hand_case():
    """Dimension 0 carries the distance; dimensions 1 and 2 are noise that k=1 must ignore.

    well s0 = −3, −1, 1, 3 → centre 0, d = 3, 1, 1, 3, min 1, scale 0.7 · 2 = 1.4, u = 10/7, 0, 0, 10/7;
    edges = 0 … 10/7 in 20 bins of 1/14. mis s0 = 0 (u = −1/1.4: below), 1.72 (u ≈ 0.514: bin 7),
    −1.75 (u ≈ 0.536: bin 7), 2.45 (u ≈ 1.036: bin 14, not plotted), 10 (u = 6.43: beyond).
    """
    s0 = [-3.0, -1.0, 1.0, 3.0, 0.0, 1.72, -1.75, 2.45, 10.0]
    well = [True] * 4 + [False] * 5
    gen = torch.Generator().manual_seed(3)
    s = torch.cat([torch.tensor(s0)[:, None], 50 * torch.randn(9, 2, generator=gen)], dim=1)
    return make_population(s, well), make_ranking([0, 1, 2])


def test_normalization_and_bins_by_hand(hand_case):
    pop, ranking = hand_case
    r = AccuracyCurve(ranking, k=1, per_class=False).compute(pop)
    assert r.k == 1 and r.dims == (0,) and r.bins == 20
    assert r.min_well == pytest.approx(1.0) and r.scale == pytest.approx(1.4)
    expected_u = [2 / 1.4, 0, 0, 2 / 1.4, -1 / 1.4, 0.72 / 1.4, 0.75 / 1.4, 1.45 / 1.4, 9 / 1.4]
    assert np.allclose(r.distance.numpy(), expected_u, atol=1e-6)
    assert np.allclose(r.bin_edges.numpy(), np.arange(21) / 14, atol=1e-6)
    assert np.allclose(r.bin_centres.numpy(), (np.arange(20) + 0.5) / 14, atol=1e-6)
    n_well = [0] * 20
    n_well[0], n_well[19] = 2, 2
    n_mis = [0] * 20
    n_mis[7], n_mis[14] = 2, 1
    assert r.n_well.tolist() == n_well and r.n_mis.tolist() == n_mis
    assert (r.n_below, r.n_beyond) == (1, 1)
    acc = r.accuracy.numpy()
    assert acc[0] == 1.0 and acc[19] == 1.0 and acc[7] == 0.0 and acc[14] == 0.0
    empty = [j for j in range(20) if j not in (0, 7, 14, 19)]
    assert np.isnan(acc[empty]).all()
    assert r.plotted.tolist() == [j <= 13 for j in range(20)]


def test_empty_bins_excluded_from_mean_and_slope(hand_case):
    pop, ranking = hand_case
    r = accuracy_curve(pop, ranking, k=1, per_class=False)
    # plotted non-empty bins: 0 (accuracy 1, centre 1/28) and 7 (accuracy 0, centre 15/28); bin 14 is not plotted
    assert r.mean_accuracy == pytest.approx(0.5)
    assert r.slope == pytest.approx(-2.0)
    assert r.to_json()["accuracy"][1] is None


def test_k_restricts_distance_to_top_dims(hand_case):
    pop, ranking = hand_case
    base2 = AccuracyCurve(ranking, k=2, per_class=False).compute(pop)
    base3 = AccuracyCurve(ranking, k="all", per_class=False).compute(pop)
    assert base3.k == 3
    s = pop.s.clone()
    s[:, 2] = torch.linspace(-100, 100, pop.n)  # dimension 2 is last in the ranking
    changed = make_population(s, pop.well)
    new2 = AccuracyCurve(ranking, k=2, per_class=False).compute(changed)
    new3 = AccuracyCurve(ranking, k=None, per_class=False).compute(changed)
    assert torch.equal(new2.distance, base2.distance) and torch.equal(new2.n_mis, base2.n_mis)
    assert not torch.allclose(new3.distance, base3.distance)
    # the same population with dimension 2 ranked first: now it matters with k=1
    other = AccuracyCurve(make_ranking([2, 0, 1]), k=1, per_class=False).compute(changed)
    assert other.dims == (2,) and not torch.allclose(other.distance, base2.distance)


def test_k_validation(hand_case):
    pop, ranking = hand_case
    for bad in (0, 4, -1, 2.5, True, "most"):
        with pytest.raises(FailatlasError, match="k must be"):
            AccuracyCurve(ranking, k=bad)
    with pytest.raises(FailatlasError, match="at least 2"):
        AccuracyCurve(ranking, k=1).compute(make_population(pop.s[:3], [True, False, False]))


def test_per_class_curves_use_class_centres():
    gen = torch.Generator().manual_seed(1)
    n = 60
    y = torch.arange(n) % 2
    s = torch.randn(n, 4, generator=gen)
    s[:, 0] += 100 * y  # the classes sit far apart along dimension 0
    well = torch.rand(n, generator=gen) < 0.6
    well[:4] = True
    pop = make_population(s, well, y)
    ranking = make_ranking([0, 1, 2, 3], per_class={0: [3, 2, 1, 0], 1: [0, 1, 2, 3]})
    r = AccuracyCurve(ranking, k=2).compute(pop)
    assert sorted(r.per_class) == [0, 1] and r.skipped_classes == ()
    for c in (0, 1):
        sel = y == c
        x = s[sel][:, [0, 1]].double()
        centre = x[well[sel]].mean(0)
        assert torch.allclose(r.per_class[c].centre, centre)
        d = (x - centre).norm(dim=1)
        dw = d[well[sel]]
        u = (d - dw.min()) / (0.7 * (dw - dw.min()).max())
        assert torch.allclose(r.per_class[c].distance, u)
        assert r.per_class[c].label == c and int(r.per_class[c].n_well.sum()) == int(well[sel].sum())
    # the overall curve measures each sample from its own class's centre (the default) ...
    assert r.centre_mode == "class" and r.centre.shape == (2, 2)
    for c in (0, 1):
        assert torch.allclose(r.centre[c], r.per_class[c].centre)
    x = s[:, [0, 1]].double()
    d = (x - r.centre[y]).norm(dim=1)
    dw = d[well]
    assert torch.allclose(r.distance, (d - dw.min()) / (0.7 * (dw - dw.min()).max()))
    # ... or, with centre="global", from one centre between the classes
    g = AccuracyCurve(ranking, k=2, centre="global").compute(pop)
    assert g.centre_mode == "global" and float(g.centre[0]) == pytest.approx(float(s[well, 0].double().mean()))
    assert not torch.allclose(g.distance, r.distance)
    with pytest.raises(FailatlasError, match="centre must be one of class, global"):
        AccuracyCurve(ranking, centre="median")
    # class_dims="class": each class on its own ranking's top-k
    rc = AccuracyCurve(ranking, k=2, class_dims="class").compute(pop)
    assert rc.per_class[0].dims == (3, 2) and rc.per_class[1].dims == (0, 1) and rc.dims == (0, 1)
    with pytest.raises(FailatlasError, match="--per-class"):
        AccuracyCurve(make_ranking([0, 1, 2, 3]), class_dims="class")


def test_class_without_enough_well_samples_is_skipped():
    gen = torch.Generator().manual_seed(2)
    y = torch.tensor([0] * 10 + [1] * 5)
    well = torch.tensor([True] * 6 + [False] * 4 + [True] + [False] * 4)
    pop = make_population(torch.randn(15, 3, generator=gen), well, y)
    r = AccuracyCurve(make_ranking([0, 1, 2]), k=2).compute(pop)
    assert sorted(r.per_class) == [0] and r.skipped_classes == (1,)


@pytest.mark.parametrize("increasing_errors", [True, False])
def test_slope_sign_on_monotone_case(increasing_errors):
    gen = torch.Generator().manual_seed(4)
    n = 3000
    s = torch.randn(n, 3, generator=gen)
    r_abs = s[:, 0].abs() / 3
    p_mis = r_abs.clamp(0, 1) if increasing_errors else (1 - r_abs).clamp(0, 1) * 0.8
    well = torch.rand(n, generator=gen) >= p_mis
    r = AccuracyCurve(make_ranking([0, 1, 2]), k=1, per_class=False).compute(make_population(s, well))
    assert r.slope < -0.2 if increasing_errors else r.slope > 0.2
    plotted = r.accuracy[r.plotted & ~torch.isnan(r.accuracy)].numpy()
    assert len(plotted) >= 10


def test_json_and_csv(tmp_path, hand_case):
    pop, ranking = hand_case
    y = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1, 0])
    pop = make_population(pop.s, pop.well, y)  # each class: 2 well samples at equal distances → skipped
    r = AccuracyCurve(ranking, k=1, centre="global").compute(pop)
    obj = json.loads(json.dumps(r.to_json(), allow_nan=False))
    assert obj["format"] == "failatlas-accuracy-curve" and obj["k"] == 1 and obj["n_mis_total"] == 5
    assert obj["skipped_classes"] == [0, 1] and obj["per_class"] == {}
    assert obj["slope"] == pytest.approx(r.slope)
    lines = r.to_csv(tmp_path / "curve.csv").read_text().splitlines()
    assert lines[0] == "class,bin,left,right,centre,n_well,n_mis,accuracy,plotted,ci_low,ci_high"
    assert len(lines) == 1 + 20 * (1 + len(r.per_class))
    assert lines[1].startswith(",0,") and ",1.0,true," in lines[1]
    assert lines[2].split(",")[7] == "" and lines[2].endswith(",,")  # an empty bin: no accuracy, no interval
    assert obj["max_rise"] == pytest.approx(r.max_rise) and obj["ci_low"][1] is None


def test_wilson_intervals_and_max_rise(hand_case):
    pop, ranking = hand_case
    r = accuracy_curve(pop, ranking, k=1, per_class=False)
    assert r.max_rise == pytest.approx(-1.0)  # plotted non-empty bins: accuracy 1 then 0
    # the textbook case: 8 of 10 → 95% Wilson interval [0.4902, 0.9433]; 0 of 5 → [0, 0.4345]
    n_well, n_mis = torch.zeros(20, dtype=torch.int64), torch.zeros(20, dtype=torch.int64)
    n_well[0], n_mis[0], n_mis[3] = 8, 2, 5
    n_well[5], n_mis[5] = 3, 1
    acc = torch.full((20,), float("nan"), dtype=torch.float64)
    acc[0], acc[3], acc[5] = 0.8, 0.0, 0.75
    c = dataclasses.replace(r, n_well=n_well, n_mis=n_mis, accuracy=acc)
    low, high = c.interval()
    assert (float(low[0]), float(high[0])) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert (float(low[3]), float(high[3])) == pytest.approx((0.0, 0.4345), abs=1e-4)
    assert torch.isnan(low[1]) and torch.isnan(high[1])
    assert c.max_rise == pytest.approx(0.75)  # 0.8 → 0.0 → 0.75, bins 1, 2, 4 empty
    wider = c.interval(z=2.576)  # 99%: wider on both sides
    assert float(wider[0][0]) < float(low[0]) and float(wider[1][0]) > float(high[0])


def test_with_classifier_relabels_consistently(G, C, population):
    same = with_classifier(population, G, C, batch_size=7)
    assert torch.allclose(same.logits, population.logits, atol=1e-5)
    assert torch.equal(same.pred, population.pred)
    torch.manual_seed(5)
    C2 = build_classifier(ClassifierConfig()).eval()
    other = with_classifier(population, G, C2, batch_size=16)
    with torch.no_grad():
        ref = C2(classifier_view(G.synthesis_from_styles(population.s)))
    assert torch.allclose(other.logits, ref, atol=1e-5)
    assert torch.equal(other.pred, ref.argmax(1))
    assert torch.equal(other.well, other.pred == population.y)
    assert torch.equal(other.s, population.s) and torch.equal(other.y, population.y)
    assert not torch.equal(other.pred, population.pred)
    assert torch.allclose(other.p_y, torch.softmax(ref.double(), 1).gather(1, population.y[:, None]).squeeze(1).float(),
                          atol=1e-6)


def test_classifier_curves_on_a_real_population(G, C, population):
    ranking = GradientRanking(G, C, batch_size=16).rank(population)
    n_well = population.n_well
    if n_well < 2:
        pytest.skip("the random classifier got fewer than 2 samples right")
    curves = classifier_curves(G, population, {"random": (C, ranking)}, k=10, per_class=False, batch_size=16)
    r = curves["random"]
    assert r.dims == tuple(ranking.order[:10].tolist())
    assert int(r.n_well.sum()) == n_well
    assert int(r.n_mis.sum()) + r.n_below + r.n_beyond + r.n_without_centre == population.n_mis
    assert r.to_json()["n_mis_total"] == population.n_mis


def test_a_class_without_well_classified_samples_has_no_centre():
    gen = torch.Generator().manual_seed(3)
    n = 90
    y = torch.arange(n) % 3
    s = torch.randn(n, 3, generator=gen)
    well = (torch.rand(n, generator=gen) < 0.7) & (y != 2)  # class 2: every sample wrong
    r = AccuracyCurve(make_ranking([0, 1, 2]), k=2).compute(make_population(s, well, y))
    assert r.classes_without_centre == (2,) and r.n_without_centre == 30
    assert torch.isnan(r.centre[2]).all() and len(r.distance) == 60
    obj = r.to_json()
    assert obj["classes_without_centre"] == [2] and obj["n_mis_total"] == int((~well).sum())
    # what the plot leaves out: the bins from 1 on, and the 30 samples that have no distance
    rest = r.not_plotted()
    off = ~r.plotted
    assert rest["n_without_centre"] == 30 and rest["n_well"] == int(r.n_well[off].sum())
    assert rest["n_mis"] == int(r.n_mis[off].sum()) + r.n_below + r.n_beyond + 30
    assert rest["accuracy"] == pytest.approx(rest["n_well"] / (rest["n_well"] + rest["n_mis"]))
    assert obj["not_plotted"] == rest
    # every sample is either in a plotted bin or counted as not plotted
    assert int(r.n_well[r.plotted].sum() + r.n_mis[r.plotted].sum()) + rest["n_well"] + rest["n_mis"] == n


def test_curve_figures_write_png_and_json(tmp_path):
    from failatlas.report.curves_figures import plot_accuracy_curves, plot_accuracy_curves_per_class

    gen = torch.Generator().manual_seed(6)
    n = 400
    y = torch.arange(n) % 3
    s = torch.randn(n, 5, generator=gen)
    curves = {}
    for name, rate in (("clean", 0.6), ("corrupted", 0.2)):
        well = torch.rand(n, generator=gen) >= (s[:, 0].abs() * rate).clamp(0, 1)
        curves[name] = AccuracyCurve(make_ranking([0, 1, 2, 3, 4]), k=2).compute(make_population(s, well, y))
    png = plot_accuracy_curves(curves, tmp_path / "accuracy.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "accuracy.json").read_text())
    assert set(data["curves"]) == {"clean", "corrupted"}
    assert len(data["curves"]["clean"]["centres"]) == int(curves["clean"].plotted.sum())
    for name, c in curves.items():  # what the figure leaves out is counted beside it
        rest = data["curves"][name]["not_plotted"]
        assert rest == c.not_plotted() and data["curves"][name]["n_plotted"] + rest["n_well"] + rest["n_mis"] == n
    png = plot_accuracy_curves_per_class(curves, tmp_path / "per_class.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    data = json.loads((tmp_path / "per_class.json").read_text())
    assert set(data["classes"]) == {"0", "1", "2"}
    for c in ("0", "1", "2"):
        for name, cell in data["classes"][c].items():
            r = curves[name].per_class[int(c)]
            assert cell["n"] == r.n and cell["not_plotted"] == r.not_plotted()
            assert cell["n_plotted"] == sum(cell["n_well"]) + sum(cell["n_mis"])
    with pytest.raises(FailatlasError):
        plot_accuracy_curves({}, tmp_path / "none.png")


def test_a_class_curve_that_leaves_out_most_of_its_samples_is_said_so(tmp_path):
    """Three well-classified samples set class 1's centre and scale; its 40 misses lie beyond them: its panel
    (drawn from the three) would show accuracy 1.0 for a class 93% mis-classified. The panel and the notes
    count what is left out."""
    from failatlas.analysis.pipeline import sparse_class_curves
    from failatlas.report.curves_figures import plot_accuracy_curves_per_class

    gen = torch.Generator().manual_seed(8)
    s0 = torch.cat([torch.randn(60, generator=gen), torch.tensor([-0.1, 0.0, 0.1]), 5 + torch.rand(40, generator=gen)])
    y = torch.tensor([0] * 60 + [1] * 43)
    well = torch.tensor([True] * 50 + [False] * 10 + [True] * 3 + [False] * 40)
    s = torch.stack([s0, torch.randn(103, generator=gen)], 1)
    curve = AccuracyCurve(make_ranking([0, 1]), k=1).compute(make_population(s, well, y))
    one = curve.per_class[1]
    assert one.mean_accuracy == 1.0 and one.not_plotted()["n_mis"] == 40  # the trap
    plot_accuracy_curves_per_class({"m": curve}, tmp_path / "pc.png")
    cell = json.loads((tmp_path / "pc.json").read_text())["classes"]["1"]["m"]
    rest = cell["not_plotted"]  # the 40 misses, and the two outer well-classified samples (u = 1.43)
    assert cell["n"] == 43 and rest["n_mis"] == 40 and rest["n_well"] == 2 and cell["n_plotted"] == 1
    (note,) = sparse_class_curves({"m": curve})
    assert note.startswith("m's per-class accuracy curves")
    assert "class 1: 42 of 43, 40 of them mis-classified; its centre and scale rest on 3 well-classified samples" in note
    assert "class 0" not in note
    # many well-classified samples, most misses far out (classifier-clean on the demo): counted, not called "few"
    far = torch.cat([torch.randn(20, generator=gen), 8 + torch.rand(30, generator=gen)])
    wide = AccuracyCurve(make_ranking([0, 1]), k=1).compute(make_population(
        torch.stack([far, torch.randn(50, generator=gen)], 1), torch.tensor([True] * 20 + [False] * 30),
        torch.zeros(50, dtype=torch.long)))
    (note,) = sparse_class_curves({"w": wide})
    off = wide.per_class[0].not_plotted()
    assert f"class 0: {off['n_well'] + off['n_mis']} of 50, 30 of them mis-classified)" in note and "rest on" not in note
    assert sparse_class_curves({"m": AccuracyCurve(make_ranking([0, 1]), k=1).compute(
        make_population(s[:60], well[:60], y[:60]))}) == []


def test_a_class_without_a_curve_keeps_its_panel_and_says_so(tmp_path):
    """Class 2 has one well-classified sample for "b" (no curve) and enough for "a": its panel draws "a" and
    names "b"; a class no classifier has a curve for still gets its (empty) panel."""
    from failatlas.report.curves_figures import plot_accuracy_curves_per_class

    gen = torch.Generator().manual_seed(9)
    n = 90
    y = torch.arange(n) % 3
    s = torch.randn(n, 3, generator=gen)
    well_a = torch.ones(n, dtype=torch.bool)
    well_a[y == 0] = False  # "a": no curve for class 0 either
    well_a[torch.nonzero(y == 0)[0]] = True
    well_b = well_a.clone()
    well_b[y == 2] = False
    well_b[torch.nonzero(y == 2)[0]] = True
    curves = {name: AccuracyCurve(make_ranking([0, 1, 2]), k=2).compute(make_population(s, w, y))
              for name, w in (("a", well_a), ("b", well_b))}
    assert curves["a"].skipped_classes == (0,) and curves["b"].skipped_classes == (0, 2)
    plot_accuracy_curves_per_class(curves, tmp_path / "pc.png")
    data = json.loads((tmp_path / "pc.json").read_text())
    assert data["no_curve"] == {"0": ["a", "b"], "2": ["b"]}
    assert set(data["classes"]) == {"0", "1", "2"} and set(data["classes"]["2"]) == {"a"} and data["classes"]["0"] == {}
    with pytest.raises(FailatlasError, match="per_class=True"):  # no per-class curve at all: nothing to draw
        plot_accuracy_curves_per_class({"b": AccuracyCurve(make_ranking([0, 1, 2]), k=2, per_class=False).compute(
            make_population(s, well_a, y))}, tmp_path / "x.png")
def test_curve_json_reads_back_exactly(G, C, population, round_trip, assert_same_result, tmp_path):
    from failatlas import _io
    from failatlas.analysis import CurveResult, read_curves
    from failatlas.analysis.curves import CURVES_FORMAT
    from failatlas.report.curves_figures import plot_accuracy_curves, plot_accuracy_curves_per_class

    ranking = GradientRanking(G, C, batch_size=16).rank(population)
    real = AccuracyCurve(ranking, k=10).compute(population)  # the random CNN: classes without a centre (NaN)
    assert real.classes_without_centre and bool(real.centre.isnan().any()) and bool(real.accuracy.isnan().any())
    back, _ = round_trip(real, CurveResult.read_json, "curve.json")
    assert_same_result(real, back)
    # per-class curves (nested results), a skipped class, and one centre for all classes
    gen = torch.Generator().manual_seed(6)
    y = torch.arange(300) % 3
    s = torch.randn(300, 5, generator=gen)
    well = (torch.rand(300, generator=gen) >= (s[:, 0].abs() * 0.4).clamp(0, 1)) & ((y != 2) | (torch.arange(300) < 3))
    curves = {"a": AccuracyCurve(make_ranking([0, 1, 2, 3, 4]), k=2).compute(make_population(s, well, y)),
              "b": AccuracyCurve(make_ranking([4, 3, 2, 1, 0]), k=3, centre="global").compute(
                  make_population(s, ~well, y))}
    assert sorted(curves["a"].per_class) == [0, 1] and curves["a"].skipped_classes == (2,)
    for name, curve in curves.items():
        back, _ = round_trip(curve, CurveResult.read_json, f"curve-{name}.json")
        assert_same_result(curve, back)
    # curves.json of `failatlas analyze`: all of them, or one by name; figures drawn from what was read back
    run = tmp_path / "curves.json"
    _io.write_json(run, _io.jsonable({"format": CURVES_FORMAT, "k": 2, "primary": "a",
                                      "classifiers": {k: v.to_json() for k, v in curves.items()}}))
    again = read_curves(run)
    assert list(again) == ["a", "b"]
    for name in curves:
        assert_same_result(curves[name], again[name])
        assert_same_result(curves[name], CurveResult.read_json(run, classifier=name))
    for plot, stem in ((plot_accuracy_curves, "curves"), (plot_accuracy_curves_per_class, "per_class")):
        plot(curves, tmp_path / "computed" / f"{stem}.png")
        plot(again, tmp_path / "read" / f"{stem}.png")
        for suffix in (".json", ".png"):
            assert ((tmp_path / "computed" / stem).with_suffix(suffix).read_bytes()
                    == (tmp_path / "read" / stem).with_suffix(suffix).read_bytes())
    with pytest.raises(FailatlasError, match=r"holds the curves of 'a', 'b'; pass classifier="):
        CurveResult.read_json(run)
    with pytest.raises(FailatlasError, match=r"holds the curves of 'a', 'b', not of 'c'"):
        CurveResult.read_json(run, classifier="c")


def test_curve_reader_refuses_other_files(G, C, population, tmp_path):
    from failatlas import _io
    from failatlas.analysis import CurveResult, read_curves
    from failatlas.report.curves_figures import plot_accuracy_curves

    ranking = GradientRanking(G, C, batch_size=16).rank(population)
    curve = AccuracyCurve(ranking, k=10, per_class=False).compute(population)
    path = tmp_path / "curve.json"
    with pytest.raises(FailatlasError, match=f"accuracy-curve file not found: {path}"):
        CurveResult.read_json(path)
    _io.write_json(tmp_path / "ranking.json", ranking.to_json())
    with pytest.raises(FailatlasError, match=r"ranking.json holds a ranking \(ranking.json\), not an accuracy "
                                             r"curve \(format 'failatlas-accuracy-curve'\); pass the curves.json"):
        CurveResult.read_json(tmp_path / "ranking.json")
    plot_accuracy_curves({"random": curve}, tmp_path / "accuracy_curves.png")  # the figure's data: bins only
    with pytest.raises(FailatlasError, match=r"holds the data plotted in the accuracy_curves figure "
                                             r"\(accuracy_curves.png\), not an accuracy curve"):
        CurveResult.read_json(tmp_path / "accuracy_curves.json")
    with pytest.raises(FailatlasError, match="holds one accuracy curve .*, not the accuracy curves of an analyze run"):
        _io.write_json(path, _io.jsonable(curve.to_json()))
        read_curves(path)
    text = path.read_text()
    path.write_text(text[:len(text) // 2])  # truncated
    with pytest.raises(FailatlasError, match=f"accuracy-curve file {path} is not valid JSON"):
        CurveResult.read_json(path)
    obj = _io.jsonable(curve.to_json())
    for change, message in (({"version": 3}, r"written by a newer failatlas \(format 'failatlas-accuracy-curve' "
                                              r"version 3; this one reads up to version 2\)"),
                            ({"version": "2"}, "invalid format version '2'"),
                            ({"n": 7}, r"not a valid failatlas accuracy curve \(ValueError: expected 7 distances"),
                            ({"bin_edges": obj["bin_edges"][:-1]}, "expected 21 bin edges and 20 values")):
        _io.write_json(path, {**obj, **change})
        with pytest.raises(FailatlasError, match=message):
            CurveResult.read_json(path)
    old = {k: v for k, v in obj.items() if k not in ("version", "centre_values", "distance")}  # before version 2
    _io.write_json(path, old)
    with pytest.raises(FailatlasError, match="written by an older failatlas that kept the curve's bins only"):
        CurveResult.read_json(path)
