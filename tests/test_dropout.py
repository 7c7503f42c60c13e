"""fercore's Dropout (a byte of randomness per activation): the rate, the scaling and the gradient of nn.Dropout,
masks that do not depend on the batch they are drawn for, and the same printed form (so checkpoint signatures hold)."""

import pytest
import torch
from torch import nn

from fercore.dropout import Dropout, drop_rate, keep_mask

SHAPE = (64, 32, 24, 24)  # 1.2 M activations: a drop share within 0.002 of the rate is 5 standard deviations


@pytest.mark.parametrize("p", [0.25, 0.5, 0.3])
def test_it_drops_at_the_rate_and_keeps_the_expected_value(p):
    torch.manual_seed(0)
    x = torch.rand(SHAPE) + 0.5  # no zeros of its own
    y = Dropout(p).train()(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - drop_rate(p)) < 0.002
    assert torch.allclose(y[~dropped], x[~dropped] / (1 - drop_rate(p)))
    assert abs(y.mean().item() / x.mean().item() - 1) < 0.005
    assert drop_rate(0.25) == 0.25 and drop_rate(0.3) == 77 / 256


def test_its_gradient_is_the_mask_it_applied_scaled():
    torch.manual_seed(1)
    x = (torch.rand(SHAPE) + 0.5).requires_grad_()
    y = Dropout(0.25).train()(x)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() / 0.75)


def test_channels_last_bf16_stays_channels_last_bf16():
    x = torch.rand(SHAPE, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    y = Dropout(0.25).train()(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_a_batchs_first_rows_get_the_mask_drawn_for_them_alone(layout):
    """What fercore.distributed relies on: a rank drawing the global batch's mask keeps the rows one process draws."""
    torch.manual_seed(2)
    whole = keep_mask((8, 16, 6, 6), 0.25, layout)
    torch.manual_seed(2)
    first = keep_mask((3, 16, 6, 6), 0.25, layout)
    assert torch.equal(whole[:3], first)


def test_the_seed_decides_the_mask_and_eval_mode_is_the_identity():
    x = torch.rand(SHAPE)
    layer = Dropout(0.5).train()
    masks = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        masks.append(layer(x) == 0)
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    assert layer.eval()(x) is x
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


def test_it_prints_as_nn_dropout_does():
    assert str(Dropout(0.25)) == str(nn.Dropout(0.25)) and isinstance(Dropout(0.25), nn.Dropout)
