"""The training fast path's defaults: channels-last memory format where it was measured faster.

`bench/fast_path.py` times a training step of each backbone in both layouts. The 2-D convnets (transformers'
ResNet, hf_ssl's AlexNet and VGG) run faster channels-last on CPU (oneDNN) and on GPU (cuDNN, tensor cores); a ViT
has no convolution past its patch embedding, and video backbones take 5-D inputs, which `channels_last` does not
apply to.
"""

CHANNELS_LAST_CHOICES = ("auto", "true", "false")
# backbone model types measured faster channels-last (bench/fast_path.py)
CHANNELS_LAST_BACKBONES = frozenset({"resnet", "alexnet", "vgg"})


def resolve_channels_last(setting: str, backbone_type: str | None, video: bool) -> bool:
    """Whether a run uses channels-last: `setting` "true" / "false" as given, "auto" for the image backbones in
    `CHANNELS_LAST_BACKBONES`. An explicit "true" on video raises: the layout is for 2-D convolutions."""
    if setting not in CHANNELS_LAST_CHOICES:
        raise ValueError(f"channels_last must be one of {CHANNELS_LAST_CHOICES}, got {setting!r}")
    if setting == "auto":
        return not video and backbone_type in CHANNELS_LAST_BACKBONES
    if setting == "true" and video:
        raise ValueError("channels_last is for image models (2-D convolutions): set it to false or auto for video")
    return setting == "true"
