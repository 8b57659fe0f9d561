"""Test-time augmentation: the symmetry group, exact inverses, averaging against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepgmm.errors import InputError
from deepgmm.nets.tta import apply_transform, averaged_log_softmax, invert_transform, symmetries
from deepgmm.nets.unet import UNet


def test_square_crops_use_all_eight_symmetries_and_others_four() -> None:
    assert len(symmetries(8, 8)) == 8 and symmetries(8, 8)[0] == (0, False)
    assert set(symmetries(8, 6)) == {(0, False), (0, True), (2, False), (2, True)}
    # Eight distinct images of an image without symmetry: the group has eight elements.
    x = torch.arange(16.0).reshape(1, 4, 4)
    images = {tuple(apply_transform(x, t).flatten().tolist()) for t in symmetries(4, 4)}
    assert len(images) == 8


@pytest.mark.parametrize("shape", [(2, 3, 6, 6), (1, 2, 6, 4)])
def test_inverse_undoes_every_transform(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for t in symmetries(shape[-2], shape[-1]):
        y = apply_transform(x, t)
        assert y.shape == x.shape
        assert torch.equal(invert_transform(y, t), x)


def test_transforms_match_numpy_rot90_and_flip() -> None:
    x = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(1))
    for turns, mirror in symmetries(5, 5):
        ref = np.rot90(x.numpy(), turns, axes=(-2, -1))
        ref = np.flip(ref, axis=-1) if mirror else ref
        assert np.array_equal(apply_transform(x, (turns, mirror)).numpy(), ref)


def test_average_equals_mean_of_back_transformed_probabilities() -> None:
    torch.manual_seed(0)
    net = UNet(2, n_classes=3, depth=1, base_filters=4).eval()
    image = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        got = averaged_log_softmax(net, image).exp().numpy()
        ref = np.zeros_like(got)
        for turns, mirror in symmetries(8, 8):  # slow reference with numpy's own transforms
            x = np.rot90(image.numpy(), turns, axes=(-2, -1))
            x = np.flip(x, axis=-1) if mirror else x
            p = torch.softmax(net(torch.from_numpy(x.copy())), dim=1).numpy()
            p = np.flip(p, axis=-1) if mirror else p
            ref += np.rot90(p, -turns, axes=(-2, -1)) / 8
    np.testing.assert_allclose(got, ref, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)
    # The identity alone is the plain forward pass.
    with torch.no_grad():
        plain = averaged_log_softmax(net, image, ((0, False),))
        assert torch.allclose(plain, torch.log_softmax(net(image), dim=1), atol=1e-6)


def test_pointwise_network_is_unchanged_by_averaging() -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 4, kernel_size=1)  # commutes with every symmetry
    image = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(averaged_log_softmax(net, image),
                              torch.log_softmax(net(image), dim=1), atol=1e-6)


def test_no_transform_refused() -> None:
    with pytest.raises(InputError, match="at least one transform"):
        averaged_log_softmax(torch.nn.Identity(), torch.zeros(1, 2, 4, 4), ())
