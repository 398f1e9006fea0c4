"""The training fast path's defaults: channels-last memory format where it was measured faster.

`bench/fast_path.py` times a training step of each backbone in both layouts (CPU time, 1 thread, the recipes'
shapes, three runs): transformers' ResNet runs 1.08-1.47x faster channels-last (the quickstart's 1.42-1.70x), hf_ssl's
AlexNet 1.01-1.09x; hf_ssl's VGG-16 does not gain (0.91-1.02x at 32 and 64 px), nor does a ViT, which has no
convolution past its patch embedding (0.98-1.05x: noise).
Video backbones take 5-D inputs, which `channels_last` does not apply to.

torch.compile is no default: on CPU it adds nothing to channels-last (`bench/fast_path.py --compile`: 1.68x against
channels-last's 1.70x on the quickstart ResNet) after minutes of compiling. Accelerate applies it where it pays
(`accelerate launch --dynamo_backend inductor`: the model is compiled in `prepare`).
"""

CHANNELS_LAST_CHOICES = ("auto", "true", "false")
# backbone model types measured faster channels-last (bench/fast_path.py)
CHANNELS_LAST_BACKBONES = frozenset({"resnet", "alexnet"})


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
