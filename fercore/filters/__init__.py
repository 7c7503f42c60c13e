"""Look inside conv layers: gradient-ascent images of their filters, their kernels, their outputs for an image, and
the images that excite them most.

Lucent's shape: *where* a layer is read (`tracing`: the network runs only up to it), *what* is maximised
(`objectives`), *how* the image is parameterised (`params`), *which* random transforms each step sees
(`transforms`), and one loop around them (`render`). `exemplars` finds the real images a filter likes most and the
pixels its units see. `cached_visualize_filters` and `cached_top_activating` keep their results on disk
(fercore.disk_cache), which a precomputed lesson (fercore.lesson) fills before class.

Every function takes a plain nn.Module classifier (N, 1, 48, 48) -> logits and float images already preprocessed.
While one runs, the model is in eval mode with parameter gradients off (both restored afterwards, hooks removed), so
it must not be trained at the same moment from another thread.

A filter is *dead* when its post-activation output stays 0: gradient ascent does not lift its pre-activation
response above 0 anywhere (checked on the start and the final images).
"""

from .exemplars import (ReceptiveField, TopActivations, cached_top_activating, receptive_field, top_activating,
                        top_activating_layer)
from .objectives import OBJECTIVES, centre
from .params import PARAMETERISATIONS
from .render import (DEFAULT_SEED, LARGE_FIELD, SMALL_FIELD, SMALL_FIELD_PIXELS, AscentSettings, FilterVisualization,
                     cached_visualize_filters, default_settings, filters_meta, render_vis, stored_filters,
                     visualize_filters)
from .tracing import (IMAGE_SHAPE, STAGES, LayerSite, filter_response, find_layer, layer_kernels, layer_outputs,
                      run_until, to_conv_input, truncated_forward)

__all__ = ["AscentSettings", "DEFAULT_SEED", "FilterVisualization", "cached_top_activating",
           "cached_visualize_filters", "filters_meta", "stored_filters", "top_activating_layer", "IMAGE_SHAPE", "LARGE_FIELD", "LayerSite",
           "OBJECTIVES", "PARAMETERISATIONS", "ReceptiveField", "SMALL_FIELD", "SMALL_FIELD_PIXELS", "STAGES",
           "TopActivations", "centre", "default_settings", "filter_response", "find_layer", "layer_kernels",
           "layer_outputs", "receptive_field", "render_vis", "run_until", "to_conv_input", "top_activating",
           "truncated_forward", "visualize_filters"]
