"""Reference modules written from the official architectures (plain torch, the official parameter names), for
tests/test_convert.py: a checkpoint saved from them has the official key layout. torchvision is not installed, so
its ResNet is written out here (torchvision/models/resnet.py's structure and names)."""

import torch
from torch import nn


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride in the 3x3 conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = _downsample(inplanes, planes * 4, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = _downsample(inplanes, planes, stride)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Module | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), nn.BatchNorm2d(outplanes))


class ResNet(nn.Module):
    """torchvision's ResNet (`conv1`, `bn1`, `layer1-4`, `fc`) at width `width` (64 in torchvision). `swav_stem`:
    SwAV's variant, a 1-pixel zero pad then conv1 with padding 2."""

    def __init__(self, block=Bottleneck, layers=(1, 1, 1, 1), width=8, fc: nn.Module | None = None, swav_stem=False):
        super().__init__()
        self.padding = nn.ConstantPad2d(1, 0.0) if swav_stem else nn.Identity()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=2 if swav_stem else 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = width
        for i, depth in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(depth):
                blocks.append(block(inplanes, planes, stride=2 if i and not j else 1))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = inplanes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        if fc is not None:
            self.fc = fc

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.padding(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class SwAVResNet(ResNet):
    """facebookresearch/swav src/resnet50.py: `projection_head` (Linear, BatchNorm1d, ReLU, Linear), L2 norm,
    `prototypes`."""

    def __init__(self, hidden=16, dim=8, prototypes=12, **kwargs):
        super().__init__(swav_stem=True, **kwargs)
        self.projection_head = nn.Sequential(
            nn.Linear(self.num_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, dim)
        )
        self.prototypes = nn.Linear(dim, prototypes, bias=False)

    def forward(self, x):
        z = nn.functional.normalize(self.projection_head(self.features(x)), dim=1)
        return z, self.prototypes(z)


class MoCo(nn.Module):
    """facebookresearch/moco moco/builder.py: `encoder_q`, `encoder_k` (ResNets whose fc is the MLP of v2 with
    `mlp`, one linear layer in v1), `queue` (dim, K) and `queue_ptr` buffers."""

    def __init__(self, dim=8, hidden=16, K=32, mlp=True, **kwargs):
        super().__init__()
        for name in ("encoder_q", "encoder_k"):
            encoder = ResNet(**kwargs)
            encoder.fc = nn.Linear(encoder.num_features, dim)
            if mlp:
                encoder.fc = nn.Sequential(nn.Linear(encoder.num_features, hidden), nn.ReLU(), nn.Linear(hidden, dim))
            setattr(self, name, encoder)
        self.register_buffer("queue", nn.functional.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


class DeepClusterAlexNet(nn.Module):
    """facebookresearch/deepcluster models/alexnet.py: `sobel` (fixed grayscale + Sobel convs), `features`
    (CFG['2012'] with BatchNorm), `classifier` (dropout, fc6, ReLU, dropout, fc7, ReLU), `top_layer`."""

    def __init__(self, channels=(8, 16, 16, 16, 16), fc=32, num_clusters=10):
        super().__init__()
        grayscale = nn.Conv2d(3, 1, 1)
        grayscale.weight.data.fill_(1.0 / 3.0)
        grayscale.bias.data.zero_()
        sobel = nn.Conv2d(1, 2, 3, padding=1)
        sobel.weight.data[0, 0].copy_(torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]))
        sobel.weight.data[1, 0].copy_(torch.tensor([[1.0, 2, 1], [0, 0, 0], [-1, -2, -1]]))
        sobel.bias.data.zero_()
        self.sobel = nn.Sequential(grayscale, sobel)
        cfg = [(channels[0], 11, 4, 2), "M", (channels[1], 5, 1, 2), "M"]
        cfg += [(channels[2], 3, 1, 1), (channels[3], 3, 1, 1), (channels[4], 3, 1, 1), "M"]
        layers, in_channels = [], 2
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(3, stride=2))
            else:
                layers += [
                    nn.Conv2d(in_channels, v[0], v[1], stride=v[2], padding=v[3]),
                    nn.BatchNorm2d(v[0]),
                    nn.ReLU(),
                ]
                in_channels = v[0]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(in_channels * 36, fc), nn.ReLU(), nn.Dropout(0.5), nn.Linear(fc, fc), nn.ReLU()
        )
        self.top_layer = nn.Linear(fc, num_clusters)

    def forward(self, x):
        x = self.features(self.sobel(x))
        x = self.classifier(x.view(x.size(0), -1))  # the official view(x.size(0), 256 * 6 * 6)
        return x, self.top_layer(x)


class C3D(nn.Module):
    """DavideA/c3d-pytorch C3D_model.py (the c3d.pickle layout), at a width of `c` channels instead of 64."""

    def __init__(self, c=4, fc=32, num_classes=487):
        super().__init__()
        conv = lambda i, o: nn.Conv3d(i, o, 3, padding=1)  # noqa: E731
        self.conv1, self.conv2 = conv(3, c), conv(c, 2 * c)
        self.conv3a, self.conv3b = conv(2 * c, 4 * c), conv(4 * c, 4 * c)
        self.conv4a, self.conv4b = conv(4 * c, 8 * c), conv(8 * c, 8 * c)
        self.conv5a, self.conv5b = conv(8 * c, 8 * c), conv(8 * c, 8 * c)
        self.pool1 = nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2))
        self.pool = nn.MaxPool3d(2, stride=2)
        self.pool5 = nn.MaxPool3d(2, stride=2, padding=(0, 1, 1))
        self.fc6, self.fc7, self.fc8 = nn.Linear(8 * c * 16, fc), nn.Linear(fc, fc), nn.Linear(fc, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x):
        """`x` (batch, 3, 16, 112, 112) -> fc7 after its ReLU (eval: dropout is the identity) and fc8's logits."""
        h = self.pool1(self.relu(self.conv1(x)))
        h = self.pool(self.relu(self.conv2(h)))
        h = self.pool(self.relu(self.conv3b(self.relu(self.conv3a(h)))))
        h = self.pool(self.relu(self.conv4b(self.relu(self.conv4a(h)))))
        h = self.pool5(self.relu(self.conv5b(self.relu(self.conv5a(h)))))
        h = self.relu(self.fc7(self.relu(self.fc6(h.flatten(1)))))
        return h, self.fc8(h)


@torch.no_grad()
def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, BatchNorm statistics included (a checkpoint's are never the identity), in eval
    mode. The fixed Sobel convs keep their values."""
    torch.manual_seed(seed)
    for name, tensor in module.state_dict().items():
        if name.startswith("sobel.") or not tensor.is_floating_point():
            continue
        if name.endswith("running_var"):
            tensor.uniform_(0.5, 1.5)
        elif name.endswith(("running_mean", "bias")):
            tensor.normal_(0.0, 0.1)
        elif tensor.dim() == 1:  # BatchNorm weights
            tensor.uniform_(0.5, 1.5)
        else:
            fan_in = tensor[0].numel()
            tensor.normal_(0.0, (2.0 / fan_in) ** 0.5)
    return module.eval()


def data_parallel(state_dict: dict, prefix: str = "module.") -> dict:
    """Keys as `nn.DataParallel` saves them."""
    return {prefix + key: value for key, value in state_dict.items()}
