"""A kernelized correlation filter tracker (KCF, Henriques et al., "High-Speed Tracking with Kernelized Correlation
Filters", TPAMI 2015) on grayscale float frames, with numpy's FFT: the tracker Wang et al. (2017) run on moving
patches to get intra-instance edges.

The filter is ridge regression over every cyclic shift of a window around the target (the target size times
`1 + padding`), solved in the Fourier domain with a Gaussian kernel; the label is a Gaussian peaked at zero shift.
In each new frame the window at the previous position is correlated with the model, the response peak (refined to
sub-pixel by a parabola through its neighbours) gives the displacement, and the model is interpolated towards the
new window. Raw pixels, one scale (KCF's raw-pixel setting: kernel sigma 0.2, interpolation 0.075, padding 1.5).

The confidence of each detection is the response's peak-to-sidelobe ratio (PSR, Bolme et al. 2010): the peak's
height above the mean of the response outside an 11x11 area around it, in standard deviations of that area. A
target that is lost (occluded, vanished, left the frame) gives a flat response and a low PSR, so a track whose
lowest PSR falls below a threshold is rejected.
"""

from dataclasses import dataclass

import numpy as np

# Half-size of the area around the response peak that the PSR leaves out of the sidelobe (Bolme et al.: 11x11).
PSR_EXCLUSION = 5


@dataclass(frozen=True)
class KCFParameters:
    """KCF's settings for raw grayscale pixels (Henriques et al. 2015, Table 1 / their code's defaults)."""

    padding: float = 1.5  # the window is the target size times 1 + padding
    kernel_sigma: float = 0.2  # bandwidth of the Gaussian kernel
    output_sigma_factor: float = 0.1  # label bandwidth, as a fraction of the target size
    regularization: float = 1e-4  # lambda of the ridge regression
    interpolation: float = 0.075  # learning rate of the model update


@dataclass
class Track:
    """Where the target was in each frame and how sure the tracker was."""

    centers: np.ndarray  # (T, 2) float64 (x, y) target centres, frame 0 = the initial one
    psr: np.ndarray  # (T,) float64 peak-to-sidelobe ratio of each detection; inf for frame 0 (given, not detected)

    @property
    def min_psr(self) -> float:
        """The lowest confidence over the frames after the first (inf for a single-frame track)."""
        return float(self.psr[1:].min()) if len(self.psr) > 1 else float("inf")


def _hann(height: int, width: int) -> np.ndarray:
    return np.outer(np.hanning(height), np.hanning(width))


def _gaussian_label(height: int, width: int, sigma: float) -> np.ndarray:
    """A Gaussian of bandwidth `sigma` peaked at (0, 0) with cyclic wrap-around: the regression target."""
    rows = np.arange(height) - height // 2
    cols = np.arange(width) - width // 2
    label = np.exp(-0.5 * (rows[:, None] ** 2 + cols[None, :] ** 2) / sigma**2)
    return np.roll(label, (-(height // 2), -(width // 2)), axis=(0, 1))


def _window(frame: np.ndarray, center: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The `size` (h, w) pixels of `frame` centred on `center` (x, y); outside the frame, edge pixels repeat."""
    height, width = size
    top = int(round(center[1])) - height // 2
    left = int(round(center[0])) - width // 2
    rows = np.clip(np.arange(top, top + height), 0, frame.shape[0] - 1)
    cols = np.clip(np.arange(left, left + width), 0, frame.shape[1] - 1)
    return frame[np.ix_(rows, cols)]


def _subpixel(left: float, peak: float, right: float) -> float:
    """Offset of a parabola's vertex through three samples, in [-0.5, 0.5]."""
    denominator = left - 2 * peak + right
    return 0.0 if denominator >= 0 else float(np.clip(0.5 * (left - right) / denominator, -0.5, 0.5))


def peak_to_sidelobe_ratio(response: np.ndarray, peak: tuple[int, int]) -> float:
    """(peak - mean) / std of `response` outside the (2 * PSR_EXCLUSION + 1)^2 area around `peak` (cyclically)."""
    height, width = response.shape
    mask = np.ones_like(response, dtype=bool)
    rows = np.arange(peak[0] - PSR_EXCLUSION, peak[0] + PSR_EXCLUSION + 1) % height
    cols = np.arange(peak[1] - PSR_EXCLUSION, peak[1] + PSR_EXCLUSION + 1) % width
    mask[np.ix_(rows, cols)] = False
    sidelobe = response[mask]
    return float((response[peak] - sidelobe.mean()) / max(sidelobe.std(), 1e-12))


class KCFTracker:
    """One target followed through grayscale float frames (H, W): `KCFTracker(frame, center, target_size)`, then
    `update(frame)` per following frame, which returns the new centre (x, y) and the detection's PSR."""

    def __init__(
        self,
        frame: np.ndarray,
        center: tuple[float, float],
        target_size: tuple[int, int],
        parameters: KCFParameters = KCFParameters(),
    ):
        if frame.ndim != 2:
            raise ValueError(f"KCF tracks grayscale frames (H, W), got shape {frame.shape}")
        self.parameters = parameters
        self.center = np.asarray(center, dtype=np.float64)
        target_height, target_width = target_size
        self.window_size = (
            int(target_height * (1 + parameters.padding)),
            int(target_width * (1 + parameters.padding)),
        )
        self.cosine = _hann(*self.window_size)
        sigma = np.sqrt(target_height * target_width) * parameters.output_sigma_factor
        self.label_f = np.fft.fft2(_gaussian_label(*self.window_size, sigma))
        x = self._features(frame)
        self.model_x_f = np.fft.fft2(x)
        self.model_alpha_f = self._train(self.model_x_f)

    def _features(self, frame: np.ndarray) -> np.ndarray:
        # zero-mean pixels under the Hann window: the window's edges, where cyclic shifts wrap, weigh nothing
        window = _window(frame, self.center, self.window_size)
        return (window - window.mean()) * self.cosine

    def _kernel_correlation(self, x_f: np.ndarray, z_f: np.ndarray) -> np.ndarray:
        """Fourier transform of the Gaussian kernel between x and every cyclic shift of z (both in Fourier form)."""
        n = x_f.size
        xx = np.vdot(x_f, x_f).real / n  # Parseval: squared norms from the transforms
        zz = np.vdot(z_f, z_f).real / n
        xz = np.fft.ifft2(np.conj(x_f) * z_f).real
        distances = np.maximum(xx + zz - 2 * xz, 0) / n
        return np.fft.fft2(np.exp(-distances / self.parameters.kernel_sigma**2))

    def _train(self, x_f: np.ndarray) -> np.ndarray:
        return self.label_f / (self._kernel_correlation(x_f, x_f) + self.parameters.regularization)

    def update(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """Detect the target in `frame` around the last centre, move there, update the model; (centre, PSR)."""
        z_f = np.fft.fft2(self._features(frame))
        response = np.fft.ifft2(self.model_alpha_f * self._kernel_correlation(self.model_x_f, z_f)).real
        row, col = np.unravel_index(int(np.argmax(response)), response.shape)
        psr = peak_to_sidelobe_ratio(response, (row, col))
        height, width = response.shape
        dy = row + _subpixel(response[row - 1, col], response[row, col], response[(row + 1) % height, col])
        dx = col + _subpixel(response[row, col - 1], response[row, col], response[row, (col + 1) % width])
        # shifts past half the window wrap around to negative displacements
        dy = dy - height if dy > height / 2 else dy
        dx = dx - width if dx > width / 2 else dx
        self.center = self.center + (dx, dy)
        x_f = np.fft.fft2(self._features(frame))
        rate = self.parameters.interpolation
        self.model_alpha_f = (1 - rate) * self.model_alpha_f + rate * self._train(x_f)
        self.model_x_f = (1 - rate) * self.model_x_f + rate * x_f
        return self.center.copy(), psr


def track(
    frames: np.ndarray,
    center: tuple[float, float],
    target_size: tuple[int, int],
    parameters: KCFParameters = KCFParameters(),
) -> Track:
    """Follow the target of `target_size` (h, w) at `center` (x, y) of frame 0 through `frames` (T, H, W) float."""
    if frames.ndim != 3 or len(frames) < 1:
        raise ValueError(f"track needs grayscale frames (T, H, W) with T >= 1, got shape {frames.shape}")
    tracker = KCFTracker(frames[0], center, target_size, parameters)
    centers, psr = [tracker.center.copy()], [np.inf]
    for frame in frames[1:]:
        position, confidence = tracker.update(frame)
        centers.append(position)
        psr.append(confidence)
    return Track(centers=np.array(centers), psr=np.array(psr))


def to_gray(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB frames (..., H, W, 3) -> float64 luma (..., H, W) in [0, 1] (ITU-R BT.601 weights)."""
    return frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
