"""Do the Filters page's default gradient-ascent images show anything? For each shipped checkpoint and conv layer,
at `visualize_filters`' defaults: the share of pixels at the input range's bounds (within 1% of the range of a
bound), how many images are flat (per-image standard deviation under 2% of the range) and the seconds taken.

    python scripts/filter_readability.py [--checkpoints checkpoints/hw3,checkpoints/fernet_wide] [--layers first,last]
                                         [--png /tmp/filters]

--layers: "all", or a comma-separated list of layer names and the words first / last. --png writes each layer's
grid (and the first layer's kernels) as PNG files into that folder, to look at.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from fercore import render
from fercore.checkpoints import load_model
from fercore.filters import default_settings, layer_kernels, visualize_filters
from fercore.models import conv_layers

ROOT = Path(__file__).resolve().parent.parent

BOUND_SHARE = 0.01  # of the range: a pixel this close to a bound counts as at the bound
FLAT_STD = 0.02     # of the range: an image whose pixels vary less than this is flat


def share_at_bounds(images: np.ndarray, value_range: tuple[float, float]) -> float:
    lo, hi = value_range
    margin = BOUND_SHARE * (hi - lo)
    return float(((images <= lo + margin) | (images >= hi - margin)).mean())


def flat_images(images: np.ndarray, value_range: tuple[float, float]) -> int:
    lo, hi = value_range
    return int((images.reshape(len(images), -1).std(axis=1) < FLAT_STD * (hi - lo)).sum())


def chosen_layers(names: list[str], spec: str) -> list[str]:
    if spec == "all":
        return names
    words = {"first": names[0], "last": names[-1]}
    return list(dict.fromkeys(words.get(word, word) for word in spec.split(",")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="checkpoints/hw3,checkpoints/fernet_wide")
    parser.add_argument("--layers", default="all")
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    if args.png is not None:
        args.png.mkdir(parents=True, exist_ok=True)
    from fercore.render import filter_grid  # the page's own picture

    print(f"{'checkpoint':12} {'layer':6} {'objective':9} {'param':8} {'at bounds':>9} {'flat':>5} {'seconds':>8}")
    for path in args.checkpoints.split(","):
        loaded = load_model(ROOT / path if not Path(path).is_absolute() else path)
        value_range = tuple(float(v) for v in loaded.preprocess(np.array([[[0]], [[255]]], np.uint8)).flatten())
        names = list(conv_layers(loaded.model))
        for layer in chosen_layers(names, args.layers):
            settings = default_settings(loaded.model, layer)
            started = time.perf_counter()
            result = visualize_filters(loaded.model, layer, value_range=value_range)
            seconds = time.perf_counter() - started
            print(f"{Path(path).name:12} {layer:6} {settings['objective']:9} {settings['param']:8} "
                  f"{share_at_bounds(result.images, value_range):9.1%} "
                  f"{flat_images(result.images, value_range):5d} {seconds:8.2f}", flush=True)
            if args.png is not None:
                stem = f"{Path(path).name}_{layer}"
                (args.png / f"{stem}.png").write_bytes(render.png_bytes(filter_grid(result.images, result.dead)))
                if layer == names[0]:
                    kernels = render.kernel_grid(layer_kernels(loaded.model, layer))
                    (args.png / f"{stem}_kernels.png").write_bytes(render.png_bytes(kernels))


if __name__ == "__main__":
    main()
