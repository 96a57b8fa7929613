"""The four regularizers of the paper's comparison, usable on any PyTorch model."""

from .base import INPUT, Regularizer, RegularizerError, mix
from .erm import ERM
from .flowmixup import FlowMixup
from .manifold_mixup import ManifoldMixup
from .mixup import Mixup

__all__ = ["ERM", "Mixup", "ManifoldMixup", "FlowMixup", "Regularizer", "RegularizerError", "INPUT", "mix"]
