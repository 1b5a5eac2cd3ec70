"""failatlas._alloc: glibc's malloc keeps freed memory for the next batch (its effect on speed and page
faults is measured, not asserted: see the module's docstring)."""

import ctypes
import subprocess
import sys

import pytest

from failatlas import _alloc


def _glibc() -> bool:
    try:
        ctypes.CDLL(None).gnu_get_libc_version
        return sys.platform.startswith("linux")
    except (OSError, AttributeError):
        return False


def test_off_switch(monkeypatch):
    monkeypatch.setenv("FAILATLAS_MALLOPT", "0")
    assert _alloc.keep_freed_memory() is False


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_glibc_takes_the_settings_and_the_command_applies_them(monkeypatch):
    monkeypatch.delenv("FAILATLAS_MALLOPT", raising=False)
    assert _alloc.keep_freed_memory() is True
    # the command calls it before anything else: `failatlas --version` runs through main()
    code = ("import failatlas._alloc as a, failatlas.cli as c\n"
            "calls = []\n"
            "a.keep_freed_memory = lambda: calls.append(1) or True\n"
            "try:\n    c.main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(len(calls))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "1"


def test_require_memory_refuses_only_more_than_the_machine_has(monkeypatch):
    from failatlas.errors import FailatlasError

    monkeypatch.setattr(_alloc, "physical_memory", lambda: 16 * 10**9)
    _alloc.require_memory(16 * 10**9, "--n 5 samples", "lower --n")  # what fits is left to the run
    with pytest.raises(FailatlasError, match=r"^--n 5 samples need about 16.0 GB of memory, more than this machine "
                       r"has \(16.0 GB\); lower --n$"):
        _alloc.require_memory(16 * 10**9 + 1, "--n 5 samples", "lower --n")
    monkeypatch.setattr(_alloc, "physical_memory", lambda: None)  # a system that does not tell: no check
    _alloc.require_memory(10**30, "--n 5 samples", "lower --n")
