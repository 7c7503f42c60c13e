import pytest
import torch
from torch import nn

from fercore.models import build_model, conv_layers, count_flops, model_names

torch.set_num_threads(1)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_has_the_homework_net_and_faster_ones():
    names = model_names()
    assert names[0] == "hw3" and "fernet" in names
    with pytest.raises(ValueError, match="unknown model 'resnet9000'.*hw3.*fernet"):
        build_model("resnet9000")


def test_hw3_matches_the_homework_network_layer_for_layer():
    model = build_model("hw3")
    # Keras: 4 convs (3x3, with bias), BN after conv1, conv3 and the dense layer (gamma + beta trainable),
    # dense 18,432 -> 128 -> 7.
    expected = ((9 * 1 * 64 + 64) + 2 * 64 + (9 * 64 * 64 + 64) + (9 * 64 * 128 + 128) + 2 * 128
                + (9 * 128 * 128 + 128) + (18432 * 128 + 128) + 2 * 128 + (128 * 7 + 7))
    assert expected == _params(model) == 2_619_975
    kinds = [type(m).__name__ for m in model.children()]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Dropout",
                     "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d",
                     "Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert model.fc1.in_features == 12 * 12 * 128
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25, 0.5]
    assert all(conv.padding == (1, 1) and conv.kernel_size == (3, 3) for conv in conv_layers(model).values())


def test_hw3_nobn_is_hw3_without_its_batchnorm_layers():
    full, plain = build_model("hw3"), build_model("hw3_nobn")
    assert [n for n, _ in plain.named_children()] == [n for n, _ in full.named_children() if not n.startswith("bn")]
    assert _params(full) - _params(plain) == 2 * (64 + 128 + 128)
    assert plain(torch.zeros(2, 1, 48, 48)).shape == (2, 7)


@pytest.mark.parametrize("name", model_names())
def test_every_model_maps_a_batch_to_seven_logits_in_both_memory_formats(name):
    model = build_model(name).eval()
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (3, 7) and logits.dtype == torch.float32
        channels_last = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(logits, channels_last, atol=1e-4)


@pytest.mark.parametrize("name", model_names())
def test_conv_layers_are_named_in_order_and_stable(name):
    layers = conv_layers(build_model(name))
    assert list(layers) == [f"conv{i}" for i in range(1, len(layers) + 1)]
    assert list(conv_layers(build_model(name))) == list(layers)
    assert next(iter(layers.values())).in_channels == 1
    assert all(isinstance(layer, nn.Conv2d) for layer in layers.values())


@pytest.mark.parametrize("name", model_names())
def test_activations_are_distinct_and_not_in_place(name):
    model = build_model(name)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) >= len(conv_layers(model))
    assert not any(relu.inplace for relu in relus)
    modules = list(model.modules())
    assert len({id(m) for m in modules}) == len(modules), "a module instance is used twice"


@pytest.mark.parametrize("name", model_names())
def test_a_backward_hook_fires_on_every_conv_layer(name):
    model = build_model(name).eval()
    seen = []
    for layer_name, layer in conv_layers(model).items():
        layer.register_full_backward_hook(lambda module, gin, gout, n=layer_name: seen.append(n))
    x = torch.randn(2, 1, 48, 48, requires_grad=True)
    model(x)[:, 3].sum().backward()
    assert sorted(seen) == sorted(conv_layers(model)) and x.grad.abs().sum() > 0


def test_count_flops_counts_convs_and_dense_layers():
    hw3 = build_model("hw3")
    convs = 2 * 9 * (48 * 48 * (1 * 64 + 64 * 64) + 24 * 24 * (64 * 128 + 128 * 128))
    dense = 2 * (18432 * 128 + 128 * 7)
    assert count_flops(hw3) == convs + dense
    assert hw3.training  # counting leaves the mode as it was
    assert count_flops(build_model("fernet")) < count_flops(hw3) / 2


@pytest.mark.parametrize("name, per_class, steps", [("hw3", 1, 3), ("fernet", 2, 6)])
def test_a_few_training_steps_lower_the_loss(name, per_class, steps):
    torch.manual_seed(0)
    model = build_model(name).to(memory_format=torch.channels_last)
    # Seven easily separable classes: a bright square at a class-specific place.
    labels = torch.arange(7).repeat(per_class)
    x = 0.1 * torch.randn(len(labels), 1, 48, 48)
    for i, label in enumerate(labels):
        x[i, 0, 6 * label:6 * label + 12, 6 * label:6 * label + 12] += 2.0
    x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_the_full_resolution_fernet_has_fernets_weights_and_its_saliency_no_checkerboard():
    """fernet_fullres has fernet's parameters and the first conv's FLOPs four times over (at 48x48, not 24x24), and
    no 2x2 pattern in its input gradients, where fernet's stride-2 first conv leaves one (already at
    initialisation; hw3, which never strides a conv, as little)."""
    from fercore.saliency import checkerboard_share, gradient

    torch.manual_seed(0)
    faces = torch.rand(16, 1, 48, 48)
    shares = {}
    for name in ("fernet", "fernet_fullres", "hw3"):
        torch.manual_seed(0)
        shares[name] = float(checkerboard_share(gradient(build_model(name).eval(), faces)).mean())
    fernet, fullres = build_model("fernet"), build_model("fernet_fullres")
    assert _params(fullres) == _params(fernet)
    first_conv = 32 * 9 * 24 * 24  # fernet's conv1: 1 -> 32 channels, 3x3, at 24x24
    assert count_flops(fullres) - count_flops(fernet) == 2 * 3 * first_conv  # multiply-adds x2, 4x the positions
    assert shares["fernet"] > 0.02 and shares["fernet_fullres"] < shares["fernet"] / 5, shares


def test_checkerboard_share_is_one_for_a_checkerboard_and_zero_for_a_smooth_map():
    from fercore.saliency import checkerboard_share

    rows, cols = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    board = ((rows + cols) % 2).float().numpy()
    ramp = (rows + cols).float().numpy()
    shares = checkerboard_share([board, ramp, ramp + 20 * board, board * 0])
    assert shares[0] == pytest.approx(1.0) and shares[1] < 0.01 and shares[3] == 0
    # a board of variance 100 on a ramp of variance ~390: about a fifth of the variance
    assert 0.15 < shares[2] < 0.3, shares


@pytest.mark.parametrize("name", ["hw3", "fernet_fullres"])
def test_relus_in_place_train_to_the_same_weights_and_keep_the_architecture(name):
    """Training's in-place ReLUs: the same loss and, after an Adam step, bit-identical weights as the app's
    out-of-place model; checkpoints see one architecture."""
    from fercore.checkpoints import architecture_signature
    from fercore.models import relus_in_place

    x, y = torch.randn(16, 1, 48, 48), torch.randint(0, 7, (16,))
    results = []
    for in_place in (False, True):
        torch.manual_seed(0)
        model = build_model(name).train()
        if in_place:
            relus_in_place(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        torch.manual_seed(1)  # the same dropout masks
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        results.append((loss.item(), [p.detach().clone() for p in model.parameters()], architecture_signature(model)))
    (loss_a, weights_a, signature_a), (loss_b, weights_b, signature_b) = results
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in relus_in_place(build_model(name)).modules())
    assert loss_a == loss_b and all(torch.equal(a, b) for a, b in zip(weights_a, weights_b))
    assert signature_a == signature_b == architecture_signature(build_model(name))
