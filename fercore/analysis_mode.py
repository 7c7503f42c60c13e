"""analysis_mode: running a model for analysis without leaving traces, shared by saliency, filters and occlusion.

Analyses need gradients with respect to the input only, in eval mode, and must hand the (possibly cached and
shared) model back exactly as they found it.
"""

import threading
from contextlib import contextmanager

import torch
from torch import nn

# One analysis at a time: analysis_mode flips shared state (modes, requires_grad, weight layout) and restores it,
# so two threads (e.g. two Streamlit sessions sharing a cached model) must not interleave. Reentrant because the
# sanity checks call the methods from inside. Two cores gain nothing from running analyses side by side anyway.
_ANALYSIS_LOCK = threading.RLock()


@contextmanager
def analysis_mode(model: nn.Module, channels_last: bool = True):
    """Eval mode, parameters not differentiated, conv weights in channels_last, gradients on; restores every
    module's mode, every parameter's requires_grad and its original weight tensor on exit (also on errors).
    Works when the caller sits in torch.no_grad() or inference_mode().

    Why channels_last: oneDNN's convolutions (forward and input-gradient) run ~1.4x faster with NHWC weights on
    this CPU; the layout is swapped back, so the caller's model is left exactly as it was."""
    # inference_mode(False) first: the channels_last copies must be normal tensors, which autograd can save
    with _ANALYSIS_LOCK, torch.inference_mode(False), torch.enable_grad():
        modes = [(module, module.training) for module in model.modules()]
        flags = [(param, param.requires_grad) for param in model.parameters()]
        layouts = [(param, param.data) for param in model.parameters() if channels_last and param.ndim == 4]
        try:
            model.eval()
            for param, _ in flags:
                param.requires_grad_(False)
            for param, data in layouts:
                param.data = data.contiguous(memory_format=torch.channels_last)
            yield model
        finally:
            for module, training in modes:
                module.training = training
            for param, flag in flags:
                param.requires_grad_(flag)
            for param, data in layouts:
                param.data = data
