"""Shared pytest fixtures (keep this file minimal; settings live in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout the tests run from."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def native():
    """The loaded native module ``failatlas._C`` (``torch.ops.failatlas.*`` registered).

    A missing build fails the test rather than skipping it: ``make test`` builds the module first.
    """
    from failatlas import _ext

    return _ext.load()


@pytest.fixture(scope="session")
def tiny_generator():
    """The 'tiny' generator (272 style dims), untrained, in eval mode, with non-trivial noise strengths
    and biases so that tests see every term of the layers. Shared: tests must not modify it."""
    import torch

    from failatlas.models.stylegan2 import CONFIGS, Generator

    torch.manual_seed(0)
    g = Generator(CONFIGS["tiny"]).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.normal_(0, 0.3)
    return g


@pytest.fixture(scope="session")
def real_styles():
    """``real_styles(G, n, seed)``: styles drawn like real ones, s = G.styles(G.mapping(z, y))."""
    import torch

    def make(G, n: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, G.z_dim, generator=gen)
        y = torch.randint(0, G.num_classes, (n,), generator=gen)
        with torch.no_grad():
            return G.styles(G.mapping(z, y))

    return make


@pytest.fixture(scope="session")
def one_error():
    """``one_error(call, *words)``: call() raises a FailatlasError whose message is one line holding every
    word (no chained traceback from inside a library); returns the message."""
    from failatlas import FailatlasError

    def check(call, *words) -> str:
        with pytest.raises(FailatlasError) as info:
            call()
        message = str(info.value)
        for word in words:
            assert word in message, f"{word!r} not in {message!r}"
        assert "\n" not in message
        cause = info.value
        assert cause.__cause__ is None and (cause.__suppress_context__ or cause.__context__ is None)
        return message

    return check
