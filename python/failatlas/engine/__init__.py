"""The fast engine (issue 5): walks with a prefix cache and ToRGB linearity (:mod:`.walks`) and the fused
s → synthesis → adapter → classifier → logits graph as TorchScript or torch.export (:mod:`.fused`)."""

from .fused import FusedModel, export_program, export_torchscript, load_fused
from .walks import WalkEngine, WalkResult, walk

__all__ = ["FusedModel", "WalkEngine", "WalkResult", "export_program", "export_torchscript", "load_fused", "walk"]
