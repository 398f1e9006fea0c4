"""A checkpoint's image processor run on batches of decoded uint8 tensors, on any device.

transformers' own batched processors (the torchvision backend) need torchvision, which hf_ssl does not install, and
its PIL backend goes image by image through NumPy. `TensorImageProcessor` reads the processor's fields (size,
crop_size, resample, rescale, normalize) and does the same steps with torch: resize per group of equal-size
images, centre crop, then rescale and normalise the whole batch. The sizes and crop offsets come from transformers'
own functions; the resize is torch's antialiased interpolation, PIL's algorithm: on real images 99.6 % of the
values equal the PIL processor's and the rest differ by 1-3 levels of 255 (tests/test_eval_batched.py).
"""

import functools
from collections.abc import Sequence

import torch
from transformers import BaseImageProcessor
from transformers.image_processing_backends import PilBackend, TorchvisionBackend
from transformers.image_transforms import (
    get_resize_output_image_size,
    group_images_by_shape,
    reorder_images,
)
from transformers.image_utils import ChannelDimension, PILImageResampling, SizeDict

# PIL resampling filters that torch's antialiased interpolation reproduces (the others fall back to the processor)
MODES = {PILImageResampling.BILINEAR: "bilinear", PILImageResampling.BICUBIC: "bicubic"}
# the steps a processor must take unchanged from its backend for the tensor version to be the same computation
STEPS = ("preprocess", "_preprocess_image_like_inputs", "_preprocess", "resize", "center_crop", "rescale", "normalize")


class TensorImageProcessor:
    """Resize (antialiased), centre crop, rescale and normalise uint8 (3, H, W) images as in `image_processor`.

    Build it with `from_image_processor`, which returns None for a processor whose steps it cannot reproduce
    (another resampling filter, padding, a model-specific `_preprocess`, a crop that can exceed the resized image).
    """

    def __init__(
        self,
        size: SizeDict | None,
        resample: str,
        crop_size: SizeDict | None,
        rescale_factor: float | None,
        image_mean: Sequence[float] | None,
        image_std: Sequence[float] | None,
    ):
        self.size, self.resample, self.crop_size = size, resample, crop_size
        # rescale and normalise of the 256 uint8 levels, in the PIL backend's arithmetic (a float64 rescale cast to
        # float32, a float32 normalisation), looked up per channel: the same values as the processor's, bit for bit
        levels = torch.arange(256, dtype=torch.float64)
        levels = (levels * rescale_factor if rescale_factor is not None else levels).float().expand(3, 256)
        if image_mean is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(-1, 1) for v in (image_mean, image_std))
            levels = (levels - mean) / std
        self.levels = levels.contiguous()

    @classmethod
    def from_image_processor(cls, image_processor) -> "TensorImageProcessor | None":
        """The tensor version of `image_processor` (a transformers image processor, or a `functools.partial` of
        one with call-time settings such as `crop_size`), None when it does anything else."""
        overrides = {}
        if isinstance(image_processor, functools.partial) and not image_processor.args:
            overrides, image_processor = dict(image_processor.keywords), image_processor.func
        if not isinstance(image_processor, BaseImageProcessor):
            return None
        backend = next((b for b in (PilBackend, TorchvisionBackend) if isinstance(image_processor, b)), None)
        if backend is None or any(getattr(type(image_processor), s) is not getattr(backend, s) for s in STEPS):
            return None
        names = ("size", "crop_size", "default_to_square", "image_mean", "image_std", "resample", "do_pad")
        names += ("do_resize", "do_center_crop", "do_rescale", "rescale_factor", "do_normalize")
        settings = {name: overrides.pop(name, getattr(image_processor, name, None)) for name in names}
        if overrides:  # a call-time setting this class does not read
            return None
        settings = image_processor._standardize_kwargs(**settings)  # the processor's own reading of its fields
        size, crop = settings["size"], settings["crop_size"]
        resample = settings["resample"] if settings["resample"] is not None else PILImageResampling.BILINEAR
        if settings["do_pad"] or (settings["do_resize"] and MODES.get(resample) is None):
            return None
        if settings["do_resize"] and not (size.shortest_edge or (size.height and size.width)):
            return None  # max_height / max_width: not read here
        if settings["do_center_crop"]:
            # the crop must fit every resized image: the backends pad otherwise
            smallest = (size.shortest_edge,) * 2 if size.shortest_edge else (size.height, size.width)
            if not settings["do_resize"] or size.longest_edge or crop.height > smallest[0] or crop.width > smallest[1]:
                return None
        normalize = settings["do_normalize"]
        return cls(
            size if settings["do_resize"] else None,
            MODES.get(resample, "bilinear"),
            crop if settings["do_center_crop"] else None,
            settings["rescale_factor"] if settings["do_rescale"] else None,
            settings["image_mean"] if normalize else None,
            settings["image_std"] if normalize else None,
        )

    def __call__(self, images: Sequence[torch.Tensor], device: torch.device | str | None = None) -> torch.Tensor:
        """uint8 (3, H, W) images of any sizes -> float32 `pixel_values` (B, 3, h, w) on `device` (theirs if None)."""
        groups, index = group_images_by_shape(list(images), disable_grouping=False)
        resized = {shape: self.resize_crop(group.to(device, non_blocking=True)) for shape, group in groups.items()}
        pixels = torch.stack(reorder_images(resized, index)).long()
        channels = torch.arange(3, device=pixels.device).view(1, 3, 1, 1)
        return self.levels.to(pixels.device).flatten()[pixels + 256 * channels]

    def resize_crop(self, images: torch.Tensor) -> torch.Tensor:
        """Resize and centre crop a uint8 batch (N, 3, H, W) of equal-size images; uint8 out."""
        height, width = images.shape[-2:]
        if self.size is not None:
            if self.size.shortest_edge:
                new = get_resize_output_image_size(
                    images[0],
                    size=self.size.shortest_edge,
                    default_to_square=False,
                    input_data_format=ChannelDimension.FIRST,
                )
            else:
                new = (self.size.height, self.size.width)
            images = self.resize(images, tuple(new))
            height, width = images.shape[-2:]
        if self.crop_size is not None:  # the backends' offsets: (image - crop) // 2
            top, left = (height - self.crop_size.height) // 2, (width - self.crop_size.width) // 2
            images = images[..., top : top + self.crop_size.height, left : left + self.crop_size.width]
        return images

    def resize(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """PIL's antialiased resize of a uint8 batch: on CPU torch's uint8 kernel (written to match PIL's), on other
        devices `resize_in_passes` (no uint8 antialiased kernel there)."""
        if tuple(images.shape[-2:]) == size:
            return images  # PIL copies an image resized to its own size
        if images.device.type == "cpu":
            return torch.nn.functional.interpolate(images, size=size, mode=self.resample, antialias=True)
        return self.resize_in_passes(images, size)

    def resize_in_passes(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The two passes PIL makes (width, then height) in float, each rounded and clipped to uint8 as PIL does:
        without the rounding between the passes, bicubic overshoot moves pixels by up to 9 levels."""
        out = images.float()
        for step in ((images.shape[-2], size[1]), size):
            if tuple(out.shape[-2:]) != step:
                out = torch.nn.functional.interpolate(out, size=step, mode=self.resample, antialias=True)
                out = out.round_().clamp_(0, 255)
        return out.to(torch.uint8)


__all__ = ["TensorImageProcessor"]
