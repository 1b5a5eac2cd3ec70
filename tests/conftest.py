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
