"""failatlas: map where an image classifier fails.

Find the StyleSpace directions of a conditional StyleGAN2 along which a classifier's accuracy
collapses, the smallest shifts that flip its predictions, and its accuracy against corruption level.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import FailatlasError

__all__ = ["FailatlasError", "__version__", "load_classifier", "load_generator"]


def load_classifier(path):
    """Load a classifier saved by failatlas (a folder with ``config.json`` and ``model.safetensors``), or a
    shipped one by name (``"mnist/classifier-corrupted"``, ``"mnist/classifier-clean"``), in eval mode."""
    from ._paths import find_model
    from .models.classifier import load_classifier as _load

    return _load(find_model(path))


def load_generator(path):
    """Load a generator saved by failatlas (a folder with ``config.json`` and ``generator.safetensors``), or
    the shipped one by name (``"mnist/generator"``), in eval mode."""
    from ._paths import find_model
    from .models.stylegan2 import load_generator as _load

    return _load(find_model(path))
