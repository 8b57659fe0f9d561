"""Gaussian smoothing of per-pixel weights inside the ROI, and its use in EM-SVGMM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from deepgmm.errors import InputError
from deepgmm.mixture.em import SpatiallyVariantEM
from deepgmm.mixture.smoothing import gaussian_kernel1d, smooth_weights


def test_kernel_is_normalised_and_symmetric() -> None:
    k = gaussian_kernel1d(1.5, torch.float64)
    assert k.shape == (11,)
    assert float(k.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(k, k.flip(0))


def test_matches_normalised_convolution_reference() -> None:
    """Against scipy: blur(w * roi) / blur(roi), renormalised over classes."""
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(2, 3, 20, 24, generator=gen, dtype=torch.float64)
    roi = torch.rand(2, 20, 24, generator=gen) > 0.3
    got = smooth_weights(w, roi, 1.2)
    wn, rn = w.numpy(), roi.numpy().astype(np.float64)
    kw = {"sigma": (0, 1.2, 1.2), "mode": "constant", "truncate": 3.0}
    num = np.stack([ndimage.gaussian_filter(wn[:, k] * rn, **kw) for k in range(3)], 1)
    den = ndimage.gaussian_filter(rn, **kw)[:, None]
    ref = num / den
    ref = ref / ref.sum(1, keepdims=True) * rn[:, None]
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)


def test_constant_weights_stay_constant_up_to_the_roi_edge() -> None:
    w = torch.tensor([0.2, 0.3, 0.5]).view(1, 3, 1, 1).expand(1, 3, 16, 16).clone()
    roi = torch.zeros(1, 16, 16, dtype=torch.bool)
    roi[0, 4:12, 2:9] = True
    w[:, :, ~roi[0]] = 7.0  # values outside the ROI are ignored
    out = smooth_weights(w, roi, 2.0)
    torch.testing.assert_close(out[0, :, roi[0]], w[0, :, 8:9, 4].expand(3, int(roi.sum())))
    assert (out[:, :, ~roi[0]] == 0).all()
    assert smooth_weights(w, roi, 0.0) is w


def test_svgmm_smoothing_labels_noisy_regions_better() -> None:
    """Two halves under heavy noise: intensity alone mislabels many pixels; the smoothed
    weights (a spatial prior) let neighbours decide the ambiguous ones."""
    gen = torch.Generator().manual_seed(1)
    x = torch.zeros(1, 1, 32, 32)
    x[..., 16:] = 1.5
    x = x + 0.6 * torch.randn(x.shape, generator=gen)
    roi = torch.ones(1, 32, 32, dtype=torch.bool)
    truth = torch.zeros(32, 32, dtype=torch.long)
    truth[:, 16:] = 1

    def accuracy(smoothing: float) -> float:
        em = SpatiallyVariantEM(n_components=2, init="kmeans", smoothing=smoothing,
                                seed=0).fit(x, roi)
        labels = em.predict(x, roi)[0]
        return max(float((labels == truth).float().mean()),
                   float((labels == 1 - truth).float().mean()))

    plain, smoothed = accuracy(0.0), accuracy(1.5)
    assert plain < 0.95  # about one pixel in ten is on the wrong side of the threshold
    assert smoothed > plain + 0.03


def test_bad_smoothing_is_refused() -> None:
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    roi = torch.ones(1, 8, 8, dtype=torch.bool)
    for bad in (-1.0, float("inf"), "2"):
        est = SpatiallyVariantEM(n_components=2, smoothing=bad)  # stored as given
        assert est.smoothing == bad
        with pytest.raises(InputError, match="'smoothing' parameter of SpatiallyVariantEM"):
            est.fit(x, roi)
