"""Fixtures for the analysis tests: a tiny generator, a random paper CNN, a small population, and a
hand-built generator/classifier pair whose ranking is known exactly.

Tests run with ``--import-mode=importlib`` (no sys.path changes), so helpers are handed out as fixtures.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from failatlas.analysis import sample_population
from failatlas.models.classifier import ClassifierConfig, build_classifier
from failatlas.models.stylegan2 import Generator


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Small ops with two threads under contention run ~20× slower; the analysis tests use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def G(tiny_generator) -> Generator:
    """The shared 'tiny' generator of tests/conftest.py."""
    return tiny_generator


@pytest.fixture(scope="session")
def C() -> nn.Module:
    """The paper's CNN with random weights (10 classes): it gets ~10% right, so both groups exist."""
    torch.manual_seed(1)
    return build_classifier(ClassifierConfig()).eval()


@pytest.fixture(scope="session")
def population(G, C):
    return sample_population(G, C, 48, seed=0, batch_size=16)


class RegionClassifier(nn.Module):
    """Logits [gain · mean intensity of a column band of the 28×28 view, 0, …, 0]: it only looks there."""

    def __init__(self, cols: slice, gain: float = 8.0, num_classes: int = 10) -> None:
        super().__init__()
        self.cols, self.gain, self.num_classes = cols, gain, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.gain * x[..., :, self.cols].mean(dim=(1, 2, 3))
        return torch.cat([first[:, None], x.new_zeros(x.shape[0], self.num_classes - 1)], dim=1)


@pytest.fixture(scope="session")
def hand_built(G):
    """A generator whose image depends on exactly two StyleSpace dimensions, each painting one half.

    Every ToRGB weight is zero except b32.torgb channels ``a`` (weight +1) and ``b`` (weight +1); the
    b32.conv1 output channels a and b get zero conv weights, so their activations no longer depend on any
    style: x = lrelu(noise_const · 1 + bias)·√2 with noise_const = 1 on the left 16 columns and 0 on the
    right. With bias_a = 0, channel a is √2 on the left and 0 on the right; with bias_b = −1, channel b is 0
    on the left and lrelu(−1)·√2 < 0 on the right. So s_a paints only the left half (brighter as s_a grows)
    and s_b only the right half (darker as s_b grows); no other dimension changes the image at all.
    """
    g = copy.deepcopy(G)
    names = g.synthesis_network.names
    layers = dict(zip(names, g.synthesis_network.layers))
    table = {t.name: t for t in g.style_layers()}
    a, b = 3, 11
    with torch.no_grad():
        for name, layer in layers.items():
            if layer.kind == "torgb":
                layer.weight.zero_()
                layer.bias.zero_()
        layers["b32.torgb"].weight[0, a] = 1.0
        layers["b32.torgb"].weight[0, b] = 1.0
        conv = layers["b32.conv1"]
        conv.weight[[a, b]] = 0.0
        conv.bias[a], conv.bias[b] = 0.0, -1.0
        conv.noise_strength.fill_(1.0)
        conv.noise_gain.weight.zero_()  # amplitude = noise_strength + noise_gain(s) = 1 for every sample
        conv.noise_gain.bias.zero_()
        conv.noise_const.zero_()
        conv.noise_const[:, :16] = 1.0
    start = table["b32.torgb"].start
    return SimpleNamespace(G=g, dim_a=start + a, dim_b=start + b,
                           left=RegionClassifier(slice(0, 12)).eval(), right=RegionClassifier(slice(16, 28)).eval())


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory, G):
    """Folders holding the tiny generator, a random 10-class paper CNN and a 7-class one (shared: read only)."""
    from failatlas.models.classifier import save_classifier
    from failatlas.models.stylegan2 import save_generator

    root = tmp_path_factory.mktemp("models")
    save_generator(G, root / "generator")
    torch.manual_seed(1)
    cfg = ClassifierConfig()
    save_classifier(build_classifier(cfg), cfg, root / "classifier")
    cfg7 = ClassifierConfig(num_classes=7)
    save_classifier(build_classifier(cfg7), cfg7, root / "classifier7")
    return SimpleNamespace(generator=root / "generator", classifier=root / "classifier",
                           classifier7=root / "classifier7")


class Sharpened(nn.Module):
    """A classifier with its logits centred and scaled: confident predictions, sharp 0.5 crossings."""

    def __init__(self, model: nn.Module, gain: float = 300.0) -> None:
        super().__init__()
        self.model, self.gain = model, gain

    def forward(self, x):
        logits = self.model(x)
        return self.gain * (logits - logits.mean(dim=1, keepdim=True))


@pytest.fixture(scope="session")
def sharp_classifier(C) -> nn.Module:
    """The random CNN ``C``, sharpened (corner-case and manipulation tests)."""
    return Sharpened(C).eval()


def _same(a, b, where: str) -> None:
    """``a`` and ``b`` hold equal fields: tensors of the same dtype, shape and values (NaN equal to NaN),
    containers of the same type and order, nested results compared field by field."""
    import dataclasses
    import math

    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            _same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), \
            f"{where}: {a.dtype} {list(a.shape)} vs {b.dtype} {list(b.shape)}"
        same = a == b
        if a.is_floating_point():
            same |= a.isnan() & b.isnan()
        assert bool(same.all()), f"{where}: values differ"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), f"{where}: NaN vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@pytest.fixture(scope="session")
def assert_same_result():
    """``assert_same_result(a, b)``: two results (e.g. one and its JSON read back) have equal fields."""
    return lambda a, b: _same(a, b, type(a).__name__)


@pytest.fixture(scope="session")
def round_trip(tmp_path_factory):
    """``round_trip(result, read, name)``: write ``result.to_json()`` as failatlas writes JSON, read it back
    with ``read(path)``, write that again: the two files must be byte-identical. Returns (read-back, path)."""
    from failatlas import _io

    folder = tmp_path_factory.mktemp("round-trip")

    def run(result, read, name: str):
        first, second = folder / name, folder / f"again-{name}"
        _io.write_json(first, _io.jsonable(result.to_json()))
        back = read(first)
        _io.write_json(second, _io.jsonable(back.to_json()))
        assert second.read_bytes() == first.read_bytes(), f"{name}: not byte-identical after a round trip"
        return back, first

    return run
