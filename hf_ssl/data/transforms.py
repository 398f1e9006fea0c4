"""Decoding and augmentation, on tensors, without torchvision.

Training views use kornia's batched augmentations (the SimCLR / MoCo-v2 / NPID recipe: random resized crop,
flip, colour jitter, grayscale, blur), with the crop's resize and the colour jitter computed for the whole batch at
once (`ResizedCrop`, `ColorJitter`): the per-batch cost of the data workers is what streamed training waits on. Evaluation uses the checkpoint's own image processor, so the features a
user gets from `AutoImageProcessor` + `AutoModel` are the ones the reported numbers were measured on.
"""

import io
from dataclasses import dataclass

import kornia.augmentation as K
import numpy as np
import PIL.Image
import torch
from kornia.color import rgb_to_grayscale
from transformers import BitImageProcessorPil

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_image(value: dict | bytes | PIL.Image.Image) -> torch.Tensor:
    """Decode an image cell of a `datasets` Image column (raw `{"bytes", "path"}`) into a uint8 (3, H, W) tensor.

    Raises `ValueError` naming the file for anything PIL cannot read, so the stream can skip and count it.
    """
    if isinstance(value, PIL.Image.Image):
        image = value
    else:
        data, path = (value.get("bytes"), value.get("path")) if isinstance(value, dict) else (value, None)
        try:
            image = PIL.Image.open(io.BytesIO(data) if data is not None else path)
            image.load()
        except Exception as err:  # PIL raises many types for truncated / corrupt files
            raise ValueError(f"cannot decode image {path or '<bytes>'}: {err}") from None
    array = np.array(image if image.mode == "RGB" else image.convert("RGB"))  # one writable copy
    return torch.from_numpy(array).permute(2, 0, 1)


def decode_image_example(example: dict, image_column: str) -> dict:
    """`example` plus its decoded `image_tensor`; errors name the column or the sample."""
    if image_column not in example:
        raise KeyError(f"image_column={image_column!r} is not a column of the dataset; it has {sorted(example)}")
    value = example[image_column]
    try:
        return {**example, "image_tensor": decode_image(value)}
    except ValueError as err:
        path = value.get("path") if isinstance(value, dict) else None
        raise ValueError(f"sample id={example.get('id')}{f' ({path})' if path else ''}: {err}") from None


def collate_examples(pixel_values: torch.Tensor, examples: list[dict], label_column: str | None) -> dict:
    """The batch of `examples` given their `pixel_values`: with their `ids` and, unless `label_column` is None,
    their `labels` (a KeyError names a missing label column)."""
    batch = {"pixel_values": pixel_values, "ids": torch.tensor([e["id"] for e in examples], dtype=torch.long)}
    if label_column is not None:
        if label_column not in examples[0]:
            raise KeyError(
                f"label_column={label_column!r} is not a column of the dataset; it has {sorted(examples[0])}"
            )
        batch["labels"] = torch.tensor([e[label_column] for e in examples], dtype=torch.long)
    return batch


def shift_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """torchvision's (and kornia's) hue jitter of (N, 3, H, W) images in [0, 1]: the HSV hue moved by `turns` (N,)
    of a full turn, saturation and value kept. Computed without the HSV image: each channel is
    max - chroma * clamp(min(k, 4 - k), 0, 1), k = (n + 6 hue) mod 6, n = 5, 3, 1 for red, green, blue."""
    high, low = images.amax(dim=1), images.amin(dim=1)
    chroma = high - low
    safe = torch.where(chroma == 0, torch.ones_like(chroma), chroma)  # grey pixels: any hue gives the grey
    r, g, b = images.unbind(dim=1)
    # the sextant of the first maximal channel, as in rgb_to_hsv
    hue = torch.where((r >= g) & (r >= b), (g - b) / safe, torch.where(g >= b, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = (hue + 6 * turns.view(-1, 1, 1)) % 6
    k = (torch.tensor([5.0, 3.0, 1.0], dtype=images.dtype, device=images.device).view(1, 3, 1, 1) + hue[:, None]) % 6
    return high[:, None] - chroma[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)


class ColorJitter(K.ColorJitter):
    """kornia's ColorJitter (torchvision's brightness, contrast, saturation and hue), with the order of the four
    adjustments drawn for each image, as torchvision's ColorJitter in the papers' official code does; kornia draws
    one order per batch. Video frames share their clip's order and factors (kornia repeats per-clip parameters).

    Computed for the whole batch at once: brightness, contrast and saturation are each a blend
    x * f + reference * (1 - f) (reference black, the image's mean grey, its grey), so at each of the four
    positions every image blends with the reference of its own step; only the images whose step is hue take the
    hue shift. The result equals kornia's adjustments applied image by image in each image's order."""

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        params = super().generate_parameters(batch_shape)
        # one permutation of the 4 steps per image; not under kornia's own "order" key, which VideoSequential
        # leaves unrepeated over a clip's frames
        params["step_order"] = torch.rand(batch_shape[0], 4).argsort(dim=1)
        return params

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict, transform=None):
        keys = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
        brightness, contrast, saturation, hue = (params[key].to(input.device, input.dtype) for key in keys)
        order = params["step_order"].to(input.device)
        output = input.clamp(0, 1)
        for position in range(order.shape[1]):
            step = order[:, position]
            factor = torch.where(
                step == 0, brightness, torch.where(step == 1, contrast, torch.where(step == 2, saturation, 1.0))
            ).view(-1, 1, 1, 1)
            grey = rgb_to_grayscale(output)
            reference = torch.where(
                (step == 2).view(-1, 1, 1, 1),
                grey,
                torch.where((step == 1).view(-1, 1, 1, 1), grey.mean((-2, -1), keepdim=True), 0.0),
            )
            blended = torch.lerp(reference, output, factor).clamp_(0, 1)  # hue images (factor 1) are replaced
            rows = ((step == 3) & (hue != 0)).nonzero().flatten()
            if len(rows):
                blended[rows] = shift_hue(output[rows], hue[rows]).clamp(0, 1)
            output = blended
        return output


class ResizedCrop(K.RandomResizedCrop):
    """kornia's RandomResizedCrop (its crop boxes, bilinear resize), resampled for the whole batch in one
    `grid_sample`; kornia resizes crop after crop, one `interpolate` call each. With `align_corners=False` (what
    `ViewAugmentation` uses) the geometry is torchvision's on PIL images, the official code's: output pixel i
    samples the crop at (i + 0.5) * side / size - 0.5, clamped to the crop (PIL's bilinear, when enlarging; PIL
    also smooths when shrinking, which neither does); with `True`, kornia's default, the crop's first and last pixel
    centres map to the output's, a slightly tighter crop (by one pixel of the crop on each axis)."""

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict, transform=None):
        if flags["cropping_mode"] != "slice" or flags["resample"].name != "BILINEAR":
            return super().apply_transform(input, params, flags, transform)
        box = params["src"].to(input.device).long().to(input.dtype)  # inclusive pixel corners, as kornia's slices
        (height, width), (rows, columns) = flags["size"], input.shape[-2:]
        corners = flags["align_corners"]

        def samples(start: torch.Tensor, stop: torch.Tensor, count: int, side: int) -> torch.Tensor:
            """Input pixel coordinates of the `count` output pixels over [start, stop], normalised as grid_sample's
            (align_corners=True: -1 and 1 are the first and last pixel centres of the input)."""
            steps = torch.arange(count, device=input.device, dtype=input.dtype)
            if corners:  # interpolate(align_corners=True) over the crop
                position = start[:, None] + (stop - start)[:, None] * steps / max(count - 1, 1)
            else:  # interpolate(align_corners=False) over the crop: half-pixel centres, clamped to the crop
                scale = (stop - start + 1)[:, None] / count
                position = (start[:, None] + (steps + 0.5) * scale - 0.5).clamp(start[:, None], stop[:, None])
            return position * (2 / (side - 1)) - 1 if side > 1 else torch.zeros_like(position)

        x = samples(box[:, 0, 0], box[:, 1, 0], width, columns)
        y = samples(box[:, 0, 1], box[:, 3, 1], height, rows)
        grid = torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=-1)
        return torch.nn.functional.grid_sample(input, grid, mode="bilinear", padding_mode="border", align_corners=True)


@dataclass
class ViewAugmentation:
    """Parameters of one augmented view (defaults: the MoCo-v2 recipe without blur).

    `scale` bounds the crop's area fraction, `jitter` is (brightness, contrast, saturation, hue) applied with
    probability `jitter_p` (NPID's code: (0.4, 0.4, 0.4, 0.4), always). Colour jitter, grayscale and blur run in
    that order after the crop, as in MoCo v2 and SlowFast's video SSL augmentation.
    """

    size: int = 224
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.size}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        for name in ("hflip_p", "jitter_p", "grayscale_p", "blur_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.jitter[3] <= 0.5:
            raise ValueError(f"hue jitter must be in [0, 0.5], got {self.jitter[3]}")

    def crop(self) -> K.RandomResizedCrop:
        return ResizedCrop((self.size, self.size), scale=self.scale, ratio=self.ratio, align_corners=False)

    def pipeline(self) -> torch.nn.Sequential:
        """Everything after the crop, batched over same-size crops (a plain Sequential: kornia's
        AugmentationSequential tracks transform matrices for boxes and masks, a few ms per batch for nothing here)."""
        steps: list[torch.nn.Module] = [
            K.RandomHorizontalFlip(p=self.hflip_p),
            ColorJitter(*self.jitter, p=self.jitter_p),
            K.RandomGrayscale(p=self.grayscale_p),
        ]
        if self.blur_p > 0:
            kernel = 2 * (self.size // 20) + 1  # ~10% of the image side, odd, as in SimCLR
            steps.append(K.RandomGaussianBlur((kernel, kernel), self.blur_sigma, p=self.blur_p))
        steps.append(K.Normalize(mean=torch.tensor(self.mean), std=torch.tensor(self.std)))
        return torch.nn.Sequential(*steps)


class MultiViewTransform:
    """Raw examples -> `{"pixel_values": (views, B, 3, S, S) or (B, 3, S, S), "ids", "labels"}`.

    Multi-crop (SwAV, Caron et al. 2020 sec. 3.2): with `num_small_crops` > 0 the batch also holds
    `small_pixel_values` (num_small_crops, B, 3, s, s), crops of `small_augmentation` (its size and scale).

    With `augment_on_device=True` the workers only decode and crop (same-size crops in [0, 1]) and add the
    batch's `augmentation_seed`; the training loop then calls `augment` on the accelerator, where the batched
    colour and blur operations are much faster than in CPU workers.

    Views of several columns: with `view_columns` (one image column per view, e.g. a pair dataset's `image_a`,
    `image_b`), view v is an augmentation of column v's image instead of the `image_column`'s, and with
    `view_id_columns` the batch holds `view_ids` (views, B), an id per view (the pair's patch ids).

    Randomness comes from the `seed` the stream passes (a function of the data position), so a batch is the same
    on every replay, in particular after a resume with the same number of processes and workers.
    """

    def __init__(
        self,
        augmentation: ViewAugmentation,
        num_views: int = 1,
        image_column: str = "image",
        label_column: str | None = None,
        augment_on_device: bool = False,
        num_small_crops: int = 0,
        small_augmentation: ViewAugmentation | None = None,
        view_columns: list[str] | None = None,
        view_id_columns: list[str] | None = None,
    ):
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        for name, columns in (("view_columns", view_columns), ("view_id_columns", view_id_columns)):
            if columns is not None and len(columns) != num_views:
                raise ValueError(f"{name} must name one column per view ({num_views}), got {list(columns)}")
        if num_small_crops < 0 or (num_small_crops and small_augmentation is None):
            raise ValueError(f"num_small_crops must be >= 0 and needs small_augmentation, got {num_small_crops}")
        self.augmentation, self.num_views, self.augment_on_device = augmentation, num_views, augment_on_device
        self.image_column, self.label_column = image_column, label_column
        self.view_columns, self.view_id_columns = view_columns, view_id_columns
        self._crop, self._pipeline = augmentation.crop(), augmentation.pipeline()
        self.num_small_crops = num_small_crops
        self._small = (small_augmentation.crop(), small_augmentation.pipeline()) if num_small_crops else None

    def decode(self, example: dict) -> dict:
        """Decode one raw example; raises `ValueError` naming it if its image is corrupt."""
        if self.view_columns is None:
            return decode_image_example(example, self.image_column)
        return {
            **example,
            "view_tensors": [decode_image_example(example, c)["image_tensor"] for c in self.view_columns],
        }

    def __call__(self, examples: list[dict], seed: int) -> dict:
        if self.view_columns is None:
            images = [_as_batch([example["image_tensor"] for example in examples])] * self.num_views
        else:
            images = [_as_batch([example["view_tensors"][v] for example in examples]) for v in range(self.num_views)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            views = [self._view(view_images) for view_images in images]
            small = [self._view(images[0], small=True) for _ in range(self.num_small_crops)]
        batch = collate_examples(torch.stack(views) if self.num_views > 1 else views[0], examples, self.label_column)
        if self.view_id_columns is not None:
            batch["view_ids"] = torch.tensor(
                [[_column(e, c, "view_id_columns") for e in examples] for c in self.view_id_columns]
            )
        if small:
            batch["small_pixel_values"] = torch.stack(small)
        if self.augment_on_device:
            batch["augmentation_seed"] = seed
        return batch

    def _view(self, images: torch.Tensor | list[torch.Tensor], small: bool = False) -> torch.Tensor:
        crop, pipeline = self._small if small else (self._crop, self._pipeline)
        if isinstance(images, torch.Tensor):
            crops = crop(images)
        else:  # images of different sizes are cropped one by one, then batched
            crops = torch.cat([crop(image[None]) for image in images])
        return crops if self.augment_on_device else pipeline(crops)

    def augment(self, crops: torch.Tensor, seed: int, small: bool = False) -> torch.Tensor:
        """The post-crop augmentation of a batch of crops on their own device (see `augment_on_device`); `small`:
        the batch's `small_pixel_values`."""
        pipeline = (self._small[1] if small else self._pipeline).to(crops.device)
        # the device RNG is forked and seeded too, so the training RNG does not move (exact resume)
        devices = [crops.device.index or 0] if crops.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            # the small crops draw their own colours, not those of the global views (ints hash alike in every process)
            torch.manual_seed(hash((seed, 1)) & 0x7FFF_FFFF if small else seed)
            if small or self.num_views > 1:
                return torch.stack([pipeline(view) for view in crops])
            return pipeline(crops)


def _as_batch(tensors: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """uint8 images as floats in [0, 1]: one batch when they have the same size (cropped as one), else a list."""
    if len({tensor.shape for tensor in tensors}) == 1:
        return torch.stack(tensors).float().div_(255)
    return [tensor.float().div_(255) for tensor in tensors]


def _column(example: dict, column: str, field: str):
    """`example[column]`; a KeyError names the recipe field that named the column."""
    if column not in example:
        raise KeyError(f"{field}: {column!r} is not a column of the dataset; it has {sorted(example)}")
    return example[column]


def make_image_processor(image_size: int, resize_size: int | None = None) -> BitImageProcessorPil:
    """The evaluation preprocessing saved with every checkpoint: resize the short side, centre crop, normalise.

    Saved as `BitImageProcessor` (the processor DINOv2 uses), so `AutoImageProcessor` loads it with or without
    torchvision.
    """
    resize_size = resize_size or (image_size if image_size <= 64 else round(image_size / 0.875))
    return BitImageProcessorPil(
        size={"shortest_edge": resize_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )
