"""Which images excite a filter most, and which input pixels one of its units sees (its receptive field)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fercore import disk_cache
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
    return _top_activating(model, images, layer, [filter], k, batch_size, stage)[0]


def top_activating_layer(model: nn.Module, images: torch.Tensor, layer: LayerRef, k: int = 9,
                         batch_size: int | None = None, stage: str = "pre_relu") -> list[TopActivations]:
    """top_activating for every filter of the layer (filter f at [f]), in one pass over the images."""
    return _top_activating(model, images, layer, None, k, batch_size, stage)


def _top_activating(model, images, layer, filters, k, batch_size, stage) -> list[TopActivations]:
    images = torch.as_tensor(images, dtype=torch.float32)
    site = find_layer(model, layer, tuple(images.shape[1:]))
    filters = _filter_indices(site, filters)
    images = images.contiguous(memory_format=torch.channels_last)
    peaks, flat_positions = [], []
    # Chunks sized by the larger of the prefix and the chosen filters' maps: a whole layer's maps can be the bigger.
    per_image = max(site.prefix_numel, len(filters) * site.output_hw[0] * site.output_hw[1])
    with analysis_mode(model), torch.no_grad():
        for rows in _chunks(len(images), per_image, batch_size):
            maps = filter_response(site, run_until(model, images[rows], site.conv, before=True), filters, stage)
            chunk_peaks, chunk_positions = maps.flatten(2).max(dim=2)  # (B, F): each image's peak per filter
            peaks.append(chunk_peaks)
            flat_positions.append(chunk_positions)
            width = maps.shape[-1]
    peaks, flat_positions = torch.cat(peaks), torch.cat(flat_positions)
    field = receptive_field(model, site.conv, tuple(images.shape[1:]))
    found = []
    for column, filter_index in enumerate(filters.tolist()):
        scores, indices = torch.topk(peaks[:, column], min(k, len(peaks)))
        at = flat_positions[indices, column]
        positions = torch.stack([at // width, at % width], dim=1)
        regions = [field.region(int(r), int(c), tuple(images.shape[-2:])) for r, c in positions]
        found.append(TopActivations(indices=indices.numpy(), scores=scores.numpy().astype(np.float32),
                                    positions=positions.numpy(),
                                    regions=np.array(regions, dtype=np.int64).reshape(-1, 4),
                                    receptive_field=field, layer=site.name, filter=int(filter_index), stage=stage))
    return found


# ------------------------------------------------------------------------------------------ cached on disk

TOP_FORMAT = "fercore-top-activating/1"


def top_activating_meta(model_key: str, data_fingerprint: str, layer: str, k: int, stage: str) -> dict:
    """What a layer's cached top images are valid for (layer: its name, as find_layer has it)."""
    return {"format": TOP_FORMAT, "model_key": str(model_key), "data": data_fingerprint, "layer": layer, "k": int(k),
            "stage": stage}


def cached_top_activating(model: nn.Module, images: torch.Tensor, layer: LayerRef, filter: int, k: int = 9, *,
                          model_key: str, data_fingerprint: str, stage: str = "pre_relu",
                          cache_dir=None) -> TopActivations:
    """top_activating of one filter, read from (or first computed into) the disk cache entry of its whole layer
    (top_activating_layer, fercore.disk_cache), so a lesson precomputes every filter at once and any server on the
    same cache folder reads it. images must be the faces of `data_fingerprint`, preprocessed for `model_key`."""
    images = torch.as_tensor(images, dtype=torch.float32)
    site = find_layer(model, layer, tuple(images.shape[1:]))
    meta = top_activating_meta(model_key, data_fingerprint, site.name, k, stage)
    arrays, _ = disk_cache.get_or_compute(meta, lambda: _layer_arrays(
        top_activating_layer(model, images, site.conv, k, stage=stage)), cache_dir)
    index = int(_filter_indices(site, [filter])[0])
    field = ReceptiveField(*(tuple(int(v) for v in arrays["field"][row]) for row in range(3)))
    return TopActivations(indices=arrays["indices"][index], scores=arrays["scores"][index],
                          positions=arrays["positions"][index], regions=arrays["regions"][index],
                          receptive_field=field, layer=site.name, filter=index, stage=stage)


def _layer_arrays(found: list[TopActivations]) -> dict:
    field = found[0].receptive_field
    return {"indices": np.stack([t.indices for t in found]), "scores": np.stack([t.scores for t in found]),
            "positions": np.stack([t.positions for t in found]), "regions": np.stack([t.regions for t in found]),
            "field": np.array([field.size, field.stride, field.offset], dtype=np.int64)}
