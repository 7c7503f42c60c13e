"""The memory layout of a tensor, for making new tensors laid out as an existing one is.

fercore trains and analyses in channels_last (NHWC), where oneDNN's convolutions run fastest on the CPU; a tensor
made to go with an activation (a dropout mask, a pattern to compare with it) should be stored the same way.
"""

import torch


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-d tensor stored that way (as after a channels_last conv), else contiguous."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
