"""Evaluation preprocessing: one image per example through the checkpoint's image processor, or evenly spaced
clips per video whose features are averaged.

Images are decoded in the DataLoader workers; the processor's resize / crop / normalise then run as batched tensors
(`TensorImageProcessor`): in the workers on CPU, on the accelerator when the transform is given one (the workers
then send the decoded uint8 images, and `pixel_values(batch, device)` finishes the batch there). A processor the
tensor version cannot reproduce runs as itself, image by image.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import PIL.Image
import torch

from ..data.transforms import collate_examples, decode_image_example
from ..data.video import decode_clips, decode_video_example, is_video_dataset
from .preprocessing import TensorImageProcessor


class TensorPreprocessing:
    """The part of the evaluation transforms that runs the image processor on tensors, in the workers or on
    `device` (see the module docstring)."""

    def __init__(self, image_processor, device: torch.device | str | None = None):
        self.image_processor = image_processor
        self.tensor_processor = TensorImageProcessor.from_image_processor(image_processor)
        # on an accelerator the workers stop at decoding; on CPU they do everything (the model has the main process)
        self.on_device = self.tensor_processor is not None and device is not None and torch.device(device).type != "cpu"

    def preprocess(self, images: list[torch.Tensor], examples: list[dict], label_column: str | None) -> dict:
        """The batch of `examples` from their decoded uint8 (3, H, W) `images`: `pixel_values`, or the `images`
        themselves when they are finished on the device."""
        if self.on_device:
            return {**collate_examples(None, examples, label_column), "images": images}
        if self.tensor_processor is not None:
            return collate_examples(self.tensor_processor(images), examples, label_column)
        pil = [PIL.Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
        return collate_examples(
            self.image_processor(images=pil, return_tensors="pt")["pixel_values"], examples, label_column
        )

    def pixel_values(self, batch: dict, device: torch.device | str) -> torch.Tensor:
        """The batch's `pixel_values` on `device`, finished there when the workers sent decoded images."""
        if batch.get("images") is not None:
            return self.tensor_processor(batch["images"], device)
        return batch["pixel_values"].to(device)


class EvalTransform(TensorPreprocessing):
    """Raw examples -> `{"pixel_values", "ids", "labels"}` through an image processor (no randomness). With an
    accelerator `device`, `pixel_values` is None and `pixel_values(batch, device)` makes it on the device."""

    def __init__(
        self,
        image_processor,
        image_column: str = "image",
        label_column: str | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__(image_processor, device)
        self.image_column, self.label_column = image_column, label_column

    def decode(self, example: dict) -> dict:
        """Decode one raw example; raises `ValueError` naming it if its image is corrupt."""
        return decode_image_example(example, self.image_column)

    def __call__(self, examples: list[dict], seed: int = 0) -> dict:
        return self.preprocess([example["image_tensor"] for example in examples], examples, self.label_column)


class VideoEvalTransform(TensorPreprocessing):
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
        num_frames: int = 8,
        frame_stride: int = 2,
        device: torch.device | str | None = None,
    ):
        super().__init__(image_processor, device)
        self.video_column, self.label_column = video_column, label_column
        self.num_clips, self.num_frames, self.frame_stride = num_clips, num_frames, frame_stride

    def decode(self, example: dict) -> dict:
        """Decode one raw example's clips; raises `ValueError` naming the sample if its video is unreadable."""
        return decode_video_example(
            example,
            self.video_column,
            lambda value: decode_clips(value, self.num_clips, self.num_frames, self.frame_stride),
        )

    def __call__(self, examples: Sequence[dict], seed: int = 0) -> dict:
        frames = [
            torch.from_numpy(f).permute(2, 0, 1) for example in examples for clip in example["clips"] for f in clip
        ]
        batch = self.preprocess(frames, list(examples), self.label_column)
        if batch["pixel_values"] is not None:
            batch["pixel_values"] = self.clips(batch["pixel_values"])
        return batch

    def pixel_values(self, batch: dict, device: torch.device | str) -> torch.Tensor:
        return self.clips(super().pixel_values(batch, device))

    def clips(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B * clips * T, C, H, W) frames -> (B, clips, T, C, H, W)."""
        return pixels.view(-1, self.num_clips, self.num_frames, *pixels.shape[-3:])


def average_over_clips(features: torch.Tensor, num_clips: int) -> torch.Tensor:
    """(B * clips, ...) clip features -> (B, ...) video features: the mean over each video's clips."""
    return features.view(-1, num_clips, *features.shape[1:]).mean(1)


class ClipAveragedFeatures(torch.nn.Module):
    """A feature model that gives one feature per video: batches of `VideoEvalTransform` (B, clips, T, C, H, W) run
    as B * clips clips and the `embeddings` of each video's clips are averaged. Other batches pass through, so
    feature extraction can wrap whatever model it reads from."""

    @dataclass
    class Output:
        embeddings: torch.Tensor

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # feature extraction restores the wrapper's mode: it must be the model's

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True):
        if pixel_values.dim() != 6:
            return self.model(pixel_values=pixel_values, return_dict=True)
        clips = self.model(pixel_values=pixel_values.flatten(0, 1), return_dict=True).embeddings
        return ClipAveragedFeatures.Output(average_over_clips(clips, pixel_values.shape[1]))


def make_eval_transform(
    dataset: datasets.IterableDataset,
    image_processor,
    *,
    image_column: str = "image",
    video_column: str = "video",
    label_column: str | None = None,
    num_clips: int = 4,
    num_frames: int = 8,
    frame_stride: int = 2,
    device: torch.device | str | None = None,
) -> EvalTransform | VideoEvalTransform:
    """The evaluation transform for `dataset`: `num_clips` evenly spaced clips per video when `video_column` is a
    video column (read their features through `ClipAveragedFeatures`), one image per example otherwise. With an
    accelerator `device`, images are resized and normalised there (read batches with `transform.pixel_values`)."""
    if is_video_dataset(dataset, video_column):
        return VideoEvalTransform(
            image_processor, video_column, label_column, num_clips, num_frames, frame_stride, device=device
        )
    return EvalTransform(image_processor, image_column, label_column, device=device)
