"""fercore.render on real arrays: colormaps, the homework's heatmap and mask, grids, PNG bytes and the figures."""

import io

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image

from fercore import render, saliency
from fercore.labels import CLASS_COLORS, CLASS_NAMES, FERPLUS_COLUMNS


@pytest.fixture
def face():
    return np.random.default_rng(0).integers(0, 256, size=(48, 48)).astype(np.uint8)


@pytest.fixture
def saliency_map():
    """A smooth blob plus noise, signed and not in [0, 1], like a raw gradient map."""
    yy, xx = np.mgrid[0:48, 0:48]
    blob = np.exp(-((yy - 20) ** 2 + (xx - 30) ** 2) / 60.0)
    return (3.0 * blob - 0.5 + 0.05 * np.random.default_rng(1).standard_normal((48, 48))).astype(np.float32)


def test_colormaps_are_256x3_uint8_tables_with_the_right_ends():
    for name in render.COLORMAP_NAMES:
        lut = render.colormap(name)
        assert lut.shape == (256, 3) and lut.dtype == np.uint8
    jet = render.colormap("jet")
    assert tuple(jet[0]) == (0, 0, 128) and tuple(jet[-1]) == (128, 0, 0)  # dark blue to dark red
    assert tuple(render.colormap("gray")[77]) == (77, 77, 77)
    viridis = render.colormap("viridis").astype(float)
    luminance = viridis @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(luminance) > -1.0)  # perceptual: brightness rises monotonically (to rounding)
    with pytest.raises(ValueError, match="viridis"):
        render.colormap("rainbow")


def test_colormaps_match_matplotlib_when_it_is_installed():
    cm = pytest.importorskip("matplotlib").colormaps
    levels = np.linspace(0, 1, 256)
    for ours, theirs, tolerance in [("jet", "jet", 1), ("viridis", "viridis", 8), ("inferno", "inferno", 8),
                                    ("blues", "Blues", 3)]:
        reference = np.rint(cm[theirs](levels)[:, :3] * 255)
        assert np.abs(render.colormap(ours).astype(int) - reference).max() <= tolerance, ours


def test_to_uint8_scales_floats_and_keeps_uint8(face):
    assert render.to_uint8(face) is face
    np.testing.assert_array_equal(render.to_uint8(np.array([-1.0, 0.0, 1.0])), [0, 128, 255])
    np.testing.assert_array_equal(render.to_uint8(np.array([0.5, 2.0]), low=0, high=1), [128, 255])
    np.testing.assert_array_equal(render.to_uint8(np.array([True, False])), [255, 0])
    assert not render.to_uint8(np.full((4, 4), 3.0)).any()
    np.testing.assert_array_equal(render.to_uint8(torch.tensor([0.0, 1.0], requires_grad=True)), [0, 255])


def keras_deprocess(saliency_map) -> np.ndarray:
    """The scaling in the course's template, as Keras' deprocess_image writes it (|gradient| first)."""
    x = np.abs(saliency_map).astype(np.float64)
    x = (x - x.mean()) / (x.std() + 1e-5) * 0.1 + 0.5
    return np.clip(x, 0, 1)


def blurred(saliency_map, sigma: float) -> np.ndarray:
    return saliency.gaussian_blur(torch.as_tensor(saliency_map, dtype=torch.float64)[None, None], sigma)[0, 0].numpy()


def test_homework_scaling_is_kerass_deprocess_image():
    # |map| is 25 zeros and one 26: mean 1, std sqrt((25 * 1 + 25 ** 2) / 26) = 5, so the spike stands 5 std above
    # the mean (level 0.5 + 0.5 = 1) and the zeros 0.2 std below it (level 0.48); the sign does not matter
    spike = np.zeros((2, 13))
    spike[1, 4] = -26.0
    levels = render.saliency_levels(spike, "homework", smoothing=0)
    expected = np.full((2, 13), 0.5 - 0.1 * 1 / (5 + 1e-5))
    expected[1, 4] = 0.5 + 0.1 * 25 / (5 + 1e-5)
    np.testing.assert_allclose(levels, expected, rtol=1e-6)
    assert levels.dtype == np.float32
    # one 1 among 99 zeros stands sqrt(99) ~ 9.9 std above the mean: beyond 5 std, clipped to 1
    lone = np.zeros((10, 10))
    lone[3, 3] = 1.0
    levels = render.saliency_levels(lone, smoothing=0)
    assert levels[3, 3] == 1.0
    np.testing.assert_allclose(np.delete(levels, 33), 0.5 - 0.1 * 0.01 / (np.sqrt(0.0099) + 1e-5), rtol=1e-6)


def test_default_levels_are_deprocess_of_the_lightly_smoothed_magnitude(saliency_map):
    assert render.DEFAULT_SCALING == "homework" and render.DEFAULT_SMOOTHING == 1.0
    np.testing.assert_allclose(render.saliency_levels(saliency_map), keras_deprocess(blurred(np.abs(saliency_map), 1.0)),
                               atol=1e-6)
    np.testing.assert_allclose(render.saliency_levels(saliency_map, smoothing=0), keras_deprocess(saliency_map),
                               atol=1e-6)
    np.testing.assert_allclose(render.saliency_levels(saliency_map, smoothing=2.5),
                               keras_deprocess(blurred(np.abs(saliency_map), 2.5)), atol=1e-6)


def test_percentile_and_minmax_scalings(saliency_map):
    magnitude = np.abs(saliency_map)
    low, high = magnitude.min(), np.percentile(magnitude, 99)  # PAIR saliency's VisualizeImageGrayscale
    np.testing.assert_allclose(render.saliency_levels(saliency_map, "percentile", smoothing=0),
                               np.clip((magnitude - low) / (high - low), 0, 1), atol=1e-6)
    assert np.isclose((render.saliency_levels(saliency_map, "percentile", smoothing=0) == 1).mean(), 0.01, atol=1e-3)
    minmax = render.saliency_levels(saliency_map, "minmax", smoothing=0)
    np.testing.assert_allclose(minmax, (saliency_map - saliency_map.min()) / np.ptp(saliency_map), atol=1e-6)
    assert minmax.min() == 0 and minmax.max() == 1
    for scaling in render.SCALINGS:  # a constant map (e.g. an all-zero Grad-CAM) singles out nothing
        assert not render.saliency_levels(np.full((48, 48), 3.0), scaling).any()
        assert not render.kept_pixels(np.zeros((48, 48)), scaling=scaling).any()
    with pytest.raises(ValueError, match="homework, percentile, minmax"):
        render.saliency_levels(saliency_map, "zscore")
    with pytest.raises(ValueError, match="smoothing"):
        render.saliency_levels(saliency_map, smoothing=-1)


def test_heatmap_is_the_colormap_over_the_display_levels(saliency_map):
    heat = render.heatmap(saliency_map)
    assert heat.shape == (48, 48, 3) and heat.dtype == np.uint8
    jet = render.colormap("jet")
    levels = np.rint(keras_deprocess(blurred(np.abs(saliency_map), 1.0)) * 255).astype(int)
    assert np.abs(heat.astype(int) - jet[levels].astype(int)).max() <= 3  # rounding at level boundaries
    # today's pictures are one argument away: min-max, no smoothing, exactly
    minmax = render.heatmap(saliency_map, scaling="minmax", smoothing=0)
    levels = np.rint((saliency_map - saliency_map.min()) / np.ptp(saliency_map) * 255).astype(int)
    np.testing.assert_array_equal(minmax, jet[levels])
    # scale does not change any scaling's heatmap
    for scaling in render.SCALINGS:
        np.testing.assert_array_equal(render.heatmap(7 * saliency_map, scaling=scaling, smoothing=0),
                                      render.heatmap(saliency_map, scaling=scaling, smoothing=0))
    assert render.heatmap(saliency_map, "viridis").shape == (48, 48, 3)


def test_default_mask_keeps_the_pixels_above_the_mean_saliency_and_fills_with_the_mean_grey(face, saliency_map):
    magnitude = np.abs(saliency_map)
    keep = render.kept_pixels(saliency_map, smoothing=0)
    np.testing.assert_array_equal(keep, magnitude > magnitude.mean())
    smooth = blurred(magnitude, render.DEFAULT_SMOOTHING)
    default_keep = render.kept_pixels(saliency_map)
    np.testing.assert_array_equal(default_keep, smooth > smooth.mean())
    assert 0.1 < default_keep.mean() < 0.9
    masked = render.saliency_mask(face, saliency_map)
    np.testing.assert_array_equal(masked[default_keep], face[default_keep])
    assert np.all(masked[~default_keep] == round(face.mean()))  # the course template's fill
    assert masked.dtype == np.uint8 and masked.shape == (48, 48)
    black = render.saliency_mask(face, saliency_map, fill=0)
    assert not black[~default_keep].any()
    np.testing.assert_array_equal(black[default_keep], face[default_keep])
    assert "above the face's mean" in render.describe_mask()


def test_threshold_mask_keeps_exactly_the_pixels_at_or_above_the_threshold(face, saliency_map):
    np.testing.assert_array_equal(render.saliency_mask(face, saliency_map, 0.0), face)
    assert not render.kept_pixels(saliency_map, 1.01).any()
    for scaling in render.SCALINGS:
        levels = render.saliency_levels(saliency_map, scaling)
        for threshold in (0.2, 0.5, 0.8):
            masked = render.saliency_mask(face, saliency_map, threshold, fill=0, scaling=scaling)
            keep = levels >= threshold
            assert keep.any() and (threshold < 0.5 or not keep.all()), (scaling, threshold)
            np.testing.assert_array_equal(masked[keep], face[keep])
            assert not masked[~keep].any()
    with pytest.raises(ValueError, match="shape"):
        render.saliency_mask(face, saliency_map[:40], 0.5)


@pytest.mark.parametrize("share", [0.05, 0.3, 0.5, 0.77, 1.0])
def test_top_k_mask_keeps_that_share_of_the_most_salient_pixels(face, saliency_map, share):
    for scaling in render.SCALINGS:
        keep = render.kept_pixels(saliency_map, scaling=scaling, keep_top=share)
        assert abs(keep.sum() - share * keep.size) <= 1, scaling
        levels = render.saliency_levels(saliency_map, scaling)
        if share < 1:
            assert levels[keep].min() >= levels[~keep].max()  # none left out is more salient than one kept
    masked = render.saliency_mask(face, saliency_map, keep_top=share, threshold=0.99)  # the threshold is ignored
    keep = render.kept_pixels(saliency_map, keep_top=share)
    np.testing.assert_array_equal(masked[keep], face[keep])
    assert np.all(masked[~keep] == round(face.mean()))
    # ties (a constant map, a saturated peak) are still cut at exactly the share
    assert render.kept_pixels(np.zeros((48, 48)), keep_top=share).sum() == round(share * 48 * 48)
    assert f"keeps the {share:.0%} most salient pixels" in render.describe_mask(keep_top=share)
    with pytest.raises(ValueError, match="keep_top"):
        render.kept_pixels(saliency_map, keep_top=1.5)


def test_saliency_panels_are_the_library_defaults(face, saliency_map):
    from fercore.render import saliency_panels

    panels = saliency_panels(face, saliency_map)
    assert list(panels) == ["Original", "Heatmap", "Mask", "Overlay"]
    np.testing.assert_array_equal(panels["Heatmap"], render.heatmap(saliency_map))
    np.testing.assert_array_equal(panels["Mask"], render.saliency_mask(face, saliency_map))
    np.testing.assert_array_equal(panels["Overlay"], render.overlay(face, saliency_map))
    chosen = saliency_panels(face, saliency_map, scaling="minmax", smoothing=0, keep_top=0.2)
    np.testing.assert_array_equal(chosen["Heatmap"], render.heatmap(saliency_map, scaling="minmax", smoothing=0))
    np.testing.assert_array_equal(chosen["Mask"], render.saliency_mask(face, saliency_map, scaling="minmax",
                                                                       smoothing=0, keep_top=0.2))


def test_overlay_blends_face_and_heatmap(face, saliency_map):
    gray = np.repeat(face[..., None], 3, axis=-1)
    np.testing.assert_array_equal(render.overlay(face, saliency_map, alpha=0.0), gray)
    np.testing.assert_array_equal(render.overlay(face, saliency_map, alpha=1.0), render.heatmap(saliency_map))
    half = render.overlay(face, saliency_map, alpha=0.5).astype(int)
    expected = (gray.astype(int) + render.heatmap(saliency_map)) / 2
    assert np.abs(half - expected).max() <= 0.5


def test_grid_tiles_images_with_padding():
    rng = np.random.default_rng(2)
    maps = rng.standard_normal((10, 12, 12)).astype(np.float32) * np.arange(1, 11)[:, None, None]
    tiled = render.grid(maps, ncols=4, pad=2)
    assert tiled.shape == (3 * 14 + 2, 4 * 14 + 2) and tiled.dtype == np.uint8
    np.testing.assert_array_equal(tiled[2:14, 2:14], render.to_uint8(maps[0]))  # each tile on its own scale
    np.testing.assert_array_equal(tiled[16:28, 16:28], render.to_uint8(maps[5]))
    assert np.all(tiled[:2] == 255) and np.all(tiled[:, 14:16] == 255)
    assert np.all(tiled[30:42, 30:42] == 255)  # the 11th slot is empty
    shared = render.grid(maps, ncols=4, pad=2, normalize_each=False)
    np.testing.assert_array_equal(shared[2:14, 2:14], render.to_uint8(maps, )[0])
    rgb = render.grid(np.zeros((3, 48, 48, 3), np.uint8), ncols=8, pad=1)
    assert rgb.shape == (50, 3 * 49 + 1, 3)
    assert render.grid(torch.zeros(2, 1, 5, 5), pad=0).shape == (5, 10)


def test_upscale_repeats_pixels(face):
    big = render.upscale(face, 4)
    assert big.shape == (192, 192)
    np.testing.assert_array_equal(big[::4, ::4], face)
    np.testing.assert_array_equal(big[3::4, 1::4], face)
    assert render.upscale(render.heatmap(face.astype(float)), 3).shape == (144, 144, 3)


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_png_bytes_decode_to_the_same_pixels(face, saliency_map, kind):
    image = face if kind == "gray" else render.overlay(face, saliency_map)
    data = render.png_bytes(image)
    assert data.startswith(b"\x89PNG")
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(decoded, image)


def confusion_counts() -> np.ndarray:
    counts = np.random.default_rng(4).integers(0, 40, size=(7, 7))
    counts[np.diag_indices(7)] += 300
    counts[1] = 0  # a class absent from the data
    return counts


def test_confusion_figure_is_49_clickable_square_cells():
    counts = confusion_counts()
    figure = render.confusion_figure(counts)
    (trace,) = figure.data
    assert isinstance(trace, go.Scatter) and trace.marker.symbol == "square"
    assert len(trace.x) == len(trace.y) == len(trace.customdata) == len(trace.text) == 49
    for k, (true, pred) in enumerate(trace.customdata):
        assert (trace.y[k], trace.x[k]) == (true, pred) and k == true * 7 + pred
        assert trace.text[k] == str(counts[true, pred])
        assert trace.marker.color[k] == counts[true, pred]
    assert trace.marker.colorbar is not None and trace.marker.cmax == counts.max()
    assert list(figure.layout.xaxis.ticktext) == list(CLASS_NAMES) == list(figure.layout.yaxis.ticktext)
    assert list(figure.layout.xaxis.tickvals) == list(range(7))
    assert figure.layout.xaxis.title.text == "predicted" and figure.layout.yaxis.title.text == "true"
    assert figure.layout.yaxis.range[0] > figure.layout.yaxis.range[1]  # Angry (0) on top
    # text contrasts with its cell: white on the dark diagonal, black on the pale near-zero cells
    colors = trace.textfont.color
    assert colors[0] == "white" and colors[1] == "black"
    # markers fill their cells: plot area / 7 pixels, less a hairline
    plot_width = figure.layout.width - figure.layout.margin.l - figure.layout.margin.r
    assert plot_width / 7 - 4 <= trace.marker.size <= plot_width / 7


def test_row_normalized_confusion_figure_shows_percentages():
    counts = confusion_counts()
    trace = render.confusion_figure(counts, normalized=True).data[0]
    row = counts[3] / counts[3].sum()
    assert [trace.text[21 + j] for j in range(7)] == [f"{100 * v:.0f}%" for v in row]
    assert list(trace.marker.color[7:14]) == [0] * 7  # the absent class's row
    assert trace.marker.cmax == 1.0


def test_learning_curves_plot_train_and_validation():
    history = [dict(epoch=e, train_loss=2.0 / e, train_acc=0.2 + 0.1 * e, val_loss=2.2 / e, val_acc=0.15 + 0.1 * e,
                    lr=1e-3, seconds=3.0) for e in range(1, 6)]
    figure = render.learning_curves(history)
    names = sorted((trace.name, trace.xaxis) for trace in figure.data)
    assert names == [("train", "x"), ("train", "x2"), ("validation", "x"), ("validation", "x2")]
    val_acc = next(t for t in figure.data if t.name == "validation" and t.xaxis == "x2")
    assert list(val_acc.x) == [1, 2, 3, 4, 5] and list(val_acc.y) == pytest.approx([h["val_acc"] for h in history])
    assert len(render.learning_curves([]).layout.annotations) >= 3  # subplot titles and "no epochs yet"


def test_probability_bars_use_class_colours_and_mark_prediction_and_truth():
    probs = np.array([0.05, 0.01, 0.5, 0.04, 0.3, 0.05, 0.05])
    (bar,) = render.probability_bars(probs, true=4).data
    assert list(bar.y) == pytest.approx(probs) and list(bar.marker.color) == list(CLASS_COLORS)
    assert bar.marker.opacity[2] == 1.0 and all(o < 1 for k, o in enumerate(bar.marker.opacity) if k != 2)
    assert bar.x[4] == "Sad (true)" and bar.marker.line.width[4] > 0 and bar.marker.line.width[2] == 0
    with pytest.raises(ValueError):
        render.probability_bars(probs[:6])


def test_ferplus_vote_bars_colour_fer_classes():
    votes = np.array([6, 0, 1, 2, 0, 0, 1, 0, 0, 0], np.uint8)
    (bar,) = render.ferplus_vote_bars(votes).data
    assert list(bar.x) == list(FERPLUS_COLUMNS) and list(bar.y) == votes.tolist()
    assert bar.marker.color[0] == CLASS_COLORS[CLASS_NAMES.index("Neutral")]
    assert bar.marker.color[3] == CLASS_COLORS[CLASS_NAMES.index("Sad")]
