"""What gradient ascent maximises for each filter (Lucid's objectives, one image per filter).

    "channel"   the filter's mean response over the whole output map (Lucid's `channel`): the texture the filter
                likes everywhere. For a first layer this is linear in the pixels with (nearly) the same weight for
                every pixel, so its optimum is a flat or saturated image.
    "neuron"    the response of the filter's unit at the centre of the output map (Lucid's `neuron`, DeepVis'
                unit): the pattern it likes inside its receptive field; pixels outside it get no gradient at all.

An objective is a function (site, conv_input, filters, stage, image_shape) -> score, and score(images, rows) gives
(len(images),): filter filters[rows][i]'s objective on images[i], differentiable. `conv_input` maps images to the
layer's input (`tracing.to_conv_input`).

Speed: up to "pre_relu" a filter's response is affine in the layer's input, so both objectives are a dot product
with a fixed pattern (the conv's adjoint applied to a uniform map, or to one unit) plus a constant: computed once,
each step then costs one multiply-add over the layer's input instead of F filters' convolutions and their backward.
"""

from __future__ import annotations

from typing import Callable

import torch

from fercore.layout import memory_format_of

from .tracing import LayerSite, filter_response

Score = Callable[[torch.Tensor, slice], torch.Tensor]


def centre(site: LayerSite) -> tuple[int, int]:
    """(row, col) of the unit the "neuron" objective reads: the middle of the layer's output map."""
    return site.output_hw[0] // 2, site.output_hw[1] // 2


def _channel_reduce(site: LayerSite) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda response: response.mean((1, 2, 3))


def _neuron_reduce(site: LayerSite) -> Callable[[torch.Tensor], torch.Tensor]:
    row, col = centre(site)
    return lambda response: response[:, 0, row, col]


def _objective(reduce_for: Callable[[LayerSite], Callable]) -> Callable[..., Score]:
    def build(site: LayerSite, conv_input: Callable, filters: torch.Tensor, stage: str, image_shape) -> Score:
        reduce = reduce_for(site)
        if stage == "activation" and site.activation is not None:  # not affine: compute the response
            return lambda images, rows: reduce(filter_response(site, conv_input(images), filters[rows], stage,
                                                               per_image=True))
        with torch.no_grad():
            example = conv_input(torch.zeros(1, *image_shape).contiguous(memory_format=torch.channels_last))
        zeros = example.new_zeros(len(filters), *example.shape[1:]).requires_grad_(True)
        at_zero = reduce(filter_response(site, zeros, filters, stage, per_image=True))
        pattern, = torch.autograd.grad(at_zero.sum(), zeros)
        pattern, at_zero = pattern.contiguous(memory_format=memory_format_of(example)), at_zero.detach()
        return lambda images, rows: (conv_input(images) * pattern[rows]).sum((1, 2, 3)) + at_zero[rows]
    return build


_REDUCERS = {"channel": _channel_reduce, "neuron": _neuron_reduce}
channel, neuron = _objective(_channel_reduce), _objective(_neuron_reduce)
OBJECTIVES = {"channel": channel, "neuron": neuron}


def objective(name: str) -> Callable[..., Score]:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}: use one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def measure(name: str, site: LayerSite, conv_input: Callable, images: torch.Tensor, filters: torch.Tensor,
            stage: str, chunks: list[slice]) -> tuple[torch.Tensor, torch.Tensor]:
    """(F,) each image's objective for its filter at `stage`, computed from the layer itself, and (F,) the peak of
    its pre-activation response over the whole map (what a ReLU sees: at or below 0 everywhere means its output is
    0)."""
    reduce = _REDUCERS[name](site)
    values, peaks = [], []
    with torch.no_grad():
        for rows in chunks:
            inputs = conv_input(images[rows])
            pre_relu = filter_response(site, inputs, filters[rows], "pre_relu", per_image=True)
            at_stage = pre_relu if stage == "pre_relu" else filter_response(site, inputs, filters[rows], stage,
                                                                             per_image=True)
            values.append(reduce(at_stage))
            peaks.append(pre_relu.amax(dim=(1, 2, 3)))
    return torch.cat(values), torch.cat(peaks)
