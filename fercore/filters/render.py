"""Gradient ascent: one loop (`render_vis`) around an objective, a parameterisation and transforms, and
`visualize_filters`, which picks them for a layer.

All chosen filters are optimised together in one batch, one image per filter (loss = -sum_i objective of filter i
on image i; no image affects another, so a subset gives the same images as the whole layer). The network runs only
up to the layer, in cache-sized chunks of images.

The defaults depend on the layer's receptive field (`default_settings`), measured, not read off the architecture:

    small field (at most SMALL_FIELD_PIXELS a side: a first layer's 3x3, a second layer's 5x5 or 7x7): the
        filter's mean response after its ReLU ("channel" at the "activation" stage), in the "sigmoid"
        parameterisation with L2 decay towards mid-range. Such a filter is nearly linear in the pixels with the
        same weights at every position, so its mean response before the ReLU is maximised by a flat or saturated
        image (93% of hw3's conv1 pixels on the bounds, 39% of its images flat). After the ReLU a flat image only
        wins for a filter that wants brightness alone; the others get the grating they are tuned to (orientation,
        spacing), and the squashing with decay keeps every pixel off the bounds.
    large field (the deeper layers): the filter's mean response before its ReLU ("channel" at "pre_relu"), in
        pixels with jitter and a light blur every few steps: shapes repeated over the image, eyes and mouths in
        fernet's conv7. After the ReLU, a deep filter's gradient reaches only the regions where it already fires,
        which leaves patches of start noise; the spectral parameterisation gave harsher, noisier images here in
        twice the time.

The "neuron" objective (the centre unit) is there to choose: for a small field it changes only the few pixels the
unit sees, a dot in the noise at the grid's size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fercore import disk_cache
from fercore.analysis_mode import analysis_mode

from . import objectives, params, transforms
from .exemplars import receptive_field
from .tracing import IMAGE_SHAPE, LayerRef, _chunks, _filter_indices, find_layer, to_conv_input

OnStep = Callable[[int, int], None]  # (ascent steps done, steps in all)


@dataclass(frozen=True)
class AscentSettings:
    """How gradient ascent runs: objective, parameterisation, transforms, regularisers and the optimiser."""
    objective: str = "channel"     # objectives.OBJECTIVES
    param: str = "pixel"           # params.PARAMETERISATIONS
    steps: int = 100
    lr: float = 0.05               # Adam's step (a fraction of the range for "pixel", logits otherwise)
    l2_decay: float = 0.0          # pull towards mid-range by this fraction after each step
    blur_every: int = 0            # every this many steps (0: never) smooth the image ...
    blur_sigma: float = 0.5        # ... with a Gaussian of this many pixels
    jitter: int = 0                # transforms: roll by up to this many pixels ...
    scales: tuple[float, ...] = ()  # ... and zoom by one of these
    tv_weight: float = 0.0         # total variation added to the loss
    stage: str = "pre_relu"        # tracing.STAGES


SMALL_FIELD = AscentSettings(objective="channel", stage="activation", param="sigmoid", steps=100, lr=0.1,
                             l2_decay=0.02)
LARGE_FIELD = AscentSettings(objective="channel", stage="pre_relu", param="pixel", steps=100, lr=0.05,
                             blur_every=4, blur_sigma=0.5, jitter=1)
SMALL_FIELD_PIXELS = 8  # receptive field side (the smaller one) up to which a layer gets SMALL_FIELD
DEFAULT_SEED = 0


def default_settings(model: nn.Module, layer: LayerRef, image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> dict:
    """The settings `visualize_filters(model, layer)` uses, chosen by the layer's receptive field (a dict of
    AscentSettings' fields)."""
    field = receptive_field(model, layer, image_shape)
    return asdict(SMALL_FIELD if min(field.size) <= SMALL_FIELD_PIXELS else LARGE_FIELD)


@dataclass
class FilterVisualization:
    """Gradient-ascent images of a layer's filters: images[i] maximises filter filters[i]."""
    images: np.ndarray             # float32 (F, 48, 48) in the model's input space (inside value_range)
    activations: np.ndarray        # float32 (F,) the objective each image reached (at `stage`)
    start_activations: np.ndarray  # float32 (F,) the objective on the start images
    dead: np.ndarray               # bool (F,) pre-activation response <= 0 everywhere on the start and final images
    layer: str
    filters: np.ndarray            # int64 (F,)
    stage: str
    value_range: tuple[float, float]
    objective: str = "channel"


def visualize_filters(model: nn.Module, layer: LayerRef, filters: Sequence[int] | None = None, *,
                      objective: str | None = None, param: str | None = None, steps: int | None = None,
                      lr: float | None = None, l2_decay: float | None = None, blur_every: int | None = None,
                      blur_sigma: float | None = None, jitter: int | None = None,
                      scales: Sequence[float] | None = None, tv_weight: float | None = None,
                      stage: str | None = None, seed: int = DEFAULT_SEED,
                      start: torch.Tensor | np.ndarray | None = None, value_range: tuple[float, float] = (0.0, 1.0),
                      progress: OnStep | None = None) -> FilterVisualization:
    """Images that maximise each chosen filter of a conv layer (all filters when None).

    Every setting left None takes the layer's default (`default_settings`: see the module's docstring); the
    settings are AscentSettings' fields. value_range is the preprocessed input range ((0, 1) for the homework's
    /255). `start` is None (seeded noise around mid-range; filter f's noise depends only on seed and f), one image
    (1, 48, 48) used for every filter, or one per filter (F, 1, 48, 48). `progress(step, steps)` is called after
    every step.
    """
    given = dict(objective=objective, param=param, steps=steps, lr=lr, l2_decay=l2_decay, blur_every=blur_every,
                 blur_sigma=blur_sigma, jitter=jitter, scales=scales, tv_weight=tv_weight, stage=stage)
    # The receptive field is measured only when some setting is left to the layer's default.
    missing = any(value is None for value in given.values())
    settings = default_settings(model, layer, _image_shape(start)) if missing else {}
    settings.update({name: value for name, value in given.items() if value is not None})
    jitter_pixels, scales = settings.pop("jitter"), settings.pop("scales")
    return render_vis(model, layer, filters, transform=transforms.standard(jitter_pixels, scales), seed=seed,
                      start=start, value_range=value_range, progress=progress, **settings)


FILTERS_FORMAT = "fercore-filters/1"
_SETTING_NAMES = tuple(AscentSettings.__dataclass_fields__)


def filters_meta(model: nn.Module, layer: LayerRef, filters: Sequence[int] | None = None, *, model_key: str,
                 value_range: tuple[float, float] = (0.0, 1.0), seed: int = DEFAULT_SEED, **settings) -> dict:
    """What a cached visualize_filters result is valid for: the model, the layer, the filters and every setting as
    visualize_filters resolves it (so the page's explicit defaults and a call with none share one entry)."""
    site = find_layer(model, layer)
    given = {name: value for name, value in settings.items() if value is not None}
    unknown = set(given) - set(_SETTING_NAMES)
    if unknown:
        raise ValueError(f"unknown gradient-ascent settings: {', '.join(sorted(unknown))}")
    resolved = {**(default_settings(model, layer) if len(given) < len(_SETTING_NAMES) else {}), **given}
    resolved["scales"] = [float(v) for v in resolved["scales"]]
    return {"format": FILTERS_FORMAT, "model_key": str(model_key), "layer": site.name,
            "filters": None if filters is None else [int(f) for f in filters], "seed": int(seed),
            "value_range": [float(v) for v in value_range], "settings": resolved}


def stored_filters(meta: dict, cache_dir=None) -> FilterVisualization | None:
    """The cached result for `meta` (filters_meta), or None when nothing computed it yet (never computes)."""
    arrays = disk_cache.read(meta, cache_dir)
    return None if arrays is None else _from_arrays(meta, arrays)


def cached_visualize_filters(model: nn.Module, layer: LayerRef, filters: Sequence[int] | None = None, *,
                             model_key: str, value_range: tuple[float, float] = (0.0, 1.0),
                             seed: int = DEFAULT_SEED, progress: OnStep | None = None, cache_dir=None,
                             **settings) -> FilterVisualization:
    """visualize_filters, read from (or first computed into) the disk cache (fercore.disk_cache) under the model's
    key (LoadedModel.key): once per cache folder, whichever server or precompute asks first."""
    meta = filters_meta(model, layer, filters, model_key=model_key, value_range=value_range, seed=seed, **settings)

    def compute() -> dict:
        result = visualize_filters(model, layer, filters, value_range=value_range, seed=seed, progress=progress,
                                   **meta["settings"])
        return {"images": result.images, "activations": result.activations,
                "start_activations": result.start_activations, "dead": result.dead, "filters": result.filters}

    arrays, _ = disk_cache.get_or_compute(meta, compute, cache_dir)
    return _from_arrays(meta, arrays)


def _from_arrays(meta: dict, arrays: dict) -> FilterVisualization:
    return FilterVisualization(images=arrays["images"], activations=arrays["activations"],
                               start_activations=arrays["start_activations"], dead=arrays["dead"],
                               layer=meta["layer"], filters=arrays["filters"], stage=meta["settings"]["stage"],
                               value_range=tuple(meta["value_range"]), objective=meta["settings"]["objective"])


def render_vis(model: nn.Module, layer: LayerRef, filters: Sequence[int] | None = None, *,
               objective: str = "channel", param: str = "pixel", transform: transforms.Transform | None = None,
               steps: int = 100, lr: float = 0.05, l2_decay: float = 0.0, blur_every: int = 0,
               blur_sigma: float = 0.5, tv_weight: float = 0.0, stage: str = "pre_relu", seed: int = 0,
               start=None, value_range: tuple[float, float] = (0.0, 1.0),
               progress: OnStep | None = None) -> FilterVisualization:
    """The ascent loop: each step, the parameterised images go through `transform` (one random draw per step for
    the whole batch), the objective's gradient (minus `tv_weight` times total variation) moves them with Adam, then
    decay, blur and the parameterisation's projection apply in place."""
    lo, hi = map(float, value_range)
    image_shape = _image_shape(start)
    site = find_layer(model, layer, image_shape)
    filters = _filter_indices(site, filters)
    generator = torch.Generator().manual_seed(seed)
    start_images = _start_images(start, site.conv.out_channels, filters, (lo, hi), image_shape, generator)
    image = params.from_images(param, start_images, (lo, hi))
    transform = transform or transforms.compose()
    chunks = _chunks(len(filters), site.prefix_numel)
    with analysis_mode(model):
        conv_input = to_conv_input(model, site)
        start_values, start_peaks = objectives.measure(objective, site, conv_input, image.images().detach(),
                                                       filters, stage, chunks)
        score = objectives.objective(objective)(site, conv_input, filters, stage, image_shape)
        optimizer = _Adam(image.tensor, lr=lr * (hi - lo) if image.lr_scale_by_range else lr)
        for step in range(steps):
            image.tensor.grad = None
            step_seed = int(torch.randint(2 ** 31, (1,), generator=generator))
            for rows in chunks:  # images are independent: chunks only keep activations cache-sized
                images = transform(image.images(rows), torch.Generator().manual_seed(step_seed))
                loss = -score(images, rows).sum()
                if tv_weight:
                    loss = loss + tv_weight * _total_variation(images).sum()
                loss.backward()
            with torch.no_grad():
                optimizer.step(image.tensor.grad)
                if l2_decay:
                    image.decay_(l2_decay)
                if blur_every and (step + 1) % blur_every == 0 and blur_sigma > 0:
                    image.blur_(blur_sigma)
                image.project_()
            if progress is not None:
                progress(step + 1, steps)
        final = image.images().detach()
        values, peaks = objectives.measure(objective, site, conv_input, final, filters, stage, chunks)
    return FilterVisualization(
        images=final[:, 0].contiguous().numpy(), activations=values.numpy(), start_activations=start_values.numpy(),
        dead=(torch.maximum(start_peaks, peaks) <= 0).numpy(), layer=site.name, filters=filters.numpy(),
        stage=stage, value_range=(lo, hi), objective=objective)


class _Adam:
    """Adam (Kingma & Ba 2015) on one tensor, in place. Not torch.optim: its first use imports torch._dynamo, which
    takes seconds, and a single tensor needs none of its machinery."""

    def __init__(self, x: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.x, self.lr, self.betas, self.eps, self.t = x, lr, betas, eps, 0
        self.m, self.v = torch.zeros_like(x), torch.zeros_like(x)

    def step(self, grad: torch.Tensor) -> None:
        b1, b2 = self.betas
        self.t += 1
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denominator = (self.v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
        self.x.data.addcdiv_(self.m, denominator, value=-self.lr / (1 - b1 ** self.t))


def _image_shape(start) -> tuple[int, int, int]:
    if start is None:
        return IMAGE_SHAPE
    shape = tuple(np.shape(start))
    return (1, *shape[-2:]) if len(shape) == 2 else tuple(shape[-3:])


def _start_images(start, channels: int, filters: torch.Tensor, value_range, image_shape,
                  generator: torch.Generator) -> torch.Tensor:
    """(F, *image_shape) start images inside value_range: seeded noise around mid-range, or the given image(s)."""
    lo, hi = value_range
    if start is None:
        # Noise for every filter of the layer, then the chosen rows: a filter's start never depends on the others.
        noise = torch.randn(channels, *image_shape, generator=generator)
        images = (lo + hi) / 2 + 0.1 * (hi - lo) * noise[filters]
    else:
        images = torch.as_tensor(np.asarray(start, dtype=np.float32)).reshape(-1, *image_shape)
        if len(images) not in (1, len(filters)):
            raise ValueError(f"start holds {len(images)} images: give one, or one per filter ({len(filters)})")
        images = images.expand(len(filters), *image_shape)
    return images.clamp(lo, hi).clone()


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """(N,) mean absolute difference between neighbouring pixels of each image."""
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dy + dx
