"""Video decoding with PyAV (a self-contained wheel: no system FFmpeg) and evaluation clips.

A `datasets` video column read with `decode(False)` yields `{"path", "bytes"}`; only the frames the clips need are
kept, and decoding stops after the last of them.
"""

import io
from collections.abc import Sequence

import av
import numpy as np
import PIL.Image
import torch

from .transforms import _batch


def uniform_clip_starts(num_frames: int, clip_span: int, num_clips: int) -> list[int]:
    """First frames of `num_clips` clips of `clip_span` frames spread evenly over the video (the usual
    multi-clip test protocol). A video shorter than one clip gives start 0 for every clip (frames then loop)."""
    last_start = max(num_frames - clip_span, 0)
    if num_clips == 1:
        return [last_start // 2]
    return [round(i * last_start / (num_clips - 1)) for i in range(num_clips)]


def _open(value: dict | bytes | str) -> tuple[av.container.InputContainer, str]:
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    else:
        data, path = (value, None) if isinstance(value, bytes) else (None, value)
    name = path or "<bytes>"
    try:
        return av.open(io.BytesIO(data) if data is not None else path), name
    except (av.FFmpegError, OSError) as err:
        raise ValueError(f"cannot open video {name}: {err}") from None


def decode_clips(
    value: dict | bytes | str, num_clips: int, frames_per_clip: int, frame_stride: int
) -> np.ndarray:
    """uint8 frames (num_clips, frames_per_clip, H, W, 3) of evenly spaced clips of `value`.

    A clip takes every `frame_stride`-th frame. Videos shorter than a clip loop (frame i is frame i mod length),
    so every video gives the same clip shape. Raises `ValueError` naming the file when it cannot be decoded.
    """
    container, name = _open(value)
    span = (frames_per_clip - 1) * frame_stride + 1
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        declared = stream.frames or 0  # 0 when the container does not say: then decode to the end
        # decoding stops after the last frame the clips need (H.264 decodes sequentially up to it anyway)
        stop = uniform_clip_starts(declared, span, num_clips)[-1] + span if declared else None
        frames = []
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if stop is not None and len(frames) >= stop:
                    break
        except (av.FFmpegError, ValueError) as err:
            raise ValueError(f"cannot decode video {name}: {err}") from None
    if not frames:
        raise ValueError(f"video {name} has no decodable frames")
    # placed over the frames actually decoded: a truncated file gets its clips from what is there
    complete = stop is not None and len(frames) >= stop
    starts = uniform_clip_starts(declared if complete else len(frames), span, num_clips)
    indices = [(start + i * frame_stride) % len(frames) for start in starts for i in range(frames_per_clip)]
    return np.stack([frames[i] for i in indices]).reshape(num_clips, frames_per_clip, *frames[0].shape)


class VideoEvalTransform:
    """Raw video examples -> `{"pixel_values": (B, clips, T, C, H, W), "ids", "labels"}` (frames first within a
    clip, the layout of transformers' video models and hf_ssl's C3D / R3D).

    Frames go through the checkpoint's image processor (resize, centre crop, normalise: deterministic, so every
    frame of a clip gets the same crop), which is what makes feature extraction work from the checkpoint alone.
    """

    def __init__(
        self,
        image_processor,
        video_column: str = "video",
        label_column: str | None = None,
        num_clips: int = 4,
        frames_per_clip: int = 8,
        frame_stride: int = 2,
    ):
        self.image_processor, self.video_column, self.label_column = image_processor, video_column, label_column
        self.num_clips, self.frames_per_clip, self.frame_stride = num_clips, frames_per_clip, frame_stride

    def decode(self, example: dict) -> dict:
        """Decode one raw example's clips; raises `ValueError` naming the sample if its video is unreadable."""
        if self.video_column not in example:
            raise KeyError(f"video_column={self.video_column!r} is not a column of the dataset; it has {sorted(example)}")
        value = example[self.video_column]
        try:
            clips = decode_clips(value, self.num_clips, self.frames_per_clip, self.frame_stride)
        except ValueError as err:
            raise ValueError(f"sample id={example.get('id')}: {err}") from None
        return {**example, "clips": clips}

    def __call__(self, examples: Sequence[dict], seed: int = 0) -> dict:
        frames = [PIL.Image.fromarray(f) for example in examples for clip in example["clips"] for f in clip]
        pixels = self.image_processor(images=frames, return_tensors="pt")["pixel_values"]  # (B*clips*T, C, H, W)
        pixels = pixels.view(len(examples), self.num_clips, self.frames_per_clip, *pixels.shape[1:])
        return _batch(pixels, list(examples), self.label_column)


def average_over_clips(features: torch.Tensor, num_clips: int) -> torch.Tensor:
    """(B * clips, ...) clip features -> (B, ...) video features: the mean over each video's clips."""
    return features.view(-1, num_clips, *features.shape[1:]).mean(1)
