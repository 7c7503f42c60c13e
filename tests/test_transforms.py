import json

import numpy as np
import pytest
import torch

from fercore.transforms import (NORMALIZE_MODES, AugmentConfig, Normalizer, augment_batch, balanced_sample_weights,
                                class_weights)
from fercore.transforms import _sampling_grid

torch.set_num_threads(1)


@pytest.fixture
def pixels():
    rng = np.random.default_rng(0)
    # Images of different brightness and contrast, like faces under different lighting.
    base = rng.integers(0, 256, size=(16, 48, 48))
    contrast = rng.uniform(0.2, 1.0, size=(16, 1, 1))
    offset = rng.uniform(0, 100, size=(16, 1, 1))
    return np.clip(base * contrast + offset, 0, 255).astype(np.uint8)


def _batch(n=8, seed=0):
    return torch.rand(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- normalization

def test_each_mode_gives_float_batches_with_the_right_statistics(pixels):
    raw = torch.from_numpy(pixels).double()
    for mode in NORMALIZE_MODES:
        x = Normalizer.fit(mode, pixels)(pixels)
        assert x.shape == (16, 1, 48, 48) and x.dtype == torch.float32, mode
    assert torch.allclose(Normalizer.fit("none", pixels)(pixels)[:, 0].double(), raw)
    assert torch.allclose(Normalizer.fit("scale255", pixels)(pixels)[:, 0].double(), raw / 255, atol=1e-6)
    standardized = Normalizer.fit("standardize", pixels)(pixels).double()
    assert abs(standardized.mean().item()) < 1e-4 and abs(standardized.std(unbiased=False).item() - 1) < 1e-4
    per_image = Normalizer.fit("per_image", pixels)(pixels).double()
    assert torch.allclose(per_image.mean(dim=(1, 2, 3)), torch.zeros(16, dtype=torch.double), atol=1e-5)
    assert torch.allclose(per_image.std(dim=(1, 2, 3), unbiased=False), torch.ones(16, dtype=torch.double), atol=1e-4)


def test_standardize_uses_the_fitted_statistics_on_new_images(pixels):
    normalizer = Normalizer.fit("standardize", pixels)
    assert normalizer.mean == pytest.approx(pixels.mean()) and normalizer.std == pytest.approx(pixels.std())
    other = np.full((2, 1, 48, 48), 200, dtype=np.uint8)
    expected = (200 - pixels.mean()) / pixels.std()
    assert torch.allclose(normalizer(other), torch.full((2, 1, 48, 48), expected, dtype=torch.float32))


def test_inputs_may_be_uint8_or_float_tensors_with_or_without_channel(pixels):
    normalizer = Normalizer.fit("standardize", pixels)
    expected = normalizer(pixels)
    assert torch.equal(normalizer(torch.from_numpy(pixels)), expected)
    assert torch.equal(normalizer(torch.from_numpy(pixels).float().unsqueeze(1)), expected)
    with pytest.raises(ValueError, match="shaped"):
        normalizer(torch.zeros(2, 3, 48, 48))


def test_per_image_leaves_a_flat_image_finite():
    flat = np.full((1, 48, 48), 77, dtype=np.uint8)
    assert torch.equal(Normalizer("per_image")(flat), torch.zeros(1, 1, 48, 48))


def test_normalizer_round_trips_through_json(pixels):
    for mode in NORMALIZE_MODES:
        normalizer = Normalizer.fit(mode, pixels)
        again = Normalizer.from_dict(json.loads(json.dumps(normalizer.to_dict())))
        assert again == normalizer
        assert torch.equal(again(pixels), normalizer(pixels))


def test_unknown_normalization_mode_is_a_clear_error(pixels):
    with pytest.raises(ValueError, match="unknown normalization 'zscore'.*scale255"):
        Normalizer.fit("zscore", pixels)
    with pytest.raises(ValueError, match="not a normalizer"):
        Normalizer.from_dict({"mean": 1.0})


# ---------------------------------------------------------------- augmentation config

def test_parse_reads_every_augmentation_and_round_trips():
    config = AugmentConfig.parse("flip=0.5, shift=0.1,rotate=10,zoom=0.1,erase=0.25")
    assert config == AugmentConfig(flip=0.5, shift=0.1, rotate=10, zoom=0.1, erase=0.25)
    assert AugmentConfig.parse(str(config)) == config
    assert AugmentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert AugmentConfig.parse("") == AugmentConfig.parse("none") == AugmentConfig()
    assert str(AugmentConfig()) == "none" and not AugmentConfig().enabled
    assert AugmentConfig.parse("homework") == AugmentConfig.homework()
    homework = AugmentConfig.homework()
    assert homework.flip > 0 and 0 < homework.shift <= 0.2 and 0 < homework.rotate <= 20 and homework.erase == 0


@pytest.mark.parametrize("text, message", [
    ("flop=0.5", "unknown augmentation 'flop'.*flip, shift"),
    ("flip", "needs a strength"),
    ("flip=", "needs a strength"),
    ("flip=half", "flip='half': not a number"),
    ("flip=1.5", "flip=1.5: must be between 0 and 1"),
    ("rotate=-3", "rotate=-3.0: must be between 0 and 180"),
    ("shift=0.1,shift=0.2", "given twice"),
    ("zoom=nan", "zoom=nan: expected a number"),
])
def test_parse_errors_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig.parse(text)


# ---------------------------------------------------------------- augment_batch

def test_augment_is_deterministic_for_a_seed_and_keeps_shape_and_dtype():
    x = _batch()
    config = AugmentConfig(flip=0.5, shift=0.1, rotate=10, zoom=0.1, erase=0.5)
    first = augment_batch(x, config, _generator(1))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, augment_batch(x, config, _generator(1)))
    assert not torch.equal(first, augment_batch(x, config, _generator(2)))
    assert torch.equal(x, _batch()), "the input must not be changed"


def test_generator_state_advances_so_resuming_from_a_saved_state_replays_exactly():
    x, config = _batch(), AugmentConfig.homework()
    generator = _generator(3)
    augment_batch(x, config, generator)
    saved = generator.get_state()
    second = augment_batch(x, config, generator)
    resumed = torch.Generator()
    resumed.set_state(saved)
    assert torch.equal(second, augment_batch(x, config, resumed))


def test_strength_zero_is_the_identity():
    x = _batch()
    assert torch.equal(augment_batch(x, AugmentConfig(), _generator()), x)
    tiny = augment_batch(x, AugmentConfig(shift=1e-9), _generator())  # resampling at pixel centres
    assert torch.allclose(tiny, x, atol=1e-5)


def test_flip_exactly_mirrors():
    x = _batch()
    assert torch.equal(augment_batch(x, AugmentConfig(flip=1.0), _generator()), x.flip(-1))
    half = augment_batch(x, AugmentConfig(flip=0.5), _generator(5))
    flipped = [torch.equal(h, xi.flip(-1)) for h, xi in zip(half, x)]
    kept = [torch.equal(h, xi) for h, xi in zip(half, x)]
    assert all(f != k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    # Folded into the affine resampling with another transform, a flip still mirrors (up to interpolation).
    tiny_shift = augment_batch(x, AugmentConfig(flip=1.0, shift=1e-9), _generator())
    assert torch.allclose(tiny_shift, x.flip(-1), atol=1e-5)


def test_shift_moves_the_image_and_fills_from_the_border():
    x = torch.zeros(64, 1, 48, 48)
    x[:, :, 20:28, 20:28] = 1.0
    out = augment_batch(x, AugmentConfig(shift=0.2), _generator())
    centre_of_mass = (out[:, 0].sum(1) * torch.arange(48.0)).sum(1) / out[:, 0].sum((1, 2))
    assert centre_of_mass.std() > 2  # moved by several pixels, differently per image
    assert (centre_of_mass - 23.5).abs().max() <= 0.2 * 48 + 0.5
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.05)  # nothing lost, border zeros fill


def test_rotation_and_zoom_keep_the_centre_fixed():
    x = torch.zeros(16, 1, 48, 48)
    x[:, :, 22:26, 22:26] = 1.0
    for config in (AugmentConfig(rotate=30), AugmentConfig(zoom=0.3)):
        out = augment_batch(x, config, _generator())
        assert torch.allclose(out[:, :, 23:25, 23:25], torch.ones(16, 1, 2, 2), atol=0.3)
        assert not torch.equal(out, x)


def test_erase_fills_rectangles_with_the_image_mean():
    x = _batch(64) + 1.0
    out = augment_batch(x, AugmentConfig(erase=0.5), _generator())
    changed = (out != x).flatten(1).any(1)
    assert 16 < changed.sum() < 48
    for image, original in zip(out[changed], x[changed]):
        erased = image != original
        rows, cols = erased[0].any(1).nonzero(), erased[0].any(0).nonzero()
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert erased.sum() == height * width  # one rectangle
        assert 0.02 * 2304 * 0.5 <= erased.sum() <= 0.25 * 2304 * 1.1
        assert torch.allclose(image[erased], original.mean().expand(int(erased.sum())))


def test_sampling_grid_equals_affine_grid():
    theta = torch.randn(5, 2, 3, generator=_generator())
    expected = torch.nn.functional.affine_grid(theta, [5, 1, 48, 40], align_corners=False)
    assert torch.allclose(_sampling_grid(theta, 48, 40), expected, atol=1e-6)


def test_augment_rejects_bad_batches():
    with pytest.raises(ValueError, match="float batch"):
        augment_batch(torch.zeros(2, 48, 48), AugmentConfig(flip=0.5), _generator())


# ---------------------------------------------------------------- class balancing

def test_class_weights_are_inverse_frequency():
    labels = np.array([3] * 60 + [1] * 5 + [0] * 35)
    weights = class_weights(labels)
    assert weights.dtype == torch.float32 and weights.shape == (7,)
    assert weights[1] == pytest.approx(100 / (7 * 5)) and weights[3] == pytest.approx(100 / (7 * 60))
    assert weights[2] == 0  # absent class
    assert class_weights(np.arange(7).repeat(3)).tolist() == [1.0] * 7
    with pytest.raises(ValueError, match="0..6"):
        class_weights([0, 7])


def test_balanced_sample_weights_draw_every_class_equally():
    labels = torch.tensor([3] * 60 + [1] * 5 + [0] * 35)
    weights = balanced_sample_weights(labels)
    assert weights.shape == (100,) and weights.dtype == torch.float64
    per_class = [weights[labels == c].sum().item() for c in (0, 1, 3)]
    assert per_class == pytest.approx([per_class[0]] * 3)
    drawn = labels[torch.multinomial(weights, 30000, replacement=True, generator=_generator())]
    assert (drawn == 1).float().mean() == pytest.approx(1 / 3, abs=0.02)
