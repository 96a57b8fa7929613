"""Backbones: the paper's layouts, their default mix points, and loading local ImageNet weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

from flowmixup.models import ResNet1d, StemDenseNet


def test_resnet34_1d_layout_and_paper_mix_points():
    model = ResNet1d(8, 12)  # the paper's ECG classifier
    blocks = model.block_names()
    assert len(blocks) == 3 + 4 + 6 + 3
    assert model.paper_mix_points() == ["layer1.2", "layer2.1"]  # inputs of the 3rd and 5th residual blocks
    convs = [
        m
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Conv1d) and n.startswith("layer") and "downsample" not in n
    ]
    assert {c.kernel_size for c in convs} == {(3,)}
    assert model(torch.randn(2, 8, 5000)).shape == (2, 12)


def test_resnet_needs_five_blocks_for_paper_points():
    with pytest.raises(ValueError, match="at least 5 residual blocks"):
        ResNet1d(8, 3, blocks=(1, 1, 1, 1)).paper_mix_points()


def test_densenet121_stem_halves_twice_and_takes_one_channel():
    model = StemDenseNet(1, 14)
    strides = [m.stride for m in model.stem if isinstance(m, torch.nn.Conv2d)]
    assert strides == [(2, 2), (2, 2)]
    assert (
        sum(
            b.num_layers if hasattr(b, "num_layers") else len(b)
            for n, b in model.features.named_children()
            if n.startswith("denseblock")
        )
        == 6 + 12 + 24 + 16
    )
    assert model.paper_mix_points() == ["features.denseblock2", "features.denseblock3"]
    assert model.eval()(torch.randn(1, 1, 128, 128)).shape == (1, 14)


def test_densenet_loads_local_imagenet_weights(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.densenet121()
    path = tmp_path / "densenet121.pth"
    torch.save(reference.state_dict(), path)
    model = StemDenseNet(1, 14, pretrained_path=str(path))
    ref = reference.features.state_dict()
    ours = model.features.state_dict()
    for key in ("denseblock3.denselayer5.conv1.weight", "norm5.running_var", "transition2.conv.weight"):
        assert torch.equal(ours[key], ref[key])
    # the RGB first convolution becomes one channel fed by the stem's 16: the summed RGB filter spread evenly
    expected = reference.features.conv0.weight.sum(1, keepdim=True).repeat(1, 16, 1, 1) / 16
    assert torch.allclose(ours["conv0.weight"], expected)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        StemDenseNet(1, 14, pretrained_path=str(tmp_path / "missing.pth"))
