import json

import pytest
import torch

from failatlas import FailatlasError
from failatlas.analysis.overlap import ClassDirections, class_overlap, jaccard
from failatlas.analysis.ranking import Ranking
from failatlas.models.stylegan2 import StyleDim

S = 12


def make_ranking(top, per_class=None) -> Ranking:
    """A Ranking over S dims whose order starts with ``top`` (then the remaining dims ascending)."""
    order = list(top) + [d for d in range(S) if d not in top]
    order = torch.tensor(order, dtype=torch.int64)
    score = torch.empty(S, dtype=torch.float64)
    score[order] = torch.arange(S, 0, -1, dtype=torch.float64)
    layout = tuple(StyleDim("b8.conv0", 8, "conv", d, d) for d in range(S))
    return Ranking(order=order, score=score, sigma=torch.ones(S, dtype=torch.float64), direction=torch.ones(S).long(),
                   mean_grad=-score, layout=layout, target="probability", n=10,
                   per_class={c: make_ranking(t) for c, t in (per_class or {}).items()})


@pytest.fixture()
def ranking():
    # k = 3: class 0 {1,2,3}, class 1 {1,2,4}, class 2 {1,5,6}, class 3 {2,7,8}; global {1,2,9}
    return make_ranking([1, 2, 9], per_class={0: [1, 2, 3], 1: [2, 4, 1], 2: [5, 1, 6], 3: [7, 8, 2]})


def test_jaccard_matrix_by_hand(ranking):
    r = ClassDirections(k=3).compare(ranking)
    assert r.classes == (0, 1, 2, 3) and r.k == 3
    assert r.top[1] == (2, 4, 1) and r.global_top == (1, 2, 9)
    expected = torch.tensor([
        [1, 2 / 4, 1 / 5, 1 / 5],
        [2 / 4, 1, 1 / 5, 1 / 5],
        [1 / 5, 1 / 5, 1, 0],
        [1 / 5, 1 / 5, 0, 1],
    ], dtype=torch.float64)
    assert torch.allclose(r.jaccard, expected)
    assert torch.allclose(r.jaccard_global, torch.tensor([2 / 4, 2 / 4, 1 / 5, 1 / 5], dtype=torch.float64))
    assert r.mean_pairwise == pytest.approx(float(expected[~torch.eye(4, dtype=torch.bool)].mean()))
    assert jaccard([], []) == 1.0 and jaccard([1], [2]) == 0.0


def test_shared_dims(ranking):
    r = class_overlap(ranking, k=3)
    # threshold ⌈4/2⌉ = 2: dim 1 is in classes 0, 1, 2; dim 2 in 0, 1, 3; nothing else appears twice
    assert r.threshold == 2
    assert [(d.dim, d.count, d.classes) for d in r.shared] == [(1, 3, (0, 1, 2)), (2, 3, (0, 1, 3))]
    assert all(d.in_global_top for d in r.shared) and [d.global_rank for d in r.shared] == [1, 2]
    assert r.shared[0].layer == "b8.conv0" and r.shared[0].channel == 1
    # k = 1: tops 1, 2, 5, 7 → no dimension reaches two classes
    assert class_overlap(ranking, k=1).shared == ()


def test_no_per_class_ranking_is_an_error():
    with pytest.raises(FailatlasError, match="--per-class"):
        class_overlap(make_ranking([1, 2, 3]))
    with pytest.raises(FailatlasError, match="k must be"):
        ClassDirections(k=0)
    with pytest.raises(FailatlasError, match="exceeds"):
        ClassDirections(k=S + 1).compare(make_ranking([1], per_class={0: [2]}))


def test_overlap_json_csv_and_figure(tmp_path, ranking):
    from failatlas.report.curves_figures import plot_overlap

    r = class_overlap(ranking, k=3)
    obj = json.loads(json.dumps(r.to_json(), allow_nan=False))
    assert obj["top"]["2"] == [5, 1, 6] and obj["shared"][0]["dim"] == 1 and len(obj["jaccard"]) == 4
    lines = r.to_csv(tmp_path / "overlap.csv").read_text().splitlines()
    assert lines[0] == "class,0,1,2,3,global"
    assert lines[1] == "0,1.0,0.5,0.2,0.2,0.5"
    png = plot_overlap(r, tmp_path / "overlap.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "overlap.json").read_text())
    assert data["figure"] == "class_overlap" and data["jaccard"] == r.jaccard.tolist()


def test_numpy_integers_are_integers():
    import numpy as np

    from failatlas.analysis import ClassDirections

    assert ClassDirections(k=np.int64(5)).k == 5 and type(ClassDirections(k=np.int64(5)).k) is int


def test_overlap_json_reads_back_exactly(G, C, population, tmp_path, round_trip, assert_same_result):
    from failatlas import _io
    from failatlas.analysis import ClassOverlap, GradientRanking
    from failatlas.report.curves_figures import plot_overlap

    ranking = GradientRanking(G, C, batch_size=16).rank(population, per_class=True)
    real = ClassDirections(k=20).compare(ranking)
    assert real.shared and len(real.classes) > 2
    back, path = round_trip(real, ClassOverlap.read_json, "overlap-result.json")
    assert_same_result(real, back)
    plot_overlap(real, tmp_path / "computed" / "overlap.png")  # a run's overlap.json: the figure's data and result
    again = ClassOverlap.read_json(tmp_path / "computed" / "overlap.json")
    assert_same_result(real, again)
    plot_overlap(again, tmp_path / "read" / "overlap.png")
    for name in ("overlap.json", "overlap.png"):
        assert (tmp_path / "computed" / name).read_bytes() == (tmp_path / "read" / name).read_bytes()
    _io.write_json(tmp_path / "ranking.json", ranking.to_json())
    with pytest.raises(FailatlasError, match=r"class-overlap file .*ranking.json holds a ranking \(ranking.json\), "
                                             r"not a class overlap \(format 'failatlas-class-overlap'\)"):
        ClassOverlap.read_json(tmp_path / "ranking.json")
    obj = json.loads(path.read_text())
    _io.write_json(tmp_path / "bad.json", {**obj, "jaccard": obj["jaccard"][1:]})
    with pytest.raises(FailatlasError, match=r"not a valid failatlas class overlap \(RuntimeError: shape"):
        ClassOverlap.read_json(tmp_path / "bad.json")
    (tmp_path / "cut.json").write_text(path.read_text()[:20])
    with pytest.raises(FailatlasError, match="class-overlap file .*cut.json is not valid JSON"):
        ClassOverlap.read_json(tmp_path / "cut.json")
