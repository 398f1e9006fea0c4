"""Evaluation preprocessing: one image per example through the checkpoint's image processor, or evenly spaced
clips per video whose features are averaged."""

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import PIL.Image
import torch

from ..data.transforms import collate_examples, decode_image_example
from ..data.video import decode_clips, decode_video_example, is_video_dataset


class EvalTransform:
    """Raw examples -> `{"pixel_values", "ids", "labels"}` through an image processor (no randomness)."""

    def __init__(self, image_processor, image_column: str = "image", label_column: str | None = None):
        self.image_processor, self.image_column, self.label_column = image_processor, image_column, label_column

    def decode(self, example: dict) -> dict:
        """Decode one raw example; raises `ValueError` naming it if its image is corrupt."""
        return decode_image_example(example, self.image_column)

    def __call__(self, examples: list[dict], seed: int = 0) -> dict:
        images = [PIL.Image.fromarray(example["image_tensor"].permute(1, 2, 0).numpy()) for example in examples]
        pixel_values = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return collate_examples(pixel_values, examples, self.label_column)


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
        num_frames: int = 8,
        frame_stride: int = 2,
    ):
        self.image_processor, self.video_column, self.label_column = image_processor, video_column, label_column
        self.num_clips, self.num_frames, self.frame_stride = num_clips, num_frames, frame_stride

    def decode(self, example: dict) -> dict:
        """Decode one raw example's clips; raises `ValueError` naming the sample if its video is unreadable."""
        return decode_video_example(
            example,
            self.video_column,
            lambda value: decode_clips(value, self.num_clips, self.num_frames, self.frame_stride),
        )

    def __call__(self, examples: Sequence[dict], seed: int = 0) -> dict:
        frames = [PIL.Image.fromarray(f) for example in examples for clip in example["clips"] for f in clip]
        pixels = self.image_processor(images=frames, return_tensors="pt")["pixel_values"]  # (B*clips*T, C, H, W)
        pixels = pixels.view(len(examples), self.num_clips, self.num_frames, *pixels.shape[1:])
        return collate_examples(pixels, list(examples), self.label_column)


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
) -> EvalTransform | VideoEvalTransform:
    """The evaluation transform for `dataset`: `num_clips` evenly spaced clips per video when `video_column` is a
    video column (read their features through `ClipAveragedFeatures`), one image per example otherwise."""
    if is_video_dataset(dataset, video_column):
        return VideoEvalTransform(image_processor, video_column, label_column, num_clips, num_frames, frame_stride)
    return EvalTransform(image_processor, image_column, label_column)
