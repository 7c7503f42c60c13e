"""Where a conv layer is read, and how its filters' responses are computed fast.

A conv layer can be read at three stages:

    "conv"        the nn.Conv2d output;
    "pre_relu"    after the BatchNorm2d that consumes it, if any (eval-mode BN is a per-channel affine map): the
                  filter's *response*. Gradient ascent maximises it (a ReLU would stop the gradient of a filter
                  that starts off) and `top_activating` ranks images by its spatial maximum;
    "activation"  after the elementwise activation module (ReLU, ...) that consumes the previous stage, if any.

`layer_outputs` defaults to "activation": the homework's Keras layers had the ReLU built in, so its "output of layer
0 given image 0" is the post-activation map. The stages are found by following the data flow of one traced forward
pass (which module consumes which tensor), so they are right for any model whose BN and activation are modules.

Speed: the network runs only up to the layer (a rebuilt chain of its modules with BN folded into the convs for
nn.Sequential-like models, else the model stopped by a hook); only the filters asked for are computed, in
cache-sized chunks, conv weights in channels_last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights

from fercore.analysis_mode import analysis_mode
from fercore.layout import memory_format_of
from fercore.models import conv_layers

STAGES = ("conv", "pre_relu", "activation")
IMAGE_SHAPE = (1, 48, 48)
# Activations that act on each value alone, so they can follow a single filter's response as well as the layer's.
ELEMENTWISE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                           nn.Hardswish, nn.Tanh, nn.Sigmoid, nn.Softplus)

LayerRef = str | int | nn.Conv2d


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

    @property
    def reads_image(self) -> bool:
        """Whether the conv is the first module to run and gets the model's input untouched."""
        return self.chain == ()

    @property
    def kernels_are_pictures(self) -> bool:
        """Whether each filter's weights are a small picture: the conv reads the one-channel image itself."""
        return self.reads_image and self.conv.in_channels == 1 and self.conv.groups == 1


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
    `stop_after` (enough to see the BN and activation that follow a conv), and never into the next conv or linear
    layer: the costliest call, and past what a conv's stages can be."""
    calls, input_versions = [], []
    stop_at = None

    def before(module, args):
        if stop_at is not None and isinstance(module, (nn.Conv2d, nn.Linear)):
            raise _Reached(args[0])
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
    """Weights and bias of the chosen output channels of conv followed by eval-mode BN (a per-channel affine map).
    Constants for the analyses: no gradient flows to them."""
    with torch.no_grad():
        weight = conv.weight[filters]
        bias = conv.bias[filters] if conv.bias is not None else None
        if norm is None:
            return weight, bias if bias is not None else weight.new_zeros(len(weight))
        affine = (norm.weight[filters], norm.bias[filters]) if norm.affine else (None, None)
        weight, bias = fuse_conv_bn_weights(weight, bias, norm.running_mean[filters], norm.running_var[filters],
                                            norm.eps, *affine)
    return weight.data, bias.data


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
    One image per filter on a one-channel input (a first layer's ascent) is a depthwise conv instead, which oneDNN
    runs fast both ways (the slices' backward fills and copies a full-size zero tensor each, 20x slower).
    """
    n, cin, height, width = x.shape
    _, filters, _, kh, kw = weight.shape
    if cin == 1 and filters == 1 and weight.shape[0] == n:
        depthwise = F.conv2d(x.reshape(1, n, height, width), weight.reshape(n, 1, kh, kw), None, conv.stride,
                             conv.padding, conv.dilation, groups=n)
        return depthwise.reshape(n, 1, *depthwise.shape[-2:])
    taps = weight.permute(0, 1, 3, 4, 2).reshape(weight.shape[0], filters * kh * kw, cin)  # (N|1, F*taps, Cin)
    if memory_format_of(x) == torch.channels_last:
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
    """A new conv computing norm(conv(x)) for eval-mode BN (torch's fusion), frozen, weights in channels_last (the
    caller's conv and BN are left as they are)."""
    with torch.no_grad():
        fused = fuse_conv_bn_eval(conv, norm)
    fused.weight = nn.Parameter(fused.weight.data.contiguous(memory_format=torch.channels_last), requires_grad=False)
    fused.bias.requires_grad_(False)
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


# Activations of one chunk of images stay under this size, so they come from the allocator's free lists instead of
# fresh page-faulted memory (glibc maps blocks over 32 MB anew each time) and stay in the CPU's last-level cache.
CHUNK_BYTES = 8_000_000


def _chunks(count: int, numel_per_image: int, size: int | None = None) -> list[slice]:
    """Consecutive slices covering range(count): `size` long, or as many images as fit CHUNK_BYTES."""
    size = size or max(1, CHUNK_BYTES // (4 * numel_per_image))
    return [slice(i, min(i + size, count)) for i in range(0, count, size)]

# ---------------------------------------------------------------------------------------------------- kernels

def layer_kernels(model: nn.Module, layer: LayerRef, image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> np.ndarray:
    """float32 (out_channels, kh, kw): the weights of a conv layer that reads the (one-channel) image, one small
    picture per filter. BatchNorm after the conv is left out: its per-channel scale changes a kernel's contrast,
    not its pattern (a negative BN weight would flip the sign: `find_layer(...).norm` tells).

    Only such a layer's kernels are pictures: a deeper layer's kernels weigh feature maps, not pixels, so asking
    for one is a ValueError naming the layer."""
    site = find_layer(model, layer, image_shape)
    if not site.kernels_are_pictures:
        raise ValueError(f"layer {site.name!r} does not read the one-channel image (its kernels weigh "
                         f"{site.conv.in_channels // site.conv.groups} input maps of earlier layers), so its kernels "
                         f"are not pictures: pick the first conv layer, {next(iter(conv_layers(model)))!r}")
    return site.conv.weight.detach()[:, 0].float().cpu().numpy().copy()
