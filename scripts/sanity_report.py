"""Saliency sanity checks of a checkpoint, as markdown tables for the model card.

    python scripts/sanity_report.py checkpoints/fernet_wide [--images 64]

Cascading model randomisation (Adebayo et al. 2018): Spearman rank correlation between the trained model's maps and
the maps after re-initialising layers from the top down. Deletion / insertion AUC (Petsiuk et al. 2018) against a
random map. The share of each method's map variance in the 2x2-periodic pattern (a stride-2 layer's checkerboard,
`checkerboard_share`). On the first PrivateTest images of the shipped data, for the predicted class.
"""

import argparse

import numpy as np

from fercore.checkpoints import load_model
from fercore.data import load_dataset
from fercore.labels import PRIVATE_TEST
from fercore.saliency import (METHODS, cascading_randomization, checkerboard_share, compute_saliency, deletion_curve,
                              insertion_curve)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    loaded = load_model(args.checkpoint)
    pixels = load_dataset(None).select_split(PRIVATE_TEST).pixels[:args.images]
    images = loaded.preprocess(pixels)
    cascades = {name: cascading_randomization(loaded.model, images, method=name) for name in METHODS}
    layers = [layer for layer, _ in cascades["gradient"]]
    print(f"Cascading randomisation, {loaded.path}, {len(images)} PrivateTest images (Spearman rho):\n")
    print("| layers re-initialised down to | " + " | ".join(METHODS) + " |\n|---|" + "---|" * len(METHODS))
    for i, layer in enumerate(layers):
        print(f"| {layer} | " + " | ".join(f"{cascades[name][i][1]:.2f}" for name in METHODS) + " |")
    rng = np.random.default_rng(0)
    random_maps = rng.random((len(images), 48, 48)).astype(np.float32)
    print("\nDeletion AUC (lower is better), insertion AUC (higher is better) and the 2x2 checkerboard's share of "
          "the map's variance (mean over the images):\n")
    print("| map | deletion AUC | insertion AUC | 2x2 checkerboard |\n|---|---|---|---|")
    for name, maps in [("random", random_maps)] + [(n, compute_saliency(n, loaded.model, images)) for n in METHODS]:
        deletion = deletion_curve(loaded.model, images, maps).mean_auc
        insertion = insertion_curve(loaded.model, images, maps).mean_auc
        print(f"| {name} | {deletion:.3f} | {insertion:.3f} | {checkerboard_share(maps).mean():.2%} |")


if __name__ == "__main__":
    main()
