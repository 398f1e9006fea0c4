"""The raw-pixel baseline: what a kNN reaches with no learned features at all.

Each image, as the checkpoint's image processor resizes and crops it for evaluation, is un-normalised back to its
rescaled pixels, flattened, and centred on its own mean (one scalar per image, over all channels and positions).
The weighted kNN then compares these vectors by cosine similarity, exactly as it compares embeddings. Centring per
image removes brightness, the nuisance that dominates raw pixel distances (on the shipped CIFAR-10 sample, 5k train
bank / 1k test queries, tau 0.07: 41.4 % top-1 at k=200 and 42.3 % at k=20, against 23.6 / 28.6 uncentred).

Un-normalising matters: the processor's per-channel normalisation adds the same offset vector to every image, which
centring per image does not remove; it shifts every cosine similarity (40.1 / 39.7 on the same sample).
"""

from dataclasses import dataclass

import torch


class PixelFeatures(torch.nn.Module):
    """A feature "model" whose embedding is the mean-centred raw pixels of each image (or clip).

    It takes the `pixel_values` an evaluation transform produces (normalised by `image_processor`), so it runs through
    the same feature extraction, process split and gather, and video clip averaging as a real model.
    """

    @dataclass
    class Output:
        embeddings: torch.Tensor

    def __init__(self, image_processor):
        super().__init__()
        normalised = getattr(image_processor, "do_normalize", False)
        # per channel; the identity when the processor does not normalise
        self.mean = torch.tensor(image_processor.image_mean if normalised else (0.0,), dtype=torch.float32)
        self.std = torch.tensor(image_processor.image_std if normalised else (1.0,), dtype=torch.float32)

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> "PixelFeatures.Output":
        """(B, [T,] C, H, W) normalised pixels -> (B, [T *] C * H * W) un-normalised pixels minus each row's mean."""
        shape = (-1, 1, 1)  # channels are the third axis from the end, images and clips alike
        mean, std = (t.to(pixel_values.device).view(shape) for t in (self.mean, self.std))
        pixels = (pixel_values.float() * std + mean).flatten(1)
        return PixelFeatures.Output(pixels - pixels.mean(1, keepdim=True))
