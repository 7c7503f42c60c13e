"""Which images excite a filter most, and which input pixels one of its units sees (its receptive field)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fercore.analysis_mode import analysis_mode

from .tracing import (IMAGE_SHAPE, LayerRef, LayerSite, _chunks, _filter_indices, filter_response,
                      find_layer, run_until)


@dataclass(frozen=True)
class ReceptiveField:
    """Unit (row, col) of a layer sees input rows offset[0] + row*stride[0] + [0, size[0]), and likewise columns."""
    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]

    def region(self, row: int, col: int, image_hw: tuple[int, int] = IMAGE_SHAPE[1:]) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of the input pixels unit (row, col) sees, clipped to the image; bottom and right
        are exclusive, so image[top:bottom, left:right] is the region."""
        top = self.offset[0] + row * self.stride[0]
        left = self.offset[1] + col * self.stride[1]
        return (max(top, 0), max(left, 0),
                min(top + self.size[0], image_hw[0]), min(left + self.size[1], image_hw[1]))


def receptive_field(model: nn.Module, layer: LayerRef, image_shape: tuple[int, int, int] = IMAGE_SHAPE,
                    samples: int = 4, seed: int = 0) -> ReceptiveField:
    """The receptive field of a conv layer's units, measured rather than derived from the architecture.

    The input pixels that can change unit (i, j) are where the gradient of that unit (summed over channels and a few
    random images, so ReLUs and max-pools switched off on one image are on in another) is non-zero. Two neighbouring
    units give the stride. If the field reaches the image border, a larger probe image is used, so fields bigger
    than 48x48 are measured too. Works for any architecture built from translation-equivariant layers.
    """
    site = find_layer(model, layer, image_shape)
    generator = torch.Generator().manual_seed(seed)
    channels, height, width = image_shape
    with analysis_mode(model, channels_last=False):
        for scale in (1, 2, 4, 8):
            x = torch.randn(2 * samples, channels, height * scale, width * scale, generator=generator)
            field, touches_border = _probe_field(model, site, x.requires_grad_(True), samples)
            if field is not None and not touches_border:
                break
    if field is None:
        raise ValueError(f"could not measure the receptive field of layer {site.name!r}")
    return field


def _probe_field(model, site: LayerSite, x: torch.Tensor, samples: int) -> tuple[ReceptiveField | None, bool]:
    out = run_until(model, x, site.conv)
    rows, cols = out.shape[-2:]
    if rows < 2 or cols < 2:
        return None, True
    i, j = (rows - 1) // 2, (cols - 1) // 2
    unit_sum = out[:samples, :, i, j].sum() + out[samples:, :, i + 1, j + 1].sum()
    grad, = torch.autograd.grad(unit_sum, x)
    seen = grad.abs().sum(dim=1) > 0
    box_a, box_b = _bounding_box(seen[:samples].any(0)), _bounding_box(seen[samples:].any(0))
    if box_a is None or box_b is None:
        return None, True
    stride = (box_b[0] - box_a[0], box_b[1] - box_a[1])
    size = (box_a[2] - box_a[0], box_a[3] - box_a[1])
    offset = (box_a[0] - i * stride[0], box_a[1] - j * stride[1])
    height, width = x.shape[-2:]
    touches = box_a[0] == 0 or box_a[1] == 0 or box_b[2] == height or box_b[3] == width
    return ReceptiveField(size, stride, offset), touches


def _bounding_box(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right), bottom/right exclusive, of the True pixels of a 2-D mask."""
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    if len(rows) == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


# ------------------------------------------------------------------------------------------ top activating images

@dataclass
class TopActivations:
    """The k images that most activate one filter, strongest first."""
    indices: np.ndarray    # int64 (k,) into the images given
    scores: np.ndarray     # float32 (k,) the filter's peak response on each (max over positions, at `stage`)
    positions: np.ndarray  # int64 (k, 2) (row, col) of that peak in the layer's output grid
    regions: np.ndarray    # int64 (k, 4) (top, left, bottom, right), exclusive: input pixels the peak unit sees
    receptive_field: ReceptiveField
    layer: str
    filter: int
    stage: str


def top_activating(model: nn.Module, images: torch.Tensor, layer: LayerRef, filter: int, k: int = 9,
                   batch_size: int | None = None, stage: str = "pre_relu") -> TopActivations:
    """The k images (of preprocessed images (N, 1, 48, 48)) with the highest peak response of one filter, where
    that peak is, and the input region its unit sees.

    Only that one filter of the layer is computed, on the model's own modules (so scores are exactly the layer's
    values). batch_size None: cache-sized batches.
    """
    images = torch.as_tensor(images, dtype=torch.float32)
    site = find_layer(model, layer, tuple(images.shape[1:]))
    filters = _filter_indices(site, [filter])
    images = images.contiguous(memory_format=torch.channels_last)
    with analysis_mode(model), torch.no_grad():
        maps = torch.cat([filter_response(site, run_until(model, images[rows], site.conv, before=True), filters, stage)
                          for rows in _chunks(len(images), site.prefix_numel, batch_size)])[:, 0]
    peaks, flat_positions = maps.flatten(1).max(dim=1)
    scores, indices = torch.topk(peaks, min(k, len(peaks)))
    width = maps.shape[-1]
    positions = torch.stack([flat_positions[indices] // width, flat_positions[indices] % width], dim=1)
    field = receptive_field(model, site.conv, tuple(images.shape[1:]))
    regions = [field.region(int(r), int(c), tuple(images.shape[-2:])) for r, c in positions]
    return TopActivations(indices=indices.numpy(), scores=scores.numpy().astype(np.float32),
                          positions=positions.numpy(), regions=np.array(regions, dtype=np.int64).reshape(-1, 4),
                          receptive_field=field, layer=site.name, filter=int(filters[0]), stage=stage)
