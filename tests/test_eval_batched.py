"""Evaluation preprocessing as batched tensors equals the checkpoint's image processor (PIL, image by image) on real
images, to a stated tolerance; the fast-path defaults resolve as documented."""

import functools

import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest
import torch
from transformers import HfArgumentParser

from hf_ssl.data.transforms import decode_image, make_image_processor
from hf_ssl.evaluation.preprocessing import TensorImageProcessor
from hf_ssl.evaluation.transforms import EvalTransform
from hf_ssl.training import RecipeError, parse_args
from hf_ssl.training.arguments import ARGUMENT_CLASSES
from hf_ssl.training.fast_path import resolve_channels_last

from .conftest import REPO, SAMPLE, SHARED_DATA

# Tolerance of the resized images, in levels of 255 before normalisation: torch's antialiased resize is PIL's
# algorithm, in other fixed-point rounding. Measured on imagenette-160: 99.6 % of values equal, the rest 1-3 levels
# (normalised: at most 3 / 255 / 0.225 = 0.052). Without a resize the result is bit-exact.
MAX_LEVELS = 3
MIN_EQUAL = 0.99


def real_images(name: str, count: int) -> list[torch.Tensor]:
    """The first `count` decoded uint8 (3, H, W) images of a real parquet set."""
    if name == "cifar10-sample":
        path = SAMPLE / "data" / "test-00000-of-00001.parquet"
    else:
        path = SHARED_DATA / name / "data" / "train-00000-of-00008.parquet"
        if not path.is_file():
            pytest.skip(f"the real dataset {name} is not at {path.parent.resolve()}")
    return [decode_image(cell) for cell in pq.read_table(path, columns=["image"]).slice(0, count)["image"].to_pylist()]


def processor_output(processor, images: list[torch.Tensor]) -> torch.Tensor:
    pil = [PIL.Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    return processor(images=pil, return_tensors="pt")["pixel_values"]


def levels_apart(pixels: torch.Tensor, reference: torch.Tensor, processor) -> torch.Tensor:
    """|pixels - reference| in levels of 255 (undoing the normalisation)."""
    return (pixels - reference).abs() * torch.tensor(processor.image_std).view(3, 1, 1) * 255


@pytest.mark.parametrize(
    "name, image_size, count",
    [("cifar10-sample", 32, 64), ("cifar10-sample", 24, 64), ("imagenette-160", 96, 48), ("imagenette-160", 160, 16)],
)
def test_batched_preprocessing_equals_the_image_processor_on_real_images(name, image_size, count):
    images = real_images(name, count)
    processor = make_image_processor(image_size)
    tensors = TensorImageProcessor.from_image_processor(processor)
    reference = processor_output(processor, images)
    pixels = tensors(images)
    assert pixels.shape == reference.shape == (count, 3, image_size, image_size) and pixels.dtype == torch.float32
    if name == "cifar10-sample" and image_size == 32:  # no resize: the processor's arithmetic, bit for bit
        assert torch.equal(pixels, reference)
    levels = levels_apart(pixels, reference, processor)
    assert levels.max() <= MAX_LEVELS + 1e-3 and (levels < 0.5).float().mean() >= MIN_EQUAL
    # the accelerator's resize (float passes rounded as PIL rounds), run here on CPU tensors
    tensors.resize = lambda batch, size: batch if batch.shape[-2:] == size else tensors.resize_in_passes(batch, size)
    levels = levels_apart(tensors(images), reference, processor)
    assert levels.max() <= MAX_LEVELS + 1e-3 and (levels < 0.5).float().mean() >= MIN_EQUAL


def test_workers_can_leave_the_resize_to_the_accelerator():
    """With an accelerator the workers send decoded uint8 images and `pixel_values` finishes them on the device; the
    result is the one the workers would have made (shown with the CPU standing in for the device)."""
    processor = make_image_processor(24)
    rows = pq.read_table(SAMPLE / "data" / "test-00000-of-00001.parquet").slice(0, 8).to_pylist()
    on_cpu = EvalTransform(processor, label_column="label")
    examples = [on_cpu.decode({**row, "id": i}) for i, row in enumerate(rows)]
    on_device = EvalTransform(processor, label_column="label", device="cuda")
    assert on_device.on_device and not on_cpu.on_device
    sent = on_device(examples)
    assert sent["pixel_values"] is None and all(image.dtype == torch.uint8 for image in sent["images"])
    made = on_cpu(examples)
    assert torch.equal(on_device.pixel_values(sent, "cpu"), made["pixel_values"])
    assert torch.equal(sent["ids"], made["ids"]) and torch.equal(sent["labels"], made["labels"])


def test_processors_it_cannot_reproduce_run_as_themselves():
    """Another resampling filter, a crop that would pad, not a transformers processor: the processor's own call."""
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (3, 40, 30 + i), dtype=np.uint8)) for i in range(3)]
    lanczos = make_image_processor(24)
    lanczos.resample = PIL.Image.Resampling.LANCZOS
    padded = make_image_processor(24)
    padded.crop_size = {"height": 40, "width": 40}  # larger than the resized image: the backends pad
    for processor in (lanczos, padded, lambda images, return_tensors: None):
        assert TensorImageProcessor.from_image_processor(processor) is None
    transform = EvalTransform(lanczos)
    batch = transform([{"image_tensor": image, "id": i} for i, image in enumerate(images)])
    assert torch.equal(batch["pixel_values"], processor_output(lanczos, images))
    # call-time settings (the deepcluster probe's larger crop) are read like the processor's own fields
    square = make_image_processor(24, resize_size=32)
    tensors = TensorImageProcessor.from_image_processor(functools.partial(square, crop_size=32))
    assert tensors(images).shape == (3, 3, 32, 32)


# -- the fast-path defaults --


def test_channels_last_auto_is_on_for_the_backbones_measured_faster_only():
    for backbone in ("resnet", "alexnet"):
        assert resolve_channels_last("auto", backbone, video=False)
    assert not resolve_channels_last("auto", "vgg", video=False) and not resolve_channels_last("auto", "vit", False)
    assert not resolve_channels_last("auto", "r3d", video=True) and not resolve_channels_last("auto", "c3d", True)
    assert resolve_channels_last("true", "vit", video=False) and not resolve_channels_last("false", "resnet", False)
    with pytest.raises(ValueError, match="channels_last is for image models"):
        resolve_channels_last("true", "r3d", video=True)


def test_channels_last_setting_parses_from_recipes_and_the_command_line(tmp_path):
    required = ["--dataset_name", "x", "--output_dir", str(tmp_path)]
    assert parse_args(required)[2].channels_last == "auto"  # the default
    assert parse_args([str(REPO / "training_args" / "quickstart.yaml")])[2].channels_last == "true"  # YAML true
    assert parse_args([*required, "--channels_last", "False"])[2].channels_last == "false"
    with pytest.raises(RecipeError, match="channels_last"):
        parse_args([*required, "--channels_last", "sometimes"])
    help_text = " ".join(HfArgumentParser(ARGUMENT_CLASSES).format_help().split())
    assert "auto: on for the backbones measured faster that way (ResNet, AlexNet" in help_text
