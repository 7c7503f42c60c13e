"""Robustness transforms (Lucid's): each ascent step shows the model a randomly moved copy of the image, so what it
learns holds up under small shifts and zooms instead of exploiting single pixels.

A transform is a function (images (N, C, H, W), generator) -> images of the same shape, differentiable. It draws
ONE random setting per call for the whole batch, so a batch of filters sees exactly what each filter would see
alone with the same seed. `compose` chains them.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def gaussian_blur(images: torch.Tensor, sigma: float, padding: str = "reflect") -> torch.Tensor:
    """Separable Gaussian blur of each channel of (N, C, H, W) images.

    padding: "reflect" (the ascent's smoothing: mirrored borders keep edge statistics) or "replicate" (works for any
    radius; reflect needs the radius, 3 sigma, below the image size, which a saliency reference blur of several
    pixels on a small image can exceed). Both leave no dark border.
    """
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode=padding)
    rows = F.conv2d(padded, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return F.conv2d(rows, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)


def jitter(pixels: int) -> Transform:
    """Roll the images by up to `pixels` in each direction (wrapping around: no border to fill)."""
    def apply(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if pixels <= 0:
            return images
        dy, dx = torch.randint(-pixels, pixels + 1, (2,), generator=generator).tolist()
        return torch.roll(images, shifts=(dy, dx), dims=(2, 3)) if (dy, dx) != (0, 0) else images
    return apply


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom about the centre by one of `scales` (1.1 enlarges), keeping the image size; borders mirrored."""
    def apply(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not scales:
            return images
        scale = float(scales[int(torch.randint(len(scales), (1,), generator=generator))])
        if scale == 1.0:
            return images
        theta = images.new_tensor([[1 / scale, 0.0, 0.0], [0.0, 1 / scale, 0.0]]).expand(len(images), 2, 3)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return apply


def blur(sigma: float) -> Transform:
    """Gaussian blur of `sigma` pixels (no randomness): the model sees only the image's smooth part."""
    return lambda images, generator: gaussian_blur(images, sigma) if sigma > 0 else images


def compose(*transforms: Transform) -> Transform:
    """The transforms applied in order, each drawing from the same generator."""
    def apply(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for transform in transforms:
            images = transform(images, generator)
        return images
    return apply


def standard(jitter_pixels: int = 0, scales: Sequence[float] = ()) -> Transform:
    """The transforms `visualize_filters` uses: jitter, then zoom."""
    return compose(jitter(jitter_pixels), random_scale(tuple(scales)))
