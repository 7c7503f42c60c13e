"""fercore.saliency on real trained models: a small CNN trained on a task where one known region alone decides the
class, and the homework's hw3 trained briefly on the same task. Captum (test-only dependency) is the reference."""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fercore import saliency
from fercore.models import build_model
from fercore.runs import run_checkpoint
from fercore.saliency import Target
from numerics import fp32_tolerance

torch.set_num_threads(1)

# The deciding region: 22 x 22 pixels (21% of the image) holding a 16 x 16 pattern with a 3-pixel margin.
REGION = (slice(6, 28), slice(20, 42))
PATTERN = (slice(9, 25), slice(23, 39))
REGION_MASK = np.zeros((48, 48), bool)
REGION_MASK[REGION] = True


def _patterns() -> torch.Tensor:
    """Four classes, two sign-symmetric pairs (bright / dark blob, horizontal / vertical bar), so no class is
    recognised only by the absence of the others."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    blob = torch.exp(-((xx - 7.5) ** 2 + (yy - 7.5) ** 2) / 18)
    bar = torch.exp(-((yy - 7.5) ** 2) / 4) * ((xx - 7.5).abs() < 6)
    return 2 * torch.stack([blob, -blob, bar, bar.T])


PATTERNS = _patterns()


def region_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise everywhere (its strength varies per image, so the model must learn to ignore it), the class pattern
    plus mild noise in the fixed region."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    strength = 1.5 * torch.rand(n, 1, 1, 1, generator=generator)
    images = strength * torch.randn(n, 1, 48, 48, generator=generator)
    images[:, 0, PATTERN[0], PATTERN[1]] = PATTERNS[labels] + 0.3 * torch.randn(n, 16, 16, generator=generator)
    return images, labels


def small_cnn() -> nn.Sequential:
    """Conv-BN-ReLU x 3 with distinct ReLUs and a position-aware linear read-out (7 logits, like every fercore model)."""
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 8, 3, padding=1)), ("bn1", nn.BatchNorm2d(8)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 16, 3, padding=1)), ("bn2", nn.BatchNorm2d(16)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("conv3", nn.Conv2d(16, 16, 3, padding=1)), ("bn3", nn.BatchNorm2d(16)), ("relu3", nn.ReLU()),
        ("flatten", nn.Flatten()), ("fc", nn.Linear(16 * 12 * 12, 7)),
    ]))
    nn.init.zeros_(model.fc.weight)  # read-out weights grow only where the data gives them a reason
    return model


def train(build, steps: int, batch: int, lr: float, seed: int, readout_decay: float = 0.0) -> nn.Module:
    """Build (seeded) and train with SGD + momentum on freshly generated batches (no image is seen twice).

    `readout_decay`: weight decay on the final linear layer only. Its weights over the noise-only positions get
    gradients that are pure noise, so without decay they random-walk and leave the model slightly sensitive to
    the noise; the decay lets the data, not the walk, decide where the model looks."""
    torch.manual_seed(seed)
    model = build()
    generator = torch.Generator().manual_seed(seed + 1)
    readout = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].weight
    others = [p for p in model.parameters() if p is not readout]
    optimizer = torch.optim.SGD([{"params": others}, {"params": [readout], "weight_decay": readout_decay}],
                                lr=lr, momentum=0.9)
    model.train()
    for _ in range(steps):
        images, labels = region_batch(batch, generator)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def region_data():
    return region_batch(32, torch.Generator().manual_seed(99))


@pytest.fixture(scope="module")
def region_model():
    return train(small_cnn, steps=40, batch=48, lr=0.03, seed=0, readout_decay=0.5)


@pytest.fixture(scope="module")
def hw3_model():
    """The homework network after a few real SGD steps (weights and BatchNorm statistics moved off their init)."""
    return train(lambda: build_model("hw3"), steps=3, batch=16, lr=0.01, seed=0)


@pytest.fixture(params=["small_cnn", "hw3"])
def trained(request, region_model, hw3_model, region_data):
    """(model, images, Grad-CAM layer) for the Captum cross-checks."""
    if request.param == "small_cnn":
        return region_model, region_data[0][:6], "conv3"
    return hw3_model, region_data[0][:2], "conv4"


def mass_in_region(maps: np.ndarray) -> np.ndarray:
    return (maps * REGION_MASK).sum((1, 2)) / maps.sum((1, 2))


def predicted(model, images) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(1)


def deviation(ours: np.ndarray, reference: torch.Tensor) -> float:
    """Largest difference as a share of the reference map's largest magnitude."""
    reference = reference.detach().numpy()
    assert ours.shape == reference.shape
    scale = np.abs(reference).max()
    assert scale > 0
    return float(np.abs(ours - reference).max() / scale)


def assert_close(ours: np.ndarray, reference: torch.Tensor, tolerance: float):
    """Agreement to `tolerance` of the reference map's largest magnitude. fp32_tolerance gives it from the work
    done (1.7e-5 for hw3's gradient, 4.9e-5 for its 8-point IG), and a wrong method moves a map by far more
    (test_a_wrong_quadrature_fails_the_captum_tolerance)."""
    assert deviation(ours, reference) <= tolerance, f"{deviation(ours, reference):.2e} > {tolerance:.2e}"


# ----------------------------------------------------------------------------------------------------------------
# The region task: saliency falls where the class is decided

def test_region_model_learns_the_task(region_model, region_data):
    images, labels = region_data
    accuracy = (predicted(region_model, images) == labels).float().mean().item()
    assert accuracy >= 0.95


REGION_OPTIONS = {
    "gradient": {},
    "smoothgrad": {"samples": 16},
    "integrated_gradients": {"steps": 16},
    "gradcam": {},  # the last conv layer

}


@pytest.mark.parametrize("method", list(saliency.METHODS))
def test_saliency_mass_falls_in_the_deciding_region(method, region_model, region_data):
    images, _ = region_data
    maps = saliency.compute_saliency(method, region_model, images, Target.predicted(), **REGION_OPTIONS[method])
    assert maps.shape == (32, 48, 48) and maps.dtype == np.float32
    assert (maps >= 0).all()
    # a map spread evenly would put 21% of its mass in the region
    assert mass_in_region(maps).mean() > 0.5


def test_model_randomisation_lowers_rank_correlation(region_model, region_data):
    images = region_data[0][:8]
    rows = saliency.cascading_randomization(region_model, images, Target.predicted(), "gradient", seed=0)
    names = [name for name, _ in rows]
    assert names == ["original", "fc", "bn3", "conv3", "bn2", "conv2", "bn1", "conv1"]
    rho = dict(rows)
    assert rho["original"] == pytest.approx(1.0)
    assert rho["conv1"] < 0.5
    assert rho["conv1"] < rho["original"] - 0.5
    # the original model was not touched
    assert region_model.fc.weight.abs().sum() > 0


def test_model_randomisation_of_gradcam_and_smoothgrad(region_model, region_data):
    images = region_data[0][:4]
    for method, options in [("gradcam", {}), ("smoothgrad", {"samples": 4})]:
        rows = saliency.cascading_randomization(region_model, images, None, method, seed=1, **options)
        assert rows[0] == ("original", pytest.approx(1.0))  # same seed, same noise: deterministic
        assert rows[-1][1] < rows[0][1] - 0.3


def test_deletion_auc_of_gradient_beats_a_random_map(region_model, region_data):
    images = region_data[0][:16]
    maps = saliency.gradient(region_model, images)
    random_maps = np.random.default_rng(0).random(maps.shape).astype(np.float32)
    deletion = saliency.deletion_curve(region_model, images, maps, steps=16)
    deletion_random = saliency.deletion_curve(region_model, images, random_maps, steps=16)
    assert deletion.scores.shape == (16, 17) and deletion.fractions[0] == 0 and deletion.fractions[-1] == 1
    assert deletion.mean_auc < deletion_random.mean_auc - 0.1
    insertion = saliency.insertion_curve(region_model, images, maps, steps=16)
    insertion_random = saliency.insertion_curve(region_model, images, random_maps, steps=16)
    assert insertion.mean_auc > insertion_random.mean_auc


def test_deletion_curve_starts_at_the_prediction_and_ends_at_the_canvas(region_model, region_data):
    images = region_data[0][:4]
    maps = saliency.gradient(region_model, images)
    curve = saliency.deletion_curve(region_model, images, maps, steps=8, canvas="zero")
    with torch.no_grad():
        probs = torch.softmax(region_model(images), 1)
        canvas_probs = torch.softmax(region_model(torch.zeros_like(images)), 1)
    classes = probs.argmax(1)
    np.testing.assert_allclose(curve.scores[:, 0], probs[range(4), classes].numpy(), atol=1e-5)
    np.testing.assert_allclose(curve.scores[:, -1], canvas_probs[range(4), classes].numpy(), atol=1e-5)
    np.testing.assert_allclose(curve.auc, np.trapezoid(curve.scores, curve.fractions, axis=1), rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Captum cross-checks (predicted-class targets)

def test_gradient_matches_captum_saliency(trained):
    from captum.attr import Saliency
    model, images, _ = trained
    reference = Saliency(model).attribute(images.clone(), target=predicted(model, images), abs=True)
    assert_close(saliency.gradient(model, images), reference[:, 0], fp32_tolerance(model))


def test_smoothgrad_matches_captum_noise_tunnel_with_the_same_noise(trained):
    """Captum draws randn((N * samples, ...)) * stdev from the global generator with each image's copies
    contiguous; our generator seeded alike draws the same noise, so the maps agree to float rounding."""
    from captum.attr import NoiseTunnel, Saliency
    model, images, _ = trained
    stdev, samples, seed = 0.3, 6, 123
    target = predicted(model, images)
    torch.manual_seed(seed)
    with saliency.analysis_mode(model):  # the same channels_last weights fercore runs with (see the IG test)
        reference = NoiseTunnel(Saliency(model)).attribute(
            images.clone(), nt_type="smoothgrad", nt_samples=samples, stdevs=stdev, target=target)
    ours = saliency.smoothgrad(model, images, samples=samples, stdev=stdev,
                               generator=torch.Generator().manual_seed(seed))
    assert_close(ours, reference[:, 0], fp32_tolerance(model, samples))


def test_smoothgrad_noise_level_is_a_fraction_of_each_images_range(region_model, region_data):
    from captum.attr import NoiseTunnel, Saliency
    image = region_data[0][:1]
    level = 0.1
    stdev = level * float(image.max() - image.min())
    torch.manual_seed(5)
    reference = NoiseTunnel(Saliency(region_model)).attribute(
        image.clone(), nt_type="smoothgrad", nt_samples=8, stdevs=stdev, target=predicted(region_model, image))
    assert_close(saliency.smoothgrad(region_model, image, samples=8, noise_level=level, seed=5), reference[:, 0],
                 fp32_tolerance(region_model, 8))


IG_STEPS = 8
IG_CASES = [("gausslegendre", "zero"), ("riemann_trapezoid", "blur")]


def captum_integrated_gradients(model, images, baseline, method) -> torch.Tensor:
    """Captum's signed IG map (N, 48, 48) with IG_STEPS points."""
    from captum.attr import IntegratedGradients
    # Same numerics for both: near a flat or blurred baseline many max-pool windows tie and many ReLU inputs sit
    # at ~0, so the last bit of a convolution (which depends on its memory layout) can route the gradient
    # differently (~1e-3 of the max). analysis_mode gives Captum the channels_last weights fercore runs with.
    with saliency.analysis_mode(model):
        return IntegratedGradients(model).attribute(
            images.clone(), baselines=saliency.reference_image(images, baseline), target=predicted(model, images),
            n_steps=IG_STEPS, method=method)[:, 0]


@pytest.mark.parametrize("method, baseline", IG_CASES)
def test_integrated_gradients_matches_captum(trained, method, baseline):
    model, images, _ = trained
    reference, tolerance = captum_integrated_gradients(model, images, baseline, method), fp32_tolerance(model, IG_STEPS)
    options = dict(baseline=baseline, steps=IG_STEPS, method=method)
    assert_close(saliency.integrated_gradients(model, images, absolute=False, **options), reference, tolerance)
    assert_close(saliency.integrated_gradients(model, images, **options), reference.abs(), tolerance)


@pytest.mark.parametrize("method, baseline", IG_CASES)
def test_a_wrong_quadrature_fails_the_captum_tolerance(trained, method, baseline, monkeypatch):
    """The tolerance is loose enough for any summation order, and still tight enough to catch a wrong method."""
    model, images, _ = trained
    reference, tolerance = captum_integrated_gradients(model, images, baseline, method), fp32_tolerance(model, IG_STEPS)
    alphas, weights = saliency.ig_quadrature(method, IG_STEPS)
    wrong_rules = {"uniform weights": (alphas, np.full(IG_STEPS, 1 / IG_STEPS)),
                   "last point missing": (alphas[:-1], weights[:-1]),
                   "weights 0.1% too large": (alphas, weights * 1.001)}
    for name, rule in wrong_rules.items():
        monkeypatch.setattr(saliency, "ig_quadrature", lambda _method, _steps, rule=rule: rule)
        wrong = saliency.integrated_gradients(model, images, baseline=baseline, steps=len(rule[0]), method=method,
                                              absolute=False)
        assert deviation(wrong, reference) > 5 * tolerance, name


def test_gradcam_matches_captum_layer_gradcam(trained):
    from captum.attr import LayerAttribution, LayerGradCam
    model, images, layer = trained
    cam = LayerGradCam(model, dict(model.named_modules())[layer]).attribute(
        images.clone(), target=predicted(model, images), relu_attributions=True)
    reference = LayerAttribution.interpolate(cam, (48, 48), interpolate_mode="bilinear")
    assert_close(saliency.gradcam(model, images, layer=layer), reference[:, 0], fp32_tolerance(model))


def test_default_gradcam_layer_is_the_deepest_with_a_map_of_at_least_12x12():
    hw3, fernet = build_model("hw3"), build_model("fernet")
    assert saliency.conv_map_sizes(hw3) == {"conv1": (48, 48), "conv2": (48, 48), "conv3": (24, 24),
                                            "conv4": (24, 24)}
    assert saliency.default_gradcam_layer(hw3) == "conv4"  # its last conv layer
    sizes = saliency.conv_map_sizes(fernet)
    assert list(sizes) == [f"conv{k}" for k in range(1, 8)]
    assert sizes["conv5"] == (12, 12) and sizes["conv6"] == (6, 6)
    assert saliency.default_gradcam_layer(fernet) == "conv5"  # not conv7, whose 6x6 map is one blob per face half
    assert saliency.default_gradcam_layer(fernet, min_size=24) == "conv3"
    assert saliency.default_gradcam_layer(fernet, min_size=49) == "conv1"  # none that fine: the largest map
    assert fernet.training  # measuring the maps left the model as it was
    with pytest.raises(ValueError, match="no conv layer"):
        saliency.default_gradcam_layer(nn.Sequential(nn.Flatten(), nn.Linear(48 * 48, 7)))


def test_gradcam_defaults_to_the_default_layer(hw3_model, region_data):
    images = region_data[0][:2]
    np.testing.assert_array_equal(saliency.gradcam(hw3_model, images),
                                  saliency.gradcam(hw3_model, images, layer="conv4"))
    torch.manual_seed(0)
    fernet = build_model("fernet").eval()
    default = saliency.gradcam(fernet, images)
    np.testing.assert_array_equal(default, saliency.gradcam(fernet, images, layer="conv5"))
    assert not np.array_equal(default, saliency.gradcam(fernet, images, layer="conv7"))
    with pytest.raises(ValueError, match="conv1"):
        saliency.gradcam(hw3_model, images, layer="nope")


def test_integrated_gradients_completeness(region_model, region_data):
    """Signed IG sums to score(x) - score(baseline) (Sundararajan et al.'s completeness axiom)."""
    images = region_data[0][:4]
    classes = predicted(region_model, images)
    maps = saliency.integrated_gradients(region_model, images, classes, steps=64, absolute=False)
    with torch.no_grad():
        gap = region_model(images)[range(4), classes] - region_model(torch.zeros_like(images))[range(4), classes]
    np.testing.assert_allclose(maps.sum((1, 2)), gap.numpy(), rtol=0.02, atol=0.02 * gap.abs().max().item())


# ----------------------------------------------------------------------------------------------------------------
# Targets

def test_contrast_target_is_the_difference_of_class_gradients(region_model, region_data):
    images = region_data[0][:5]
    a, b = 0, 2
    contrast = saliency.gradient(region_model, images, Target.contrast(a, b), absolute=False)
    grad_a = saliency.gradient(region_model, images, Target.cls(a), absolute=False)
    grad_b = saliency.gradient(region_model, images, b, absolute=False)  # a plain int works too
    atol = fp32_tolerance(region_model) * np.abs(grad_a).max()
    np.testing.assert_allclose(contrast, grad_a - grad_b, atol=atol)
    np.testing.assert_allclose(saliency.gradient(region_model, images, Target.contrast(a, b)),
                               np.abs(grad_a - grad_b), atol=atol)
    # IG is linear in the score too
    ig = lambda target: saliency.integrated_gradients(region_model, images, target, steps=8, absolute=False)
    np.testing.assert_allclose(ig(Target.contrast(a, b)), ig(a) - ig(b),
                               atol=fp32_tolerance(region_model, 8) * np.abs(ig(a)).max())


def test_targets_resolve_per_image(region_model, region_data):
    images, labels = region_data[0][:6], region_data[1][:6]
    classes = predicted(region_model, images)
    by_prediction = saliency.gradient(region_model, images, Target.predicted())
    np.testing.assert_array_equal(by_prediction, saliency.gradient(region_model, images, None))
    np.testing.assert_array_equal(by_prediction, saliency.gradient(region_model, images, classes))
    np.testing.assert_array_equal(saliency.gradient(region_model, images, Target.true(labels)),
                                  saliency.gradient(region_model, images, labels.numpy()))
    # per-image classes stay with their images when the batch is split into chunks
    np.testing.assert_array_equal(saliency.gradient(region_model, images, labels, batch_size=4),
                                  saliency.gradient(region_model, images, labels))
    # "why the predicted class and not the true one": zero where they agree
    why = saliency.gradient(region_model, images, Target.contrast(Target.predicted(), Target.true(labels)))
    agree = (classes == labels).numpy()
    assert agree.any() and np.abs(why[agree]).max() == 0
    with pytest.raises(ValueError, match="6 images"):
        saliency.gradient(region_model, images, labels[:3])
    with pytest.raises(ValueError, match="outside"):
        saliency.gradient(region_model, images, 7)


def test_smoothgrad_and_ig_explain_the_clean_images_class(region_model, region_data):
    """The target is read from the clean image, not from each noisy copy or path point."""
    images = region_data[0][:3]
    classes = predicted(region_model, images)
    np.testing.assert_array_equal(saliency.smoothgrad(region_model, images, samples=4, seed=1),
                                  saliency.smoothgrad(region_model, images, classes, samples=4, seed=1))
    np.testing.assert_array_equal(saliency.integrated_gradients(region_model, images, steps=8),
                                  saliency.integrated_gradients(region_model, images, classes, steps=8))


# ----------------------------------------------------------------------------------------------------------------
# One batched pass, no leaked state

def test_smoothgrad_and_ig_run_batched_passes(region_model, region_data):
    images = region_data[0][:3]
    batch_sizes = []
    handle = region_model.register_forward_pre_hook(lambda _m, inputs: batch_sizes.append(len(inputs[0])))
    try:
        saliency.smoothgrad(region_model, images, 1, samples=8)
        assert batch_sizes[-1] == 24 and len(batch_sizes) <= 2  # at most one small pass to size the target
        batch_sizes.clear()
        saliency.integrated_gradients(region_model, images, Target.predicted(), steps=10, batch_size=12)
        assert batch_sizes == [3, 12, 12, 6]  # the clean images' prediction, then 30 path points in chunks
    finally:
        handle.remove()


def _state(model: nn.Module):
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "tensors": [(name, t.data_ptr(), t.stride(), t.clone()) for name, t in model.state_dict().items()],
        "grads": [None if p.grad is None else (p.grad.data_ptr(), p.grad.clone()) for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
    }


def _assert_same_state(before, after):
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"]
    for grad, grad2 in zip(before["grads"], after["grads"]):  # .grad untouched (the methods never fill it)
        assert (grad is None) == (grad2 is None)
        assert grad is None or grad[0] == grad2[0] and torch.equal(grad[1], grad2[1])
    for (name, ptr, stride, value), (_, ptr2, stride2, value2) in zip(before["tensors"], after["tensors"]):
        assert (ptr, stride) == (ptr2, stride2), name
        assert torch.equal(value, value2), name


def test_no_state_leaks(hw3_model, region_data):
    images = region_data[0][:2]
    model = hw3_model
    model.train()  # a caller's model in training mode, with one layer frozen
    model.conv1.weight.requires_grad_(False)
    try:
        before = _state(model)
        maps = {name: saliency.compute_saliency(name, model, images, None, **options)
                for name, options in [("gradient", {}), ("smoothgrad", {"samples": 2}),
                                      ("integrated_gradients", {"steps": 2}), ("gradcam", {})]}
        saliency.deletion_curve(model, images, maps["gradient"], steps=2)
        saliency.cascading_randomization(model, images[:1], None, "gradcam")
        _assert_same_state(before, _state(model))
        # maps come from eval mode (dropout off, BatchNorm running statistics), whatever the caller's mode
        model.eval()
        np.testing.assert_array_equal(maps["gradient"], saliency.gradient(model, images))
        with torch.no_grad():  # callers inside no_grad or inference_mode still get gradients
            np.testing.assert_array_equal(maps["gradient"], saliency.gradient(model, images))
        with torch.inference_mode():
            np.testing.assert_array_equal(maps["gradcam"], saliency.gradcam(model, images))
            np.testing.assert_array_equal(maps["gradient"], saliency.gradient(model, images))
            saliency.smoothgrad(model, images, samples=2)
    finally:
        model.eval()
        model.conv1.weight.requires_grad_(True)


def test_state_is_restored_when_a_method_fails(region_model, region_data):
    before = _state(region_model)
    with pytest.raises(ValueError):
        saliency.gradcam(region_model, region_data[0][:2], layer="flatten")  # ran, but not a conv map: 2-D output
    with pytest.raises(ValueError):
        saliency.integrated_gradients(region_model, region_data[0][:2], method="simpson")
    _assert_same_state(before, _state(region_model))


def test_threads_sharing_a_model_get_the_serial_results(region_model, region_data):
    """Streamlit sessions share one cached model; concurrent calls must not see each other's hooks or state."""
    from concurrent.futures import ThreadPoolExecutor
    images = region_data[0][:4]
    calls = [("gradcam", {}), ("gradient", {}), ("smoothgrad", {"samples": 3}), ("gradcam", {"layer": "conv2"})] * 2
    run = lambda call: saliency.compute_saliency(call[0], region_model, images, None, **call[1])
    serial = [run(call) for call in calls]
    before = _state(region_model)
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(run, calls))
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)
    _assert_same_state(before, _state(region_model))


# ----------------------------------------------------------------------------------------------------------------
# Registry, shapes, helpers

def test_registry_runs_every_method_on_every_fercore_model(region_data):
    images = region_data[0][:2]
    for name in ["hw3", "fernet"]:
        model = build_model(name).eval()
        for method in saliency.METHODS:
            options = {"smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 2}}.get(method, {})
            maps = saliency.compute_saliency(method, model, images, Target.cls(3), **options)
            assert maps.shape == (2, 48, 48) and maps.dtype == np.float32 and np.isfinite(maps).all()
    with pytest.raises(ValueError, match="gradient, smoothgrad, integrated_gradients, gradcam"):
        saliency.compute_saliency("lime", model, images)


def test_baselines(region_data):
    images = region_data[0][:3]
    assert torch.equal(saliency.reference_image(images, "zero"), torch.zeros_like(images))
    mean = saliency.reference_image(images, "mean")
    assert torch.allclose(mean[:, 0, 0, 0], images.mean((1, 2, 3))) and mean.std((1, 2, 3)).max() == 0
    blurred = saliency.reference_image(images, "blur", blur_sigma=3.0)
    assert blurred.shape == images.shape and blurred.std() < images.std() / 2
    assert torch.allclose(blurred.mean((2, 3)), images.mean((2, 3)), atol=0.1)
    black = torch.full((1, 1, 48, 48), -1.7)
    assert torch.equal(saliency.reference_image(images, black), black.expand_as(images))
    assert torch.equal(saliency.reference_image(images, -1.7), black.expand_as(images))


def _naive_spearman(a, b):
    def ranks(x):
        return np.array([1 + (x < v).sum() + ((x == v).sum() - 1) / 2 for v in x])
    ra, rb = ranks(a), ranks(b)
    return np.corrcoef(ra, rb)[0, 1]


def test_spearman_matches_the_definition():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, (3, 40)).astype(float)  # many ties
    b = a + rng.normal(0, 2, a.shape)
    np.testing.assert_allclose(saliency.spearman(a, b), [_naive_spearman(x, y) for x, y in zip(a, b)], atol=1e-12)
    np.testing.assert_allclose(saliency.spearman(a[:1] ** 3, a[:1] * 2 + 1), [1.0])
    np.testing.assert_allclose(saliency.spearman(b[:1], -b[:1]), [-1.0])
    assert saliency.spearman(np.zeros((1, 9)), b[:1, :9])[0] == 0
    np.testing.assert_array_equal(saliency.rankdata(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2])


# ----------------------------------------------------------------------------------------------------------------
# The Inspect page's first view on the shipped checkpoints and data

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["hw3", "fernet_wide"])
def test_default_mask_keeps_a_fifth_to_three_fifths_of_a_real_face(name):
    """The homework's question 4 asks for a mask that keeps the eyes, the mouth and the cheeks: at fercore.render's
    defaults it keeps 20-60% of at least 95% of 200 PrivateTest faces (the min-max scaling kept about 1%)."""
    from fercore import render
    from fercore.checkpoints import load_model
    from fercore.data import DEFAULT_DATA_PATH, load_dataset
    from fercore.labels import PRIVATE_TEST

    checkpoint = ROOT / "checkpoints" / name
    if run_checkpoint(checkpoint) is None or not DEFAULT_DATA_PATH.exists():
        pytest.skip(f"needs the shipped checkpoint {checkpoint} and data {DEFAULT_DATA_PATH}")
    loaded = load_model(checkpoint)
    faces = load_dataset().select_split(PRIVATE_TEST).pixels[:200]
    _, maps = saliency.explain(loaded.model, loaded.preprocess(faces))  # the page's first view: the gradient
    shares = np.array([render.kept_pixels(m).mean() for m in maps])
    assert ((shares >= 0.2) & (shares <= 0.6)).mean() >= 0.95, np.percentile(shares, [5, 50, 95])
    minmax = np.array([render.kept_pixels(m, scaling="minmax", smoothing=0).mean() for m in maps])
    assert np.median(minmax) < 0.05  # only the peaks: why the default changed


def test_targets_compare_by_value_and_true_waits_for_labels():
    """Targets key caches: equal choices are equal and hash alike; Target.true() is bound to labels later."""
    assert Target.cls(3) == Target.cls(np.int64(3)) and hash(Target.cls(3)) == hash(Target.cls(3))
    assert Target.cls(3) != Target.cls(4) and Target.predicted() != Target.true()
    assert Target.cls([1, 2]) == Target.cls(torch.tensor([1, 2])) != Target.cls([1, 3])
    assert Target.contrast(1, 4) == Target.contrast(1, 4) != Target.contrast(4, 1)
    assert len({Target.predicted(), Target.predicted(), Target.contrast(1, 4), Target.contrast(1, 4)}) == 2
    logits = torch.zeros(2, 7)
    with pytest.raises(ValueError, match="labels"):
        Target.true().weights(logits)
    assert Target.contrast(Target.true(), 4).with_labels(2) == Target.contrast(2, 4)
    assert torch.equal(Target.true().with_labels(torch.tensor([5, 6])).weights(logits), torch.eye(7)[[5, 6]])
    assert Target.predicted().with_labels(None) == Target.predicted()
    with pytest.raises(ValueError, match="no label"):
        Target.true().with_labels(None)


def test_explain_faces_reads_raw_faces_and_the_black_baseline():
    """explain_faces on uint8 faces is explain on the normalized ones; "black" is the all-black face normalized,
    and predict gives explain's probabilities."""
    from fercore.checkpoints import load_model

    checkpoint = ROOT / "checkpoints" / "fernet_wide"
    if run_checkpoint(checkpoint) is None:
        pytest.skip(f"needs the shipped checkpoint {checkpoint}")
    loaded = load_model(checkpoint)
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    black = saliency.baseline_for(loaded, "black")
    assert torch.equal(black, loaded.preprocess(np.zeros((1, 48, 48), np.uint8)))
    assert saliency.baseline_for(loaded, "blur") == "blur"
    options = dict(baseline="black", steps=8)
    probabilities, maps = saliency.explain_faces(loaded, faces, "integrated_gradients", Target.cls(2), **options)
    expected_p, expected = saliency.explain(loaded.model, loaded.preprocess(faces), "integrated_gradients",
                                            Target.cls(2), baseline=black, steps=8)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probabilities, expected_p, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loaded.predict(faces), expected_p, rtol=1e-5, atol=1e-6)
    assert loaded.predict(faces[0]).shape == (1, 7) and not loaded.model.training
    _, blurred = saliency.explain_faces(loaded, faces[0], "integrated_gradients", 2, baseline="blur", steps=8)
    assert blurred.shape == (1, 48, 48) and not np.allclose(blurred[0], maps[0])  # other names pass through
