"""The deterministic backbones: shapes, and that each block does what its name says."""

import pytest
import torch
from torch import nn

from aevb.errors import ConfigError
from aevb.nn.nets import activation, conv_down, mlp, pixel_shuffle_up


def test_mlp_shapes_and_identity():
    net = mlp([5, 7, 3], "relu")
    assert net(torch.randn(4, 2, 5)).shape == (4, 2, 3)
    x = torch.randn(3, 5)
    assert torch.equal(mlp([5], "relu")(x), x)
    with pytest.raises(ConfigError, match="unknown activation"):
        activation("swishy")


def test_conv_down_halves_each_time():
    net = conv_down([1, 8, 16], "relu")
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 16, 7, 7)
    assert net(torch.rand(3, 1, 8, 8)).shape == (3, 16, 2, 2)
    strides = [m.stride for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert strides == [(2, 2), (2, 2)]


def test_pixel_shuffle_up_doubles_each_time():
    net = pixel_shuffle_up([16, 8, 1], "relu", last_activation=False)
    out = net(torch.randn(2, 16, 7, 7))
    assert out.shape == (2, 1, 28, 28)
    assert (out < 0).any()  # the last block is linear (logits), not cut off by the ReLU
    assert isinstance(net[-1], nn.PixelShuffle)
    assert isinstance(pixel_shuffle_up([4, 2], "relu")[-1], nn.ReLU)


def test_pixel_shuffle_is_depth_to_space():
    # A 1x1 map of 4 channels becomes one 2x2 image: channel c goes to pixel (c // 2, c % 2).
    shuffle = pixel_shuffle_up([1, 1], "identity", last_activation=False)[1]
    x = torch.arange(4.0).reshape(1, 4, 1, 1)
    assert torch.equal(shuffle(x), torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]))
