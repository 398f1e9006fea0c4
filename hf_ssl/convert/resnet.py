"""torchvision's ResNet layout (`conv1`, `bn1`, `layer1.0.conv1`, ..., `downsample.0/1`, `fc`) -> transformers'
`ResNetModel`, one to one: torchvision's v1.5 bottleneck strides in its 3x3 conv, as transformers' default
(`downsample_in_bottleneck=False`). The architecture (depths, widths, basic or bottleneck blocks) is read from the
tensors, so ResNet-18/34/50/101/152 and wider variants (SwAV's ResNet-50w2) all convert."""

import re

from transformers import ResNetConfig

from .common import StateDict, take

_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.(conv|bn)(\d+)\.(.+)")
_SHORTCUT = re.compile(r"layer(\d+)\.(\d+)\.downsample\.([01])\.(.+)")
_STEM = {"conv1.": "embedder.embedder.convolution.", "bn1.": "embedder.embedder.normalization."}


def resnet_from_torchvision(state_dict: StateDict, source: str) -> tuple[ResNetConfig, StateDict]:
    """Take the trunk's tensors out of `state_dict` (what is left: `fc` and any heads) and return the transformers
    config and the weights in `ResNetModel`'s names."""
    if "conv1.weight" not in state_dict:
        raise ValueError(f"{source}: no 'conv1.weight': not a torchvision ResNet layout")
    weights = {}
    for old, new in _STEM.items():
        weights.update({new + key: value for key, value in take(state_dict, old).items()})
    depths: dict[int, int] = {}
    bottleneck = False
    for key in [key for key in state_dict if key.startswith("layer")]:
        value = state_dict.pop(key)
        if block := _BLOCK.fullmatch(key):
            stage, index, kind, number, rest = block.groups()
            part = "convolution" if kind == "conv" else "normalization"
            new = f"encoder.stages.{int(stage) - 1}.layers.{index}.layer.{int(number) - 1}.{part}.{rest}"
            bottleneck |= number == "3"
        elif shortcut := _SHORTCUT.fullmatch(key):
            stage, index, part, rest = shortcut.groups()
            part = "convolution" if part == "0" else "normalization"
            new = f"encoder.stages.{int(stage) - 1}.layers.{index}.shortcut.{part}.{rest}"
        else:
            raise ValueError(f"{source}: unknown ResNet key {key!r}")
        depths[int(stage)] = max(depths.get(int(stage), 0), int(index) + 1)
        weights[new] = value
    stages = sorted(depths)
    if stages != list(range(1, len(stages) + 1)):
        raise ValueError(f"{source}: ResNet stages {stages} are not layer1 ... layerN")
    last_conv = "conv3" if bottleneck else "conv2"
    hidden_sizes = [int(weights[_new_name(s, last_conv)].shape[0]) for s in stages]
    config = ResNetConfig(
        num_channels=int(weights["embedder.embedder.convolution.weight"].shape[1]),
        embedding_size=int(weights["embedder.embedder.convolution.weight"].shape[0]),
        hidden_sizes=hidden_sizes,
        depths=[depths[s] for s in stages],
        layer_type="bottleneck" if bottleneck else "basic",
    )
    return config, weights


def _new_name(stage: int, conv: str) -> str:
    """transformers' name of the first block's `conv` weight in torchvision's `layer<stage>`."""
    return f"encoder.stages.{stage - 1}.layers.0.layer.{int(conv[-1]) - 1}.convolution.weight"
