import pytest
import torch

from harness.method.networks import build, count_parameters

TINY_UNET = {"base_channels": 8, "channel_mult": [1, 2, 2], "blocks_per_level": 1, "dropout": 0.2, "attention": True}


def test_unet_shape_and_dropout_is_live_only_in_train_mode():
    net = build("unet", **TINY_UNET)
    torch.nn.init.normal_(net.conv_out.weight)  # make the output depend on the body
    x, label = torch.randn(2, 1, 28, 28), torch.tensor([0.1, -0.5])
    net.train()
    a, b = net(x, label), net(x, label)
    assert a.shape == x.shape and not torch.allclose(a, b)  # different dropout masks
    torch.manual_seed(3)
    c = net(x, label)
    torch.manual_seed(3)
    assert torch.equal(c, net(x, label))  # same RNG state -> same masks
    net.eval()
    assert torch.equal(net(x, label), net(x, label))


def test_unet_conditions_on_noise_label():
    net = build("unet", **TINY_UNET).eval()
    torch.nn.init.normal_(net.conv_out.weight)
    x = torch.randn(1, 1, 28, 28)
    assert not torch.allclose(net(x, torch.tensor([0.0])), net(x, torch.tensor([1.0])))


def test_dcgan_shapes_and_range():
    g, d = build("dcgan-g", latent_dim=128, width=16), build("dcgan-d", width=16)
    x = g(torch.randn(5, 128))
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    assert d(x).shape == (5,)


def test_evaluator_features_and_logits():
    net = build("evaluator", width=8, feature_dim=32).eval()
    x = torch.randn(3, 1, 28, 28)
    assert net.features(x).shape == (3, 32)
    assert torch.allclose(net(x), net.classifier(net.features(x)))


def test_registry_errors_and_counts():
    with pytest.raises(ValueError, match="unknown network kind"):
        build("resnet")
    lin = torch.nn.Linear(3, 2)
    assert count_parameters(lin) == 8
