"""Video data: decoding with PyAV (a self-contained wheel: no system FFmpeg), clip sampling, the training clip views
and the evaluation transform.

A `datasets` video column read with `decode(False)` yields `{"path", "bytes"}`. Every clip, for training or for
evaluation, goes through `read_clips`: it seeks to the keyframe before the first frame the clips need, decodes up to
the last one and converts only the needed frames to RGB.

A clip is `num_frames` (T) frames taken every `frame_stride` (tau) frames, so it spans
`clip_span(T, tau) = (T - 1) * tau + 1` frames of the video. A video shorter than one clip loops: frame i of a clip
is frame i mod length of the video, so every video gives clips of the same shape.
"""

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import av
import datasets
import kornia.augmentation as K
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from .stream import EXAMPLE_SEED
from .transforms import ViewAugmentation, collate_examples


def clip_span(num_frames: int, frame_stride: int) -> int:
    """Frames of the video a clip of `num_frames` frames at stride `frame_stride` covers."""
    if num_frames < 1 or frame_stride < 1:
        raise ValueError(f"num_frames and frame_stride must be >= 1, got {num_frames} and {frame_stride}")
    return (num_frames - 1) * frame_stride + 1


def uniform_clip_starts(total_num_frames: int, clip_span: int, num_clips: int) -> list[int]:
    """First frames of `num_clips` clips of `clip_span` frames spread evenly over the video (the usual
    multi-clip test protocol). A video shorter than one clip gives start 0 for every clip (frames then loop)."""
    last_start = max(total_num_frames - clip_span, 0)
    if num_clips == 1:
        return [last_start // 2]
    return [round(i * last_start / (num_clips - 1)) for i in range(num_clips)]


def sample_clip_starts(
    total_num_frames: int, clip_span: int, num_clips: int, max_distance: int | None, generator: np.random.Generator
) -> list[int]:
    """First frames of `num_clips` random clips of `clip_span` frames, all within `max_distance` frames of each other
    (`None`: anywhere in the video), the positives of Feichtenhofer et al. (2021).

    Without a limit (or a limit at least the video's range of starts) every start is uniform over the starts that
    keep the clip inside the video. With a limit, one start is uniform over them, a window of `max_distance + 1`
    starts that contains it is chosen uniformly among those inside the video, the other starts are uniform in that
    window, and the order is shuffled, so no clip is special. A video shorter than one clip gives start 0 for every
    clip (its frames then loop, see `read_clips`).
    """
    if total_num_frames < 1 or clip_span < 1 or num_clips < 1:
        raise ValueError(
            f"total_num_frames, clip_span and num_clips must be >= 1, got {total_num_frames}, {clip_span}, {num_clips}"
        )
    if max_distance is not None and max_distance < 0:
        raise ValueError(f"max_distance must be >= 0 or None, got {max_distance}")
    last_start = max(total_num_frames - clip_span, 0)
    if max_distance is None or max_distance >= last_start:
        return generator.integers(0, last_start + 1, num_clips).tolist()
    anchor = int(generator.integers(0, last_start + 1))
    low = int(generator.integers(max(0, anchor - max_distance), min(anchor, last_start - max_distance) + 1))
    others = generator.integers(low, low + max_distance + 1, num_clips - 1).tolist()
    return generator.permutation([anchor, *others]).tolist()


@contextmanager
def _video_stream(value: dict | bytes | str) -> Iterator[tuple[av.container.InputContainer, "av.VideoStream", str]]:
    """The open container, its first video stream and the video's name (its path, or `<bytes>`)."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    else:
        data, path = (value, None) if isinstance(value, bytes) else (None, value)
    name = path or "<bytes>"
    try:
        container = av.open(io.BytesIO(data) if data is not None else path)
    except (av.FFmpegError, OSError) as err:
        raise ValueError(f"cannot open video {name}: {err}") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"video {name} has no video stream")
        # No decoder threads (PyAV's default): DataLoader workers already decode several videos in parallel, and
        # for short, small videos starting the threads costs more than they save.
        yield container, container.streams.video[0], name


def _frame_index(frame: av.VideoFrame, stream: "av.VideoStream") -> int | None:
    """A frame's index from its timestamp at the average frame rate; None when that is not a whole index."""
    if frame.pts is None or not stream.average_rate:
        return None
    position = (frame.pts - (stream.start_time or 0)) * stream.time_base * stream.average_rate
    index = round(position)
    return index if index >= 0 and abs(position - index) < 0.1 else None


def _decode(
    container: av.container.InputContainer, stream: "av.VideoStream", name: str, wanted: set[int] | None, seek: bool
) -> dict[int, np.ndarray] | None:
    """RGB frames whose index is in `wanted` (every frame if None), decoding no further than the last of them.

    With `seek`, decoding starts at the keyframe at or before the first wanted frame (found by its timestamp at
    the average frame rate); frames are then counted from the index the first decoded frame's timestamp gives.
    Returns None when that index is not a whole frame or lies after the first wanted frame: the caller decodes
    from the start instead.
    """
    first, last = (min(wanted), max(wanted)) if wanted else (0, None)
    seeking = seek and first > 0 and bool(stream.average_rate and stream.time_base)
    frames: dict[int, np.ndarray] = {}
    index: int | None = 0
    # one reformatter keeps its conversion context across frames: `frame.to_ndarray(format=...)` builds a new one
    # per frame, which costs several times the decoding
    rgb = VideoReformatter()
    try:
        if seeking:
            timestamp = (stream.start_time or 0) + int(first / (stream.average_rate * stream.time_base))
            container.seek(timestamp, stream=stream)
        for frame in container.decode(stream):
            if seeking:
                seeking, index = False, _frame_index(frame, stream)
                if index is None or index > first:
                    return None
            if wanted is None or index in wanted:
                frames[index] = rgb.reformat(frame, format="rgb24").to_ndarray()
            index += 1
            if last is not None and index > last:
                break
    except (av.FFmpegError, ValueError) as err:
        raise ValueError(f"cannot decode video {name}: {err}") from None
    return frames


def _clip_indices(starts: Sequence[int], total_num_frames: int, num_frames: int, frame_stride: int) -> list[int]:
    return [(start + i * frame_stride) % total_num_frames for start in starts for i in range(num_frames)]


def _stack(frames: dict[int, np.ndarray], indices: list[int], num_frames: int) -> np.ndarray:
    clips = np.stack([frames[i] for i in indices])
    return clips.reshape(len(indices) // num_frames, num_frames, *clips.shape[1:])


def read_clips(
    value: dict | bytes | str,
    clip_starts: Callable[[int], Sequence[int]],
    num_frames: int,
    frame_stride: int,
    seek: bool = True,
) -> np.ndarray:
    """uint8 frames (clips, num_frames, H, W, 3) of the clips that `clip_starts(total_num_frames)` places in `value`
    (a `datasets` video cell `{"path", "bytes"}`, bytes or a path): the one decoder of training and evaluation.

    `clip_starts` gets the frame count the container declares. Decoding starts at the keyframe before the first
    frame the clips need (`seek=False`: at the start) and stops after the last; only needed frames are converted to
    RGB. When the container declares no count or the video ends early (a file cut between two frames, a wrong
    header), every frame is decoded and `clip_starts` is asked again with the real count: clips come from what is
    there. Frames loop in videos shorter than a clip. Raises `ValueError` naming the file when it cannot be decoded
    (a frame cut in the middle, garbage, no video stream).
    """
    with _video_stream(value) as (container, stream, name):
        declared = stream.frames or 0
        indices = _clip_indices(clip_starts(declared), declared, num_frames, frame_stride) if declared else []
        frames = _decode(container, stream, name, set(indices), seek) if declared else {}
    if frames is None:  # the seek went wrong: the same frames, decoded from the start
        with _video_stream(value) as (container, stream, name):
            frames = _decode(container, stream, name, set(indices), seek=False)
    if indices and len(frames) == len(set(indices)):
        return _stack(frames, indices, num_frames)
    with _video_stream(value) as (container, stream, name):
        frames = _decode(container, stream, name, None, seek=False)
    if not frames:
        raise ValueError(f"video {name} has no decodable frames")
    indices = _clip_indices(clip_starts(len(frames)), len(frames), num_frames, frame_stride)
    return _stack(frames, indices, num_frames)


def decode_clips(value: dict | bytes | str, num_clips: int, num_frames: int, frame_stride: int) -> np.ndarray:
    """uint8 frames (num_clips, num_frames, H, W, 3) of evenly spaced clips of `value` (`uniform_clip_starts`).

    A clip takes every `frame_stride`-th frame. Videos shorter than a clip loop (frame i is frame i mod length),
    so every video gives the same clip shape. Raises `ValueError` naming the file when it cannot be decoded.
    """
    span = clip_span(num_frames, frame_stride)

    def starts(total_num_frames: int) -> list[int]:
        return uniform_clip_starts(total_num_frames, span, num_clips)

    return read_clips(value, starts, num_frames, frame_stride)


def decode_video_example(example: dict, video_column: str, read: Callable[[dict | bytes | str], np.ndarray]) -> dict:
    """`example` plus its decoded `clips`; errors name the column or the sample."""
    if video_column not in example:
        raise KeyError(f"video_column={video_column!r} is not a column of the dataset; it has {sorted(example)}")
    try:
        clips = read(example[video_column])
    except ValueError as err:
        raise ValueError(f"sample id={example.get('id')}: {err}") from None
    return {**example, "clips": clips}


class ClipViewTransform:
    """Raw video examples -> `{"pixel_values": (views, B, T, C, S, S) or (B, T, C, S, S), "ids", "labels"}` for
    pre-training: `num_views` views of each video are its positives (Feichtenhofer et al., 2021). They come from
    `num_clips` random clips (rho; default one clip per view): with fewer clips than views, view v augments clip
    v mod num_clips, so rho=1 means differently augmented copies of one clip, the paper's baseline.

    Each clip is augmented as an image view (`augmentation`: random resized crop, flip, colour jitter, grayscale,
    blur, then ImageNet normalisation) with one set of parameters for all its frames, and its own set per clip.

    Reproducible like `MultiViewTransform`, so a resumed run replays the same batches: where the clips lie comes
    from the seed `BatchStream` gives each raw example (`EXAMPLE_SEED`, a function of the example's data position;
    the clips have to be chosen in `decode`, where a corrupt video can still be skipped), the augmentation from the
    batch seed.
    """

    def __init__(
        self,
        augmentation: ViewAugmentation,
        num_views: int = 1,
        video_column: str = "video",
        label_column: str | None = None,
        num_frames: int = 8,
        frame_stride: int = 2,
        max_distance: int | None = None,
        num_clips: int | None = None,
    ):
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.num_clips = num_views if num_clips is None else num_clips
        if not 1 <= self.num_clips <= num_views:
            raise ValueError(f"num_clips must be in [1, num_views={num_views}], got {num_clips}")
        if max_distance is not None and max_distance < 0:
            raise ValueError(f"max_clip_distance must be >= 0 or null, got {max_distance}")
        self.num_views, self.video_column, self.label_column = num_views, video_column, label_column
        self.num_frames, self.frame_stride, self.max_distance = num_frames, frame_stride, max_distance
        self.span = clip_span(num_frames, frame_stride)
        video = {"data_format": "BTCHW", "same_on_frame": True}
        self._crop = K.VideoSequential(augmentation.crop(), **video)
        # the image views' steps after the crop (flip, colour, blur, normalisation), one draw per clip
        self._pipeline = K.VideoSequential(*augmentation.pipeline().children(), **video)

    def decode(self, example: dict) -> dict:
        """Sample and decode one raw example's clips (positions from `example[EXAMPLE_SEED]`); raises `ValueError`
        naming the sample if its video is unreadable."""
        if EXAMPLE_SEED not in example:
            raise KeyError(f"{type(self).__name__}.decode needs the example's {EXAMPLE_SEED!r} (BatchStream sets it)")
        generator = np.random.default_rng(example[EXAMPLE_SEED])

        def starts(total_num_frames: int) -> list[int]:
            return sample_clip_starts(total_num_frames, self.span, self.num_clips, self.max_distance, generator)

        return decode_video_example(
            example, self.video_column, lambda value: read_clips(value, starts, self.num_frames, self.frame_stride)
        )

    def __call__(self, examples: Sequence[dict], seed: int) -> dict:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            views = [
                self._view([example["clips"][v % self.num_clips] for example in examples])
                for v in range(self.num_views)
            ]
        return collate_examples(
            torch.stack(views) if self.num_views > 1 else views[0], list(examples), self.label_column
        )

    def _view(self, clips: list[np.ndarray]) -> torch.Tensor:
        """(B, T, C, S, S) augmented clips from B uint8 (T, H, W, 3) clips."""
        clips = [torch.from_numpy(clip).permute(0, 3, 1, 2).float().div_(255) for clip in clips]
        if len({clip.shape for clip in clips}) == 1:
            crops = self._crop(torch.stack(clips))
        else:  # videos of different sizes are cropped one by one, then batched
            crops = torch.cat([self._crop(clip[None]) for clip in clips])
        return self._pipeline(crops)


def is_video_dataset(dataset: datasets.IterableDataset, video_column: str) -> bool:
    """Whether `video_column` is a `datasets.Video` column of `dataset`."""
    return dataset.features is not None and isinstance(dataset.features.get(video_column), datasets.Video)
