"""Intra-instance edges from videos: moving patches in a video's first frame, tracked with KCF.

Wang et al. (2017) find moving object proposals in a video and track each for about 30 frames; the first and the
last patch of a track are one object instance seen under a change of pose, viewpoint or scale. Here a proposal is a
square patch of the first frame that both moves (mean absolute difference between the first frame and the last
frame of the track, inside the patch) and has texture (grey-level standard deviation, which KCF needs to lock on);
the best of them, apart from each other, are tracked. A track is kept when the tracker stayed confident in every
frame (lowest peak-to-sidelobe ratio above a threshold) and its last patch lies inside the frame.
"""

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.video import read_clips
from .tracker import to_gray, track


@dataclass
class VideoTrack:
    """A kept track: its first and last patch (uint8 (P, P, 3)) and how it went."""

    first_patch: np.ndarray
    last_patch: np.ndarray
    min_psr: float
    displacement: float  # pixels between the first and the last centre


def list_videos(root: str | Path, split: str) -> list[tuple[Path, str]]:
    """(path, class name) of every `<root>/<split>/<class>/*.mp4` (the videofolder layout), sorted."""
    videos = sorted((Path(root) / split).glob("*/*.mp4"))
    return [(path, path.parent.name) for path in videos]


def read_frames(path: str | Path, max_frames: int) -> np.ndarray:
    """The first `max_frames` frames of a video (fewer if it is shorter), uint8 (T, H, W, 3)."""
    length = []

    def first_clip(total_num_frames: int) -> list[int]:
        length.append(total_num_frames)
        return [0]

    frames = read_clips(str(path), first_clip, max_frames, 1)[0]
    return frames[: min(max_frames, length[-1])]  # read_clips loops a video shorter than the clip


def _box_means(image: np.ndarray, size: int) -> np.ndarray:
    """Mean of `image` (H, W) over every size x size window: (H - size + 1, W - size + 1), from an integral image."""
    integral = np.pad(image, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    return sums / size**2


def moving_patches(
    first: np.ndarray,
    later: np.ndarray,
    patch_size: int,
    num_patches: int,
    min_motion: float = 0.02,
    min_texture: float = 0.04,
) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of up to `num_patches` patches of the grey frame `first` (H, W, floats in [0, 1])
    that move and have texture: the mean |first - later| inside the patch is at least `min_motion`, its grey-level
    standard deviation at least `min_texture`. The highest motion x texture come first, each at least half a patch
    (in x or y) from those chosen before."""
    motion = _box_means(np.abs(first - later), patch_size)
    mean = _box_means(first, patch_size)
    texture = np.sqrt(np.maximum(_box_means(first**2, patch_size) - mean**2, 0))
    score = np.where((motion >= min_motion) & (texture >= min_texture), motion * texture, 0.0)
    chosen: list[tuple[int, int]] = []
    for flat in np.argsort(score, axis=None)[::-1]:
        y, x = np.unravel_index(flat, score.shape)
        if score[y, x] <= 0 or len(chosen) == num_patches:
            break
        if all(max(abs(x - cx), abs(y - cy)) >= patch_size // 2 for cx, cy in chosen):
            chosen.append((int(x), int(y)))
    return chosen


def track_patches(
    frames: np.ndarray,
    patch_size: int,
    num_patches: int,
    min_psr: float,
) -> tuple[list[VideoTrack], Counter]:
    """Moving patches of `frames[0]` (uint8 (T, H, W, 3)) tracked through all the frames: the kept tracks and
    counts of what happened to every proposal (`kept`, `low_confidence`, `left_frame`)."""
    gray = to_gray(frames)
    height, width = gray.shape[1:]
    outcomes: Counter = Counter()
    kept = []
    if min(height, width) < patch_size or len(frames) < 2:
        return kept, outcomes
    half = patch_size / 2
    for x, y in moving_patches(gray[0], gray[-1], patch_size, num_patches):
        # the patch's centre is (x + half, y + half) in the pixel-centre convention of the tracker's window
        result = track(gray, (x + half, y + half), (patch_size, patch_size))
        left, top = (int(round(v - half)) for v in result.centers[-1])
        if result.min_psr < min_psr:
            outcomes["low_confidence"] += 1
        elif not (0 <= left <= width - patch_size and 0 <= top <= height - patch_size):
            outcomes["left_frame"] += 1
        else:
            outcomes["kept"] += 1
            kept.append(
                VideoTrack(
                    first_patch=frames[0, y : y + patch_size, x : x + patch_size],
                    last_patch=frames[-1, top : top + patch_size, left : left + patch_size],
                    min_psr=result.min_psr,
                    displacement=float(np.linalg.norm(result.centers[-1] - result.centers[0])),
                )
            )
    return kept, outcomes
