"""Occlusion (Zeiler & Fergus 2014): cover part of the face with a grey patch and see what the model loses.

    occlusion_map(model, images, target, **options) -> np.ndarray float32 (N, 48, 48)

The calling convention of fercore.saliency: `images` are preprocessed (LoadedModel.preprocess) float tensors, the
target is anything `saliency.as_target` takes (None: the predicted class). A map's value at a pixel is the mean
drop in the target's probability over the patches covering it: positive where covering hurts the target class,
negative where covering helps it. Unlike a gradient it needs no backward pass, and it asks what a student asks
("cover the mouth: is it still Happy?").

Named regions (`REGIONS`) cover the brows, eyes, nose and mouth of FER2013's roughly aligned faces, checked on the
mean face of the shipped test data; `cover` and `covered_prediction` work on raw uint8 faces, as the app shows them.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
from torch import nn

from fercore.data import IMAGE_SIZE
from fercore.analysis_mode import analysis_mode
from fercore.saliency import TargetLike, _as_batch, _target_weights, reference_image

DEFAULT_PATCH = 8
DEFAULT_STRIDE = 4
DEFAULT_FILL = "mean"
# Occluded copies per forward pass: 121 positions at the defaults fit one pass; a small patch stride stays bounded.
DEFAULT_BATCH_SIZE = 256

# (top, left, bottom, right) in 48x48 pixel coordinates, bottom and right exclusive (numpy slices). Drawn on the
# mean face of data/fer2013_test.npz: the brows' dark band, the eyes' dark band, the bright nose ridge down to the
# nostrils, and the dark mouth line with the lips around it.
REGIONS = {
    "brows": (11, 8, 16, 40),
    "eyes": (16, 8, 22, 40),
    "nose": (22, 18, 32, 30),
    "mouth": (33, 13, 43, 35),
}

Region = Union[str, tuple]


def region_box(region: Region) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a named region or of a free rectangle, checked to lie inside the face."""
    if isinstance(region, str):
        if region not in REGIONS:
            raise ValueError(f"unknown region {region!r}: use one of {', '.join(REGIONS)} or (top, left, bottom, "
                             "right)")
        return REGIONS[region]
    try:
        top, left, bottom, right = (int(v) for v in region)
    except (TypeError, ValueError):
        raise ValueError(f"a region is a name or (top, left, bottom, right), got {region!r}") from None
    if not (0 <= top < bottom <= IMAGE_SIZE and 0 <= left < right <= IMAGE_SIZE):
        raise ValueError(f"region (top {top}, left {left}, bottom {bottom}, right {right}) is not a non-empty "
                         f"rectangle inside the {IMAGE_SIZE}x{IMAGE_SIZE} face")
    return top, left, bottom, right


def patch_positions(size: int, patch: int, stride: int) -> list[int]:
    """Top (or left) edges of the patches along one side: every `stride` pixels, plus one flush with the far edge
    when the stride does not land there, so every pixel is covered at least once."""
    if not 1 <= patch <= size:
        raise ValueError(f"patch must be 1..{size} pixels, got {patch}")
    if stride < 1:
        raise ValueError(f"stride must be at least 1 pixel, got {stride}")
    starts = list(range(0, size - patch + 1, stride))
    return starts if starts[-1] == size - patch else starts + [size - patch]


def patch_masks(patch: int = DEFAULT_PATCH, stride: int = DEFAULT_STRIDE, size: int = IMAGE_SIZE) -> torch.Tensor:
    """float32 (P, size, size): 1 inside patch p, 0 elsewhere, rows first."""
    starts = patch_positions(size, patch, stride)
    masks = torch.zeros(len(starts) ** 2, size, size)
    for p, (top, left) in enumerate((t, l) for t in starts for l in starts):
        masks[p, top:top + patch, left:left + patch] = 1.0
    return masks


def _target_probability(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The target's probability per row (a contrast A - B: p_A - p_B)."""
    return (torch.softmax(logits, dim=1) * weights).sum(1)


# Layers whose output at a pixel depends only on the input near it (in eval mode): an occluding patch changes their
# output only within a margin around it, so they can run on a window around the patch instead of the whole face.
_POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Identity, nn.Dropout)


def _local_prefix(model: nn.Module) -> tuple[int, int]:
    """(how many leading layers of an nn.Sequential are local, their combined margin in pixels): stride-1 'same'
    convolutions with odd kernels (each widens the margin by kernel // 2) and pointwise layers, up to the first
    other layer (a pooling, a strided conv). (0, 0) when the model is not a Sequential or starts otherwise."""
    if not isinstance(model, nn.Sequential):
        return 0, 0
    count = margin = convs = 0
    for layer in model:
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size
            if not (k[0] == k[1] and k[0] % 2 == 1 and layer.stride == (1, 1) and layer.dilation == (1, 1)
                    and layer.padding == (k[0] // 2, k[0] // 2) and layer.padding_mode == "zeros"):
                break
            margin += k[0] // 2
            convs += 1
        elif not isinstance(layer, _POINTWISE):
            break
        count += 1
    return (count, margin) if convs else (0, 0)


def _prefix_outputs(prefix: nn.Module, clean: torch.Tensor, occluded: torch.Tensor, boxes: list, margin: int):
    """The prefix's output for every occluded copy (P, C, H, W): the clean image's output, with each patch's
    neighbourhood (the patch grown by `margin`) recomputed on a window grown by 2 * margin. Inside the image the
    window's own zero padding then lies at least `margin` away from every pixel kept; at the image's edges the
    window's edge is the image's, as in the whole-face pass. Windows of one shape run as one batch."""
    size = clean.shape[-1]
    base = prefix(clean)                                                            # (1, C, H, W)
    outputs = base.expand(len(boxes), -1, -1, -1).clone(memory_format=torch.channels_last)
    grow = lambda a, b, by: (max(a - by, 0), min(b + by, size))                      # noqa: E731
    groups: dict = {}
    for p, (top, left, bottom, right) in enumerate(boxes):
        window = (*grow(top, bottom, 2 * margin), *grow(left, right, 2 * margin))
        shape = (window[1] - window[0], window[3] - window[2])
        groups.setdefault(shape, []).append((p, window, (*grow(top, bottom, margin), *grow(left, right, margin))))
    for members in groups.values():
        crops = torch.stack([occluded[p, :, w0:w1, v0:v1] for p, (w0, w1, v0, v1), _ in members])
        recomputed = prefix(crops.contiguous(memory_format=torch.channels_last))
        for out, (p, (w0, _, v0, _), (r0, r1, c0, c1)) in zip(recomputed, members):
            outputs[p, :, r0:r1, c0:c1] = out[:, r0 - w0:r1 - w0, c0 - v0:c1 - v0]
    return outputs


def occlusion_map(model: nn.Module, images, target: TargetLike = None, *, patch: int = DEFAULT_PATCH,
                  stride: int = DEFAULT_STRIDE, fill=DEFAULT_FILL, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Drop in the target's probability when a `patch` x `patch` square slides over each face with `stride`,
    (N, 48, 48): each pixel gets the mean drop over the patches covering it.

    fill: what the patch shows, as `saliency.reference_image` takes it: "mean" (each face's mean grey, in the
    model's input units), "zero", "blur", a number or a tensor. All N x P occluded copies go through the model in
    batched passes of `batch_size` rows (one pass for one face at the defaults). A Sequential model's leading
    full-resolution convolutions (hw3's first block: half its time) run only around each patch, since a patch
    changes nothing further away; the result is the whole-face pass's, to float rounding."""
    x = _as_batch(model, images)
    size = x.shape[-1]
    masks = patch_masks(patch, stride, size).to(x.device, x.dtype)                  # (P, H, W)
    masks_4d = masks[:, None]                                                       # (P, 1, H, W)
    starts = patch_positions(size, patch, stride)
    boxes = [(top, left, top + patch, left + patch) for top in starts for left in starts]  # masks' order
    split, margin = _local_prefix(model)
    with analysis_mode(model), torch.no_grad():
        weights = _target_weights(model, x, target)                                 # (N, C)
        clean = _target_probability(model(x), weights)                              # (N,)
        fills = reference_image(x, fill)
        drops = []
        for image, filled, w in zip(x, fills, weights):
            occluded = image * (1 - masks_4d) + filled * masks_4d                   # (P, 1, H, W)
            # NHWC input to match analysis_mode's channels_last weights: oneDNN then skips a layout copy per conv
            occluded = occluded.contiguous(memory_format=torch.channels_last)
            if split:
                occluded = _prefix_outputs(model[:split], image[None], occluded, boxes, margin)
            rest = model[split:] if split else model
            covered = torch.cat([rest(chunk) for chunk in occluded.split(batch_size)])
            drops.append(_target_probability(covered, w.expand(len(masks), -1)))
        drops = clean[:, None] - torch.stack(drops)                                 # (N, P)
    maps = torch.einsum("np,phw->nhw", drops, masks) / masks.sum(0)
    return maps.cpu().numpy().astype(np.float32)


def _fill_value(image: np.ndarray, fill) -> float:
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"unknown fill {fill!r}: use 'mean' (the face's mean grey) or a grey level 0..255")
        return float(image.mean())
    if not 0 <= float(fill) <= 255:
        raise ValueError(f"a fill grey level must be 0..255, got {fill}")
    return float(fill)


def cover(image, region: Region, fill=DEFAULT_FILL) -> np.ndarray:
    """A uint8 (48, 48) face with `region` (a REGIONS name or (top, left, bottom, right)) painted grey: the face's
    mean ("mean") or a grey level 0..255."""
    face = np.asarray(image)
    if face.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"cover expects one {IMAGE_SIZE}x{IMAGE_SIZE} face, got shape {face.shape}")
    top, left, bottom, right = region_box(region)
    covered = face.astype(np.uint8, copy=True)
    covered[top:bottom, left:right] = np.uint8(round(_fill_value(face, fill)))
    return covered


def covered_prediction(loaded, image, region: Region, fill=DEFAULT_FILL) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities before, probabilities after) covering `region` of a uint8 face, float32 (7,) each, for a
    LoadedModel (LoadedModel.predict: its preprocessing, the model left as it was)."""
    face = np.asarray(image)
    before, after = loaded.predict(np.stack([face, cover(face, region, fill)]))
    return before, after
