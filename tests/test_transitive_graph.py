"""The graph of transitive invariance (hf_ssl/transitive): the KCF tracker on synthetic motion with known ground
truth and on a target that vanishes."""

import numpy as np
import pytest

from hf_ssl.transitive import track

TARGET = 24


def texture(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Random blocks of `cell` pixels, softened: a texture a correlation filter can lock on."""
    blocks = np.kron(rng.random((height // cell + 2, width // cell + 2)), np.ones((cell, cell)))
    soft = (blocks[:-2, :-2] + blocks[1:-1, 1:-1] + blocks[2:, 2:] + blocks[:-2, 2:] + blocks[2:, :-2]) / 5
    return soft[:height, :width]


def moving_target(seed: int, frames: int = 30, size: int = 128, vanish_at: int | None = None):
    """Grayscale frames of a textured square moving along a known curve over a textured background, with noise;
    from `vanish_at` on the square is gone. Returns (frames, true centres (x, y))."""
    rng = np.random.default_rng(seed)
    background = 0.6 * texture(rng, size, size, 6)
    target = texture(rng, TARGET, TARGET, 3)
    path = np.array([(40 + 1.7 * t, 60 + 12 * np.sin(t / 6)) for t in range(frames)]).round()
    video = []
    for t, (x, y) in enumerate(path.astype(int)):
        frame = background.copy()
        if vanish_at is None or t < vanish_at:
            frame[y - TARGET // 2 : y + TARGET // 2, x - TARGET // 2 : x + TARGET // 2] = target
        video.append(frame + rng.normal(0, 0.02, frame.shape))
    return np.array(video), path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kcf_follows_a_target_on_a_known_path(seed):
    frames, truth = moving_target(seed)
    result = track(frames, truth[0], (TARGET, TARGET))
    error = np.linalg.norm(result.centers - truth, axis=1)
    assert error.mean() < 1.5 and error.max() < 3, error
    # the target moves 49 px in x: a tracker that stood still would be far off
    assert np.abs(truth[-1] - truth[0]).max() > 40
    assert result.min_psr > 10


def test_kcf_confidence_drops_when_the_target_vanishes():
    frames, truth = moving_target(3, vanish_at=15)
    result = track(frames, truth[0], (TARGET, TARGET))
    assert result.psr[1:15].min() > 10  # sure while the target is there
    assert result.psr[15] < 6 and result.min_psr < 6  # the detection right after it vanished is not
