"""Backbones: a 1-D ResNet for ECG and DenseNet-121 with the paper's added stem for chest X-rays."""

from .densenet import StemDenseNet
from .resnet1d import ResNet1d

__all__ = ["ResNet1d", "StemDenseNet"]
