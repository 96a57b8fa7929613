"""Flow-Mixup (Chen et al., BIBM 2020) and its baselines for multi-label classification with corrupted labels.

from flowmixup import FlowMixup
reg = FlowMixup(model, mix_points=["layer1.2", "layer2.1"], alpha=3.0, keep_original=False)
logits, targets = reg(x, y)          # training mode: all flows stacked along the batch dimension
loss = F.binary_cross_entropy_with_logits(logits, targets)
"""

from .regularizers import ERM, FlowMixup, ManifoldMixup, Mixup, Regularizer, RegularizerError

__version__ = "0.1.0"
__all__ = ["ERM", "Mixup", "ManifoldMixup", "FlowMixup", "Regularizer", "RegularizerError", "__version__"]
