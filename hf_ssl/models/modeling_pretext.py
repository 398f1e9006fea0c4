"""Pieces of the pretext-task methods (jigsaw, counting, rotation, relative position): cutting a batch of images
into a grid of patches with gaps and per-patch jitter, on tensors. Every random draw of these methods uses the
global torch RNG of the data's device (which the training loop seeds per process and checkpoints, so processes
draw different patches and resumes replay them), never a generator of their own."""

import torch


def grid_cells(size: int, grid: int) -> int:
    """Side of one cell when a `size` px image is cut into `grid` x `grid` cells."""
    if size < 2 * grid:
        raise ValueError(f"images of {size} px are too small for a {grid}x{grid} grid of patches")
    return size // grid


def grid_patches(pixel_values: torch.Tensor, grid: int, gap_ratio: float, jitter: bool = True) -> torch.Tensor:
    """Patches (batch, grid * grid, C, p, p) in row-major cell order, p = cell - gap.

    Each patch is a random p x p square inside its cell (one offset per image and cell, so patches never touch:
    the gap keeps networks from matching tiles by their shared edges, as in Doersch et al. and Noroozi & Favaro);
    `jitter=False` takes the centred square.
    """
    batch, channels, height, width = pixel_values.shape
    cell = grid_cells(min(height, width), grid)
    patch = max(1, cell - round(cell * gap_ratio))
    slack = cell - patch
    rows = torch.arange(grid, device=pixel_values.device).repeat_interleave(grid) * cell  # (grid*grid,)
    cols = torch.arange(grid, device=pixel_values.device).repeat(grid) * cell
    if jitter and slack > 0:
        offsets = torch.randint(0, slack + 1, (2, batch, grid * grid), device=pixel_values.device)
    else:
        offsets = torch.full((2, batch, grid * grid), slack // 2, device=pixel_values.device)
    top, left = rows + offsets[0], cols + offsets[1]  # (batch, grid*grid)
    steps = torch.arange(patch, device=pixel_values.device)
    y = (top[..., None] + steps)[..., :, None]  # (batch, n, p, 1)
    x = (left[..., None] + steps)[..., None, :]  # (batch, n, 1, p)
    images = torch.arange(batch, device=pixel_values.device)[:, None, None, None]
    patches = pixel_values.permute(0, 2, 3, 1)[images, y, x]  # (batch, n, p, p, C)
    return patches.permute(0, 1, 4, 2, 3).contiguous()
