"""What a result records of the code and libraries that made it.

``failatlas.__version__`` stays 0.1.0 while the code changes (populations of one seed changed with the
latent stream, for one), so every result also records :func:`source_sha256`: one digest of the package's
own files (its Python modules and the embedded data, paths relative to the package, so it does not depend
on where the package lies; only files a checkout and a wheel both hold, though the digest of an installed
wheel has not been compared with its checkout's), different as soon as one of those files differs; and
:func:`native_source_sha256`, the digest of the C++ sources the native module was built from (its kernels
compute the separation's statistics and drive the walks and corner searches). Compare both with what
``failatlas --version`` prints to know whether this installation is the code that wrote a run folder.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: the files the digest covers (the native module's binary is left out: compilers make other bytes of the
#: same source; the shipped models are recorded by their own sha256)
SOURCE_SUFFIXES = (".py", ".npz")
#: libraries whose version can change a figure or a file (t-SNE, PNGs, ONNX classifiers, exports)
LIBRARIES = ("scikit-learn", "matplotlib", "onnx", "onnxruntime", "safetensors")


@functools.lru_cache(maxsize=None)
def source_sha256() -> str:
    """sha256 over (relative path, sha256 of the content) of every .py and .npz file in the package, in
    path order (``__pycache__`` and the shipped models left out)."""
    digest = hashlib.sha256()
    files = sorted(p for p in PACKAGE_DIR.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES
                   and "__pycache__" not in p.parts and "_models" not in p.relative_to(PACKAGE_DIR).parts)
    for p in files:
        digest.update(p.relative_to(PACKAGE_DIR).as_posix().encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(p.read_bytes()).hexdigest().encode("ascii") + b"\n")
    return digest.hexdigest()


def native_source_sha256() -> str | None:
    """The digest of the C++ sources (``csrc/``) ``failatlas._C`` was built from, compiled into it: sha256
    over "relative path\\nsha256 of the file\\n" of every file, in path order (CMakeLists.txt computes it).
    None when the native module is not built."""
    from . import _ext
    from .errors import FailatlasError

    try:
        return str(_ext.load().source_sha256)
    except (FailatlasError, AttributeError):
        return None


def versions() -> dict[str, str | None]:
    """failatlas' version and source digest, python, torch, numpy and :data:`LIBRARIES` (None: not
    installed)."""
    import numpy as np
    import torch

    from . import __version__

    found: dict[str, str | None] = {"failatlas": __version__, "failatlas_source_sha256": source_sha256(),
                                    "failatlas_native_source_sha256": native_source_sha256(),
                                    "torch": torch.__version__, "numpy": np.__version__,
                                    "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
