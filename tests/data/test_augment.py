"""Augmentation: image, ROI and labels move together; noise touches the image only."""

from __future__ import annotations

import pytest
import torch

from deepgmm.data.augment import AugmentConfig, augment_batch, smooth_displacement
from deepgmm.errors import InputError

H = W = 32


def _coordinate_batch(b: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image channels = (x, y) pixel coordinates; labels = pixel index y * W + x."""
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                            torch.arange(W, dtype=torch.float32), indexing="ij")
    image = torch.stack([xs, ys])[None].repeat(b, 1, 1, 1)
    labels = (ys * W + xs).long()[None].repeat(b, 1, 1)
    roi = torch.ones(b, H, W, dtype=torch.bool)
    return image, roi, labels


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_all_flips_exact() -> None:
    image, roi, labels = _coordinate_batch()
    roi[:, :5, :3] = False  # an asymmetric ROI
    cfg = AugmentConfig(p_flip=1.0, p_elastic=0.0, p_noise=0.0)
    out_img, out_roi, out_lab = augment_batch(image, roi, labels, generator=_gen(), config=cfg)
    assert torch.equal(out_img, image.flip(-1).flip(-2))
    assert torch.equal(out_roi, roi.flip(-1).flip(-2))
    assert torch.equal(out_lab, labels.flip(-1).flip(-2))
    # the flipped ROI hole is now in the opposite corner
    assert not out_roi[:, -5:, -3:].any() and out_roi[:, :5, :3].all()


def test_random_flips_are_shared_by_image_roi_labels() -> None:
    image, roi, labels = _coordinate_batch(b=16)
    roi = labels % 7 == 0
    cfg = AugmentConfig(p_flip=0.5, p_elastic=0.0, p_noise=0.0)
    out_img, out_roi, out_lab = augment_batch(image, roi, labels, generator=_gen(3), config=cfg)
    seen = set()
    for i in range(16):
        matches = [(fh, fw) for fh in (False, True) for fw in (False, True)
                   if torch.equal(out_lab[i], _flip2(labels[i], fh, fw))]
        assert len(matches) == 1
        fh, fw = matches[0]
        seen.add((fh, fw))
        assert torch.equal(out_img[i], _flip2(image[i], fh, fw))
        assert torch.equal(out_roi[i], _flip2(roi[i], fh, fw))
    assert len(seen) > 1  # 16 slices with p = 0.5 per axis: not all the same flip


def _flip2(x: torch.Tensor, fh: bool, fw: bool) -> torch.Tensor:
    if fh:
        x = x.flip(-2)
    if fw:
        x = x.flip(-1)
    return x


def test_elastic_moves_image_and_labels_together() -> None:
    image, roi, labels = _coordinate_batch()
    cfg = AugmentConfig(p_flip=0.0, p_noise=0.0, alpha=(175.0, 175.0), sigma=(4.0, 6.0))
    out_img, out_roi, out_lab = augment_batch(image, roi, labels, generator=_gen(1),
                                              config=cfg)
    # The deformation is real: pixels move by more than a pixel somewhere.
    assert (out_img - image).abs().amax() > 2.0
    # Inside the crop, the image (bilinear) samples the same source point as the labels
    # (nearest): the coordinates it carries lie within half a pixel of the label's pixel.
    inside = out_roi
    assert inside.float().mean() > 0.5
    src_x = (out_lab % W).float()
    src_y = (out_lab // W).float()
    assert (out_img[:, 0] - src_x)[inside].abs().max() <= 0.5 + 1e-4
    assert (out_img[:, 1] - src_y)[inside].abs().max() <= 0.5 + 1e-4
    # Labels stay valid class values of the input (nearest, no blending).
    assert set(out_lab[inside].unique().tolist()) <= set(labels.unique().tolist())
    # Outside the ROI after warping, labels are background.
    assert (out_lab[~inside] == 0).all()


def test_zero_alpha_and_no_flip_or_noise_is_identity() -> None:
    image, roi, labels = _coordinate_batch()
    cfg = AugmentConfig(p_flip=0.0, p_noise=0.0, alpha=(0.0, 0.0))
    out_img, out_roi, out_lab = augment_batch(image, roi, labels, generator=_gen(), config=cfg)
    assert torch.equal(out_img, image)
    assert torch.equal(out_roi, roi) and torch.equal(out_lab, labels)


def test_noise_on_image_only() -> None:
    image = torch.zeros(8, 3, H, W)
    roi = torch.rand(8, H, W, generator=_gen(5)) > 0.5
    labels = roi.long() * 2
    cfg = AugmentConfig(p_flip=0.0, p_elastic=0.0, p_noise=1.0, noise_sigma=(0.1, 0.1))
    out_img, out_roi, out_lab = augment_batch(image, roi, labels, generator=_gen(), config=cfg)
    assert torch.equal(out_roi, roi) and torch.equal(out_lab, labels)
    assert out_img.std().item() == pytest.approx(0.1, rel=0.05)
    none = AugmentConfig(p_flip=0.0, p_elastic=0.0, p_noise=0.0)
    assert torch.equal(augment_batch(image, roi, labels, generator=_gen(), config=none)[0],
                       image)


def test_default_noise_probability_and_size() -> None:
    """Defaults: about 15 % of slices get noise, with sigma <= 0.1."""
    image = torch.zeros(400, 1, 16, 16)
    roi = torch.ones(400, 16, 16, dtype=torch.bool)
    cfg = AugmentConfig(p_flip=0.0, p_elastic=0.0)
    out_img, _, _ = augment_batch(image, roi, None, generator=_gen(2), config=cfg)
    sd = out_img.flatten(1).std(dim=1)
    noisy = sd > 0
    assert 0.09 < noisy.float().mean().item() < 0.21
    assert sd.max().item() < 0.1 * 1.3


def test_seeded_reproducible_and_labels_optional() -> None:
    image, roi, labels = _coordinate_batch()
    a = augment_batch(image, roi, labels, generator=_gen(7))
    b = augment_batch(image, roi, labels, generator=_gen(7))
    c = augment_batch(image, roi, labels, generator=_gen(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    out_img, out_roi, out_lab = augment_batch(image, roi, None, generator=_gen(7))
    assert out_lab is None
    assert torch.equal(out_img, a[0]) and torch.equal(out_roi, a[1])


def test_smooth_displacement_matches_scipy() -> None:
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    noise = torch.rand(2, 2, 40, 40, generator=_gen(4), dtype=torch.float64) * 2 - 1
    sigma = torch.tensor([3.0, 5.0], dtype=torch.float64)
    out = smooth_displacement(noise, sigma)
    for i in range(2):
        for c in range(2):
            # every kernel is truncated at ceil(4 * max sigma) = 20 pixels
            ref = scipy_ndimage.gaussian_filter(noise[i, c].numpy(), float(sigma[i]),
                                                mode="constant", cval=0.0, radius=20)
            assert torch.allclose(out[i, c], torch.from_numpy(ref), atol=1e-12)


@pytest.mark.parametrize("kwargs", [{"p_flip": 1.5}, {"p_noise": -0.1},
                                    {"alpha": (10.0, 5.0)}, {"sigma": (0.0, 1.0)}])
def test_bad_config_refused(kwargs: dict) -> None:
    with pytest.raises(InputError):
        AugmentConfig(**kwargs)


def test_bad_shapes_refused() -> None:
    image, roi, labels = _coordinate_batch()
    with pytest.raises(InputError, match="roi"):
        augment_batch(image, roi[:, :-1], labels, generator=_gen())
    with pytest.raises(InputError, match="labels"):
        augment_batch(image, roi, labels[:2], generator=_gen())
    with pytest.raises(InputError, match="image"):
        augment_batch(image[0], roi, labels, generator=_gen())
