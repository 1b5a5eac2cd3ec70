import json

import numpy as np
import pytest
import torch

from failatlas import FailatlasError
from failatlas.analysis import GradientRanking, Separation, auroc, histograms, ks_statistic, separation


@pytest.fixture(scope="module")
def tied_data():
    """Columns with many ties (small integers), continuous ones, and a constant one; an unbalanced group."""
    gen = torch.Generator().manual_seed(0)
    n = 97
    ints = torch.randint(0, 5, (n, 4), generator=gen).float()
    cont = torch.randn(n, 3, generator=gen)
    group = torch.rand(n, generator=gen) < 0.3
    shifted = torch.randn(n, generator=gen) + 1.5 * group  # a separating column
    const = torch.full((n, 1), 2.5)
    return torch.cat([ints, cont, shifted[:, None], const], dim=1), group


def test_ks_matches_scipy(tied_data):
    stats = pytest.importorskip("scipy.stats")
    x, group = tied_data
    ks = ks_statistic(x, group)
    assert ks.dtype == torch.float64 and ks.shape == (x.shape[1],)
    for k in range(x.shape[1]):
        ref = stats.ks_2samp(x[group, k].numpy(), x[~group, k].numpy()).statistic
        assert float(ks[k]) == pytest.approx(ref, abs=1e-12), k
    assert float(ks[-1]) == 0.0 and float(ks[7]) > 0.4


def test_auroc_matches_sklearn(tied_data):
    from sklearn.metrics import roc_auc_score

    x, group = tied_data
    a = auroc(x, group)
    for k in range(x.shape[1]):
        assert float(a[k]) == pytest.approx(roc_auc_score(group.numpy(), x[:, k].numpy()), abs=1e-12), k
    assert float(a[-1]) == 0.5
    assert torch.allclose(auroc(x, ~group), 1 - a)


def test_histograms_match_numpy(tied_data):
    x, group = tied_data
    edges, hg, ho = histograms(x, group, bins=20)
    assert edges.shape == (x.shape[1], 21) and hg.shape == ho.shape == (x.shape[1], 20)
    for k in range(x.shape[1]):
        col = x[:, k].double().numpy()
        ref_edges = np.histogram_bin_edges(col, bins=20)
        assert np.allclose(edges[k].numpy(), ref_edges, rtol=0, atol=1e-12)
        assert edges[k, 0] == ref_edges[0] and edges[k, -1] == ref_edges[-1]
        assert hg[k].tolist() == np.histogram(col[group.numpy()], bins=edges[k].numpy())[0].tolist()
        assert ho[k].tolist() == np.histogram(col[~group.numpy()], bins=edges[k].numpy())[0].tolist()
    assert int(hg.sum(1).unique()) == int(group.sum())


def test_chunking_does_not_change_results(tied_data):
    x, group = tied_data
    a, b = separation(x, group, chunk=3), separation(x, group, chunk=1000)
    for k in ("ks", "auroc", "hist_well", "hist_mis", "edges"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k


def _assert_same_result(a, b):
    for k in ("ks", "auroc", "hist_well", "hist_mis", "edges", "mean_well", "mean_mis"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and torch.equal(x.nan_to_num(-7.0), y.nan_to_num(-7.0)), k
    assert (a.n_well, a.n_mis) == (b.n_well, b.n_mis)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_backend_gives_the_same_bits(native, tied_data, dtype):
    x, group = tied_data
    x = x.to(dtype)
    ref = separation(x, group, chunk=4, backend="reference")
    for backend, chunk in (("native", 4), ("native", 1000), ("auto", 3)):
        _assert_same_result(separation(x, group, chunk=chunk, backend=backend), ref)


def test_native_backend_falls_back_on_columns_that_are_not_finite(native, tied_data):
    # NaN or infinite values make NaN edges, which dim_stats refuses: those chunks take the torch code.
    x, group = tied_data
    x = x.clone()
    x[3, 1], x[5, 6] = float("nan"), float("inf")
    ref = separation(x, group, chunk=2, backend="reference")
    _assert_same_result(separation(x, group, chunk=2, backend="native"), ref)


def test_unknown_backend_is_an_error(population, tied_data):
    with pytest.raises(FailatlasError, match="backend must be 'auto', 'native'"):
        separation(*tied_data, backend="cuda")
    with pytest.raises(FailatlasError, match="backend must be 'auto', 'native'"):
        Separation(population, backend="fast")


def test_result_fields_summary_and_outputs(G, C, population, tmp_path):
    result = Separation(population, layout=G.style_layout()).compute()
    S = G.style_dim
    assert result.ks.shape == result.auroc.shape == (S,) and result.edges.shape == (S, 21)
    assert result.n_well == population.n_well and result.n_mis == population.n_mis
    assert torch.all(result.hist_well.sum(1) == result.n_well) and torch.all(result.hist_mis.sum(1) == result.n_mis)
    ranking = GradientRanking(G, C).rank(population)
    summary = result.summary(ranking, k=10, seed=3)
    assert set(summary) == {"top10_mean_ks", "random10_mean_ks", "all_mean_ks", "best10_mean_ks", "chance_mean_ks",
                            "top_dims", "random_dims", "best_dims", "n_well", "n_mis"}
    from failatlas.analysis.separation import chance_ks

    assert summary["chance_mean_ks"] == chance_ks(population.n_well, population.n_mis)
    assert summary["all_mean_ks"] == pytest.approx(float(result.ks.mean()))
    best = summary["best_dims"]  # the 10 largest KS values, largest first, and none larger left out
    assert len(set(best)) == 10 and all(result.ks[a] >= result.ks[b] for a, b in zip(best, best[1:]))
    assert float(result.ks[best[-1]]) >= float(result.ks[[d for d in range(S) if d not in best]].max())
    assert summary["best10_mean_ks"] >= max(summary["top10_mean_ks"], summary["random10_mean_ks"])
    assert summary["top_dims"] == ranking.order[:10].tolist()
    assert len(set(summary["random_dims"])) == 10 and not set(summary["random_dims"]) & set(summary["top_dims"])
    assert summary == result.summary(ranking, k=10, seed=3)
    assert summary["random_dims"] != result.summary(ranking, k=10, seed=4)["random_dims"]
    assert summary["top10_mean_ks"] == pytest.approx(float(result.ks[summary["top_dims"]].mean()))
    lines = result.to_csv(tmp_path / "separation.csv").read_text().split("\n")
    assert lines[0] == "dim,layer,resolution,kind,channel,ks,auroc,mean_well,mean_mis" and len(lines) == S + 2
    assert lines[1].startswith("0,b4.conv1,4,conv,0,")
    obj = json.loads(json.dumps(result.to_json()))
    assert len(obj["dims"]) == S and len(obj["dims"][5]["hist_mis"]) == 20


def test_one_group_missing_is_an_error(population):
    with pytest.raises(FailatlasError) as err:
        Separation(population.subset(population.well))
    assert str(err.value).startswith(f"all {population.n_well} samples are classified correctly; separation "
                                     "needs both groups — use a larger --n")
    with pytest.raises(FailatlasError, match=f"all {population.n_mis} samples are mis-classified") as err:
        Separation(population.subset(~population.well))
    assert "trained on the generator's classes" in str(err.value)
    import dataclasses  # drawn from chosen classes (--classes): the message names them, not the training data

    missed = population.subset(~population.well)
    chosen = tuple(sorted({int(c) for c in missed.y.tolist()}))
    with pytest.raises(FailatlasError) as err:
        Separation(dataclasses.replace(missed, classes=chosen))
    assert f"gets no sample of class{'es' if len(chosen) > 1 else ''} {', '.join(map(str, chosen))} right " \
           "(--classes)" in str(err.value) and "eval-gan" in str(err.value)


def test_plot_separation_writes_png_and_json(G, C, population, tmp_path):
    from failatlas.report.figures import plot_separation

    result = Separation(population, layout=G.style_layout()).compute()
    ranking = GradientRanking(G, C).rank(population)
    png = plot_separation(result, ranking, tmp_path / "fig" / "separation.png", k=3, seed=0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "fig" / "separation.json").read_text())
    panels = data["panels"]
    assert [p["group"] for p in panels] == ["top"] * 3 + ["random"] * 3
    assert [p["dim"] for p in panels[:3]] == ranking.order[:3].tolist()
    assert not {p["dim"] for p in panels[3:]} & {p["dim"] for p in panels[:3]}
    # the random panels are dimensions the summary's random-10 mean includes, and none of its top 10
    summary = result.summary(ranking, k=10, seed=0)
    assert [p["dim"] for p in panels[3:]] == summary["random_dims"][:3]
    assert not {p["dim"] for p in panels[3:]} & set(summary["top_dims"])
    p = panels[0]
    assert p["ks"] == float(result.ks[p["dim"]]) and p["hist_well"] == result.hist_well[p["dim"]].tolist()
    assert p["layer"] == G.style_layout()[p["dim"]].name and len(p["edges"]) == 21
    assert sorted(x.name for x in (tmp_path / "fig").iterdir()) == ["separation.json", "separation.png"]


def test_chance_ks_is_the_mean_ks_of_dimensions_that_do_not_separate():
    from failatlas.analysis.separation import chance_ks

    g = torch.Generator().manual_seed(0)
    for n1, n2 in ((88, 1912), (412, 9588)):
        x = torch.randn(n1 + n2, 300, generator=g, dtype=torch.float64)
        well = torch.arange(n1 + n2) >= n1
        assert abs(ks_statistic(x, well).mean().item() - chance_ks(n1, n2)) < 0.03 * chance_ks(n1, n2)
    assert chance_ks(0, 5) != chance_ks(0, 5)  # NaN: a group is empty


def test_a_weak_separation_is_named_with_its_yardsticks():
    from failatlas.analysis.separation import weak_separation

    weak = {"top10_mean_ks": 0.146, "random10_mean_ks": 0.135, "all_mean_ks": 0.112, "best10_mean_ks": 0.278,
            "chance_mean_ks": 0.043, "n_mis": 412, "n_well": 9588,
            "latent_direction": {"style_effective_dims": 18.4, "style_dims": 1280}}
    strong = {**weak, "top10_mean_ks": 0.466, "all_mean_ks": 0.182, "n_mis": 4776}
    (note,) = weak_separation({"corrupted": weak, "clean": strong, "none": None})
    assert note.startswith("corrupted's top 10 dimensions separate its 412 mis-classified samples only "
                           "1.30 × as well as")
    # both yardsticks, each named: the average dimension and the 10 random ones of the summary (and the report)
    assert ("mean KS 0.146 against 0.112, and 0.135 for 10 random ones: 1.08 ×; the best 10 of all reach 0.278, "
            "chance 0.043") in note
    assert "about 18 independent directions of 1,280 dimensions" in note
    assert "independent" not in weak_separation({"c": {**weak, "latent_direction": None}})[0]  # no direction fitted
    assert weak_separation({"c": {**weak, "all_mean_ks": 0.0}}) == []  # nothing separates: nothing to compare
    # a handful of failures (or of successes): the figures are named as resting on too few, whatever they say
    (few,) = weak_separation({"c": {**strong, "n_mis": 5, "chance_mean_ks": 0.39}})
    assert few == ("c has only 5 mis-classified samples: its separation figures (KS, AUROC, top against random "
                   "dimensions) rest on too few to say much (chance alone gives a mean KS of 0.390); draw a larger "
                   "population (--n)")
    assert weak_separation({"c": {**weak, "n_well": 1}})[0].startswith("c has only 1 well-classified sample:")
    assert weak_separation({"c": {**strong, "n_mis": 30}}) == []
def test_separation_json_reads_back_exactly(G, C, population, tied_data, round_trip, assert_same_result, tmp_path):
    from failatlas import _io
    from failatlas.analysis import SeparationResult
    from failatlas.report.figures import plot_separation

    result = Separation(population, layout=G.style_layout()).compute()
    back, path = round_trip(result, SeparationResult.read_json, "separation-result.json")
    assert_same_result(result, back)
    values, group = tied_data  # no layout, ties and a constant column (edges ±0.5 around it)
    bare = separation(values, group, bins=7)
    assert_same_result(bare, round_trip(bare, SeparationResult.read_json, "bare.json")[0])
    # the figure drawn from the result read back is the same, bit for bit
    ranking = GradientRanking(G, C).rank(population)
    plot_separation(result, ranking, tmp_path / "computed" / "separation.png")
    plot_separation(back, ranking, tmp_path / "read" / "separation.png")
    for name in ("separation.json", "separation.png"):
        assert (tmp_path / "computed" / name).read_bytes() == (tmp_path / "read" / name).read_bytes()
    # the figure's data (a run folder's separation.json), another result, a damaged file: one line each
    with pytest.raises(FailatlasError, match=r"separation.json holds the data plotted in the separation figure "
                                             r"\(separation.png\), not a separation result .*population.npz"):
        SeparationResult.read_json(tmp_path / "read" / "separation.json")
    _io.write_json(tmp_path / "ranking.json", ranking.to_json())
    with pytest.raises(FailatlasError, match=r"holds a ranking \(ranking.json\), not a separation result"):
        SeparationResult.read_json(tmp_path / "ranking.json")
    with pytest.raises(FailatlasError, match="separation file not found"):
        SeparationResult.read_json(tmp_path / "none.json")
    text = path.read_text()
    (tmp_path / "cut.json").write_text(text[:-100])
    with pytest.raises(FailatlasError, match="cut.json is not valid JSON"):
        SeparationResult.read_json(tmp_path / "cut.json")
    obj = json.loads(text)
    obj["dims"][3]["hist_mis"] = obj["dims"][3]["hist_mis"][:-1]
    _io.write_json(tmp_path / "short.json", obj)
    with pytest.raises(FailatlasError, match=r"not a valid failatlas separation result \(ValueError: expected 21 "
                                             "edges and 20 counts"):
        SeparationResult.read_json(tmp_path / "short.json")
    _io.write_json(tmp_path / "new.json", {**json.loads(text), "version": 2})
    with pytest.raises(FailatlasError, match="written by a newer failatlas"):
        SeparationResult.read_json(tmp_path / "new.json")
