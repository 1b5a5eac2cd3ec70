"""The native engine (failatlas._C.Engine, wrapped by failatlas.engine.NativeEngine): probs, walks and
per-sample gradients on a fused TorchScript graph equal the Python FusedModel, WalkEngine and
style_gradients (≤ 1e-5); chunking changes nothing but torch's own batch-size rounding; bad input raises
FailatlasError (or, calling _C.Engine directly, EngineError), never crashes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from failatlas._torchscript import quiet_jit
from failatlas.analysis.ranking import style_gradients
from failatlas.engine import FusedModel, NativeEngine, WalkEngine, export_torchscript
from failatlas.models.classifier import PaperCNN

TOL = 1e-5
N = 13


@pytest.fixture(scope="module")
def setup(tiny_generator, real_styles, tmp_path_factory, native):
    """The tiny generator, a PaperCNN with non-trivial BatchNorm statistics and a last layer scaled up (so
    p_y spreads over (0, 1) and the gradients are not tiny), the fused graph, styles and labels."""
    G = tiny_generator
    torch.manual_seed(1)
    C = PaperCNN().eval()
    with torch.no_grad():
        for m in C.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        C.fc2.weight.mul_(20.0)
    folder = tmp_path_factory.mktemp("native")
    path = export_torchscript(G, C, folder / "fused.pt")
    s = real_styles(G, N, seed=3).float()
    y = torch.randint(0, G.num_classes, (N,), generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(5)
    sigma = torch.rand(G.style_dim, generator=g) * 0.3 + 0.05
    dims = torch.tensor([t.start + 1 for t in G.style_layers()])  # one dimension of every style layer
    sign = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(len(dims))], dtype=torch.float64)
    return dict(G=G, C=C, path=path, folder=folder, s=s, y=y, sigma=sigma, dims=dims, sign=sign,
                fused=FusedModel(G, C))


def eager_probs(fused, s, y, chunk):
    """p_y and pred from the eager FusedModel, evaluated in chunks of `chunk` styles."""
    with torch.no_grad():
        logits = torch.cat([fused(s[a:a + chunk]) for a in range(0, len(s), chunk)])
    return torch.softmax(logits.double(), dim=1).gather(1, y[:, None]).squeeze(1), logits.argmax(dim=1)


# --- results ---------------------------------------------------------------------------------------------


def test_probs_equal_the_fused_model(setup):
    st = setup
    engine = NativeEngine(st["path"], batch_size=5)
    assert (engine.style_dim, engine.num_classes) == (st["G"].style_dim, 10)
    p, pred = engine.probs(st["s"], st["y"], return_pred=True)
    assert p.dtype == torch.float64 and p.shape == (N,) and pred.dtype == torch.int64
    # the chunk loop adds nothing: bit for bit the eager model run in the same chunks
    want, want_pred = eager_probs(st["fused"], st["s"], st["y"], 5)
    assert torch.equal(p, want) and torch.equal(pred, want_pred)
    whole, _ = eager_probs(st["fused"], st["s"], st["y"], N)
    assert (p - whole).abs().max() <= TOL
    assert p.max() - p.min() > 0.1  # not vacuous: p_y spreads
    # numpy input, float64 styles and int32 labels are converted
    assert torch.equal(engine.probs(st["s"].double().numpy(), st["y"].int().numpy()), p)


@pytest.mark.parametrize("cache", [False, True], ids=["full", "cached"])
def test_walk_equals_the_walk_engine(setup, cache):
    st = setup
    shifts = torch.tensor([0.0, 0.5, -1.0, 3.0, -6.0])
    got = NativeEngine(st["path"], batch_size=17).walk(st["s"], st["y"], st["dims"], shifts, st["sigma"], st["sign"])
    want = WalkEngine(st["G"], st["C"], batch_size=64, cache=cache).walk(
        st["s"], st["y"], st["dims"], shifts, st["sigma"], st["sign"], progress_bar=False)
    K, M = len(st["dims"]), len(shifts)
    assert got.p_y.shape == got.pred.shape == want.p_y.shape == (N, K, M)
    assert got.images == want.images == N * K * M
    assert (got.p_y - want.p_y).abs().max() <= TOL
    assert (got.pred == want.pred).double().mean() > 0.99  # an argmax tie at float32 rounding may flip, no more
    # the shift-0 column is the start itself; and the walks move p_y (not vacuous)
    assert (got.p_y[:, :, 0] - NativeEngine(st["path"]).probs(st["s"], st["y"])[:, None]).abs().max() <= TOL
    assert (got.p_y[:, :, -1] - got.p_y[:, :, 0]).abs().max() > 1e-2


def test_walk_defaults_are_unit_sigma_and_positive_sign(setup):
    st = setup
    engine = NativeEngine(st["path"])
    dims, shifts = st["dims"][:3], [0.0, 0.25]
    got = engine.walk(st["s"], st["y"], dims, shifts)
    want = engine.walk(st["s"], st["y"], dims, shifts, torch.ones(st["G"].style_dim), [1, 1, 1])
    assert torch.equal(got.p_y, want.p_y)


def test_grad_equals_style_gradients(setup):
    """The per-sample ∂p_y/∂s that GradientRanking sums (style_gradients, target "probability")."""
    st = setup
    got = NativeEngine(st["path"], batch_size=4).grad(st["s"], st["y"])
    want = style_gradients(st["G"], st["C"], st["s"], st["y"], "probability")
    assert got.dtype == torch.float32 and got.shape == want.shape == (N, st["G"].style_dim)
    scale = float(want.abs().max())
    assert scale > 1e-3  # not vacuous
    assert float((got - want).abs().max()) <= TOL * max(1.0, scale)
    # and per sample, relative to that sample's gradient
    rel = (got - want).abs().amax(dim=1) / want.abs().amax(dim=1).clamp_min(1e-12)
    assert float(rel.max()) <= 1e-4


def test_chunking_changes_nothing_but_torch_rounding(setup):
    """Batch 3 against batch 64 (one chunk): equal to float32 rounding. Not bit for bit: torch's own kernels
    round differently at different batch sizes (the eager model does too), and each chunk is bit for bit the
    eager model on that chunk (test_probs_equal_the_fused_model)."""
    st = setup
    small, big = NativeEngine(st["path"], batch_size=3), NativeEngine(st["path"], batch_size=64)
    s, y = st["s"], st["y"]
    assert (small.probs(s, y) - big.probs(s, y)).abs().max() <= 1e-6
    shifts = [0.0, 1.0, -2.0]
    assert (small.walk(s, y, st["dims"], shifts, st["sigma"], st["sign"]).p_y
            - big.walk(s, y, st["dims"], shifts, st["sigma"], st["sign"]).p_y).abs().max() <= 1e-6
    g_small, g_big = small.grad(s, y), big.grad(s, y)
    assert (g_small - g_big).abs().max() <= 1e-6 * max(1.0, float(g_big.abs().max()))
    # the same engine twice: its reused buffers carry nothing from one call to the next
    assert torch.equal(small.probs(s, y), small.probs(s, y))
    assert torch.equal(small.grad(s[:5], y[:5]), small.grad(s[:5], y[:5]))


def test_empty_inputs(setup):
    st = setup
    engine = NativeEngine(st["path"])
    D = st["G"].style_dim
    empty_s, empty_y = torch.zeros(0, D), torch.zeros(0, dtype=torch.long)
    assert engine.probs(empty_s, empty_y).shape == (0,)
    assert engine.grad(empty_s, empty_y).shape == (0, D)
    r = engine.walk(empty_s, empty_y, [3, 4], [0.0, 1.0])
    assert r.p_y.shape == (0, 2, 2) and r.images == 0
    assert engine.walk(st["s"], st["y"], [], [0.0]).p_y.shape == (N, 0, 1)


def test_threads_are_restored(setup):
    st = setup
    before = torch.get_num_threads()
    engine = NativeEngine(st["path"], threads=1)
    p = engine.probs(st["s"], st["y"])
    engine.grad(st["s"][:2], st["y"][:2])
    assert torch.get_num_threads() == before
    # torch's kernels round differently with another number of threads: equal to float32 rounding
    assert (p - NativeEngine(st["path"]).probs(st["s"], st["y"])).abs().max() <= 1e-6


# --- bad input -------------------------------------------------------------------------------------------


class _WrongOutput(nn.Module):
    """A TorchScript module with the fused graph's meta buffers but float64 [N, 1] "logits"."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        for name, value in (("meta_style_dim", width), ("meta_num_classes", classes)):
            self.register_buffer(name, torch.tensor(value))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s.sum(dim=1, keepdim=True).double()


@pytest.fixture(scope="module")
def bad_models(setup):
    folder, D = setup["folder"], setup["G"].style_dim
    files = {"missing": folder / "nowhere" / "fused.pt", "program": folder / "fused.pt2",
             "corrupt": folder / "corrupt.pt", "no_meta": folder / "no_meta.pt", "wrong_output": folder / "wrong.pt",
             "state_dict": folder / "state_dict.pt"}
    files["program"].write_bytes(b"not used")
    files["corrupt"].write_bytes(b"PK\x03\x04 not really a zip archive" * 10)
    with quiet_jit():
        torch.jit.script(nn.Linear(D, 10)).save(str(files["no_meta"]))
        torch.jit.script(_WrongOutput(D, 10)).save(str(files["wrong_output"]))
    torch.save(setup["C"].state_dict(), files["state_dict"])
    return files


@pytest.mark.parametrize("name, words", [
    ("missing", ["fused graph not found"]),
    ("program", ["runs TorchScript graphs", "export_torchscript"]),
    ("corrupt", ["not a readable TorchScript archive"]),
    ("state_dict", ["not a readable TorchScript archive"]),
    ("no_meta", ["not a failatlas fused graph", "meta_style_dim"]),
])
def test_bad_model_file(bad_models, one_error, name, words):
    one_error(lambda: NativeEngine(bad_models[name]), *words)


def test_model_with_wrong_output(setup, bad_models, one_error):
    engine = NativeEngine(bad_models["wrong_output"])
    one_error(lambda: engine.probs(setup["s"][:4], setup["y"][:4]), "returned logits of shape [4, 1] (float64)")
    one_error(lambda: engine.grad(setup["s"][:4], setup["y"][:4]), "returned logits of shape [4, 1]")


def _nan_styles(st):
    s = st["s"].clone()
    s[2, 5] = float("nan")
    return s


def _beyond_float32(st):
    s = st["s"].double()
    s[1, 2] = 1e300
    return s


# name: (call(st, engine), words the message must hold)
BAD_CALLS = {
    "meta styles": (lambda st, e: e.probs(st["s"].to("meta"), st["y"]), ["styles are on the 'meta' device"]),
    "styles beyond float32": (lambda st, e: e.probs(_beyond_float32(st), st["y"]), ["beyond float32's range"]),
    "walk too large": (lambda st, e: e.walk(st["s"], st["y"], torch.zeros(10**5, dtype=torch.long),
                                            torch.zeros(10**5)),
                       ["cannot allocate the results of a walk of 13 starts × 100000 dims × 100000 shifts"]),
    "styles 1-D": (lambda st, e: e.probs(st["s"][0], st["y"][:1]), ["styles must have shape [N, 272]"]),
    "styles width": (lambda st, e: e.grad(st["s"][:, :10], st["y"]), ["styles must have shape [N, 272]", "[13, 10]"]),
    "integer styles": (lambda st, e: e.probs(st["s"].long(), st["y"]), ["styles must be floating point"]),
    "not a tensor": (lambda st, e: e.probs("styles", st["y"]), ["styles must be a Tensor"]),
    "NaN styles": (lambda st, e: e.grad(_nan_styles(st), st["y"]), ["NaN"]),
    "float labels": (lambda st, e: e.probs(st["s"], st["y"].double()), ["labels must be integers"]),
    "labels count": (lambda st, e: e.probs(st["s"], st["y"][:-1]), ["labels must have shape [13]"]),
    "label range": (lambda st, e: e.probs(st["s"], torch.full((N,), 10)), ["classes in [0, 10)", "10..10"]),
    "negative label": (lambda st, e: e.grad(st["s"], -torch.ones(N, dtype=torch.long)), ["classes in [0, 10)"]),
    "dim range": (lambda st, e: e.walk(st["s"], st["y"], [3, 272], [0.0]), ["dims must be style dimensions in [0, 272)"]),
    "float dims": (lambda st, e: e.walk(st["s"], st["y"], [3.5], [0.0]), ["dims must be integers"]),
    "NaN shift": (lambda st, e: e.walk(st["s"], st["y"], [3], [float("nan")]), ["shifts contains NaN"]),
    "sigma width": (lambda st, e: e.walk(st["s"], st["y"], [3], [0.0], torch.ones(10)),
                    ["sigma must have one entry per style dimension"]),
    "sign count": (lambda st, e: e.walk(st["s"], st["y"], [3, 4], [0.0], None, [1.0]),
                   ["sign needs one entry per walked dimension"]),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_raises_one_line(setup, one_error, name):
    call, words = BAD_CALLS[name]
    engine = NativeEngine(setup["path"], batch_size=4)
    one_error(lambda: call(setup, engine), *words)
    # the engine still works, unchanged
    s, y = setup["s"][:3], setup["y"][:3]
    assert torch.equal(engine.probs(s, y), NativeEngine(setup["path"], batch_size=4).probs(s, y))


@pytest.mark.parametrize("kwargs, words", [
    ({"batch_size": 0}, ["batch_size must be a positive integer"]),
    ({"batch_size": 2.5}, ["batch_size must be a positive integer"]),
    ({"threads": 0}, ["threads must be an integer in [1, 4096] or None"]),
    ({"threads": 2**31}, ["threads must be an integer in [1, 4096] or None"]),
    ({"batch_size": 2**40}, ["cannot allocate the engine's buffers for batches of 1099511627776", "smaller batch"]),
])
def test_bad_options(setup, one_error, kwargs, words):
    one_error(lambda: NativeEngine(setup["path"], **kwargs), *words)


class _Raises(nn.Module):
    """A graph that raises inside TorchScript (the interpreter throws a std::runtime_error, not a c10::Error)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("meta_style_dim", torch.tensor(width))
        self.register_buffer("meta_num_classes", torch.tensor(3))
        self.linear = nn.Linear(width, 3)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if bool((s > 100).any()):
            raise ValueError("styles out of the model's range")
        return self.linear(s)


def test_an_error_raised_inside_the_graph_is_one_line(tmp_path, one_error, native):
    path = tmp_path / "raises.pt"
    with quiet_jit():
        torch.jit.script(_Raises(8)).save(str(path))
    engine = NativeEngine(path)
    s = torch.zeros(2, 8)
    assert engine.probs(s, torch.tensor([0, 1])).shape == (2,)
    s[1, 0] = 1000.0
    for call in (lambda: engine.probs(s, torch.tensor([0, 1])), lambda: engine.grad(s, torch.tensor([0, 1])),
                 lambda: engine.walk(s[:1], [0], [0], [0.0, 200.0])):
        one_error(call, "failed on a batch of", "styles out of the model's range")
    with pytest.raises(native.EngineError, match="styles out of the model's range"):  # the raw engine too
        native.Engine(str(path)).probs(s, torch.tensor([0, 1]))


def test_the_raw_engine_checks_its_input(setup, native):
    """failatlas._C.Engine, without the Python checks: EngineError (a ValueError), never a crash."""
    st = setup
    engine = native.Engine(str(st["path"]), batch=4)
    assert (engine.style_dim, engine.num_classes, engine.batch, engine.threads) == (st["G"].style_dim, 10, 4, 0)
    s, y = st["s"], st["y"]
    dims, shifts = torch.tensor([3, 40]), torch.tensor([0.0, 1.0], dtype=torch.float64)
    bad = [
        (lambda: engine.probs(s.double(), y), "styles must be float32, got float64"),
        (lambda: engine.probs(s[:, :5], y), "styles must have shape [N, 272]"),
        (lambda: engine.probs(s[0], y), "styles must have shape [N, 272]"),
        (lambda: engine.probs(s, y.int()), "labels must be int64, got int32"),
        (lambda: engine.probs(s, y[:3]), "labels must have shape [13]"),
        (lambda: engine.grad(s, torch.full((N,), 12)), "labels must be classes in [0, 10)"),
        (lambda: engine.grad(torch.full((2, st["G"].style_dim), float("inf")), y[:2]), "NaN or infinite"),
        (lambda: engine.walk(s, y, dims.int(), shifts), "dims must be int64"),
        (lambda: engine.walk(s, y, torch.tensor([-1]), shifts), "dims must be style dimensions"),
        (lambda: engine.walk(s, y, dims, shifts.float()), "shifts must be float64"),
        (lambda: engine.walk(s, y, dims, shifts, torch.ones(3, dtype=torch.float64)), "scale must have shape [2]"),
    ]
    for call, words in bad:
        with pytest.raises(native.EngineError) as info:
            call()
        assert isinstance(info.value, ValueError) and words in str(info.value), (words, str(info.value))
    with pytest.raises(native.EngineError, match="model not found"):
        native.Engine(str(st["folder"] / "missing.pt"))
    with pytest.raises(native.EngineError, match="batch must be at least 1"):
        native.Engine(str(st["path"]), batch=0)
    p, pred = engine.probs(s, y)  # still works after all that
    assert torch.equal(p, NativeEngine(st["path"], batch_size=4).probs(s, y))
