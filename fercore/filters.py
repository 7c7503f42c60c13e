"""Look inside conv layers: their outputs, gradient-ascent images of their filters, the images that excite them most.

Kept apart, Lucent-style: *where* a layer is read (`find_layer`; the network runs only up to it), *what* is
maximised (a filter's mean response), *how* the image is parameterised (pixels inside the model's input value range,
projected back after every step) and *which* transforms and regularisers each step applies (jitter, total
variation, L2 decay towards mid-range, periodic Gaussian blur).

Speed (gradient ascent is the costly part): all chosen filters are optimised in one batch, one image per filter;
the network runs only up to the layer (a rebuilt chain of its modules with BN folded into the convs for
nn.Sequential-like models, else the model stopped by a hook); only each image's own filter is computed (its mean
response is a dot product with a fixed pattern); the batch runs in cache-sized chunks, conv weights in channels_last.

A conv layer can be read at three stages:

    "conv"        the nn.Conv2d output;
    "pre_relu"    after the BatchNorm2d that consumes it, if any (eval-mode BN is a per-channel affine map): the
                  filter's *response*. Gradient ascent maximises its mean (a ReLU would stop the gradient of a filter
                  that starts off) and `top_activating` ranks images by its spatial maximum;
    "activation"  after the elementwise activation module (ReLU, ...) that consumes the previous stage, if any.

`layer_outputs` defaults to "activation": the homework's Keras layers had the ReLU built in, so its "output of layer
0 given image 0" is the post-activation map. The stages are found by following the data flow of one traced forward
pass (which module consumes which tensor), so they are right for any model whose BN and activation are modules.

A filter is *dead* when its post-activation output stays 0: gradient ascent does not lift its pre-activation
response above 0 anywhere (checked on the start and the final images).

Every function takes a plain nn.Module classifier (N, 1, 48, 48) -> logits and float images already preprocessed.
While one runs, the model is in eval mode with parameter gradients off (both restored afterwards, hooks removed), so
it must not be trained at the same moment from another thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fercore.frozen import analysis_mode

STAGES = ("conv", "pre_relu", "activation")
IMAGE_SHAPE = (1, 48, 48)
# Activations that act on each value alone, so they can follow a single filter's response as well as the layer's.
ELEMENTWISE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                           nn.Hardswish, nn.Tanh, nn.Sigmoid, nn.Softplus)

Progress = Callable[[int, int], None]
LayerRef = str | int | nn.Conv2d


# ---------------------------------------------------------------------------------------------------------- layers

def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """The model's conv layers, input to output, by qualified name (fercore.models' naming when available)."""
    try:
        from fercore.models import conv_layers as registry_conv_layers
    except ImportError:
        return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    return registry_conv_layers(model)


@dataclass(frozen=True)
class LayerSite:
    """A conv layer and the modules that make up its later stages (None where the model has none)."""
    name: str
    conv: nn.Conv2d
    norm: nn.BatchNorm2d | None        # consumes the conv's output
    activation: nn.Module | None       # elementwise, consumes the norm's (or the conv's) output
    output_hw: tuple[int, int]         # spatial size of the layer's output for one traced image
    prefix_numel: int                  # largest tensor (elements per image) the network computes before the conv
    chain: tuple[nn.Module, ...] | None  # the modules before the conv when they form a plain chain from the input

    def module_at(self, stage: str) -> nn.Module:
        """The last module that runs to produce `stage`."""
        _check_stage(stage)
        chain = [self.conv, self.norm if stage != "conv" else None, self.activation if stage == "activation" else None]
        return [m for m in chain if m is not None][-1]


def find_layer(model: nn.Module, layer: LayerRef, image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> LayerSite:
    """Resolve a conv layer given by name, by index into `conv_layers(model)` or as the module itself, and find its
    BN and activation by following one traced forward pass."""
    name, conv = _resolve_conv(model, layer)
    image = torch.zeros(1, *image_shape)
    with analysis_mode(model, channels_last=False):
        calls = _trace_leaf_calls(model, image, stop_after=conv)
    at = next((i for i, call in enumerate(calls) if call.module is conv), None)
    if at is None:
        raise ValueError(f"conv layer {name!r} does not run in the model's forward")
    norm, norm_out = _consumer(calls, calls[at].output)
    if not _is_foldable_norm(norm, conv):
        norm, norm_out = None, calls[at].output
    activation, _ = _consumer(calls, norm_out)
    if not _is_elementwise(activation):
        activation = None
    prefix_numel = max(call.input.numel() for call in calls[:at + 1])
    return LayerSite(name, conv, norm, activation, tuple(calls[at].output.shape[-2:]), prefix_numel,
                     _chain_before(calls, at, image))


def _resolve_conv(model: nn.Module, layer: LayerRef) -> tuple[str, nn.Conv2d]:
    layers = conv_layers(model)
    if isinstance(layer, nn.Conv2d):
        for name, conv in layers.items():
            if conv is layer:
                return name, conv
        raise ValueError("the given Conv2d is not part of the model")
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        if not -len(layers) <= layer < len(layers):
            raise ValueError(f"conv layer index {layer} out of range: the model has {len(layers)} conv layers")
        return list(layers.items())[layer]
    if layer not in layers:
        raise ValueError(f"unknown conv layer {layer!r}: the model's conv layers are {', '.join(layers)}")
    return layer, layers[layer]


class _Reached(Exception):
    """Raised from a hook to stop the forward pass once the wanted tensor exists."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value


@dataclass(frozen=True)
class _Call:
    module: nn.Module
    input: torch.Tensor | None
    output: torch.Tensor
    input_version: int   # the tensors' version counters: they tell apart an in-place op run between two modules
    output_version: int


def _trace_leaf_calls(model: nn.Module, image: torch.Tensor, stop_after: nn.Module,
                      extra_calls: int = 4) -> list[_Call]:
    """The leaf module calls of one forward pass on `image`, in call order, up to `extra_calls` calls after
    `stop_after` (enough to see the BN and activation that follow a conv)."""
    calls, input_versions = [], []
    stop_at = None

    def before(module, args):
        input_versions.append(_version(args[0]) if args else -1)

    def after(module, args, output):
        nonlocal stop_at
        calls.append(_Call(module, args[0] if args else None, output, input_versions.pop(), _version(output)))
        if module is stop_after and stop_at is None:
            stop_at = len(calls) + extra_calls
        if stop_at is not None and len(calls) >= stop_at:
            raise _Reached(output)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_pre_hook(before) for m in leaves] + [m.register_forward_hook(after) for m in leaves]
    try:
        with torch.no_grad():
            model(image)
    except _Reached:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _version(value) -> int:
    return value._version if isinstance(value, torch.Tensor) else -1


def _consumer(calls: list[_Call], tensor: torch.Tensor) -> tuple[nn.Module | None, torch.Tensor | None]:
    """The first module call whose input is `tensor` itself (the same object), and its output."""
    return next(((call.module, call.output) for call in calls if call.input is tensor), (None, None))


def _chain_before(calls: list[_Call], at: int, image: torch.Tensor) -> tuple[nn.Module, ...] | None:
    """The modules called before calls[at] when each one's input is exactly the previous one's output, untouched
    (no functional op in between), starting from the image: then they alone compute the conv's input."""
    expected, version = image, image._version
    for call in calls[:at + 1]:
        if call.input is not expected or call.input_version != version:
            return None
        expected, version = call.output, call.output_version
    return tuple(call.module for call in calls[:at])


def _is_foldable_norm(module: nn.Module | None, conv: nn.Conv2d) -> bool:
    """Eval-mode BatchNorm2d with running statistics is a per-channel affine map, so it folds into one filter."""
    return (isinstance(module, nn.BatchNorm2d) and module.num_features == conv.out_channels
            and module.running_mean is not None)


def _is_elementwise(module: nn.Module | None) -> bool:
    return isinstance(module, ELEMENTWISE_ACTIVATIONS) or (isinstance(module, nn.PReLU) and module.num_parameters == 1)


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: use one of {', '.join(STAGES)}")


# ------------------------------------------------------------------------------------------- truncated forward

def run_until(model: nn.Module, x: torch.Tensor, module: nn.Module, *, before: bool = False) -> torch.Tensor:
    """Run `model` on `x` only until `module` runs; return its output (its input with before=True).

    Nothing after that point is computed, so reading an early layer costs only the layers before it; gradients flow
    back to `x` as usual.
    """
    def stop_before(_module, args):
        raise _Reached(args[0])

    def stop_after(_module, _args, output):
        raise _Reached(output)

    handle = module.register_forward_pre_hook(stop_before) if before else module.register_forward_hook(stop_after)
    try:
        model(x)
    except _Reached as reached:
        return reached.value
    finally:
        handle.remove()
    raise ValueError(f"{type(module).__name__} never ran in the model's forward pass")


def truncated_forward(model: nn.Module, images: torch.Tensor, layer: LayerRef,
                      stage: str = "activation") -> torch.Tensor:
    """The layer's output (N, C, H, W) at `stage` for preprocessed images (N, 1, 48, 48), computing nothing after it.

    The model is put in eval mode for the call; gradients flow to `images` when they require grad.
    """
    site = find_layer(model, layer, tuple(images.shape[1:]))
    with analysis_mode(model, channels_last=False):
        return run_until(model, images, site.module_at(stage))


def layer_outputs(model: nn.Module, images: torch.Tensor, layer: LayerRef, stage: str = "activation",
                  batch_size: int | None = None) -> np.ndarray:
    """float32 (N, C, H, W): every channel of a conv layer for each image (the homework's layer-output grid).

    `images` is preprocessed, (N, 1, 48, 48) or one image (1, 48, 48). batch_size None: cache-sized batches.
    """
    images = torch.as_tensor(images, dtype=torch.float32)
    images = images[None] if images.dim() == 3 else images
    site = find_layer(model, layer, tuple(images.shape[1:]))
    images = images.contiguous(memory_format=torch.channels_last)
    with analysis_mode(model), torch.no_grad():
        outputs = [run_until(model, images[rows], site.module_at(stage))
                   for rows in _chunks(len(images), site.prefix_numel, batch_size)]
    return torch.cat(outputs).float().contiguous().numpy()


# ---------------------------------------------------------------------------------------------- filter responses

def _filter_weights(site: LayerSite, filters: torch.Tensor, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (F, Cin, kh, kw) and bias (F,) of the chosen filters, with eval-mode BN folded in past "conv"."""
    return _folded(site.conv, site.norm if stage != "conv" else None, filters)


def _folded(conv: nn.Conv2d, norm: nn.BatchNorm2d | None, filters) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of the chosen output channels of conv followed by eval-mode BN (a per-channel affine map)."""
    weight = conv.weight[filters]
    bias = conv.bias[filters] if conv.bias is not None else weight.new_zeros(len(weight))
    if norm is not None:
        scale = torch.rsqrt(norm.running_var[filters] + norm.eps)
        shift = -norm.running_mean[filters] * scale
        if norm.affine:
            scale, shift = scale * norm.weight[filters], shift * norm.weight[filters] + norm.bias[filters]
        weight, bias = weight * scale[:, None, None, None], bias * scale + shift
    return weight, bias


def _can_slice_filters(conv: nn.Conv2d) -> bool:
    """Whether one filter's response can be computed on its own from the layer's input."""
    return conv.groups == 1 and conv.padding_mode == "zeros"


def filter_response(site: LayerSite, conv_input: torch.Tensor, filters: torch.Tensor, stage: str = "pre_relu",
                    *, per_image: bool = False) -> torch.Tensor:
    """The chosen filters' responses at `stage`, from the conv layer's input, without computing the other filters.

    per_image=False: every image gets every chosen filter, (N, F, H, W).
    per_image=True: image i gets filter filters[i] only, (F, 1, H, W); for gradient ascent (one image per filter)
    this costs 1/C of the whole layer.
    """
    _check_stage(stage)
    conv = site.conv
    if _can_slice_filters(conv):
        weight, bias = _filter_weights(site, filters, stage)
        # per image: (F, 1, Cin, kh, kw), image i meets filter i; otherwise (1, F, Cin, kh, kw), shared by all.
        weight = weight[:, None] if per_image else weight[None]
        response = _correlate(conv_input, weight, conv) + bias.view(weight.shape[0], -1, 1, 1)
    else:
        full = conv(conv_input)
        if stage != "conv" and site.norm is not None:
            full = site.norm(full)
        response = full[torch.arange(len(filters)), filters][:, None] if per_image else full[:, filters]
    if stage == "activation" and site.activation is not None:
        response = site.activation(response)
    return response


def _correlate(x: torch.Tensor, weight: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv2d without bias of x (N, Cin, H, W) with per-image filter banks weight (N or 1, F, Cin, kh, kw), using
    `conv`'s stride, padding and dilation: (N, F, Ho, Wo).

    oneDNN has no fast kernel for a grouped conv with one output channel per group (it runs ~100x below the matmul
    rate), so: one batched matmul takes every filter tap over the channels, z[n, f, tap, y, x] =
    sum_c w[f, c, tap] x[n, c, y, x], reading the input once; then kh*kw shifted slices of the small z are summed.
    """
    n, cin, height, width = x.shape
    _, filters, _, kh, kw = weight.shape
    taps = weight.permute(0, 1, 3, 4, 2).reshape(weight.shape[0], filters * kh * kw, cin)  # (N|1, F*taps, Cin)
    if _memory_format(x) == torch.channels_last:
        pixels_by_channel = x.permute(0, 2, 3, 1).reshape(n, height * width, cin)          # a view: no copy
        z = torch.matmul(pixels_by_channel, taps.transpose(1, 2)).transpose(1, 2)
    else:
        z = torch.matmul(taps, x.reshape(n, cin, height * width))
    z = z.reshape(n, filters, kh, kw, height, width)
    (top, bottom), (left, right) = _padding(conv, height, width)
    z = F.pad(z, (left, right, top, bottom))
    (sy, sx), (dy, dx) = conv.stride, conv.dilation
    out_h = (height + top + bottom - dy * (kh - 1) - 1) // sy + 1
    out_w = (width + left + right - dx * (kw - 1) - 1) // sx + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = z[:, :, i, j, i * dy:i * dy + sy * (out_h - 1) + 1:sy, j * dx:j * dx + sx * (out_w - 1) + 1:sx]
            out = tap if out is None else out + tap
    return out


def _padding(conv: nn.Conv2d, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(top, bottom), (left, right) zero padding of a conv, including the 'same' and 'valid' strings."""
    if conv.padding == "valid":
        return (0, 0), (0, 0)
    if conv.padding == "same":
        sides = []
        for k, d in zip(conv.kernel_size, conv.dilation):
            total = d * (k - 1)
            sides.append((total // 2, total - total // 2))
        return sides[0], sides[1]
    return (conv.padding[0], conv.padding[0]), (conv.padding[1], conv.padding[1])


def _filter_indices(site: LayerSite, filters: Sequence[int] | None) -> torch.Tensor:
    count = site.conv.out_channels
    if filters is None:
        return torch.arange(count)
    indices = torch.as_tensor(np.asarray(filters, dtype=np.int64).reshape(-1))
    if len(indices) == 0 or indices.min() < 0 or indices.max() >= count:
        raise ValueError(f"filters must be indices in 0..{count - 1} of layer {site.name!r}, got {list(filters)}")
    return indices


# ------------------------------------------------------------------------------------------ the network up to a layer

# Identity in eval mode: left out of the prefix.
EVAL_IDENTITIES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                   nn.FeatureAlphaDropout)


def to_conv_input(model: nn.Module, site: LayerSite) -> Callable[[torch.Tensor], torch.Tensor]:
    """images -> the conv layer's input, computing nothing else. Call it with the model frozen (eval mode).

    When the modules before the conv form a plain chain (any nn.Sequential-like model), they are rebuilt as one:
    each BatchNorm right after a conv folded into a new conv (one pass over memory less, forward and backward)
    and dropout left out. Otherwise the model itself runs and is stopped at the conv by a hook.
    """
    if site.chain is None:
        return lambda images: run_until(model, images, site.conv, before=True)
    modules, chain = [], list(site.chain)
    while chain:
        module = chain.pop(0)
        if isinstance(module, nn.Conv2d) and chain and _is_foldable_norm(chain[0], module):
            module = _conv_with_norm(module, chain.pop(0))
        if _is_grayscale_conv(module):
            module = _GrayscaleConv(module)
        if not isinstance(module, EVAL_IDENTITIES):
            modules.append(module)
    return nn.Sequential(*modules).eval()


def _conv_with_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv computing norm(conv(x)) for eval-mode BN, frozen, weights in channels_last (the caller's conv and
    BN are left as they are)."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    with torch.no_grad():
        weight, bias = _folded(conv, norm, torch.arange(conv.out_channels))
    fused.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last), requires_grad=False)
    fused.bias = nn.Parameter(bias, requires_grad=False)
    return fused


def _is_grayscale_conv(module: nn.Module) -> bool:
    return (isinstance(module, nn.Conv2d) and module.in_channels == 1 and module.groups == 1
            and module.padding_mode == "zeros" and not isinstance(module.padding, str))


class _GrayscaleConv(nn.Module):
    """A frozen conv on one input channel (a grayscale net's first layer) whose backward to the image is one skinny
    matmul and a col2im (F.fold): oneDNN's backward-data for a single output channel runs ~5x slower here, and it
    is the biggest cost of gradient ascent on the second layer."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GrayscaleConvFunction.apply(x, self.conv.weight, self.conv.bias, self.conv)


class _GrayscaleConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, conv):
        ctx.conv, ctx.image_hw = conv, x.shape[-2:]
        ctx.save_for_backward(weight)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)

    @staticmethod
    def backward(ctx, grad):
        weight, = ctx.saved_tensors
        conv, (n, channels) = ctx.conv, grad.shape[:2]
        taps = weight.reshape(channels, -1).t()                                        # (kh*kw, C)
        columns = torch.matmul(taps, grad.contiguous().reshape(n, channels, -1))       # (N, kh*kw, L)
        image = F.fold(columns, ctx.image_hw, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
        return image, None, None, None


# ------------------------------------------------------------------------------------------------ gradient ascent

@dataclass
class FilterVisualization:
    """Gradient-ascent images of a layer's filters: images[i] maximises filter filters[i]."""
    images: np.ndarray             # float32 (F, 48, 48) in the model's input space (inside value_range)
    activations: np.ndarray        # float32 (F,) mean response each image reached (at `stage`)
    start_activations: np.ndarray  # float32 (F,) mean response of the start images
    dead: np.ndarray               # bool (F,) pre-activation response <= 0 everywhere on the start and final images
    layer: str
    filters: np.ndarray            # int64 (F,)
    stage: str
    value_range: tuple[float, float]


def visualize_filters(model: nn.Module, layer: LayerRef, filters: Sequence[int] | None = None, *, steps: int = 100,
                      lr: float = 0.05, seed: int = 0, start: torch.Tensor | np.ndarray | None = None,
                      value_range: tuple[float, float] = (0.0, 1.0), l2_decay: float = 0.0, blur_every: int = 0,
                      blur_sigma: float = 0.5, jitter: int = 0, tv_weight: float = 0.0, stage: str = "pre_relu",
                      progress: Progress | None = None) -> FilterVisualization:
    """Images that maximise the mean response of each chosen filter of a conv layer (all filters when None).

    All filters are optimised together in one batch: image i maximises filter filters[i] (loss = -sum_i mean
    response of filter i on image i; no image affects another). The network runs only up to the layer.

    Parameterisation: pixels in the model's input space, kept inside `value_range` (the preprocessed range: (0, 1)
    for the homework's /255). `lr` is Adam's step as a fraction of that range. `start` is None (seeded noise around
    mid-range; filter f's noise depends only on seed and f, so a subset gives the same images as the whole layer),
    one image (1, 48, 48) used for every filter, or one per filter (F, 1, 48, 48).
    Each step: `jitter` rolls the batch by up to that many pixels (same shift for every image), `tv_weight` adds the
    mean absolute difference of neighbouring pixels to the loss, `l2_decay` pulls pixels towards mid-range by that
    fraction, and every `blur_every` steps a Gaussian blur of `blur_sigma` pixels smooths the images.
    `progress(step, steps)` is called after every step.
    """
    lo, hi = map(float, value_range)
    image_shape = _image_shape(start)
    site = find_layer(model, layer, image_shape)
    filters = _filter_indices(site, filters)
    generator = torch.Generator().manual_seed(seed)
    x = _start_images(start, site.conv.out_channels, filters, (lo, hi), image_shape, generator)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    chunks = _chunks(len(filters), site.prefix_numel)
    with analysis_mode(model):
        conv_input = to_conv_input(model, site)
        start_means, start_peaks = _measure(conv_input, site, x, filters, stage, chunks)
        mean_response = _mean_response_objective(conv_input, site, filters, stage, image_shape)
        optimizer = _Adam(x, lr=lr * (hi - lo))
        for step in range(steps):
            x.grad = None
            shift = _jitter_shift(jitter, generator)
            for rows in chunks:  # images are independent: chunks only keep activations cache-sized
                images = _roll(x[rows] if len(chunks) > 1 else x, shift)
                loss = -mean_response(images, rows).sum()
                if tv_weight:
                    loss = loss + tv_weight * _total_variation(images).sum()
                loss.backward()
            with torch.no_grad():
                optimizer.step(x.grad)
                _regularise_(x, step, (lo, hi), l2_decay, blur_every, blur_sigma)
            if progress is not None:
                progress(step + 1, steps)
        final_means, final_peaks = _measure(conv_input, site, x, filters, stage, chunks)
    return FilterVisualization(
        images=x.detach()[:, 0].contiguous().numpy(),
        activations=final_means.numpy(), start_activations=start_means.numpy(),
        dead=(torch.maximum(start_peaks, final_peaks) <= 0).numpy(),
        layer=site.name, filters=filters.numpy(), stage=stage, value_range=(lo, hi))


# Activations of one chunk of images stay under this size, so they come from the allocator's free lists instead of
# fresh page-faulted memory (glibc maps blocks over 32 MB anew each time) and stay in the CPU's last-level cache.
CHUNK_BYTES = 8_000_000


def _chunks(count: int, numel_per_image: int, size: int | None = None) -> list[slice]:
    """Consecutive slices covering range(count): `size` long, or as many images as fit CHUNK_BYTES."""
    size = size or max(1, CHUNK_BYTES // (4 * numel_per_image))
    return [slice(i, min(i + size, count)) for i in range(0, count, size)]


def _measure(conv_input: Callable, site: LayerSite, images: torch.Tensor, filters: torch.Tensor, stage: str,
             chunks: list[slice]) -> tuple[torch.Tensor, torch.Tensor]:
    """(F,) each image's mean response to its filter at `stage`, and (F,) the peak of its pre-activation response
    (what a ReLU sees: at or below 0 everywhere means the ReLU output is 0)."""
    means, peaks = [], []
    with torch.no_grad():
        for rows in chunks:
            inputs = conv_input(images[rows])
            pre_relu = filter_response(site, inputs, filters[rows], "pre_relu", per_image=True)
            at_stage = pre_relu if stage == "pre_relu" else filter_response(site, inputs, filters[rows], stage,
                                                                             per_image=True)
            means.append(at_stage.mean(dim=(1, 2, 3)))
            peaks.append(pre_relu.amax(dim=(1, 2, 3)))
    return torch.cat(means), torch.cat(peaks)


def _mean_response_objective(conv_input: Callable, site: LayerSite, filters: torch.Tensor, stage: str,
                             image_shape) -> Callable[[torch.Tensor, slice], torch.Tensor]:
    """(images, rows) -> (len(images),): filter filters[rows][i]'s mean response on images[i], differentiable.

    Up to "pre_relu" the response is affine in the layer's input, so its spatial mean is a dot product with a fixed
    pattern (the conv's adjoint applied to a uniform map) plus a constant: computed once here, each step then costs
    one multiply-add over the layer's input instead of F filters' convolutions and their backward.
    """
    if stage == "activation" and site.activation is not None:
        return lambda images, rows: filter_response(site, conv_input(images), filters[rows], stage,
                                                    per_image=True).mean((1, 2, 3))
    with torch.no_grad():
        example = conv_input(torch.zeros(1, *image_shape).contiguous(memory_format=torch.channels_last))
    zeros = example.new_zeros(len(filters), *example.shape[1:]).requires_grad_(True)
    at_zero = filter_response(site, zeros, filters, stage, per_image=True).mean((1, 2, 3))
    pattern, = torch.autograd.grad(at_zero.sum(), zeros)
    pattern, at_zero = pattern.contiguous(memory_format=_memory_format(example)), at_zero.detach()
    return lambda images, rows: (conv_input(images) * pattern[rows]).sum((1, 2, 3)) + at_zero[rows]


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


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
        self.x.addcdiv_(self.m, denominator, value=-self.lr / (1 - b1 ** self.t))


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


def _jitter_shift(jitter: int, generator: torch.Generator) -> tuple[int, int]:
    """A random (dy, dx) of up to `jitter` pixels, the same for the whole batch (robustness to small translations)."""
    if jitter <= 0:
        return 0, 0
    dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
    return dy, dx


def _roll(x: torch.Tensor, shift: tuple[int, int]) -> torch.Tensor:
    return torch.roll(x, shifts=shift, dims=(2, 3)) if shift != (0, 0) else x


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """(N,) mean absolute difference between neighbouring pixels of each image."""
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of each channel of (N, C, H, W), reflecting at the borders."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    channels = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return F.conv2d(rows, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)


def _regularise_(x: torch.Tensor, step: int, value_range, l2_decay: float, blur_every: int,
                 blur_sigma: float) -> None:
    """In place, after each optimiser step: decay towards mid-range, blur now and then, project into the range."""
    lo, hi = value_range
    if l2_decay:
        middle = (lo + hi) / 2
        x.sub_(middle).mul_(1 - l2_decay).add_(middle)
    if blur_every and (step + 1) % blur_every == 0 and blur_sigma > 0:
        x.copy_(gaussian_blur(x, blur_sigma))
    x.clamp_(lo, hi)


# ------------------------------------------------------------------------------------------ receptive fields

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
