"""How much of a face the Inspect page's default mask keeps, on the shipped checkpoints and data (markdown).

    python scripts/mask_coverage.py [--faces 200] [--png /tmp/masks]

For each checkpoint: the first N PrivateTest faces of the shipped data, the vanilla gradient of the predicted class
(what the Inspect page computes first), and the share of each face the mask keeps at its default threshold: median,
5th and 95th percentile, and the share of faces whose mask keeps 20-60%. Rows: the library's default display, the
homework scaling without smoothing (Keras' deprocess_image exactly), the 99th-percentile scaling, and the min-max
scaling without smoothing (the display before the homework scaling became the default).
With --png, one picture per checkpoint and display of 8 faces x (original, heatmap, mask, overlay), as the page
shows them.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from fercore import render
from fercore.checkpoints import load_model
from fercore.data import load_dataset
from fercore.labels import PRIVATE_TEST
from fercore.saliency import explain
from fercore.render import saliency_panels

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ("hw3", "fernet_wide")
GOAL = (0.2, 0.6)  # a mask that keeps the eyes, the mouth and the cheeks but not the whole face
DISPLAYS = {  # name -> fercore.render settings; {} is the library's default
    "default": {},
    "homework, no smoothing": {"scaling": "homework", "smoothing": 0.0},
    "percentile": {"scaling": "percentile"},
    "minmax, no smoothing": {"scaling": "minmax", "smoothing": 0.0},
}
PICTURES = ("default", "minmax, no smoothing")


def kept_shares(maps: np.ndarray, **display) -> np.ndarray:
    """The share of each face's pixels the mask keeps with these render settings (default: the library's)."""
    return np.array([render.kept_pixels(m, **display).mean() for m in maps])


def in_goal(shares: np.ndarray) -> float:
    """The share of faces whose mask keeps between GOAL[0] and GOAL[1] of the face."""
    low, high = GOAL
    return float(((shares >= low) & (shares <= high)).mean())


def coverage_row(name: str, display: str, shares: np.ndarray) -> str:
    p5, median, p95 = np.percentile(shares, [5, 50, 95])
    return f"| {name} | {display} | {median:.1%} | {p5:.1%} | {p95:.1%} | {in_goal(shares):.1%} |"


def picture(faces: np.ndarray, maps: np.ndarray, count: int = 8, **display) -> np.ndarray:
    """`count` faces, one row each: the page's four panels with these settings, as one RGB image."""
    tiles = []
    for face, saliency in zip(faces[:count], maps[:count]):
        for image in saliency_panels(face, saliency, **display).values():
            tiles.append(image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1))
    return render.upscale(render.grid(np.stack(tiles), ncols=4, normalize_each=False), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=200, help="the first N PrivateTest faces")
    parser.add_argument("--png", type=Path, help="a folder for the pictures")
    args = parser.parse_args()
    torch.set_num_threads(1)

    faces = load_dataset().select_split(PRIVATE_TEST).pixels[:args.faces]
    print(f"Share of the face the mask keeps (threshold {render.DEFAULT_THRESHOLD}), {len(faces)} PrivateTest "
          f"faces, vanilla gradient of the predicted class; goal: {GOAL[0]:.0%}-{GOAL[1]:.0%}\n")
    print(f"Default display: {render.DEFAULT_SCALING} scaling, smoothing {render.DEFAULT_SMOOTHING} px.\n")
    print("| checkpoint | display | median | 5th pct | 95th pct | faces in goal |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name in CHECKPOINTS:
        loaded = load_model(ROOT / "checkpoints" / name)
        _, maps = explain(loaded.model, loaded.preprocess(faces))
        for display, settings in DISPLAYS.items():
            print(coverage_row(name, display, kept_shares(maps, **settings)))
        if args.png:
            args.png.mkdir(parents=True, exist_ok=True)
            for display in PICTURES:
                path = args.png / f"{name}_{display.split(',')[0]}.png"
                path.write_bytes(render.png_bytes(picture(faces, maps, **DISPLAYS[display])))
                print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
