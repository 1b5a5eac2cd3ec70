"""failatlas._provenance: what results record of the code that made them."""

from __future__ import annotations

from failatlas import _provenance


def _digest(monkeypatch, folder) -> str:
    monkeypatch.setattr(_provenance, "PACKAGE_DIR", folder)
    _provenance.source_sha256.cache_clear()
    try:
        return _provenance.source_sha256()
    finally:
        _provenance.source_sha256.cache_clear()


def test_the_source_digest_follows_the_package_files_only(tmp_path, monkeypatch):
    """The version string stayed 0.1.0 while the code changed; the digest changes with any module or the
    embedded data, wherever the package lies, and not with caches, shipped models or the native binary."""
    pkg = tmp_path / "a" / "failatlas"
    (pkg / "analysis").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "analysis" / "ranking.py").write_text("y = 2\n")
    first = _digest(monkeypatch, pkg)
    assert len(first) == 64
    for extra in ("__pycache__/ranking.cpython-311.pyc", "_models/mnist/config.json", "_C.so"):
        (pkg / extra).parent.mkdir(parents=True, exist_ok=True)
        (pkg / extra).write_text("anything")
    assert _digest(monkeypatch, pkg) == first
    copy = tmp_path / "b" / "failatlas"
    copy.mkdir(parents=True)
    (copy / "analysis").mkdir()
    (copy / "__init__.py").write_text("x = 1\n")
    (copy / "analysis" / "ranking.py").write_text("y = 2\n")
    assert _digest(monkeypatch, copy) == first
    (copy / "analysis" / "ranking.py").write_text("y = 3\n")
    assert _digest(monkeypatch, copy) != first
    (copy / "analysis" / "ranking.py").rename(copy / "ranking.py")  # the same bytes elsewhere: other code
    assert _digest(monkeypatch, copy) not in (first,)


def test_versions_name_the_libraries_of_the_figures():
    found = _provenance.versions()
    assert found["failatlas_source_sha256"] == _provenance.source_sha256()
    assert {"failatlas", "torch", "numpy", "python", "scikit-learn", "matplotlib", "onnxruntime"} <= set(found)
    assert found["matplotlib"]  # installed with failatlas


def test_the_native_digest_is_that_of_the_csrc_files_it_was_built_from():
    """The C++ sources compute results too (the separation's statistics, walks, corner searches): the native
    module carries the digest of the csrc/ it was built from, and versions() records it."""
    import hashlib
    from pathlib import Path

    csrc = Path(__file__).resolve().parents[1] / "csrc"
    files = sorted(p for p in csrc.rglob("*") if p.is_file())
    text = "".join(f"{p.relative_to(csrc.parent).as_posix()}\n{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
                   for p in files)
    assert _provenance.native_source_sha256() == hashlib.sha256(text.encode()).hexdigest()
    assert _provenance.versions()["failatlas_native_source_sha256"] == _provenance.native_source_sha256()
