"""ResNet backbones in plain torch with torchvision's layer and parameter names (torchvision is not needed), so
ImageNet weights saved from torchvision (``torchvision.models.resnet50(weights=...).state_dict()``) load as is.
The classifier is left out: the backbone ends with global average pooling (512-d for ResNet-18/34, 2048-d for 50).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError

#: Block type and blocks per stage of each architecture (He et al. 2016).
ARCHITECTURES = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride here, as torchvision's 'ResNet v1.5') → 1×1 with 4× expansion."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """A ResNet trunk: stem, four stages, global average pooling → ``feature_dim``-d features."""

    def __init__(self, architecture: str = "resnet50") -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise InputError(f"backbone must be one of {sorted(ARCHITECTURES)}, got '{architecture}'")
        kind, depths = ARCHITECTURES[architecture]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.architecture = architecture
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = 64
        for stage, (channels, depth) in enumerate(zip((64, 128, 256, 512), depths), start=1):
            stride = 1 if stage == 1 else 2
            blocks = []
            for index in range(depth):
                downsample = None
                if index == 0 and (stride != 1 or in_channels != channels * block.expansion):
                    downsample = nn.Sequential(nn.Conv2d(in_channels, channels * block.expansion, 1, stride, bias=False),
                                               nn.BatchNorm2d(channels * block.expansion))
                blocks.append(block(in_channels, channels, stride if index == 0 else 1, downsample))
                in_channels = channels * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def load_weights(model: ResNet, path: str | Path) -> None:
    """Load a torchvision-layout state dict (optionally wrapped in 'state_dict'/'model', keys optionally
    prefixed 'module.'); the classifier ('fc.*') is ignored. Mismatches are reported by name."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"backbone weights file '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle / zip errors: the file is not a torch state dict
        raise InputError(f"could not read backbone weights from '{path}': {error}") from error
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise InputError(f"'{path}' does not hold a state dict (a mapping of parameter names to tensors)")
    state = {key.removeprefix("module."): value for key, value in state.items() if not key.startswith(("fc.", "module.fc."))}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        details = "; ".join(f"{label}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}"
                            for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                ("wrong shape", wrong_shape)) if keys)
        raise InputError(f"'{path}' does not match a torchvision {model.architecture} ({details}); pass weights "
                         f"of that architecture or choose the matching backbone")
    model.load_state_dict(state)


def build_backbone(architecture: str = "resnet50", weights: str | Path | None = None) -> ResNet:
    """A backbone with ImageNet weights from ``weights`` (torchvision layout) or, without a file, random ones."""
    model = ResNet(architecture)
    if weights is not None:
        load_weights(model, weights)
    else:
        warnings.warn(f"no weights file for {architecture}: the backbone starts from random weights, so image "
                      "features will be weak; pass weights= a torchvision ImageNet state dict (e.g. saved from "
                      f"torchvision.models.{architecture}(weights='IMAGENET1K_V1').state_dict())",
                      UserWarning, stacklevel=2)
    return model
