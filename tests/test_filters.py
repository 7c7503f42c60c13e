"""fercore.filters on real models: a small CNN trained here for a few seconds, and the registry's hw3 and fernet."""

import copy
import dataclasses
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fercore import filters, render
from fercore.checkpoints import load_model
from fercore.analysis_mode import analysis_mode
from fercore.filters import objectives, params, transforms
from fercore.models import build_model, conv_layers
from fercore.runs import run_checkpoint
from fixtures import learnable_faces

torch.set_num_threads(1)


def small_cnn() -> nn.Sequential:
    """conv-BN-ReLU, conv-ReLU (with bias, no BN), conv-BN-ReLU, pooling between: every kind of stage chain."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 8, 3, padding=1)), ("bn1", nn.BatchNorm2d(8)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 16, 3, padding=1)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("conv3", nn.Conv2d(16, 16, 3, padding=1, bias=False)), ("bn3", nn.BatchNorm2d(16)), ("relu3", nn.ReLU()),
        ("flatten", nn.Flatten()), ("fc", nn.Linear(16 * 12 * 12, 7)),
    ]))


@pytest.fixture(scope="module")
def faces() -> tuple[torch.Tensor, torch.Tensor]:
    pixels, labels = learnable_faces(420, seed=1)
    return torch.from_numpy(pixels).float().div(255).unsqueeze(1), torch.from_numpy(labels)


@pytest.fixture(scope="module")
def trained(faces) -> nn.Sequential:
    """small_cnn trained on faces whose class is the position of a bright square (the homework's /255 input).

    Plain SGD with momentum written out: torch.optim's first use imports torch._dynamo, seconds of test time."""
    torch.manual_seed(0)
    model = small_cnn()
    images, labels = faces
    velocity = [torch.zeros_like(p) for p in model.parameters()]
    for epoch in range(2):
        for batch in torch.randperm(len(images)).split(32):
            model.zero_grad()
            nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            with torch.no_grad():
                for p, v in zip(model.parameters(), velocity):
                    p.sub_(v.mul_(0.9).add_(p.grad), alpha=0.02)
    model.eval()
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.9, f"the test model did not learn its task (accuracy {accuracy:.2f})"
    return model


def registry_model(name: str) -> nn.Module:
    """A registry model with non-trivial BN statistics (as after training), in eval mode."""
    torch.manual_seed(1)
    model = build_model(name)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def hw3() -> nn.Module:
    return registry_model("hw3")


@pytest.fixture(scope="module")
def fernet() -> nn.Module:
    return registry_model("fernet")


# ------------------------------------------------------------------------------------------------ layer outputs

def test_layer_outputs_equal_a_manual_forward(hw3):
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        conv1 = hw3.conv1(x)
        relu1 = hw3.relu1(hw3.bn1(conv1))
        bn3 = hw3.bn3(hw3.conv3(hw3.drop1(hw3.pool1(hw3.relu2(hw3.conv2(relu1))))))
    np.testing.assert_allclose(filters.layer_outputs(hw3, x, "conv1"), relu1.numpy(), atol=1e-6)
    np.testing.assert_allclose(filters.layer_outputs(hw3, x, 0, stage="conv"), conv1.numpy(), atol=1e-6)
    np.testing.assert_allclose(filters.layer_outputs(hw3, x, "conv3", stage="pre_relu"), bn3.numpy(),
                               atol=1e-5)
    outputs = filters.layer_outputs(hw3, x[0], "conv4")  # one image (1, 48, 48): the homework's call
    assert outputs.shape == (1, 128, 24, 24) and outputs.dtype == np.float32 and outputs.min() >= 0


def test_stages_follow_the_data_flow(hw3, fernet):
    site = filters.find_layer(hw3, "conv2")
    assert site.norm is None and site.activation is hw3.relu2 and site.output_hw == (48, 48)
    site = filters.find_layer(fernet, "conv5")
    assert site.norm is fernet.bn5 and site.activation is fernet.relu5 and site.output_hw == (12, 12)
    with pytest.raises(ValueError, match="conv1, conv2, conv3, conv4"):
        filters.find_layer(hw3, "fc1")
    with pytest.raises(ValueError, match="stage"):
        filters.layer_outputs(hw3, torch.rand(1, 1, 48, 48), "conv1", stage="post")


@pytest.mark.parametrize("name", ["hw3", "fernet"])
def test_truncated_forward_equals_the_full_models_activation_and_stops_there(name, hw3, fernet):
    model = {"hw3": hw3, "fernet": fernet}[name]
    x = torch.rand(1, 1, 48, 48)
    layers = ["conv2", "conv3"] if name == "hw3" else list(conv_layers(model))  # without and with BN
    points = [(layer, stage, filters.find_layer(model, layer).module_at(stage))
              for layer in layers for stage in filters.STAGES]
    seen = {}
    handles = [module.register_forward_hook(lambda m, i, out, key=(layer, stage): seen.setdefault(key, out))
               for layer, stage, module in points]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    classifier_calls = []
    handle = list(model.children())[-1].register_forward_hook(lambda *args: classifier_calls.append(1))
    for layer, stage, _ in points:
        with torch.no_grad():
            assert torch.equal(filters.truncated_forward(model, x, layer, stage), seen[layer, stage])
    handle.remove()
    assert not classifier_calls, "the truncated forward ran the classifier"


class Residual(nn.Module):
    """Not a plain chain: a skip connection (a functional add) and an in-place functional ReLU between modules."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), \
            nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 7))

    def forward(self, x):
        x = self.conv1(x)
        x = x + self.conv2(x)
        return self.head(self.conv3(x.relu_()))


def test_the_prefix_is_rebuilt_only_for_a_plain_chain_and_computes_the_layers_input(hw3):
    site = filters.find_layer(hw3, "conv4")
    assert site.chain == (hw3.conv1, hw3.bn1, hw3.relu1, hw3.conv2, hw3.relu2, hw3.pool1, hw3.drop1, hw3.conv3,
                          hw3.bn3, hw3.relu3)
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        prefix = filters.to_conv_input(hw3, site)
        assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for m in prefix.modules())  # folded, left out
        np.testing.assert_allclose(prefix(x), filters.run_until(hw3, x, hw3.conv4, before=True), rtol=1e-4,
                                   atol=1e-5)
    residual = Residual().eval()
    assert filters.find_layer(residual, "conv2").chain == (residual.conv1,)
    assert filters.find_layer(residual, "conv3").chain is None  # the add and the in-place relu_ are not modules
    result = filters.visualize_filters(residual, "conv3", steps=15)  # stopped by a hook in the model itself
    outputs = filters.layer_outputs(residual, torch.from_numpy(result.images)[:, None], "conv3")
    np.testing.assert_allclose(outputs[np.arange(8), np.arange(8)].mean(axis=(1, 2)), result.activations,
                               rtol=1e-4, atol=1e-5)
    assert (result.activations > result.start_activations).all()


@pytest.mark.parametrize("name,layer", [("hw3", "conv1"), ("hw3", "conv3"), ("fernet", "conv4")])
def test_one_filter_responses_equal_the_whole_layers(name, layer, hw3, fernet):
    """The per-filter computation (one filter per image for gradient ascent, one filter for all images for the top
    images) equals the layer computed whole, with BN folded in."""
    model = {"hw3": hw3, "fernet": fernet}[name]
    site = filters.find_layer(model, layer)
    x = torch.rand(5, 1, 48, 48)
    with torch.no_grad():
        conv_input = filters.run_until(model, x, site.conv, before=True)
        whole = filters.truncated_forward(model, x, layer, "pre_relu")
        chosen = torch.tensor([3, 0, 7, 7, 1])
        per_image = filters.filter_response(site, conv_input, chosen, per_image=True)
        shared = filters.filter_response(site, conv_input, chosen, "activation")
    np.testing.assert_allclose(per_image[:, 0], whole[torch.arange(5), chosen], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(shared, whole[:, chosen].relu(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- gradient ascent

# The plain recipe: every pixel free inside the range, each filter's mean response before its ReLU.
MEAN_RESPONSE = dict(objective="channel", param="pixel", stage="pre_relu", lr=0.05, l2_decay=0.0, blur_every=0,
                     jitter=0, scales=())


def mean_responses(model, images: np.ndarray, layer: str) -> np.ndarray:
    """(images, channels): every filter's mean response on every image, from the layer computed whole."""
    outputs = filters.layer_outputs(model, torch.from_numpy(images)[:, None], layer, stage="pre_relu")
    return outputs.mean(axis=(2, 3))


@pytest.mark.parametrize("layer", ["conv2", "conv3"])
def test_gradient_ascent_raises_each_filters_response_far_above_the_noise_start(trained, faces, layer):
    result = filters.visualize_filters(trained, layer, steps=60, seed=0, **MEAN_RESPONSE)
    count = filters.find_layer(trained, layer).conv.out_channels
    assert result.images.shape == (count, 48, 48) and result.images.dtype == np.float32
    assert result.images.min() >= 0 and result.images.max() <= 1
    alive = ~result.dead
    assert alive.sum() >= count - 2
    # Far above the start: the gain dwarfs how much the response varies between noise images ...
    noise = (0.5 + 0.1 * torch.randn(32, 1, 48, 48)).clamp(0, 1)
    noise_spread = mean_responses(trained, noise[:, 0].numpy(), layer).std(0)
    gain = result.activations - result.start_activations
    assert (gain[alive] > 10 * noise_spread[alive]).all()
    # ... and above the filter's mean response on every real face of the data set.
    on_faces = mean_responses(trained, faces[0][:, 0].numpy(), layer).max(0)
    assert (result.activations[alive] > on_faces[alive]).all()
    # The reported activation is the filter's real mean response on its image (the layer computed whole) ...
    responses = mean_responses(trained, result.images, layer)
    np.testing.assert_allclose(np.diag(responses), result.activations, rtol=1e-3, atol=1e-4)
    # ... and each filter responds more to its own image than to the images made for the other filters: more than
    # to their average always, and most of all for nearly every filter.
    others = (responses.sum(0) - np.diag(responses)) / (count - 1)
    assert (np.diag(responses)[alive] > others[alive]).all()
    assert (responses.argmax(0) == np.arange(count))[alive].mean() >= 0.75


def test_gradient_ascent_through_the_activation_and_with_every_regulariser(trained):
    start = torch.full((1, 48, 48), 0.5)
    result = filters.visualize_filters(trained, "conv3", [0, 5, 9], steps=30, stage="activation", start=start,
                                       objective="channel", param="pixel", l2_decay=0.01, blur_every=4,
                                       blur_sigma=0.7, jitter=2, scales=(0.9, 1.1), tv_weight=0.05,
                                       value_range=(-0.5, 1.5))
    assert result.stage == "activation" and list(result.filters) == [0, 5, 9]
    assert result.images.min() >= -0.5 and result.images.max() <= 1.5
    assert np.isfinite(result.images).all()
    outputs = filters.layer_outputs(trained, torch.from_numpy(result.images)[:, None], "conv3")
    np.testing.assert_allclose(outputs[np.arange(3), [0, 5, 9]].mean(axis=(1, 2)), result.activations,
                               rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("param", list(filters.PARAMETERISATIONS))
def test_the_whole_layer_batch_equals_optimising_one_filter_alone(trained, param):
    # Ten steps, two of them blurred. A batched FFT rounds differently from a single one, and once such a difference
    # flips a ReLU or a pooling choice, later steps grow it: on an AMD EPYC Zen 4, filter 11's spectral image was
    # 1e-6 from the batch's at step 10 and 0.09 at step 40 (2e-3 at 20). At ten steps the runs still agree to 1e-6,
    # while two different filters' images differ by 0.87 or more.
    options = dict(steps=10, seed=7, jitter=1, scales=(0.95, 1.05), blur_every=5, l2_decay=0.005, tv_weight=0.02,
                   param=param)
    whole = filters.visualize_filters(trained, "conv2", **options)
    for f in (4, 11):
        alone = filters.visualize_filters(trained, "conv2", [f], **options)
        np.testing.assert_allclose(alone.images[0], whole.images[f], atol=1e-4 if param == "spectral" else 1e-5)
        np.testing.assert_allclose(alone.activations[0], whole.activations[f], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone.start_activations[0], whole.start_activations[f], rtol=1e-5, atol=1e-6)


def test_a_filter_that_can_never_fire_is_flagged_dead(trained):
    model = copy.deepcopy(trained)
    with torch.no_grad():
        model.conv2.weight[3] = 0
        model.conv2.bias[3] = -1.0
    broken = filters.visualize_filters(model, "conv2", steps=20, **MEAN_RESPONSE)
    original = filters.visualize_filters(trained, "conv2", steps=20, **MEAN_RESPONSE)
    assert broken.dead[3] and not original.dead[3]
    assert broken.activations[3] == pytest.approx(-1.0)
    np.testing.assert_array_equal(np.delete(broken.dead, 3), np.delete(original.dead, 3))


def test_progress_is_reported_after_every_step(trained):
    calls = []
    filters.visualize_filters(trained, "conv1", steps=7, progress=lambda step, total: calls.append((step, total)))
    assert calls == [(step, 7) for step in range(1, 8)]


def test_the_model_comes_back_unchanged(trained):
    model = copy.deepcopy(trained).train()
    model.conv2.weight.requires_grad_(False)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    storage = {name: p.data_ptr() for name, p in model.named_parameters()}
    filters.visualize_filters(model, "conv3", steps=5, jitter=1)
    filters.top_activating(model, torch.rand(20, 1, 48, 48), "conv2", 1, k=3)
    filters.layer_outputs(model, torch.rand(2, 1, 48, 48), "conv1")
    for name, value in model.state_dict().items():  # BN running statistics included: nothing ran in train mode
        assert torch.equal(value, before[name]), name
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert {name: p.data_ptr() for name, p in model.named_parameters()} == storage  # the caller's own tensors
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_registry_models_hw3_first_layer_and_a_deep_fernet_layer(hw3, fernet):
    first = filters.visualize_filters(hw3, "conv1", steps=30)
    assert first.images.shape == (64, 48, 48) and first.layer == "conv1"
    assert (first.activations[~first.dead] > first.start_activations[~first.dead]).all()
    deep = filters.visualize_filters(fernet, "conv6", [0, 100, 255], steps=10)
    assert deep.images.shape == (3, 48, 48)
    assert (deep.activations > deep.start_activations).all()


# ------------------------------------------------------------------------- objectives, parameterisations, transforms

@pytest.mark.parametrize("layer,stage", [("conv1", "pre_relu"), ("conv3", "pre_relu"), ("conv3", "activation")])
def test_the_neuron_objectives_gradient_reaches_only_the_centre_units_receptive_field(hw3, layer, stage):
    site = filters.find_layer(hw3, layer)
    row, col = filters.centre(site)
    x = 0.5 + 0.2 * torch.randn(2, 1, 48, 48, generator=torch.Generator().manual_seed(3))
    # Each image's filter is one whose centre unit fires on it, so a ReLU after it passes the gradient.
    chosen = filters.truncated_forward(hw3, x, layer, "pre_relu")[:, :, row, col].argmax(1).detach()
    x.requires_grad_(True)
    with analysis_mode(hw3):
        conv_input = filters.to_conv_input(hw3, site)
        score = objectives.neuron(site, conv_input, chosen, stage, filters.IMAGE_SHAPE)
        value = score(x, slice(None))
        grad, = torch.autograd.grad(value.sum(), x)
        whole = filters.truncated_forward(hw3, x.detach(), layer, stage)
    np.testing.assert_allclose(value.detach(), whole[torch.arange(2), chosen, row, col], rtol=1e-4, atol=1e-5)
    top, left, bottom, right = filters.receptive_field(hw3, layer).region(row, col)
    inside = torch.zeros(48, 48, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    reached = grad[:, 0].abs() > 0
    assert not (reached & ~inside).any(), "gradient outside the unit's receptive field"
    assert reached[0].any() and reached[1].any()
    channel = objectives.channel(site, filters.to_conv_input(hw3, site), chosen, stage, filters.IMAGE_SHAPE)
    x.grad = None
    channel(x, slice(None)).sum().backward()
    assert (x.grad[:, 0].abs() > 0)[:, ~inside].any()  # the mean response, for contrast, reaches outside it


def test_the_sigmoid_parameterisation_stays_strictly_inside_the_range_where_pixels_hit_the_bounds(hw3):
    pushed = dict(objective="channel", stage="pre_relu", lr=1.0, steps=60, l2_decay=0.0, blur_every=0, jitter=0,
                  scales=())
    clipped = filters.visualize_filters(hw3, "conv1", range(16), param="pixel", **pushed)
    squashed = filters.visualize_filters(hw3, "conv1", range(16), param="sigmoid", **pushed)
    assert ((clipped.images == 0) | (clipped.images == 1)).mean() > 0.5  # the linear optimum is on the bounds
    assert squashed.images.min() > 0 and squashed.images.max() < 1
    assert (squashed.activations > squashed.start_activations).all()
    extreme = torch.tensor([-3.0, 7.0]).view(2, 1, 1, 1).expand(2, 1, 8, 8)
    for param in ("sigmoid", "spectral"):
        image = params.from_images(param, extreme, (-1.0, 5.0))
        image.tensor.data.mul_(1000)  # far beyond any step: the projection brings it back inside
        image.project_()
        values = image.images()
        assert values.min() > -1 and values.max() < 5, param


@pytest.mark.parametrize("shape", [(3, 1, 48, 48), (2, 1, 45, 47)])
def test_the_spectral_parameterisation_gives_back_the_images_it_was_made_from(shape):
    start = 0.2 + 0.6 * torch.rand(*shape)
    image = params.SpectralImage(start, (0.0, 1.0))
    assert image.tensor.shape == (*shape[:2], shape[2], shape[3] // 2 + 1, 2)
    np.testing.assert_allclose(image.images().detach(), start, atol=1e-5)
    # 1/frequency scaling: the same step on every coefficient is mostly low frequencies in the image.
    image.tensor.data.add_(0.01)
    change = (image.images() - start).detach()[0, 0]
    power = torch.fft.fft2(change).abs()
    assert power[0, 0] > 5 * power[shape[2] // 2, shape[3] // 2]


def test_transforms_compose_and_draw_once_for_the_whole_batch():
    images = torch.rand(4, 1, 48, 48)
    shift, zoom = transforms.jitter(3), transforms.random_scale((0.8, 1.25))
    both = transforms.compose(shift, zoom)
    generator = lambda: torch.Generator().manual_seed(5)
    g = generator()
    np.testing.assert_array_equal(both(images, generator()), zoom(shift(images, g), g))
    assert torch.equal(transforms.compose()(images, generator()), images)
    for transform in (shift, zoom, both, transforms.blur(0.8)):
        batch = transform(images, generator())
        assert batch.shape == images.shape
        for i in range(len(images)):  # one draw for the batch: an image alone gets the same
            np.testing.assert_allclose(transform(images[i:i + 1], generator())[0], batch[i], atol=1e-6)
    dy, dx = torch.randint(-3, 4, (2,), generator=generator()).tolist()
    assert torch.equal(shift(images, generator()), torch.roll(images, (dy, dx), (2, 3)))
    assert torch.equal(transforms.random_scale((1.0,))(images, generator()), images)
    centre = torch.zeros(1, 1, 48, 48)
    centre[..., 20:28, 20:28] = 1
    enlarged = transforms.random_scale((1.5,))(centre, generator())
    assert enlarged.sum() > 1.8 * centre.sum()  # zoomed in about the centre


def test_one_gaussian_blur_for_saliency_and_filters():
    from fercore.saliency import gaussian_blur as saliency_blur

    images = torch.rand(2, 1, 20, 20)
    np.testing.assert_allclose(saliency_blur(images, 1.5), transforms.gaussian_blur(images, 1.5, "replicate"),
                               atol=1e-6)
    assert not torch.allclose(transforms.gaussian_blur(images, 1.5), saliency_blur(images, 1.5))  # the borders
    flat = torch.full((1, 1, 10, 10), 0.3)
    for padding in ("reflect", "replicate"):
        np.testing.assert_allclose(transforms.gaussian_blur(flat, 1.0, padding), flat, atol=1e-6)
    assert saliency_blur(torch.rand(1, 1, 6, 6), 4.0).shape == (1, 1, 6, 6)  # a radius beyond the image


def test_defaults_follow_the_receptive_field(hw3, fernet):
    small, large = dataclasses.asdict(filters.SMALL_FIELD), dataclasses.asdict(filters.LARGE_FIELD)
    assert filters.default_settings(hw3, "conv1") == small and filters.default_settings(fernet, "conv2") == small
    assert filters.default_settings(hw3, "conv3") == large and filters.default_settings(fernet, "conv7") == large
    given = filters.visualize_filters(hw3, "conv1", [0, 1], **small)
    default = filters.visualize_filters(hw3, "conv1", [0, 1])
    np.testing.assert_array_equal(given.images, default.images)


SHIPPED = {name: Path(__file__).resolve().parent.parent / "checkpoints" / name for name in ("hw3", "fernet_wide")}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_a_shipped_first_layer_at_the_defaults_shows_patterns_not_bounds_or_flat_squares(name):
    if run_checkpoint(SHIPPED[name]) is None:
        pytest.skip(f"the shipped checkpoint {SHIPPED[name]} is not here")
    loaded = load_model(SHIPPED[name])
    lo, hi = (float(v) for v in loaded.preprocess(np.array([[[0]], [[255]]], np.uint8)).flatten())
    first = next(iter(conv_layers(loaded.model)))
    result = filters.visualize_filters(loaded.model, first, value_range=(lo, hi))
    margin = 0.01 * (hi - lo)
    at_bounds = ((result.images <= lo + margin) | (result.images >= hi - margin)).mean()
    spread = result.images.reshape(len(result.images), -1).std(axis=1)
    assert at_bounds < 0.2
    # A brightness filter (its kernel's weights mostly of one sign: fernet_fullres's filter 22) is best excited by a
    # uniform bright face, so its honest image is flat. Any other filter must show a pattern.
    kernels = filters.layer_kernels(loaded.model, first).reshape(len(result.images), -1)
    brightness = np.abs(kernels.sum(1)) > 0.6 * np.abs(kernels).sum(1)
    flat = (spread < 0.02 * (hi - lo)) & ~brightness
    assert not flat.any(), f"flat images: {np.flatnonzero(flat)}"
    assert (result.activations[~result.dead] > result.start_activations[~result.dead]).all()


# ---------------------------------------------------------------------------------------------------- kernels

def test_layer_kernels_are_a_first_layers_weights_and_a_deep_layer_is_refused(hw3, fernet):
    np.testing.assert_array_equal(filters.layer_kernels(hw3, "conv1"), hw3.conv1.weight.detach()[:, 0].numpy())
    assert filters.layer_kernels(fernet, 0).shape == (32, 3, 3)
    with pytest.raises(ValueError, match="'conv2'.*first conv layer, 'conv1'"):
        filters.layer_kernels(hw3, "conv2")


def test_kernel_grid_shares_one_symmetric_scale_with_white_at_zero():
    kernels = np.zeros((3, 3, 3), np.float32)
    kernels[1, 0, 0], kernels[1, 2, 2] = 2.0, -2.0
    kernels[2, 1, 1] = 1.0
    picture = render.kernel_grid(kernels, ncols=3, pixel=10, pad=4)
    assert picture.dtype == np.uint8 and picture.shape == (4 + 34, 4 + 3 * 34, 3)
    at = lambda tile, row, col: picture[4 + 10 * row + 5, 4 + 34 * tile + 10 * col + 5]
    assert (at(0, 1, 1) == 255).all() and (at(1, 1, 1) == 255).all()  # 0 is white, in every tile
    red, blue, half = at(1, 0, 0), at(1, 2, 2), at(2, 1, 1)
    assert red[0] > red[2] and blue[2] > blue[0]  # red positive, blue negative
    assert abs(int(red[0]) - int(blue[2])) < 20  # +-2 equally strong
    assert half[0] > half[2] and int(half[1]) > int(red[1])  # 1 is half as strong as 2: paler, on the shared scale
    alone = render.kernel_grid(kernels[2:], limit=2.0, pixel=10, pad=4)
    np.testing.assert_array_equal(alone[4 + 15, 4 + 15], half)  # the same weight, the same colour, given the same limit
    blank = render.kernel_grid(np.zeros((2, 3, 3)), pixel=10, pad=4)
    assert (blank[4:34, 4:34] == 255).all()  # nothing to show: white, not a colour


# ------------------------------------------------------------------------------- receptive fields and top images

def analytic_field(model: nn.Sequential, layer: str) -> filters.ReceptiveField:
    """The textbook recurrence over a plain Sequential's convs and pools up to `layer` (square, symmetric)."""
    size, stride, offset = 1, 1, 0
    for name, module in model.named_children():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (getattr(module, a) for a in ("kernel_size", "stride", "padding"))
            k, s, p = (v[0] if isinstance(v, tuple) else v for v in (k, s, p))
            size, offset, stride = size + (k - 1) * stride, offset - p * stride, stride * s
        if name == layer:
            return filters.ReceptiveField((size, size), (stride, stride), (offset, offset))
    raise KeyError(layer)


@pytest.mark.parametrize("name,layer", [("hw3", "conv1"), ("hw3", "conv4"), ("fernet", "conv7")])
def test_receptive_field_is_measured_right_even_beyond_the_image(name, layer, hw3, fernet):
    model = {"hw3": hw3, "fernet": fernet}[name]
    expected = analytic_field(model, layer)
    assert filters.receptive_field(model, layer) == expected
    if (name, layer) == ("hw3", "conv4"):
        assert expected == filters.ReceptiveField((14, 14), (2, 2), (-6, -6))
    if name == "fernet":
        assert expected.size[0] > 48  # measured on a larger probe image


def test_top_activating_matches_a_brute_force_recount(trained, faces):
    images = faces[0][:300]
    for layer, f in [("conv2", 5), ("conv3", 2)]:
        top = filters.top_activating(trained, images, layer, f, k=6)
        maps = filters.layer_outputs(trained, images, layer, stage="pre_relu")[:, f]
        peaks = maps.reshape(len(maps), -1).max(1)
        order = np.argsort(-peaks, kind="stable")[:6]
        np.testing.assert_array_equal(top.indices, order)
        np.testing.assert_allclose(top.scores, peaks[order], rtol=1e-5, atol=1e-6)
        field = top.receptive_field
        assert field == analytic_field(trained, layer)
        for i, (row, col), region in zip(top.indices, top.positions, top.regions):
            assert maps[i, row, col] == pytest.approx(peaks[i], abs=1e-6)
            assert tuple(region) == field.region(row, col)
            top_, left, bottom, right = region
            centre = (field.offset[0] + row * field.stride[0] + field.size[0] // 2,
                      field.offset[1] + col * field.stride[1] + field.size[1] // 2)
            assert top_ <= centre[0] < bottom and left <= centre[1] < right
            assert 0 <= top_ < bottom <= 48 and 0 <= left < right <= 48


def test_top_activating_region_covers_what_the_filter_sees(trained, faces):
    """Changing pixels outside the region leaves the peak unit's response unchanged; inside, it changes it."""
    images = faces[0][:100]
    top = filters.top_activating(trained, images, "conv3", 4, k=1)
    i, (row, col), (t, l, b, r) = top.indices[0], top.positions[0], top.regions[0]
    image = images[i:i + 1].clone()
    outside = image.clone()
    outside[..., :, :] = torch.rand_like(outside)
    outside[..., t:b, l:r] = image[..., t:b, l:r]
    response = lambda x: filters.truncated_forward(trained, x, "conv3", "pre_relu")[0, 4, row, col].item()
    assert response(outside) == pytest.approx(response(image), abs=1e-5)
    inside = image.clone()
    inside[..., t:b, l:r] = torch.rand(b - t, r - l)
    assert response(inside) != pytest.approx(response(image), abs=1e-3)
