import numpy as np
import pytest
import torch

from failatlas import FailatlasError
from failatlas.analysis import Population, sample_population
from failatlas.models.adapter import classifier_view
from failatlas.models.classifier import ClassifierConfig, build_classifier


def test_shapes_and_consistency(G, C, population):
    p = population
    n, S = 48, G.style_dim
    assert p.n == n and p.style_dim == S == 272 and p.num_classes == 10
    assert p.z.shape == (n, G.z_dim) and p.w.shape == (n, G.w_dim) and p.s.shape == (n, S)
    assert p.logits.shape == (n, 10) and p.p_y.shape == p.pred.shape == p.well.shape == (n,)
    assert p.y.dtype == p.pred.dtype == torch.int64 and p.well.dtype == torch.bool
    assert torch.equal(p.pred, p.logits.argmax(1)) and torch.equal(p.well, p.pred == p.y)
    assert torch.allclose(p.p_y, torch.softmax(p.logits, 1)[torch.arange(n), p.y], atol=1e-6)
    assert p.accuracy == pytest.approx(p.n_well / n) and 0 < p.n_well < n
    # the stored s reproduces the stored logits (ψ = 1, const noise), and s = styles(mapping(z, y))
    with torch.no_grad():
        assert torch.allclose(G.styles(G.mapping(p.z, p.y)), p.s, atol=1e-5)
        assert torch.allclose(C(classifier_view(G.synthesis_from_styles(p.s[:5]))), p.logits[:5], atol=1e-4)


def test_deterministic_from_seed_not_batch_or_global_rng(G, C, population):
    torch.manual_seed(123)  # the global RNG must not matter
    again = sample_population(G, C, 48, seed=0, batch_size=48)
    for k in ("z", "y", "s", "logits", "well"):
        assert torch.allclose(getattr(again, k).float(), getattr(population, k).float(), atol=1e-5), k
    other = sample_population(G, C, 48, seed=1, batch_size=48)
    assert not torch.equal(other.z, population.z)


def test_models_put_in_eval_and_restored(G):
    torch.manual_seed(1)
    clf = build_classifier(ClassifierConfig())  # fresh: training mode, BatchNorm would couple samples
    assert clf.training
    one = sample_population(G, clf, 6, seed=3, batch_size=6)
    assert clf.training and all(m.training for m in clf.modules())
    split = sample_population(G, clf, 6, seed=3, batch_size=1)
    assert torch.allclose(one.logits, split.logits, atol=1e-5)


def test_class_subset(G, C):
    p = sample_population(G, C, 60, seed=2, classes=[7, 2], batch_size=30)
    assert set(p.y.tolist()) == {2, 7} and p.classes == (2, 7)
    assert 15 < int((p.y == 2).sum()) < 45
    with pytest.raises(FailatlasError, match=r"distinct class labels \(indices: 0, 1, …\) in \[0, 10\)"):
        sample_population(G, C, 5, classes=[3, 10])
    with pytest.raises(FailatlasError, match="distinct"):
        sample_population(G, C, 5, classes=[])
    assert sample_population(G, C, 4, seed=2, classes=torch.tensor([7, 2])).classes == (2, 7)  # a tensor of labels
    for bad in ("37", [1.5], [True], 3, [2, 2], torch.tensor([1.0, 2.0])):
        with pytest.raises(FailatlasError, match=r"the classes \(--classes\) must be distinct class labels"):
            sample_population(G, C, 5, classes=bad)


def test_invalid_size_and_class_mismatch(G):
    with pytest.raises(FailatlasError, match="positive integer"):
        sample_population(G, build_classifier(ClassifierConfig()), 0)
    clf7 = build_classifier(ClassifierConfig(num_classes=7)).eval()
    with pytest.raises(FailatlasError) as err:
        sample_population(G, clf7, 4)
    msg = str(err.value)
    assert "7 classes" in msg and "generator has 10" in msg and "pass a classifier" in msg


def test_nan_styles_rejected(G, C):
    import copy

    bad = copy.deepcopy(G)
    with torch.no_grad():
        bad.synthesis_network.layers[0].affine.bias.fill_(float("nan"))
    with pytest.raises(FailatlasError, match="NaN or infinite styles"):
        sample_population(bad, C, 4)


class _NanOnRow(torch.nn.Module):
    """Wraps a classifier; the logits of every image whose batch row is ``row`` become NaN."""

    def __init__(self, inner, row):
        super().__init__()
        self.inner, self.row = inner, row

    def forward(self, x):
        out = self.inner(x).clone()
        if out.shape[0] > self.row:
            out[self.row] = float("nan")
        return out


def test_nan_logits_stop_every_evaluator_with_the_image(G, C, population, one_error):
    """A classifier that returns NaN for some images is one clear error, in the population, the re-labelling
    and the corner search alike (NaN p_y would otherwise read as "never fails")."""
    from failatlas.analysis import CornerCaseSearch, GradientRanking, with_classifier

    bad = _NanOnRow(C, 3).eval()
    one_error(lambda: sample_population(G, bad, 8, batch_size=4), "NaN or infinite logits", "image 3")
    one_error(lambda: with_classifier(population, G, bad, batch_size=4), "NaN or infinite logits (first for image 3)")
    late = _NanOnRow(C, 1).eval()
    late.calls = 0
    late.register_forward_pre_hook(lambda m, args: setattr(m, "row", 1 if m.calls else 99)
                                   or setattr(m, "calls", m.calls + 1))
    # NaN only in the second batch: the message gives the image's index in the population (4 + 1)
    one_error(lambda: with_classifier(population, G, late, batch_size=4), "first for image 5)")
    ranking = GradientRanking(G, C).rank(population)
    starts = population.s[:2]
    one_error(lambda: CornerCaseSearch(G, bad, ranking, batch_size=64, backend="reference").search(
        starts=starts, labels=population.y[:2], dims=[0, 1, 2, 3], pairs=False), "NaN or infinite logits")


def test_subset(population):
    sub = population.subset(population.well)
    assert sub.n == population.n_well and bool(sub.well.all()) and sub.accuracy == 1.0
    idx = population.subset([5, 0])
    assert torch.equal(idx.s, population.s[[5, 0]])
    with pytest.raises(FailatlasError, match="shape"):
        population.subset(torch.ones(3, dtype=torch.bool))


def test_npz_round_trip(population, tmp_path):
    path = population.to_npz(tmp_path / "population.npz")
    assert path.name == "population.npz" and not list(tmp_path.glob(".*tmp"))
    back = Population.from_npz(path)
    for k in ("z", "y", "w", "s", "logits", "p_y", "pred", "well"):
        a, b = getattr(back, k), getattr(population, k)
        assert a.dtype == b.dtype and torch.equal(a, b), k
    assert back.seed == 0 and back.classes is None


def test_npz_corrupt_or_inconsistent(population, tmp_path):
    good = population.to_npz(tmp_path / "p.npz")
    truncated = tmp_path / "t.npz"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(FailatlasError, match="corrupt or not an .npz"):
        Population.from_npz(truncated)
    with pytest.raises(FailatlasError, match="not found"):
        Population.from_npz(tmp_path / "missing.npz")
    # a file whose arrays disagree in length
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["s"] = arrays["s"][:-1]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(FailatlasError, match=r"s has shape \[47, 272\], expected \[48, \.\.\.\]"):
        Population.from_npz(tmp_path / "short.npz")
    del arrays["s"]
    np.savez(tmp_path / "nos.npz", **arrays)
    with pytest.raises(FailatlasError, match=r"lacks \['s'\]"):
        Population.from_npz(tmp_path / "nos.npz")


def test_latents_do_not_reuse_the_stream_that_seeded_the_weights(G, C):
    """train-gan (and the tiny fixture) draw the generator's weights after torch.manual_seed(seed), and the
    mapping learns at 1% of the rate, so its weights stay those draws. Latents of the same seed taken from
    torch.Generator().manual_seed(seed) were the same numbers: some z rows equalled the z-part of a weight row
    of the mapping's first layer (cosine 1). A population's z must come from a stream of its own."""
    def max_cosine(z: torch.Tensor) -> float:
        rows = G.mapping_network.layers[0].weight.detach()[:, :G.z_dim]
        cos = torch.nn.functional.normalize(z, dim=1) @ torch.nn.functional.normalize(rows, dim=1).T
        return float(cos.abs().max())

    n = 200
    old = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(0))
    assert max_cosine(old) > 0.999  # the collision this guards against (tiny fixture: torch.manual_seed(0))
    pop = sample_population(G, C, n, seed=0, batch_size=100)
    assert max_cosine(pop.z) < 0.9  # independent 32-dim directions: |cos| stays well below 1


class _Softmaxed(torch.nn.Module):
    """A user's model that ends in a softmax (or, with log=True, a log_softmax, which is fine)."""

    def __init__(self, log: bool = False) -> None:
        super().__init__()
        self.fc, self.log = torch.nn.Linear(784, 10), log

    def forward(self, x):
        z = self.fc(x.flatten(1))
        return torch.log_softmax(z, 1) if self.log else torch.softmax(z, 1)


def test_a_model_that_returns_probabilities_is_refused(G, one_error):
    """softmax(probabilities) keeps p_y below e/(e + 9) = 0.23: every corner case would sit at the start."""
    torch.manual_seed(0)
    one_error(lambda: sample_population(G, _Softmaxed().eval(), 8, seed=0), "returns probabilities", "log_softmax")
    pop = sample_population(G, _Softmaxed(log=True).eval(), 8, seed=0)  # log-probabilities are logits
    assert pop.p_y.max() > 0.0 and torch.isfinite(pop.logits).all()


def test_a_model_for_other_input_gets_one_error_naming_the_input(G, one_error):
    flat = torch.nn.Sequential(torch.nn.Linear(784, 10)).eval()  # takes [N, 784]
    one_error(lambda: sample_population(G, flat, 8, seed=0), "[N, 1, 28, 28]", "[0, 1]", "x.flatten(1)")


def test_a_second_classifier_is_checked_like_the_first(G, C, population, one_error):
    """compare and analyze re-classify one population with every further classifier (with_classifier)."""
    from failatlas.analysis.curves import with_classifier

    torch.manual_seed(0)
    one_error(lambda: with_classifier(population, G, _Softmaxed().eval()), "returns probabilities")
    flat = torch.nn.Sequential(torch.nn.Linear(784, 10)).eval()
    one_error(lambda: with_classifier(population, G, flat), "[N, 1, 28, 28]", "x.flatten(1)")


def test_a_population_larger_than_the_machines_memory_is_refused_before_any_work(G, C, one_error):
    """--n 10¹¹ was torch's allocation traceback from inside randn; now one line naming --n and the memory."""
    one_error(lambda: sample_population(G, C, 10**11), "--n 100000000000 samples need about", "TB of memory",
              "lower --n")


def test_out_of_memory_is_not_reported_as_a_wrong_input(G):
    class Hungry(torch.nn.Module):
        def forward(self, x):
            raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        sample_population(G, Hungry(), 4, seed=0)


def test_models_of_the_wrong_kind_are_named(G, C):
    with pytest.raises(FailatlasError, match="the seed must be a non-negative integer, got None"):
        sample_population(G, C, 4, seed=None)
    with pytest.raises(FailatlasError, match="the generator must be a failatlas Generator.*generator first"):
        sample_population(C, G, 4)  # swapped
    with pytest.raises(FailatlasError, match=r"the generator must be a failatlas Generator \(failatlas.load_generator.*got str"):
        sample_population("mnist/generator", C, 4)
    with pytest.raises(FailatlasError, match="the classifier must be a loaded model, got str"):
        sample_population(G, "mnist/classifier-corrupted", 4)
