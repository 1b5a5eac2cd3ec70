"""FailureDirection: the direction of W that separates the mis-classified samples, measured on held-out samples."""

import pytest
import torch
from torch import nn

from failatlas import FailatlasError
from failatlas.analysis.direction import FailureDirection
from failatlas.analysis.population import Population


class AffineStyles(nn.Module):
    """A stand-in generator: s = A w + b (the real style layers are affine too)."""

    def __init__(self, w_dim: int, style_dim: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(w_dim, style_dim)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(style_dim, w_dim, generator=gen))
            self.lin.bias.copy_(torch.randn(style_dim, generator=gen))

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        return self.lin(w)


def _population(G: AffineStyles, well: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> Population:
    n = w.shape[0]
    with torch.no_grad():
        s = G.styles(w)
    logits = torch.zeros(n, 3)
    logits[torch.arange(n), y] = 1.0
    pred = torch.where(well, y, (y + 1) % 3)
    return Population(z=w.clone(), y=y, w=w, s=s, logits=logits, p_y=torch.full((n,), 0.5), pred=pred, well=well)


def _draw(n=4000, w_dim=16, style_dim=64, seed=0, factor=True):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    w = torch.randn(n, w_dim, generator=gen) + 3.0 * y[:, None].float()  # class means far apart
    u = torch.zeros(w_dim)
    u[2] = 1.0
    score = w[:, 2] - 3.0 * y.float() if factor else torch.randn(n, generator=gen)
    well = score < 1.5  # ~7% mis-classified: the largest values along u (or at random)
    return AffineStyles(w_dim, style_dim, seed), w, y, well, u


def test_one_factor_is_found_and_explains_the_separation():
    G, w, y, well, u = _draw()
    r = FailureDirection(G, _population(G, well, w, y), seed=1).fit()
    assert abs(float(r.direction @ u.double())) > 0.95 and float(r.direction @ u.double()) > 0  # towards the misses
    assert r.ks_heldout > 0.8 and r.auroc_heldout > 0.95
    assert r.mean_ks_heldout > r.mean_ks_shuffled + 0.05
    assert r.share_explained > 0.8  # the only factor: removing it leaves about chance
    assert r.n_fit + r.n_heldout == 4000 and 0 < r.n_mis_heldout < int((~well).sum())
    # what is removed is what the style layers make of a vector of W (A·v, no bias), and that v runs along u
    A = G.lin.weight.detach().double()
    v = torch.linalg.lstsq(A, r.style_shift[:, None]).solution[:, 0]
    assert r.style_shift.shape == (64,) and torch.allclose(A @ v, r.style_shift, atol=1e-4)
    assert abs(float(v @ u.double())) / float(v.norm()) > 0.95
    summary = r.summary()
    assert summary["style_dims"] == 64 and 1 <= summary["dims_for_half"] <= 64
    # 64 styles made from 16 latents span at most 16 directions (fewer: the classes' means dominate w)
    assert 1 < summary["style_effective_dims"] <= 16 + 1e-9
    given = FailureDirection(G, _population(G, well, w, y), seed=1, style_effective_dims=7.5).fit()
    assert given.style_effective_dims == 7.5 and given.ks_heldout == r.ks_heldout  # the caller's, nothing else
    assert set(r.to_json()) >= set(summary) | {"direction", "style_shift"}


def test_random_failures_explain_nothing():
    G, w, y, well, _ = _draw(factor=False)
    r = FailureDirection(G, _population(G, well, w, y), seed=1).fit()
    assert r.ks_heldout < 0.15 and abs(r.auroc_heldout - 0.5) < 0.1
    assert r.share_explained is None or r.share_explained < 0.5


def test_the_same_seed_gives_the_same_figures_and_another_seed_another_split():
    G, w, y, well, _ = _draw()
    pop = _population(G, well, w, y)
    a, b, c = (FailureDirection(G, pop, seed=s).fit() for s in (3, 3, 4))
    assert a.summary() == b.summary() and torch.equal(a.direction, b.direction)
    assert a.ks_fit != c.ks_fit


def test_bad_inputs_are_one_clear_error():
    G, w, y, well, _ = _draw(n=200)
    few = well.clone()
    few[:] = True
    few[:6] = False
    for flags in (few, ~few):  # too few mis-classified, then too few well-classified (a barely trained
        with pytest.raises(FailatlasError, match="at least 10 well- and 10 mis-classified"):  # generator)
            FailureDirection(G, _population(G, flags, w, y)).fit()
    with pytest.raises(FailatlasError, match="takes a Population"):
        FailureDirection(G, w)
    with pytest.raises(FailatlasError, match="ridge must be a positive number"):
        FailureDirection(G, _population(G, well, w, y), ridge=float("nan"))


def _flagged_by_w(population: Population) -> Population:
    """The shared population re-labelled: its random classifier gets too few right, so half of it is flagged
    well classified by a factor of w instead (the others predicted as the next class)."""
    flags = population.w[:, 0] < population.w[:, 0].median()
    pred = torch.where(flags, population.y, (population.y + 1) % 10)
    logits = torch.nn.functional.one_hot(pred, 10).float() * 4
    return Population(z=population.z, y=population.y, w=population.w, s=population.s, logits=logits,
                      p_y=torch.softmax(logits, 1).gather(1, population.y[:, None]).squeeze(1), pred=pred, well=flags)


def test_the_walk_renders_each_class_along_the_direction(G, C, population):
    """On the real (tiny) generator: rows are the classes with a centre, columns the steps; the images are what
    the generator draws at the class centre moved by step · spread · removal, and p_y is the classifier's."""
    from failatlas.analysis.direction import walk_failure_direction
    from failatlas.models.adapter import classifier_view

    pop = _flagged_by_w(population)
    r = FailureDirection(G, pop, seed=0).fit()
    walk = walk_failure_direction(G, C, r, steps=(0.0, 3.0), batch_size=7)
    assert walk.classes == r.classes and walk.images.shape[:2] == (len(r.classes), 2) == walk.p_y.shape
    assert walk.images.dtype == torch.uint8
    c = r.classes[-1]
    w = (r.centres[c] + 3.0 * r.spread * r.removal).float()[None]
    with torch.no_grad():
        img = G.synthesis_from_styles(G.styles(w), noise_mode="const")
        p = torch.softmax(C(classifier_view(img)).double(), dim=1)[0, c]
    assert abs(float(p) - float(walk.p_y[-1, 1])) < 1e-5
    assert walk.to_json()["steps"] == [0.0, 3.0]
    with pytest.raises(FailatlasError, match="steps must be finite"):
        walk_failure_direction(G, C, r, steps=(float("nan"),))


def test_describe_says_none_explained_when_removing_the_direction_raises_the_separation():
    from failatlas.analysis.direction import describe

    summary = {"ks_heldout": 0.3, "mean_ks_heldout": 0.317, "mean_ks_removed": 0.386, "mean_ks_shuffled": 0.14,
               "share_explained": -0.39, "dims_for_half": 12, "style_dims": 100}
    assert "chance 0.140, none explained" in describe(summary)


def test_effective_dimension_counts_the_independent_directions():
    from failatlas.analysis.direction import effective_dimension

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 8, generator=gen, dtype=torch.float64)
    assert effective_dimension(x) == pytest.approx(8, rel=0.01)  # uncorrelated columns: all of them
    scaled = x * torch.tensor([1e-3, 1, 1, 1, 1, 1, 1, 1e4], dtype=torch.float64)
    assert effective_dimension(scaled) == pytest.approx(effective_dimension(x), rel=1e-9)  # scale-free, as KS
    mixed = x[:, :3] @ torch.randn(3, 40, generator=gen, dtype=torch.float64)  # 40 columns of 3 factors
    assert 1 < effective_dimension(mixed) <= 3 + 1e-9
    one = x[:, :1] * torch.arange(1, 6, dtype=torch.float64)  # five multiples of one factor
    assert effective_dimension(one) == pytest.approx(1.0)
    constant = torch.cat([x[:, :2], torch.ones(20000, 3, dtype=torch.float64)], dim=1)
    assert effective_dimension(constant) == pytest.approx(effective_dimension(x[:, :2]))  # constants left out
    assert effective_dimension(x[:1]) != effective_dimension(x[:1])  # NaN: one row says nothing
    assert effective_dimension(torch.ones(5, 3)) != effective_dimension(torch.ones(5, 3))


def test_describe_names_the_effective_dimension_when_there_is_one():
    from failatlas.analysis.direction import describe

    summary = {"ks_heldout": 0.3, "mean_ks_heldout": 0.3, "mean_ks_removed": 0.2, "mean_ks_shuffled": 0.1,
               "share_explained": 0.5, "dims_for_half": 12, "style_dims": 100}
    assert "independent directions" not in describe(summary)  # a summary written before the key existed
    assert describe({**summary, "style_effective_dims": 18.4}).endswith("span about 18 independent directions")
def test_failure_direction_json_reads_back_exactly(G, C, population, tmp_path, round_trip, assert_same_result):
    """On the real (tiny) generator, as in the walk test; the file of an analyze run (one entry per classifier
    beside a note) and a result's own to_json both read back; the walk drawn from it is the same."""
    import json

    from failatlas import _io
    from failatlas.analysis import FailureDirectionResult
    from failatlas.analysis.direction import walk_failure_direction
    from failatlas.report.gallery import plot_failure_direction

    pop = _flagged_by_w(population)
    r = FailureDirection(G, pop, seed=0).fit()
    back, path = round_trip(r, FailureDirectionResult.read_json, "direction.json")
    assert_same_result(r, back)
    run = tmp_path / "failure_direction.json"  # as analyze writes it
    _io.write_json(run, {"note": "…", "a": r.to_json(), "b": r.to_json()})
    assert_same_result(r, FailureDirectionResult.read_json(run, classifier="b"))
    with pytest.raises(FailatlasError, match=r"holds the failure directions of 'a', 'b'; pass classifier="):
        FailureDirectionResult.read_json(run)
    for result, folder in ((r, "computed"), (back, "read")):
        plot_failure_direction(walk_failure_direction(G, C, result, steps=(0.0, 3.0)), tmp_path / folder / "walk.png")
    for name in ("walk.json", "walk.png"):
        assert (tmp_path / "computed" / name).read_bytes() == (tmp_path / "read" / name).read_bytes()
    obj = json.loads(path.read_text())
    old = {k: v for k, v in obj.items() if k not in ("format", "version")}
    for bad, message in ((old, "written by an older failatlas, before the failure direction's format"),
                         ({**obj, "version": 2}, "written by a newer failatlas"),
                         ({**obj, "centres": obj["direction"]},
                          r"not a valid failatlas failure direction \(ValueError: centres must have 2 dimension")):
        _io.write_json(tmp_path / "bad.json", bad)
        with pytest.raises(FailatlasError, match=message):
            FailureDirectionResult.read_json(tmp_path / "bad.json")
    _io.write_json(tmp_path / "ranking.json", {"format": "failatlas-ranking"})
    with pytest.raises(FailatlasError, match=r"holds a ranking \(ranking.json\), not a failure direction"):
        FailureDirectionResult.read_json(tmp_path / "ranking.json")
    (tmp_path / "cut.json").write_text(path.read_text()[:50])
    with pytest.raises(FailatlasError, match="failure-direction file .*cut.json is not valid JSON"):
        FailureDirectionResult.read_json(tmp_path / "cut.json")
