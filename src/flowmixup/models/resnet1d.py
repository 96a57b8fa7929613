"""A 1-D ResNet for multi-lead signals, laid out like torchvision's ResNet (``conv1, bn1, relu, maxpool,
layer1..layer4, avgpool, fc``), so residual blocks are named ``layer1.0``, ``layer1.1``, ...

The paper's ECG classifier is ResNet-34 (blocks 3-4-6-3) with its 3x3 kernels replaced by 1-D kernels of size 3.
``ResNet1d.paper_mix_points()`` gives the inputs of the 3rd and 5th residual blocks, where the paper mixes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class BasicBlock1d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, kernel_size: int):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(in_ch, out_ch, kernel_size, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm1d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv1d(out_ch, out_ch, kernel_size, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm1d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv1d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm1d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet1d(nn.Module):
    """``ResNet1d(in_channels, num_classes, blocks=(3, 4, 6, 3), width=64, kernel_size=3, stem_kernel=7)``.

    ``blocks`` gives the residual blocks per stage (its length is the number of stages, each after the first
    halving the length and doubling the width); ``width`` is the first stage's channel count.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        blocks: Sequence[int] = (3, 4, 6, 3),
        width: int = 64,
        kernel_size: int = 3,
        stem_kernel: int = 7,
        stem_stride: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        if not blocks or any(int(b) < 1 for b in blocks):
            raise ValueError(f"backbone.blocks must be a non-empty list of positive ints, got {list(blocks)}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"backbone.kernel_size must be odd and positive, got {kernel_size}")
        self.conv1 = nn.Conv1d(in_channels, width, stem_kernel, stem_stride, stem_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool1d(3, 2, 1)
        ch = width
        for i, n in enumerate(blocks):
            out_ch = width * 2**i
            stage = [BasicBlock1d(ch, out_ch, 1 if i == 0 else 2, kernel_size)]
            stage += [BasicBlock1d(out_ch, out_ch, 1, kernel_size) for _ in range(int(n) - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            ch = out_ch
        self.n_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each block: each block starts as the identity
            if isinstance(m, BasicBlock1d):
                nn.init.zeros_(m.bn2.weight)

    def block_names(self) -> list[str]:
        """Names of the residual blocks in forward order (``layer1.0``, ``layer1.1``, ...)."""
        return [f"layer{i + 1}.{j}" for i in range(self.n_stages) for j in range(len(getattr(self, f"layer{i + 1}")))]

    def paper_mix_points(self) -> list[str]:
        """The inputs of the 3rd and 5th residual blocks (paper, section V-B)."""
        names = self.block_names()
        if len(names) < 5:
            raise ValueError(f"the paper's mix points need at least 5 residual blocks, this model has {len(names)}")
        return [names[2], names[4]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
