"""Tests of the U-Net: shapes, configuration, layout of the published network, bad input."""

from __future__ import annotations

import pytest
import torch

from deepgmm.errors import InputError
from deepgmm.nets.unet import UNet


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_output_is_k_logits_per_pixel() -> None:
    torch.manual_seed(0)
    net = UNet(3, n_classes=4, depth=2, base_filters=4)
    x = torch.randn(2, 3, 32, 24)
    out = net(x)
    assert out.shape == (2, 4, 32, 24)
    assert out.dtype == torch.float32
    # logits, not probabilities: unbounded, channel sums are not 1
    assert (out < 0).any()
    assert not torch.allclose(out.sum(dim=1), torch.ones(2, 32, 24), atol=1e-3)


def test_parameter_count_matches_hand_count() -> None:
    # in 3, K 4, depth 1, base 2:
    # down0: conv 3->2 (54 + 2 bias), conv 2->2 (36, no bias), norm (2 + 2)      = 96
    # down1: conv 2->4 (72 + 4), conv 4->4 (144), norm (4 + 4)                  = 228
    # up0:   1x1 4->2 (8 + 2); block 4->2: conv (72 + 2), conv (36), norm (2 + 2) = 124
    # head:  1x1 2->4 (8 + 4)                                                   = 12
    assert _n_params(UNet(3, n_classes=4, depth=1, base_filters=2)) == 460


def test_default_is_published_configuration() -> None:
    net = UNet(3)
    assert net.config == {"in_channels": 3, "n_classes": 4, "depth": 4, "base_filters": 32,
                          "negative_slope": 0.01}
    widths = [block.conv2.out_channels for block in net.down]
    assert widths == [32, 64, 128, 256, 512]
    for block in net.down:
        assert block.conv1.kernel_size == (3, 3) and block.conv1.bias is not None
        assert block.conv2.kernel_size == (3, 3) and block.conv2.bias is None
        assert block.norm.affine and not block.norm.track_running_stats
    assert [up.proj.kernel_size for up in net.up] == [(1, 1)] * 4
    assert net.head.out_channels == 4


@pytest.mark.parametrize(("depth", "base", "k"), [(1, 3, 2), (3, 8, 5), (4, 2, 4)])
def test_configurable_depth_width_classes(depth: int, base: int, k: int) -> None:
    net = UNet(2, n_classes=k, depth=depth, base_filters=base)
    assert len(net.down) == depth + 1 and len(net.up) == depth
    assert net.down[-1].conv2.out_channels == base * 2**depth
    size = 2**depth * 3
    assert net(torch.randn(1, 2, size, size)).shape == (1, k, size, size)


def test_config_round_trip_rebuilds_same_network() -> None:
    torch.manual_seed(1)
    net = UNet(3, n_classes=3, depth=2, base_filters=4)
    copy = UNet(**net.config)
    copy.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(copy(x), net(x))


def test_slices_do_not_interact_and_train_equals_eval() -> None:
    # instance norm without running statistics: a slice's output does not depend on the
    # other slices of the batch, nor on train/eval mode
    torch.manual_seed(2)
    net = UNet(3, n_classes=4, depth=2, base_filters=4)
    x = torch.randn(3, 3, 16, 16)
    together = net(x)
    alone = net(x[1:2])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-5, atol=1e-5)
    net.eval()
    torch.testing.assert_close(net(x), together)


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(3)
    net = UNet(3, n_classes=4, depth=2, base_filters=4)
    net(torch.randn(2, 3, 16, 16)).logsumexp(dim=1).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_skip_connections_carry_fine_detail() -> None:
    # with skips, a single-pixel change at full resolution changes that pixel's logits
    torch.manual_seed(4)
    net = UNet(1, n_classes=2, depth=3, base_filters=4)
    x = torch.randn(1, 1, 32, 32)
    y = x.clone()
    y[0, 0, 9, 13] += 5.0
    diff = (net(y) - net(x)).abs().sum(dim=(0, 1))
    assert diff[9, 13] > 0
    assert diff[9, 13] >= diff.max() * 0.1


def test_size_not_divisible_by_two_to_depth_is_input_error() -> None:
    net = UNet(3, depth=4, base_filters=2)
    with pytest.raises(InputError, match=r"2\*\*depth = 16"):
        net(torch.randn(1, 3, 40, 48))


def test_wrong_channels_or_rank_is_input_error() -> None:
    net = UNet(3, depth=1, base_filters=2)
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        net(torch.randn(1, 2, 8, 8))
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        net(torch.randn(3, 8, 8))


@pytest.mark.parametrize("kwargs", [{"depth": 0}, {"base_filters": 0}, {"n_classes": 0},
                                    {"depth": 2.5}, {"negative_slope": -0.1}])
def test_bad_configuration_is_input_error(kwargs: dict) -> None:
    with pytest.raises(InputError, match="UNet"):
        UNet(3, **kwargs)
