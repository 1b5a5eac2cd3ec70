"""Data (DESIGN §1): the IDX reader (:mod:`.idx`), the embedded MNIST-10k and other datasets
(:mod:`.datasets`), the ImageNet-C style corruptions (:mod:`.corruptions`) and previews (:mod:`.preview`)."""

from __future__ import annotations

from .corruptions import Corruption, corrupt
from .datasets import ImageSet, load_dataset, make_imageset
from .idx import load_idx_folder, read_idx

__all__ = ["Corruption", "ImageSet", "corrupt", "load_dataset", "load_idx_folder", "make_imageset", "read_idx"]
