"""The fast engine (issue 5): walks with a prefix cache and ToRGB linearity (:mod:`.walks`), the fused
s → synthesis → adapter → classifier → logits graph as TorchScript or torch.export (:mod:`.fused`), and the
C++ engine that evaluates a fused TorchScript graph in chunks with reused buffers (:mod:`.native`)."""

from .fused import FusedModel, export_program, export_torchscript, load_fused
from .native import NativeEngine
from .walks import WalkEngine, WalkResult, walk

__all__ = ["FusedModel", "NativeEngine", "WalkEngine", "WalkResult", "export_program", "export_torchscript", "load_fused", "walk"]
