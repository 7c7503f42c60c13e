"""Small compositions of fercore.render pictures for the pages (no drawing of our own beyond framing)."""

from __future__ import annotations

import numpy as np

MARK = np.array([220, 30, 30], dtype=np.uint8)  # dead filters and activating regions


def saliency_panels(pixels: np.ndarray, saliency: np.ndarray, **display) -> dict[str, np.ndarray]:
    """The homework's four pictures of one face: original, heatmap, mask, overlay (uint8, 48x48).

    `display`: fercore.render's scaling and smoothing (for all three saliency pictures) and the mask's threshold,
    keep_top and fill; whatever is not given is fercore.render's default, so the page's first view is the library's."""
    from fercore import render

    shading = {name: display.pop(name) for name in ("scaling", "smoothing") if name in display}
    return {"Original": pixels, "Heatmap": render.heatmap(saliency, **shading),
            "Mask": render.saliency_mask(pixels, saliency, **shading, **display),
            "Overlay": render.overlay(pixels, saliency, **shading)}


def _rgb(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)


def panels_png(panels: dict[str, np.ndarray], scale: int = 4) -> bytes:
    """The panels side by side as one PNG, enlarged so it reads on a slide."""
    from fercore import render

    strip = render.grid(np.stack([_rgb(p) for p in panels.values()]), ncols=len(panels), normalize_each=False)
    return render.png_bytes(render.upscale(strip, scale))


def _frame(tile: np.ndarray, width: int = 2) -> np.ndarray:
    tile = tile.copy()
    tile[:width], tile[-width:], tile[:, :width], tile[:, -width:] = MARK, MARK, MARK, MARK
    return tile


def filter_grid(images: np.ndarray, dead: np.ndarray, ncols: int = 8, scale: int = 2) -> np.ndarray:
    """Gradient-ascent images tiled row by row (filter 0 top left), each scaled on its own; dead filters framed red."""
    from fercore import render

    tiles = [render.to_uint8(image) for image in images]
    tiles = np.stack([_frame(_rgb(t)) if d else _rgb(t) for t, d in zip(tiles, dead)])
    return render.upscale(render.grid(tiles, ncols=ncols, normalize_each=False), scale)


def boxed(pixels: np.ndarray, region) -> np.ndarray:
    """A face with the box (top, left, bottom, right; exclusive) that a filter's peak unit sees."""
    top, left, bottom, right = (int(v) for v in region)
    image = _rgb(pixels).copy()
    bottom, right = max(bottom - 1, top), max(right - 1, left)
    image[top, left:right + 1] = image[bottom, left:right + 1] = MARK
    image[top:bottom + 1, left] = image[top:bottom + 1, right] = MARK
    return image
