"""The processor for clips saved with a video checkpoint, beside its image processor.

transformers' video processors (`AutoVideoProcessor`) read `video_preprocessor_config.json`. They need torchvision,
which hf_ssl does not: the file is written from the image processor's settings rather than through a video
processor instance, so every install can write it and an install with torchvision can load it. Frame by frame it
is the image processor (resize the short side, centre crop, rescale, normalise), so a clip it processes is what
`hf-ssl evaluate` and the training loop's kNN read: the image processor applied to every frame.
"""

import json
import pathlib

VIDEO_PROCESSOR_FILE = "video_preprocessor_config.json"
# VideoMAE's processor: per-frame resize / centre crop / rescale / normalise, `pixel_values` of (B, T, C, H, W),
# the layout hf_ssl's 3D backbones take
VIDEO_PROCESSOR_TYPE = "VideoMAEVideoProcessor"


def video_processor_dict(image_processor, num_frames: int) -> dict:
    """The video processor's settings: the image processor's for each frame; clips of `num_frames` frames are chosen
    by the caller (`do_sample_frames` off: hf_ssl's clips take every `frame_stride`-th frame, not frames spread
    evenly over the video)."""
    settings = {k: v for k, v in image_processor.to_dict().items() if k != "image_processor_type"}
    settings["resample"] = int(settings["resample"])  # a PIL enum: its value is what the JSON holds
    return {
        **settings,
        "do_sample_frames": False,
        "num_frames": num_frames,
        "video_processor_type": VIDEO_PROCESSOR_TYPE,
    }


def save_video_processor(image_processor, num_frames: int, save_directory: str | pathlib.Path) -> pathlib.Path:
    """Write `video_preprocessor_config.json` (see `video_processor_dict`) into `save_directory`."""
    path = pathlib.Path(save_directory) / VIDEO_PROCESSOR_FILE
    path.write_text(json.dumps(video_processor_dict(image_processor, num_frames), indent=2, sort_keys=True) + "\n")
    return path
