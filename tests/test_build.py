"""Packaging and build: import without native code, clear errors, CUDA sources compile, wheel contents."""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from failatlas import _paths
from failatlas.errors import FailatlasError

REPO_ROOT = Path(__file__).resolve().parent.parent
CUDA_SOURCES = sorted(glob.glob(str(REPO_ROOT / "csrc" / "ops" / "cuda" / "*.cu")))
IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "csrc").is_dir()


def run_python(code: str, *, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )


def test_import_loads_and_compiles_nothing(tmp_path):
    # Any compiler or build tool that runs leaves a mark; none may run on import.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    mark = tmp_path / "compiled"
    for tool in ("cmake", "ninja", "make", "c++", "g++", "gcc", "cc", "nvcc"):
        script = fake_bin / tool
        script.write_text(f"#!/bin/sh\necho {tool} >> {mark}\nexit 1\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    code = (
        "import sys, failatlas, failatlas.ops, failatlas._paths\n"
        "assert 'failatlas._C' not in sys.modules, 'import failatlas loaded the native module'\n"
        "print('ok')\n"
    )
    result = run_python(code, env={"PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not mark.exists(), f"import ran a build tool: {mark.read_text()}"


def test_native_module_loads_from_any_directory(tmp_path):
    code = (
        "import failatlas._ext as e, torch\n"
        "m = e.load()\n"
        "assert m.__version__ == __import__('failatlas').__version__, m.__version__\n"
        "assert m.built_with_torch == torch.__version__\n"
        "assert isinstance(m.cuda_built(), bool)\n"
        "assert hasattr(torch.ops.failatlas, 'walk_styles')\n"
    )
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_missing_native_module_gives_the_fix():
    code = (
        "import sys, torch\n"
        "sys.modules['failatlas._C'] = None  # as if it had never been built\n"
        "from failatlas import _ext, FailatlasError\n"
        "from failatlas.ops import walk_styles\n"
        "args = (torch.zeros(2, 3), torch.tensor([1]), torch.tensor([1.0]), torch.ones(3), torch.ones(1))\n"
        "assert walk_styles(*args, backend='reference').shape == (2, 1, 1, 3)\n"
        "assert _ext.available() is False\n"
        "try:\n"
        "    walk_styles(*args)\n"
        "except FailatlasError as exc:\n"
        "    print(exc)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "failatlas._C is not built" in result.stdout
    assert "make install" in result.stdout and "pip install --no-build-isolation -e ." in result.stdout


def test_unloadable_native_module_gives_the_fix():
    code = (
        "import sys, importlib.abc, torch\n"
        "class Broken(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'failatlas._C':\n"
        "            raise ImportError('undefined symbol: _ZN3c10whatever')\n"
        "sys.meta_path.insert(0, Broken())\n"
        "from failatlas import _ext, FailatlasError\n"
        "try:\n"
        "    _ext.load()\n"
        "except FailatlasError as exc:\n"
        "    print(exc)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "cannot be loaded (undefined symbol" in result.stdout and "rebuild" in result.stdout


def test_native_module_built_for_another_torch_gives_the_fix():
    code = (
        "import torch\n"
        "torch.__version__ = '0.0.0'\n"
        "from failatlas import _ext, FailatlasError\n"
        "try:\n"
        "    _ext.load()\n"
        "except FailatlasError as exc:\n"
        "    print(exc)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "but torch 0.0.0 is installed: rebuild it" in result.stdout


@pytest.mark.skipif(not IN_CHECKOUT, reason="needs the source checkout")
def test_cmake_lists_every_native_source_sorted():
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    lists = {
        name: re.findall(r"^\s+(csrc/\S+)$", body, flags=re.M)
        for name, body in re.findall(r"set\((FAILATLAS_(?:CUDA_|RUNNER_|ENGINE_)?SOURCES)\n(.*?)\)", cmake, flags=re.S)
    }
    assert set(lists) == {"FAILATLAS_SOURCES", "FAILATLAS_CUDA_SOURCES", "FAILATLAS_RUNNER_SOURCES",
                          "FAILATLAS_ENGINE_SOURCES"}
    for name, files in lists.items():
        assert files == sorted(files), f"{name} is not sorted"
    on_disk = sorted(
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "csrc").rglob("*")
        if p.suffix in (".cpp", ".cu", ".cc")
    )
    assert sorted(sum(lists.values(), [])) == on_disk
    # CUDA kernels and their glue only in the CUDA list; the failatlas-eval runner (csrc/runner/) only in its own.
    assert all("/cuda/" in f for f in lists["FAILATLAS_CUDA_SOURCES"])
    assert not any("/cuda/" in f for f in lists["FAILATLAS_SOURCES"])
    assert all(f.startswith("csrc/runner/") for f in lists["FAILATLAS_RUNNER_SOURCES"])
    assert not any(f.startswith("csrc/runner/") for f in lists["FAILATLAS_SOURCES"] + lists["FAILATLAS_CUDA_SOURCES"])
    # the engine (libtorch only, linked into both _C and the runner) only in its own list.
    assert lists["FAILATLAS_ENGINE_SOURCES"] and all(f.startswith("csrc/engine/") for f in lists["FAILATLAS_ENGINE_SOURCES"])
    assert not any(f.startswith("csrc/engine/") for name, files in lists.items() if name != "FAILATLAS_ENGINE_SOURCES"
                   for f in files)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=[Path(s).name for s in CUDA_SOURCES])
def test_cuda_source_compiles(source, tmp_path):
    result = subprocess.run(
        ["nvcc", "-c", "-std=c++17", source, "-o", str(tmp_path / "kernel.o")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "kernel.o").stat().st_size > 0


def test_cuda_sources_include_no_torch_headers():
    # The CPU torch wheel's CUDA headers do not compile with nvcc: kernels take raw pointers.
    for source in CUDA_SOURCES:
        text = Path(source).read_text()
        assert not re.search(r"#include\s*[<\"](torch|ATen|c10)/", text), source


def test_console_script():
    script = Path(sys.executable).with_name("failatlas")
    assert script.exists(), "the failatlas console script is not installed"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("failatlas ")


@pytest.mark.skipif(not IN_CHECKOUT, reason="needs the source checkout")
def test_wheel_contents(tmp_path):
    # Shares build/<tag> with the editable install (pyproject build-dir), so this only relinks.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(tmp_path), "."],
        capture_output=True, text=True, timeout=900, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("failatlas-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(re.fullmatch(r"failatlas/_C\.[^/]*\.so", n) for n in names), sorted(names)
    # the C++ runner, as a script: pip puts it on PATH (<prefix>/bin)
    assert any(re.fullmatch(r"failatlas-[^/]*\.data/scripts/failatlas-eval", n) for n in names), sorted(names)
    assert {"failatlas/__init__.py", "failatlas/_ext.py", "failatlas/_paths.py", "failatlas/ops/walk_styles.py"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    package = REPO_ROOT / "python" / "failatlas"
    data = [p for ext in ("npz", "json", "safetensors") for p in package.rglob(f"*.{ext}")]
    for p in data:
        assert f"failatlas/{p.relative_to(package).as_posix()}" in names, p
    models = REPO_ROOT / "models"
    shipped = [p for p in models.rglob("*") if p.is_file()] if models.is_dir() else []
    for p in shipped:
        assert f"failatlas/_models/{p.relative_to(models).as_posix()}" in names, p
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    ).decode()
    assert "failatlas = failatlas.cli:main" in entry_points


# --- shipped models -------------------------------------------------------------------------------


@pytest.fixture
def model_roots(tmp_path, monkeypatch):
    installed, checkout = tmp_path / "installed", tmp_path / "checkout"
    monkeypatch.setattr(_paths, "INSTALLED_MODELS", installed)
    monkeypatch.setattr(_paths, "_roots", lambda: [installed, checkout])
    return installed, checkout


def _model(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_shipped_model_prefers_the_installed_copy(model_roots):
    installed, checkout = model_roots
    _model(checkout, "mnist/classifier-clean")
    assert _paths.shipped_model("mnist/classifier-clean") == checkout / "mnist/classifier-clean"
    _model(installed, "mnist/classifier-clean")
    assert _paths.shipped_model("mnist/classifier-clean") == installed / "mnist/classifier-clean"
    assert _paths.shipped_model("mnist/classifier-clean/config.json").is_file()


def test_shipped_model_missing_names_it_and_the_fix(model_roots):
    _model(model_roots[1], "mnist/classifier-clean")
    with pytest.raises(FailatlasError) as info:
        _paths.shipped_model("mnist/generator")
    message = str(info.value)
    assert "'mnist/generator' not found" in message
    assert "models available: mnist/classifier-clean" in message and "make install" in message
    for bad in ("../secrets", "/etc/passwd", ""):
        with pytest.raises(FailatlasError, match="must be relative to models/"):
            _paths.shipped_model(bad)


@pytest.mark.skipif(not IN_CHECKOUT, reason="needs the source checkout")
def test_editable_install_reads_the_checkout_models():
    import failatlas

    if Path(failatlas.__file__).resolve().parent != REPO_ROOT / "python" / "failatlas":
        pytest.skip("failatlas is not installed in editable mode from this checkout")
    assert _paths._roots() == [_paths.INSTALLED_MODELS, REPO_ROOT / "models"]
