"""failatlas._torchscript: the one module that touches torch.jit."""

from __future__ import annotations

import hashlib
import zipfile

import torch

from failatlas import _torchscript


def test_save_writes_the_same_bytes_whatever_the_file_name(tmp_path):
    """torch.jit.save names the archive's top folder after the file it writes: saving to a temporary file
    put a random name (.model.pt.x7k2q.tmp) into every archive, so two exports of one model differed."""
    traced = _torchscript.trace(torch.nn.Linear(3, 2).eval(), (torch.rand(2, 3),))
    a, b = tmp_path / "model.pt", tmp_path / "other" / "fused.pt"
    b.parent.mkdir()
    _torchscript.save(traced, a, extra_files={"failatlas.json": "{}"})
    _torchscript.save(traced, b, extra_files={"failatlas.json": "{}"})
    assert hashlib.sha256(a.read_bytes()).hexdigest() == hashlib.sha256(b.read_bytes()).hexdigest()
    tops = {name.split("/")[0] for name in zipfile.ZipFile(a).namelist()}
    assert len(tops) == 1 and not tops.pop().startswith(".")
    extra = {"failatlas.json": ""}
    loaded = _torchscript.load_torchscript(a, extra_files=extra)
    assert extra["failatlas.json"] in (b"{}", "{}")
    x = torch.rand(4, 3)
    assert torch.equal(loaded(x), traced(x))
