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


STILL = {"p_elastic": 0.0, "p_rotate": 0.0, "p_scale": 0.0}


def test_every_slice_flipped_along_one_axis() -> None:
    image, roi, labels = _coordinate_batch(b=16)
    roi[:, :5, :3] = False  # an asymmetric ROI
    cfg = AugmentConfig(p_flip=1.0, p_noise=0.0, **STILL)
    out_img, out_roi, out_lab = augment_batch(image, roi, labels, generator=_gen(), config=cfg)
    seen = set()
    for i in range(16):
        matches = [(fh, fw) for fh, fw in ((True, False), (False, True))
                   if torch.equal(out_lab[i], _flip2(labels[i], fh, fw))]
        assert len(matches) == 1
        seen.add(matches[0])
        assert torch.equal(out_img[i], _flip2(image[i], *matches[0]))
        assert torch.equal(out_roi[i], _flip2(roi[i], *matches[0]))
    assert seen == {(True, False), (False, True)}  # both axes occur among 16 slices


def test_random_flips_are_shared_by_image_roi_labels() -> None:
    image, roi, labels = _coordinate_batch(b=16)
    roi = labels % 7 == 0
    cfg = AugmentConfig(p_noise=0.0, **STILL)  # published p_flip = 2/3
    out_img, out_roi, out_lab = augment_batch(image, roi, labels, generator=_gen(3), config=cfg)
    seen = set()
    for i in range(16):
        matches = [(fh, fw) for fh, fw in ((False, False), (True, False), (False, True))
                   if torch.equal(out_lab[i], _flip2(labels[i], fh, fw))]
        assert len(matches) == 1  # never both axes at once
        fh, fw = matches[0]
        seen.add((fh, fw))
        assert torch.equal(out_img[i], _flip2(image[i], fh, fw))
        assert torch.equal(out_roi[i], _flip2(roi[i], fh, fw))
    assert len(seen) > 1


def _flip2(x: torch.Tensor, fh: bool, fw: bool) -> torch.Tensor:
    if fh:
        x = x.flip(-2)
    if fw:
        x = x.flip(-1)
    return x


def test_elastic_moves_image_and_labels_together() -> None:
    image, roi, labels = _coordinate_batch()
    cfg = AugmentConfig(p_flip=0.0, p_noise=0.0, alpha=(175.0, 175.0), sigma=(4.0, 6.0),
                        p_elastic=1.0, p_rotate=0.0, p_scale=0.0)
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
    cfg = AugmentConfig(p_flip=0.0, p_noise=0.0, alpha=(0.0, 0.0), p_elastic=1.0,
                        p_rotate=0.0, p_scale=0.0)
    out_img, out_roi, out_lab = augment_batch(image, roi, labels, generator=_gen(), config=cfg)
    assert torch.equal(out_img, image)
    assert torch.equal(out_roi, roi) and torch.equal(out_lab, labels)


def test_noise_on_image_only() -> None:
    image = torch.zeros(8, 3, H, W)
    roi = torch.rand(8, H, W, generator=_gen(5)) > 0.5
    labels = roi.long() * 2
    cfg = AugmentConfig(p_flip=0.0, p_noise=1.0, noise_sigma=(0.1, 0.1), **STILL)
    out_img, out_roi, out_lab = augment_batch(image, roi, labels, generator=_gen(), config=cfg)
    assert torch.equal(out_roi, roi) and torch.equal(out_lab, labels)
    assert out_img.std().item() == pytest.approx(0.1, rel=0.05)
    none = AugmentConfig(p_flip=0.0, p_noise=0.0, **STILL)
    assert torch.equal(augment_batch(image, roi, labels, generator=_gen(), config=none)[0],
                       image)


def test_default_noise_probability_and_size() -> None:
    """Defaults: about 15 % of the sequences get noise, with sigma <= 0.1."""
    image = torch.zeros(200, 2, 16, 16)
    roi = torch.ones(200, 16, 16, dtype=torch.bool)
    cfg = AugmentConfig(p_flip=0.0, **STILL)
    out_img, _, _ = augment_batch(image, roi, None, generator=_gen(2), config=cfg)
    sd = out_img.flatten(2).std(dim=2)  # (slices, sequences)
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


def _source_radius(out_lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance from the crop centre of each output pixel and of the pixel it came from."""
    c = (H - 1) / 2.0
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                            torch.arange(W, dtype=torch.float32), indexing="ij")
    dst = torch.hypot(ys - c, xs - c).expand_as(out_lab)
    src = torch.hypot((out_lab // W).float() - c, (out_lab % W).float() - c)
    return dst, src


def test_rotation_keeps_distances_from_the_centre() -> None:
    image, roi, labels = _coordinate_batch(b=8)
    cfg = AugmentConfig(p_flip=0.0, p_noise=0.0, p_elastic=0.0, p_rotate=1.0, p_scale=0.0)
    out_img, out_roi, out_lab = augment_batch(image, roi, labels, generator=_gen(4),
                                              config=cfg)
    dst, src = _source_radius(out_lab)
    inside = out_roi & (dst < H / 2 - 1)  # the inscribed disc stays inside the crop
    assert (src - dst)[inside].abs().max() <= 0.75  # nearest-neighbour rounding only
    assert not torch.equal(out_lab, labels)  # it did rotate
    # the image (bilinear) carries the coordinates of the same source point
    assert (out_img[:, 0] - (out_lab % W).float())[inside].abs().max() <= 0.5 + 1e-4


def test_scaling_multiplies_distances_by_one_factor_per_slice() -> None:
    image, roi, labels = _coordinate_batch(b=64)
    cfg = AugmentConfig(p_flip=0.0, p_noise=0.0, p_elastic=0.0, p_rotate=0.0, p_scale=1.0)
    _, out_roi, out_lab = augment_batch(image, roi, labels, generator=_gen(6), config=cfg)
    dst, src = _source_radius(out_lab)
    factors = []
    for i in range(64):
        ring = out_roi[i] & (dst[i] > 4) & (dst[i] < 8)
        ratio = src[i][ring] / dst[i][ring]
        assert ratio.max() - ratio.min() < 0.3  # one factor per slice (up to rounding)
        factors.append(float(ratio.median()))
    factors_t = torch.tensor(factors)
    assert factors_t.min() > 0.7 - 0.1 and factors_t.max() < 1.4 + 0.1
    # the published draw: below and above 1 about equally often
    assert 0.25 < (factors_t < 1.0).float().mean().item() < 0.75


def test_default_probabilities_of_the_spatial_transforms() -> None:
    """Each spatial transform alone moves about 20 % of the slices (the published p)."""
    image, roi, labels = _coordinate_batch(b=300)
    for only in ("p_elastic", "p_rotate", "p_scale"):
        kwargs = {**STILL, "p_flip": 0.0, "p_noise": 0.0}
        kwargs.pop(only)
        cfg = AugmentConfig(**kwargs)
        _, _, out_lab = augment_batch(image, roi, labels, generator=_gen(9), config=cfg)
        moved = (out_lab != labels).flatten(1).any(dim=1).float().mean().item()
        assert 0.12 < moved < 0.28, (only, moved)


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


@pytest.mark.parametrize("kwargs", [{"p_flip": 1.5}, {"p_noise": -0.1}, {"p_rotate": 2.0},
                                    {"alpha": (10.0, 5.0)}, {"sigma": (0.0, 1.0)},
                                    {"scale": (0.0, 1.2)}, {"angle": (1.0, 0.5)}])
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
