"""DenseNet-121 for ChestX-ray14 as in the paper: torchvision's DenseNet with two added 3x3 stride-2
convolutions ahead of it (so a 1024x1024 image enters DenseNet at 256x256), single-channel input.

Mix points: the paper mixes at "the input of the third and fifth ResBlock and Denseblock". DenseNet-121 has
only four dense blocks, so "the fifth dense block" does not exist. Our reading, kept as a config value
(``regularizer.mix_points``): count the feature stages after the stem in forward order -- denseblock1,
transition1, denseblock2, transition2, denseblock3, ... -- so the 3rd and 5th are the inputs of
``features.denseblock2`` and ``features.denseblock3``. Both sit inside the feature extractor at about the same
relative depths as the 3rd and 5th of ResNet-34's 16 blocks would in a 4-stage network. Other readings are one
override away (e.g. ``regularizer.mix_points=[features.denseblock3,classifier]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchvision.models import DenseNet


class StemDenseNet(nn.Module):
    """``stem`` (two 3x3 stride-2 conv + BN + ReLU) -> torchvision DenseNet ``features`` -> ``classifier``.

    Submodule names follow torchvision (``features.denseblock1`` ... ``classifier``) with ``stem`` in front.
    ``pretrained_path``: a local torchvision ``densenet121`` state dict (ImageNet); never downloaded. Its first
    convolution's RGB weights are summed into one input channel.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        stem_channels: int = 16,
        stem_convs: int = 2,
        pretrained_path: str | None = None,
        memory_efficient: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for _ in range(stem_convs):
            layers += [nn.Conv2d(ch, stem_channels, 3, 2, 1, bias=False), nn.BatchNorm2d(stem_channels), nn.ReLU(True)]
            ch = stem_channels
        self.stem = nn.Sequential(*layers)
        net = DenseNet(
            growth_rate=growth_rate,
            block_config=tuple(block_config),
            num_init_features=num_init_features,
            num_classes=num_classes,
            memory_efficient=memory_efficient,
        )
        if pretrained_path:
            self._load_imagenet(net, Path(pretrained_path))
        old = net.features.conv0
        net.features.conv0 = nn.Conv2d(ch, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
        if pretrained_path:
            with torch.no_grad():
                w = old.weight.sum(dim=1, keepdim=True)
                net.features.conv0.weight.copy_(w.repeat(1, ch, 1, 1) / ch)
        self.features = net.features
        self.classifier = net.classifier

    @staticmethod
    def _load_imagenet(net: DenseNet, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"backbone.pretrained_path: no file at {path} (weights are never downloaded)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        # torchvision's old checkpoints name dense layers "norm.1"; current modules expect "norm1"
        import re

        pattern = re.compile(
            r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
        )
        fixed = {}
        for key, value in state.items():
            m = pattern.match(key)
            fixed[m.group(1) + m.group(2) if m else key] = value
        fixed = {k: v for k, v in fixed.items() if not k.startswith("classifier.")}
        missing, unexpected = net.load_state_dict(fixed, strict=False)
        if unexpected or [k for k in missing if not k.startswith("classifier.")]:
            raise ValueError(
                f"{path}: not a torchvision DenseNet state dict (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )

    def paper_mix_points(self) -> list[str]:
        return ["features.denseblock2", "features.denseblock3"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.features(self.stem(x)))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(f, 1), 1))
