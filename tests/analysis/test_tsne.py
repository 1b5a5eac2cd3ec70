import json

import numpy as np
import pytest
import torch

from failatlas import FailatlasError
from failatlas.analysis import Population
from failatlas.analysis.tsne import LatentTSNE, tsne_embeddings


def make_population(n, z_dim=16, w_dim=60, s_dim=120, seed=0) -> Population:
    """Random latents (well-classified samples shifted along every axis), 10 classes."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    well = torch.rand(n, generator=gen) < 0.7
    pred = torch.where(well, y, (y + 1) % 10)
    logits = 5 * torch.nn.functional.one_hot(pred, 10).float()
    shift = 2 * well.float()[:, None]
    return Population(z=torch.randn(n, z_dim, generator=gen), y=y, w=torch.randn(n, w_dim, generator=gen) + shift,
                      s=torch.randn(n, s_dim, generator=gen) + shift, logits=logits,
                      p_y=torch.softmax(logits.double(), 1).gather(1, y[:, None]).squeeze(1).float(), pred=pred,
                      well=well)


FAST = dict(max_iter=250, perplexity=5.0)


@pytest.fixture(scope="module")
def pop():
    return make_population(60)


@pytest.fixture(scope="module")
def result(pop):
    return tsne_embeddings(pop, max_points=40, seed=3, **FAST)


def test_shapes_subsample_and_pca(pop, result):
    assert result.n == 40
    for space in ("z", "w", "s"):
        e = result.embedding(space)
        assert e.shape == (40, 2) and e.dtype == torch.float64 and bool(torch.isfinite(e).all())
    idx = result.indices
    assert idx.unique().numel() == 40 and bool((idx[1:] > idx[:-1]).all()) and int(idx.max()) < pop.n
    assert torch.equal(result.well, pop.well[idx]) and torch.equal(result.y, pop.y[idx])
    # S (120 dims) and W (60) are wider than 50: PCA to 40 components (limited by the 40 points); Z (16) is not
    assert result.pca_components == {"z": None, "w": 40, "s": 40}
    assert result.explained_variance["z"] is None and 0.99 < result.explained_variance["s"] <= 1.0 + 1e-9
    assert result.perplexity == result.perplexity_requested == 5.0


def test_pca_to_50_when_enough_points():
    r = tsne_embeddings(make_population(70), max_points=70, seed=0, **FAST)
    assert r.pca_components == {"z": None, "w": 50, "s": 50}
    assert r.explained_variance["s"] < 1.0
    assert torch.equal(r.indices, torch.arange(70))  # no subsampling when the population is small enough


def test_deterministic_for_a_seed(pop, result):
    again = tsne_embeddings(pop, max_points=40, seed=3, **FAST)
    for space in ("z", "w", "s"):
        assert torch.equal(again.embedding(space), result.embedding(space))
    assert torch.equal(again.indices, result.indices)
    other = LatentTSNE(max_points=40, seed=4, **FAST).embed(pop)
    assert not torch.equal(other.indices, result.indices)


def test_too_few_points_and_perplexity_lowered():
    with pytest.raises(FailatlasError, match="at least 5"):
        tsne_embeddings(make_population(4), **FAST)
    with pytest.raises(FailatlasError, match="max_points"):
        LatentTSNE(max_points=3)
    with pytest.raises(FailatlasError, match="perplexity"):
        LatentTSNE(perplexity=0)
    r = tsne_embeddings(make_population(8), perplexity=30.0, max_iter=250)
    assert r.perplexity_requested == 30.0 and r.perplexity == pytest.approx(7 / 3)
    assert r.s.shape == (8, 2) and r.pca_components["s"] == 8


def test_tsne_json_csv_and_figure(tmp_path, result):
    from failatlas.report.curves_figures import plot_tsne

    obj = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert obj["n"] == 40 and len(obj["embeddings"]["s"]) == 40 and obj["pca_components"]["s"] == 40
    lines = result.to_csv(tmp_path / "tsne.csv").read_text().splitlines()
    assert lines[0] == "index,y,well,z_x,z_y,w_x,w_y,s_x,s_y" and len(lines) == 41
    first = lines[1].split(",")
    assert int(first[0]) == int(result.indices[0]) and float(first[7]) == float(result.s[0, 0])
    png = plot_tsne(result, tmp_path / "tsne.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "tsne.json").read_text())
    assert data["figure"] == "tsne" and np.allclose(data["embeddings"]["w"], result.w.numpy())


def test_tsne_json_reads_back_exactly(population, tmp_path, round_trip, assert_same_result):
    from failatlas import _io
    from failatlas.analysis import TSNEResult
    from failatlas.report.curves_figures import plot_tsne

    real = tsne_embeddings(population, max_points=40, seed=3, **FAST)  # the tiny generator's W and S: PCA for S
    back, path = round_trip(real, TSNEResult.read_json, "tsne-result.json")
    assert_same_result(real, back)
    # the figure's tsne.json of a run holds the result too; the figure drawn from it is the same
    plot_tsne(real, tmp_path / "computed" / "tsne.png")
    again = TSNEResult.read_json(tmp_path / "computed" / "tsne.json")
    assert_same_result(real, again)
    plot_tsne(again, tmp_path / "read" / "tsne.png")
    for name in ("tsne.json", "tsne.png"):
        assert (tmp_path / "computed" / name).read_bytes() == (tmp_path / "read" / name).read_bytes()
    obj = json.loads(path.read_text())
    for change, message in (({"format": "failatlas-ranking"}, r"holds a ranking \(ranking.json\), not a t-SNE result"),
                            ({"version": 2}, "written by a newer failatlas"),
                            ({"n": 41}, r"not a valid failatlas t-SNE result \(ValueError: expected 41 samples")):
        _io.write_json(tmp_path / "bad.json", {**obj, **change})
        with pytest.raises(FailatlasError, match=message):
            TSNEResult.read_json(tmp_path / "bad.json")
    (tmp_path / "cut.json").write_text(path.read_text()[:-10])
    with pytest.raises(FailatlasError, match="t-SNE file .*cut.json is not valid JSON"):
        TSNEResult.read_json(tmp_path / "cut.json")
