"""The batched training augmentations of hf_ssl.data.transforms against the kornia operations they replace."""

import kornia.augmentation as K
import numpy as np
import pytest
import torch
from kornia.enhance import adjust_hue
from PIL import Image

from hf_ssl.data.transforms import ResizedCrop, ViewAugmentation, shift_hue


def test_shift_hue_is_kornias_hue_jitter() -> None:
    torch.manual_seed(0)
    images = torch.rand(256, 3, 6, 6)
    images[:32] = images[:32, :1]  # grey: no hue
    images[32:64] = (images[32:64] * 4).round() / 4  # ties between channels (the sextant of the first maximum)
    turns = torch.rand(256) - 0.5
    exact = adjust_hue(images.double(), turns.double() * 2 * torch.pi)
    # the same formula up to kornia's eps (1e-8) in its saturation
    torch.testing.assert_close(shift_hue(images.double(), turns.double()), exact, rtol=0, atol=1e-7)
    # in float32 as close to the exact value as kornia's own
    kornia_error = (adjust_hue(images, turns * 2 * torch.pi).double() - exact).abs().max()
    assert (shift_hue(images, turns).double() - exact).abs().max() <= max(kornia_error, 1e-6)
    assert torch.equal(shift_hue(images[:32], turns[:32]), images[:32])


@pytest.mark.parametrize("align_corners", [False, True])
def test_resized_crop_is_kornias_crop_in_one_resample(align_corners: bool) -> None:
    torch.manual_seed(0)
    for shape, size in (((64, 3, 32, 32), 32), ((8, 3, 50, 37), 24), ((4, 3, 16, 16), 40)):
        images = torch.rand(shape)
        reference = K.RandomResizedCrop((size, size), scale=(0.08, 1.0), align_corners=align_corners)
        params = reference.forward_parameters(images.shape)
        crops = ResizedCrop((size, size), scale=(0.08, 1.0), align_corners=align_corners)(images, params=params)
        torch.testing.assert_close(crops, reference(images, params=params), rtol=0, atol=1e-5)


def test_training_crops_have_torchvisions_geometry_on_pil_images() -> None:
    # torchvision's RandomResizedCrop on a PIL image (the official code's): PIL crops the box, then resizes it
    # bilinearly; written here with PIL itself on float images, for crops that are enlarged (PIL also smooths
    # when it shrinks)
    torch.manual_seed(0)
    images = torch.rand(32, 3, 32, 32)
    crop = ViewAugmentation(size=32, scale=(0.08, 1.0)).crop()
    params = crop.forward_parameters(images.shape)
    crops = crop(images, params=params)
    for image, box, out in zip(images, params["src"].long(), crops):
        (x0, y0), (x1, y1) = box[0].tolist(), box[2].tolist()
        expected = torch.stack(
            [
                torch.from_numpy(
                    np.array(
                        Image.fromarray(channel.numpy(), mode="F")
                        .crop((x0, y0, x1 + 1, y1 + 1))
                        .resize((32, 32), Image.Resampling.BILINEAR)
                    )
                )
                for channel in image
            ]
        )
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
