"""The losses on an image packed once (pack_image) equal the losses on the full maps."""

from __future__ import annotations

import pytest
import torch

from deepgmm.errors import InputError
from deepgmm.mixture import gmm_nll, gmm_nll_packed, pack_image, svgmm_nll, svgmm_nll_packed


def _inputs(seed: int = 0, b: int = 3, k: int = 4, m: int = 2, h: int = 12, w: int = 10):
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(b, m, h, w, generator=gen, dtype=torch.float64)
    logits = torch.randn(b, k, h, w, generator=gen, dtype=torch.float64)
    roi = torch.rand(b, h, w, generator=gen) < 0.5
    return image, logits, roi


@pytest.mark.parametrize("model", ["gmm", "svgmm"])
@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_packed_loss_and_gradient_equal_the_plain_loss(model: str, covariance: str) -> None:
    image, logits, roi = _inputs()
    packed = pack_image(image, roi, n_components=4)
    results = []
    for use_packed in (False, True):
        leaf = logits.clone().requires_grad_(True)
        if model == "gmm":
            maps = leaf.softmax(dim=1)
            nll, params = (gmm_nll_packed(maps, packed, covariance=covariance) if use_packed
                           else gmm_nll(maps, image, roi, covariance=covariance))
        else:
            maps = leaf.log_softmax(dim=1)
            nll, params = (svgmm_nll_packed(maps, packed, covariance=covariance)
                           if use_packed else svgmm_nll(maps, image, roi, covariance=covariance))
        (grad,) = torch.autograd.grad(nll.sum() + params.means.sum(), leaf)
        results.append((nll.detach(), params.means.detach(), grad))
    for plain, fast in zip(*results, strict=True):
        torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)


def test_packed_inputs_are_checked() -> None:
    image, logits, roi = _inputs()
    packed = pack_image(image, roi)
    resp = logits.softmax(dim=1)
    with pytest.raises(InputError, match="resp must be"):
        gmm_nll_packed(resp[:2], packed)
    bad = resp.clone()
    bad[1][:, roi[1]] = float("nan")
    with pytest.raises(InputError, match="slice 1: resp has NaN"):
        gmm_nll_packed(bad, packed)
    small = roi.clone()
    small[2] = False
    small[2, 0, :3] = True  # 3 ROI pixels for 4 classes
    with pytest.raises(InputError, match="slice 2: the ROI has 3 pixels, needs at least 4"):
        svgmm_nll_packed(logits.log_softmax(dim=1), pack_image(image, small))
    flat = image.clone()
    flat[0, 1] = 2.0
    with pytest.raises(InputError, match="slice 0, sequence 1: image is constant"):
        pack_image(flat, roi)
