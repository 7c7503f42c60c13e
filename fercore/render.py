"""Arrays to pictures and figures: colormaps, the homework's heatmap and mask, overlays, grids, PNG bytes,
and the Plotly figures the dashboard shows (learning curves, probability bars, FER+ votes, clickable confusion grid).

numpy, PIL and plotly (and fercore.saliency's Gaussian, to smooth a saliency map): colormaps are 256x3 uint8 lookup
tables interpolated from a few control points, so no matplotlib is needed. Every image function returns uint8
arrays, (H, W) for gray and (H, W, 3) for RGB.
"""

from __future__ import annotations

import io

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from PIL import Image

from fercore.labels import CLASS_COLORS, CLASS_NAMES, FERPLUS_COLUMNS, FERPLUS_INDEX_OF_CLASS, NUM_CLASSES

# ----------------------------------------------------------------------------------------------------------------
# Colormaps

# Evenly spaced control points sampled from the reference maps (viridis/inferno: van der Walt & Smith, Blues:
# ColorBrewer); linear interpolation between 17 points stays within a few levels of the originals.
_EVEN_POINTS = {
    "viridis": [(68, 1, 84), (72, 24, 106), (71, 45, 123), (66, 64, 134), (59, 82, 139), (51, 99, 141),
                (44, 114, 142), (38, 130, 142), (33, 145, 140), (31, 160, 136), (40, 174, 128), (63, 188, 115),
                (94, 201, 98), (132, 212, 75), (173, 220, 48), (216, 226, 25), (253, 231, 37)],
    "inferno": [(0, 0, 4), (11, 7, 36), (33, 12, 74), (61, 9, 101), (87, 16, 110), (113, 25, 110),
                (138, 34, 106), (163, 44, 97), (188, 55, 84), (210, 70, 68), (228, 90, 49), (241, 115, 29),
                (249, 142, 9), (252, 172, 17), (249, 203, 53), (242, 234, 105), (252, 255, 164)],
    "blues": [(247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
              (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}

# Jet is piecewise linear per channel: (position, value in 0..1) breakpoints, as in MATLAB / matplotlib.
_JET_CHANNELS = (
    ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),               # red
    ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),  # green
    ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),                # blue
)

COLORMAP_NAMES = ("jet", "viridis", "inferno", "blues", "gray")
_LUTS: dict[str, np.ndarray] = {}


def _lut_from_channels(channels) -> np.ndarray:
    levels = np.linspace(0.0, 1.0, 256)
    columns = []
    for points in channels:
        xs, ys = zip(*points)
        columns.append(np.interp(levels, xs, ys) * 255.0)
    return np.rint(np.stack(columns, axis=1)).clip(0, 255).astype(np.uint8)


def _even_channels(colors) -> list:
    xs = np.linspace(0.0, 1.0, len(colors))
    rgb = np.asarray(colors, dtype=np.float64) / 255.0
    return [list(zip(xs, rgb[:, c])) for c in range(3)]


def colormap(name: str = "jet") -> np.ndarray:
    """The named colormap as a (256, 3) uint8 lookup table (row k: the colour of level k/255)."""
    key = name.lower()
    if key not in COLORMAP_NAMES:
        raise ValueError(f"unknown colormap {name!r}: expected one of {', '.join(COLORMAP_NAMES)}")
    if key not in _LUTS:
        channels = _JET_CHANNELS if key == "jet" else _even_channels(_EVEN_POINTS[key])
        lut = _lut_from_channels(channels)
        lut.flags.writeable = False  # shared between callers
        _LUTS[key] = lut
    return _LUTS[key]


def plotly_colorscale(name: str = "blues", steps: int = 11) -> list[list]:
    """The same colormap as a Plotly colorscale, so figures and images agree."""
    lut = colormap(name)
    positions = np.linspace(0.0, 1.0, steps)
    return [[float(p), "rgb({},{},{})".format(*lut[int(round(p * 255))])] for p in positions]


# ----------------------------------------------------------------------------------------------------------------
# Arrays to images

def _numpy(array) -> np.ndarray:
    """numpy view of a numpy array or a (possibly grad-tracking) torch tensor."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def normalize(saliency_map) -> np.ndarray:
    """Min-max scale to float32 in [0, 1]; a constant map becomes all zeros."""
    values = _numpy(saliency_map).astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


# How a raw saliency map becomes display levels in [0, 1], before any colormap or threshold.
#   homework:   Keras' deprocess_image, which the course's heatmap and mask code used: standardise |map| over the
#               image, x 0.1, + 0.5, clip. Level 0.5 is the image's mean saliency, so the mask's 0.5 threshold keeps
#               the pixels more salient than average (about 40% of a real face: scripts/mask_coverage.py).
#   percentile: PAIR saliency's VisualizeImageGrayscale: |map| from its minimum to its 99th percentile, clipped,
#               so a few extreme pixels do not wash the rest out.
#   minmax:     the map's own minimum to its maximum; the 0.5 threshold then keeps only the peaks.
# Before scaling, the map is smoothed with a Gaussian of `smoothing` pixels (0: not at all). A vanilla gradient is
# speckle at pixel scale (and, for a stride-2 first conv, a checkerboard), so its raw mask is salt and pepper;
# one pixel of blur turns the speckle into regions (eyes, mouth, cheeks) while keeping 48x48 detail.
SCALINGS = ("homework", "percentile", "minmax")
DEFAULT_SCALING = "homework"
DEFAULT_SMOOTHING = 1.0
DEFAULT_THRESHOLD = 0.5
DEFAULT_KEEP_TOP = 0.3  # the top-k mask's share when one asks for it: a little under what the threshold keeps
_HOMEWORK_EPSILON = 1e-5  # deprocess_image's guard against a zero standard deviation
_HOMEWORK_SPREAD = 0.1    # one standard deviation of saliency is a tenth of the display range


def _smoothed(values: np.ndarray, sigma: float) -> np.ndarray:
    """A (H, W) map blurred by fercore.saliency's Gaussian (edges replicated); sigma 0 returns it unchanged."""
    if sigma < 0:
        raise ValueError(f"smoothing is a Gaussian sigma in pixels, >= 0, got {sigma}")
    if sigma == 0:
        return values
    import torch

    from fercore.saliency import gaussian_blur

    return gaussian_blur(torch.from_numpy(values)[None, None], float(sigma))[0, 0].numpy()


def _unclipped_levels(values: np.ndarray, scaling: str, smoothing: float) -> np.ndarray:
    """The scaling before its final clip to [0, 1]: monotone in saliency, so it also ranks pixels (top-k mask)."""
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}: expected one of {', '.join(SCALINGS)}")
    values = values.astype(np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected one (H, W) saliency map, got shape {values.shape}")
    if not values.max() > values.min():
        return np.zeros_like(values)  # a constant map singles out no pixel, whatever the scaling
    if scaling == "minmax":
        return normalize(_smoothed(values, smoothing)).astype(np.float64)
    magnitude = _smoothed(np.abs(values), smoothing)
    if scaling == "homework":
        standardised = (magnitude - magnitude.mean()) / (magnitude.std() + _HOMEWORK_EPSILON)
        return standardised * _HOMEWORK_SPREAD + 0.5
    low, high = float(magnitude.min()), float(np.percentile(magnitude, 99))
    if not high > low:  # over 99% of the map at its minimum: scale to the maximum instead
        high = float(magnitude.max())
    if not high > low:  # a map of +-c: every magnitude the same
        return np.zeros_like(magnitude)
    return (magnitude - low) / (high - low)


def saliency_levels(saliency_map, scaling: str = DEFAULT_SCALING, smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """A raw saliency map (H, W) as display levels in [0, 1], float32: smoothed by a Gaussian of `smoothing`
    pixels, then scaled by one of SCALINGS (see above)."""
    values = np.squeeze(_numpy(saliency_map))
    return np.clip(_unclipped_levels(values, scaling, smoothing), 0.0, 1.0).astype(np.float32)


def to_uint8(array, low: float | None = None, high: float | None = None) -> np.ndarray:
    """uint8 image from any array: uint8 passes through, bool becomes 0/255, anything else is scaled linearly so
    [low, high] (default: the array's own min and max) maps to [0, 255], clipped."""
    values = _numpy(array)
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    values = values.astype(np.float32)
    low = float(values.min()) if low is None else float(low)
    high = float(values.max()) if high is None else float(high)
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).clip(0, 255).astype(np.uint8)


def _gray(image) -> np.ndarray:
    """A face as (H, W) uint8; accepts (H, W), (1, H, W) or (H, W, 1)."""
    values = np.squeeze(_numpy(image))
    if values.ndim != 2:
        raise ValueError(f"expected a single-channel image, got shape {np.shape(image)}")
    return to_uint8(values)


def _rgb(image) -> np.ndarray:
    values = _numpy(image)
    if values.ndim == 3 and values.shape[-1] == 3:
        return to_uint8(values)
    return np.repeat(_gray(values)[..., None], 3, axis=-1)


def apply_colormap(values01, cmap: str = "jet") -> np.ndarray:
    """Colour an array of levels in [0, 1] with a colormap: (...,) -> (..., 3) uint8."""
    values = np.nan_to_num(_numpy(values01).astype(np.float32), nan=0.0)
    levels = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.intp)
    return colormap(cmap)[levels]


def heatmap(saliency_map, cmap: str = "jet", scaling: str = DEFAULT_SCALING,
            smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """The homework's heatmap: the colormap over the map's display levels, (H, W) -> (H, W, 3) uint8."""
    return apply_colormap(saliency_levels(saliency_map, scaling, smoothing), cmap)


def kept_pixels(saliency_map, threshold: float = DEFAULT_THRESHOLD, scaling: str = DEFAULT_SCALING,
                keep_top: float | None = None, smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """Which pixels the mask keeps, (H, W) bool.

    A pixel is kept where its display level (`saliency_levels` under `scaling`) is >= threshold: under the homework
    scaling the default 0.5 keeps the pixels whose saliency is at least the face's mean. Threshold 0 keeps every
    pixel, one above 1 none. With `keep_top` (a share of the pixels, e.g. 0.3) the threshold is ignored and the
    round(keep_top * H * W) most salient pixels are kept instead (ties go to the earlier pixel, row by row).
    """
    values = np.squeeze(_numpy(saliency_map))
    if keep_top is None:
        return saliency_levels(values, scaling, smoothing) >= threshold
    return _most_salient(_unclipped_levels(values, scaling, smoothing), keep_top)


def saliency_mask(image, saliency_map, threshold: float = DEFAULT_THRESHOLD, fill: int | str = "mean",
                  scaling: str = DEFAULT_SCALING, keep_top: float | None = None,
                  smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """The homework's mask: the face where `kept_pixels` says it is salient, `fill` elsewhere, (H, W) uint8.

    `fill`: "mean" (the face's mean grey, as the course's template did) or a grey level 0..255.
    """
    face = _gray(image)
    keep = kept_pixels(saliency_map, threshold, scaling, keep_top, smoothing)
    if keep.shape != face.shape:
        raise ValueError(f"image {face.shape} and saliency map {keep.shape} differ in shape")
    level = int(round(float(face.mean()))) if fill == "mean" else int(fill)
    return np.where(keep, face, np.uint8(level)).astype(np.uint8)


def _most_salient(levels: np.ndarray, share: float) -> np.ndarray:
    """A boolean mask of the round(share * size) highest levels."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"keep_top is a share of the pixels in [0, 1], got {share}")
    order = np.argsort(-levels, axis=None, kind="stable")
    keep = np.zeros(levels.size, dtype=bool)
    keep[order[:int(round(share * levels.size))]] = True
    return keep.reshape(levels.shape)


def describe_mask(threshold: float = DEFAULT_THRESHOLD, fill: int | str = "mean", scaling: str = DEFAULT_SCALING,
                  keep_top: float | None = None) -> str:
    """One sentence saying which pixels `saliency_mask` with these settings keeps, for a caption."""
    rest = "the face's mean grey" if fill == "mean" else f"grey level {int(fill)}"
    if keep_top is not None:
        return f"The mask keeps the {keep_top:.0%} most salient pixels of the face; the rest is {rest}."
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}: expected one of {', '.join(SCALINGS)}")
    if scaling == "homework":
        spread = (threshold - 0.5) / _HOMEWORK_SPREAD  # level t is the mean + (t - 0.5) / 0.1 standard deviations
        if abs(spread) < 1e-9:
            which = "above the face's mean"
        else:
            which = f"at least the face's mean {'+' if spread > 0 else '-'} {abs(spread):.1f} standard deviations"
    else:
        top = "99th percentile" if scaling == "percentile" else "maximum"
        which = f"at least {threshold:.0%} of the way from its minimum to its {top}"
    return f"The mask keeps the pixels whose saliency is {which}; the rest is {rest}."


def overlay(image, saliency_map, alpha: float = 0.5, cmap: str = "jet", scaling: str = DEFAULT_SCALING,
            smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    """The heatmap blended over the face: (1 - alpha) * face + alpha * heatmap, (H, W, 3) uint8."""
    face = _rgb(image).astype(np.float32)
    heat = heatmap(saliency_map, cmap, scaling, smoothing).astype(np.float32)
    if heat.shape != face.shape:
        raise ValueError(f"image {face.shape[:2]} and saliency map {heat.shape[:2]} differ in shape")
    return np.rint((1.0 - alpha) * face + alpha * heat).clip(0, 255).astype(np.uint8)


def upscale(image, factor: int = 4) -> np.ndarray:
    """Nearest-neighbour enlargement (each pixel becomes a factor x factor block), so 48x48 faces stay crisp."""
    values = _numpy(image)
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"upscale factor must be >= 1, got {factor}")
    return values.repeat(factor, axis=0).repeat(factor, axis=1)


def grid(images, ncols: int = 8, pad: int = 2, normalize_each: bool = True, pad_value: int = 255) -> np.ndarray:
    """Tile N images of one shape into one uint8 image, row by row, with `pad` pixels between and around tiles.

    images: (N, H, W) or (N, H, W, 3), numpy or torch, any dtype. With normalize_each each tile is min-max scaled
    on its own (layer outputs, filters); otherwise uint8 tiles are kept and other dtypes share one scale (so
    tiles stay comparable). Result: (rows*(H+pad)+pad, cols*(W+pad)+pad[, 3]) with cols = min(N, ncols).
    """
    tiles = _numpy(images)
    if tiles.ndim == 4 and tiles.shape[1] == 1:  # (N, 1, H, W) torch layout
        tiles = tiles[:, 0]
    if tiles.ndim not in (3, 4) or len(tiles) == 0:
        raise ValueError(f"grid expects a non-empty (N, H, W) or (N, H, W, 3) batch, got shape {tiles.shape}")
    if normalize_each:
        tiles = np.stack([to_uint8(tile.astype(np.float32)) for tile in tiles])
    else:
        tiles = to_uint8(tiles)
    count, height, width = tiles.shape[:3]
    cols = max(1, min(int(ncols), count))
    rows = -(-count // cols)
    out_shape = (rows * (height + pad) + pad, cols * (width + pad) + pad) + tiles.shape[3:]
    canvas = np.full(out_shape, pad_value, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        top = pad + (k // cols) * (height + pad)
        left = pad + (k % cols) * (width + pad)
        canvas[top:top + height, left:left + width] = tile
    return canvas


def png_bytes(image) -> bytes:
    """PNG-encoded bytes of a gray (H, W) or RGB (H, W, 3) image (non-uint8 arrays go through to_uint8)."""
    pixels = to_uint8(np.squeeze(_numpy(image)))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# Plotly figures

def faces_png(faces, ncols: int = 12, scale: int = 2) -> bytes:
    """uint8 faces (N, H, W) tiled row by row, first face top left, enlarged, as one PNG for a report."""
    return png_bytes(upscale(grid(np.asarray(faces), ncols=ncols, normalize_each=False), scale))


def _text_color(rgb) -> str:
    """Black or white, whichever reads better on a background colour (relative luminance, Rec. 709)."""
    r, g, b = (float(c) for c in rgb)
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else "white"


def learning_curves(history: list[dict], title: str | None = None) -> go.Figure:
    """Loss and accuracy against epoch, train and validation, side by side.

    history: one dict per epoch with keys epoch, train_loss, train_acc, val_loss, val_acc (lr, seconds ignored here);
    a missing or None value leaves a gap (e.g. a run without validation).
    """
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    epochs = [row.get("epoch") for row in history]
    styles = {"train": dict(color="#1f77b4"), "val": dict(color="#ff7f0e")}
    names = {"train": "train", "val": "validation"}
    for col, metric in ((1, "loss"), (2, "acc")):
        for phase in ("train", "val"):
            values = [row.get(f"{phase}_{metric}") for row in history]
            if all(v is None for v in values):
                continue
            figure.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", name=names[phase],
                                        line=styles[phase], legendgroup=phase, showlegend=col == 1), row=1, col=col)
    figure.update_xaxes(title_text="epoch")
    figure.update_yaxes(title_text="cross-entropy", row=1, col=1)
    figure.update_yaxes(title_text="accuracy", tickformat=".0%", row=1, col=2)
    if not history:
        figure.add_annotation(text="no epochs yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    figure.update_layout(title=title, height=340, margin=dict(l=50, r=20, t=60, b=40),
                         legend=dict(orientation="h", y=-0.2))
    return figure


def probability_bars(probabilities, true: int | None = None, predicted: int | None = None,
                     title: str | None = None) -> go.Figure:
    """The 7 class probabilities as bars in the class colours; the predicted class (default: the argmax) is drawn
    solid and the others faded, the true class (if known) outlined in black and marked "(true)"."""
    probs = np.asarray(_numpy(probabilities), dtype=np.float64).reshape(-1)
    if probs.shape != (NUM_CLASSES,):
        raise ValueError(f"expected {NUM_CLASSES} probabilities, got shape {probs.shape}")
    predicted = int(np.argmax(probs)) if predicted is None else int(predicted)
    labels = [name + (" (true)" if true is not None and k == int(true) else "") for k, name in enumerate(CLASS_NAMES)]
    figure = go.Figure(go.Bar(
        x=labels, y=probs, text=[f"{p:.0%}" for p in probs], textposition="outside",
        marker=dict(color=list(CLASS_COLORS),
                    opacity=[1.0 if k == predicted else 0.45 for k in range(NUM_CLASSES)],
                    line=dict(color="black", width=[3 if true is not None and k == int(true) else 0
                                                    for k in range(NUM_CLASSES)])),
        customdata=list(range(NUM_CLASSES)),
        hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    figure.update_layout(title=title, yaxis=dict(range=[0, 1.12], tickformat=".0%", title="probability"),
                         height=300, margin=dict(l=50, r=20, t=50 if title else 20, b=40), showlegend=False)
    return figure


def ferplus_vote_bars(votes, title: str | None = "FER+ votes") -> go.Figure:
    """The FER+ annotators' votes (10 columns of fer2013new.csv) as bars, FER2013 classes in their class colour."""
    counts = np.asarray(_numpy(votes), dtype=np.int64).reshape(-1)
    if counts.shape != (len(FERPLUS_COLUMNS),):
        raise ValueError(f"expected {len(FERPLUS_COLUMNS)} FER+ vote counts, got shape {counts.shape}")
    colors = ["#bbbbbb"] * len(FERPLUS_COLUMNS)  # contempt, unknown, NF: no FER2013 class
    for class_index, column in enumerate(FERPLUS_INDEX_OF_CLASS):
        colors[column] = CLASS_COLORS[class_index]
    figure = go.Figure(go.Bar(x=list(FERPLUS_COLUMNS), y=counts, text=counts, textposition="outside",
                              marker=dict(color=colors), hovertemplate="%{x}: %{y} votes<extra></extra>"))
    top = max(int(counts.max()), 1)
    figure.update_layout(title=title, yaxis=dict(range=[0, top * 1.2], title="votes"), height=280,
                         margin=dict(l=50, r=20, t=50 if title else 20, b=40), showlegend=False)
    return figure


# Plotly counts a second click within its double-click delay (300 ms) of the first as a double click, which clears
# the selection a moment after making it: a student clicking the next cell as soon as the first one's faces showed
# saw the first cell stay. The clickable grid has no double-click action, so every click is a click. (A click that
# lands while the chart redraws with the server's reply, a few milliseconds, still reads as a click on nothing.)
CLICKABLE_CHART_CONFIG = {"displayModeBar": False, "doubleClickDelay": 1}


def confusion_figure(counts, normalized: bool = False, title: str | None = None, cmap: str = "blues",
                     cell_px: int = 64) -> go.Figure:
    """The confusion matrix as a clickable grid that reads like a heatmap.

    Streamlit reports no clicks on Plotly heatmaps, so each of the 49 cells is a square scatter marker
    (point k = true * 7 + pred, customdata = [true, pred]) coloured by its value, with the count (or, when
    normalized, the row percentage) as text in a contrasting colour. x: predicted class, y: true class, first class
    at the top. Marker sizes are in pixels, so the figure has a fixed size: show it with st.plotly_chart(...,
    width="content", on_select="rerun", selection_mode="points", config=CLICKABLE_CHART_CONFIG) and read the
    cell from the selected point's customdata.
    """
    matrix = np.asarray(_numpy(counts), dtype=np.float64)
    if matrix.shape != (NUM_CLASSES, NUM_CLASSES):
        raise ValueError(f"expected a {NUM_CLASSES}x{NUM_CLASSES} confusion matrix, got shape {matrix.shape}")
    row_totals = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, row_totals, out=np.zeros_like(matrix), where=row_totals > 0)
    values = fractions if normalized else matrix
    high = 1.0 if normalized else max(float(matrix.max()), 1.0)

    true_idx, pred_idx = np.divmod(np.arange(NUM_CLASSES * NUM_CLASSES), NUM_CLASSES)
    flat = values.reshape(-1)
    texts = [f"{100 * v:.0f}%" for v in flat] if normalized else [str(int(round(v))) for v in matrix.reshape(-1)]
    lut = colormap(cmap)
    text_colors = [_text_color(lut[int(round(min(v / high, 1.0) * 255))]) for v in flat]
    hover = [f"true {CLASS_NAMES[i]}, predicted {CLASS_NAMES[j]}: {int(matrix[i, j])} images "
             f"({100 * fractions[i, j]:.1f}% of {CLASS_NAMES[i]})" for i, j in zip(true_idx, pred_idx)]

    margin = dict(l=100, r=90, t=60 if title else 30, b=90)
    figure = go.Figure(go.Scatter(
        x=pred_idx.tolist(), y=true_idx.tolist(), mode="markers+text",
        marker=dict(symbol="square", size=cell_px - 2, color=flat.tolist(), cmin=0.0, cmax=high,
                    colorscale=plotly_colorscale(cmap), line=dict(width=0),
                    colorbar=dict(title="share of row" if normalized else "images",
                                  tickformat=".0%" if normalized else None, thickness=14)),
        text=texts, textfont=dict(color=text_colors, size=13),
        customdata=np.stack([true_idx, pred_idx], axis=1).tolist(),
        # Plotly fades the cells around a clicked one to 0.2, text too: half keeps every count legible on a projector.
        unselected=dict(marker=dict(opacity=0.5), textfont=dict(color="#333333")),
        hovertext=hover, hoverinfo="text"))
    ticks = dict(tickvals=list(range(NUM_CLASSES)), ticktext=list(CLASS_NAMES), showgrid=False, zeroline=False,
                 fixedrange=True)
    figure.update_layout(
        title=title, width=NUM_CLASSES * cell_px + margin["l"] + margin["r"],
        height=NUM_CLASSES * cell_px + margin["t"] + margin["b"], margin=margin, plot_bgcolor="white",
        xaxis=dict(title="predicted", range=[-0.5, NUM_CLASSES - 0.5], tickangle=-35, **ticks),
        # reversed so the first class (Angry) is the top row, as in a printed confusion matrix
        yaxis=dict(title="true", range=[NUM_CLASSES - 0.5, -0.5], **ticks),
        clickmode="event+select", dragmode=False, showlegend=False)
    return figure


# ColorBrewer RdBu, red (negative) to white (0) to blue (positive): a difference reads by its sign at a glance.
_RED_WHITE_BLUE = [(103, 0, 31), (178, 24, 43), (214, 96, 77), (244, 165, 130), (253, 219, 199), (247, 247, 247),
                   (209, 229, 240), (146, 197, 222), (67, 147, 195), (33, 102, 172), (5, 48, 97)]


def confusion_difference_figure(difference, names: tuple[str, str] = ("A", "B"), title: str | None = None,
                                cell_px: int = 56) -> go.Figure:
    """A difference of two row-normalized confusion matrices (B - A, fercore.compare.confusion_difference) as a
    heatmap on a diverging scale centred at 0 and symmetric (blue: B puts more of the true class's images in that
    cell, red: fewer), each cell labelled in percentage points. Rows true (Angry at the top), columns predicted."""
    matrix = np.asarray(_numpy(difference), dtype=np.float64)
    if matrix.shape != (NUM_CLASSES, NUM_CLASSES):
        raise ValueError(f"expected a {NUM_CLASSES}x{NUM_CLASSES} difference matrix, got shape {matrix.shape}")
    points = 100.0 * matrix
    high = max(float(np.abs(points).max()), 1.0)  # symmetric, so white is exactly 0
    steps = np.linspace(0.0, 1.0, len(_RED_WHITE_BLUE))
    scale = [[float(s), f"rgb{c}"] for s, c in zip(steps, _RED_WHITE_BLUE)]
    a, b = names
    hover = [[f"true {CLASS_NAMES[i]}, predicted {CLASS_NAMES[j]}: {points[i, j]:+.1f} points of the true "
              f"{CLASS_NAMES[i]} images ({b} - {a})" for j in range(NUM_CLASSES)] for i in range(NUM_CLASSES)]
    text = [[f"{v:+.0f}" if round(v) != 0 else "0" for v in row] for row in points]
    margin = dict(l=90, r=80, t=60 if title else 30, b=90)
    figure = go.Figure(go.Heatmap(
        z=points, x=list(CLASS_NAMES), y=list(CLASS_NAMES), zmin=-high, zmax=high, zmid=0.0, colorscale=scale,
        text=text, texttemplate="%{text}", textfont=dict(size=13), hovertext=hover, hoverinfo="text",
        colorbar=dict(title="points", thickness=14), xgap=2, ygap=2))
    figure.update_layout(
        title=title, width=NUM_CLASSES * cell_px + margin["l"] + margin["r"],
        height=NUM_CLASSES * cell_px + margin["t"] + margin["b"], margin=margin, plot_bgcolor="white",
        xaxis=dict(title="predicted", tickangle=-35, fixedrange=True),
        yaxis=dict(title="true", autorange="reversed", fixedrange=True))
    return figure


# Plotly's default colours for the runs (class colours are for classes, and the classes are the x axis here).
_RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def recall_bars(recalls: dict, title: str | None = None) -> go.Figure:
    """Per-class recall of several runs as grouped bars, one colour per run: {run name: 7 recalls in 0..1}."""
    figure = go.Figure()
    for k, (name, values) in enumerate(recalls.items()):
        values = np.asarray(_numpy(values), dtype=np.float64).reshape(-1)
        if values.shape != (NUM_CLASSES,):
            raise ValueError(f"expected {NUM_CLASSES} recalls for {name!r}, got shape {values.shape}")
        figure.add_trace(go.Bar(x=list(CLASS_NAMES), y=values, name=str(name), text=[f"{v:.0%}" for v in values],
                                textposition="outside", marker=dict(color=_RUN_COLORS[k % len(_RUN_COLORS)]),
                                hovertemplate=f"{name}: %{{x}} recall %{{y:.1%}}<extra></extra>"))
    figure.update_layout(title=title, barmode="group", height=340, yaxis=dict(range=[0, 1.12], tickformat=".0%",
                         title="recall"), margin=dict(l=50, r=20, t=50 if title else 20, b=40),
                         legend=dict(orientation="h", y=-0.15))
    return figure


# ----------------------------------------------------------------------------------------------------------------
# Conv kernels

# ColorBrewer's RdBu halves, from white (0) out to the strongest weight: blue negative, red positive.
_NEGATIVE_POINTS = [(255, 255, 255), (209, 229, 240), (146, 197, 222), (67, 147, 195), (33, 102, 172), (5, 48, 97)]
_POSITIVE_POINTS = [(255, 255, 255), (253, 219, 199), (244, 165, 130), (214, 96, 77), (178, 24, 43), (103, 0, 31)]
_HALF_LEVELS = 128
KERNEL_PAD_GREY = 150  # between kernels: neither white (a zero weight) nor a colour


def _half_lut(points) -> np.ndarray:
    channels = np.asarray(points, dtype=np.float64).T
    positions = np.linspace(0.0, 1.0, len(points))
    levels = np.linspace(0.0, 1.0, _HALF_LEVELS + 1)
    return np.rint(np.stack([np.interp(levels, positions, c) for c in channels], axis=1)).astype(np.uint8)


def diverging(values, limit: float) -> np.ndarray:
    """(..., 3) uint8 on one symmetric scale: -limit dark blue, 0 white (exactly), +limit dark red, clipped."""
    values = np.asarray(_numpy(values), dtype=np.float64)
    if not limit > 0:
        raise ValueError(f"the colour scale's limit must be > 0, got {limit}")
    levels = np.rint(np.clip(np.abs(values) / limit, 0.0, 1.0) * _HALF_LEVELS).astype(np.int64)
    return np.where((values < 0)[..., None], _half_lut(_NEGATIVE_POINTS)[levels], _half_lut(_POSITIVE_POINTS)[levels])


def kernel_grid(kernels, limit: float | None = None, ncols: int = 8, pixel: int = 12, pad: int = 4) -> np.ndarray:
    """First-layer conv kernels (F, kh, kw) as one uint8 RGB picture, filter 0 top left, row by row.

    All kernels share ONE symmetric diverging scale (limit None: the largest |weight| of them all), so colours
    compare across filters: blue negative, white 0, red positive. Each weight is a `pixel` x `pixel` block (a 3x3
    kernel reads from the back of a room), tiles are `pad` pixels apart on grey.
    """
    weights = np.asarray(_numpy(kernels), dtype=np.float64)
    if weights.ndim != 3 or len(weights) == 0:
        raise ValueError(f"kernel_grid expects kernels of shape (F, kh, kw), got {weights.shape}")
    limit = float(np.abs(weights).max()) if limit is None else float(limit)
    tiles = diverging(weights, limit if limit > 0 else 1.0)  # all zero: everything white
    blocks = np.stack([upscale(tile, pixel) for tile in tiles])  # enlarge the weights, not the gaps between them
    return grid(blocks, ncols=ncols, pad=pad, normalize_each=False, pad_value=KERNEL_PAD_GREY)


def signed_heatmap(values, limit: float | None = None) -> np.ndarray:
    """A signed map (an occlusion map's probability drops) as (H, W, 3) uint8 on `diverging`'s scale: red where
    the value is positive, blue negative, white 0. limit None: the map's largest |value|, so both signs keep their
    meaning (a min-max scaling would paint a zero drop half-red)."""
    values = np.asarray(_numpy(values), dtype=np.float64)
    limit = float(np.abs(values).max()) if limit is None else float(limit)
    return diverging(values, limit if limit > 0 else 1.0)  # all zero: everything white


def labelled_confusion_figure(counts, rows: str, columns: str, title: str | None = None,
                              normalized: bool = False) -> go.Figure:
    """confusion_figure with its axes named: FER2013's label against the FER+ majority, or the FER+ majority
    against the prediction, read differently from true against predicted."""
    figure = confusion_figure(counts, normalized=normalized, title=title)
    figure.update_layout(xaxis_title=columns, yaxis_title=rows)
    return figure


# ----------------------------------------------------------------------------------------------------------------
# Compositions the app and the scripts show

MARK = np.array([220, 30, 30], dtype=np.uint8)  # dead filters and activating regions


def saliency_panels(pixels, saliency_map, **display) -> dict[str, np.ndarray]:
    """The homework's four pictures of one face: original, heatmap, mask, overlay (uint8, 48x48).

    `display`: the scaling and smoothing (for all three saliency pictures) and the mask's threshold, keep_top and
    fill; whatever is not given is this module's default, so the Inspect page's first view is the library's."""
    shading = {name: display.pop(name) for name in ("scaling", "smoothing") if name in display}
    return {"Original": pixels, "Heatmap": heatmap(saliency_map, **shading),
            "Mask": saliency_mask(pixels, saliency_map, **shading, **display),
            "Overlay": overlay(pixels, saliency_map, **shading)}


def panels_png(panels: dict[str, np.ndarray], scale: int = 4) -> bytes:
    """The panels side by side as one PNG, enlarged so it reads on a slide."""
    strip = grid(np.stack([_rgb(p) for p in panels.values()]), ncols=len(panels), normalize_each=False)
    return png_bytes(upscale(strip, scale))


def _framed(tile: np.ndarray, width: int = 2) -> np.ndarray:
    tile = tile.copy()
    tile[:width], tile[-width:], tile[:, :width], tile[:, -width:] = MARK, MARK, MARK, MARK
    return tile


def filter_grid(images, dead, ncols: int = 8, scale: int = 2) -> np.ndarray:
    """Gradient-ascent images tiled row by row (filter 0 top left), each scaled on its own; dead filters framed red."""
    tiles = np.stack([_framed(_rgb(to_uint8(image))) if is_dead else _rgb(to_uint8(image))
                      for image, is_dead in zip(images, dead)])
    return upscale(grid(tiles, ncols=ncols, normalize_each=False), scale)


def boxed(pixels, region) -> np.ndarray:
    """A face (RGB) with the box (top, left, bottom, right; exclusive) that a filter's peak unit sees."""
    top, left, bottom, right = (int(v) for v in region)
    image = _rgb(pixels).copy()
    bottom, right = max(bottom - 1, top), max(right - 1, left)
    image[top, left:right + 1] = image[bottom, left:right + 1] = MARK
    image[top:bottom + 1, left] = image[top:bottom + 1, right] = MARK
    return image
