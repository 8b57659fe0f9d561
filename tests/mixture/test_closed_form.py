"""The closed-form backward of the diagonal losses against autograd through the formulas."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepgmm.errors import InputError
from deepgmm.mixture import gmm_nll, mu_penalty, svgmm_nll
from deepgmm.mixture.closed_form import diag_mixture_nll
from deepgmm.mixture.likelihood import gather_roi, pack_roi


def _data(seed: int, b: int, k: int, m: int, h: int = 6, w: int = 7):
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(b, m, h, w, generator=gen, dtype=torch.float64)
    logits = 3.0 * torch.randn(b, k, h, w, generator=gen, dtype=torch.float64)
    roi = torch.rand(b, h, w, generator=gen) < 0.6
    roi[:, :2, :3] = True  # at least 6 pixels per slice
    weights = torch.randn(b, generator=gen, dtype=torch.float64)
    mu_ref = torch.randn(b, k, m, generator=gen, dtype=torch.float64)
    return image, logits, roi, weights, mu_ref


def _loss_and_grad(loss_fn, to_maps, logits, image, roi, weights, mu_ref, gradient):
    """A loss using every output (NLL, means, variances, weights) and its gradient."""
    leaf = logits.clone().requires_grad_(True)
    nll, params = loss_fn(to_maps(leaf), image, roi, gradient=gradient)
    loss = ((weights * nll).sum() + 0.7 * mu_penalty(params.means, mu_ref).sum()
            + 0.3 * params.covariances.square().sum() + 1.3 * params.weights.pow(3).sum())
    (grad,) = torch.autograd.grad(loss, leaf)
    return nll.detach(), params, grad


LOSSES = {
    "deepg": (gmm_nll, lambda z: torch.softmax(z, dim=1)),
    "deepsvg": (svgmm_nll, lambda z: torch.log_softmax(z, dim=1)),
}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 3), k=st.integers(1, 5),
       m=st.integers(1, 4), offset=st.floats(0.0, 60.0),
       model=st.sampled_from(sorted(LOSSES)))
def test_closed_form_matches_autograd(seed: int, b: int, k: int, m: int, offset: float,
                                      model: str) -> None:
    image, logits, roi, weights, mu_ref = _data(seed, b, k, m)
    logits[:, -1] -= offset  # the last class nearly empty
    loss_fn, to_maps = LOSSES[model]
    ours = _loss_and_grad(loss_fn, to_maps, logits, image, roi, weights, mu_ref,
                          "closed_form")
    ref = _loss_and_grad(loss_fn, to_maps, logits, image, roi, weights, mu_ref, "autograd")
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-10, atol=1e-10)
    for name in ("weights", "means", "covariances"):
        torch.testing.assert_close(getattr(ours[1], name), getattr(ref[1], name),
                                   rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours[2], ref[2], rtol=1e-7, atol=1e-9)


def test_gradcheck_on_packed_pixels() -> None:
    """Finite differences, with the last pixel padding (its gradient must be 0)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 9, generator=gen, dtype=torch.float64)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, -1] = False
    x[1, :, -1] = 0.0
    n_roi = mask.sum(dim=1).to(torch.float64)
    logits = torch.randn(2, 3, 9, generator=gen, dtype=torch.float64)
    for spatially_variant in (False, True):
        maps = (torch.log_softmax(logits, 1) if spatially_variant
                else torch.softmax(logits, 1))
        maps = torch.where(mask[:, None], maps, torch.zeros((), dtype=maps.dtype))
        maps.requires_grad_(True)

        def fn(z, sv=spatially_variant):
            return diag_mixture_nll(z, x, mask, n_roi, var_floor=1e-3, spatially_variant=sv,
                                    mass_eps=1e-12)

        assert torch.autograd.gradcheck(fn, (maps,), eps=1e-6, atol=1e-6)
        (grad,) = torch.autograd.grad(fn(maps)[0].sum(), maps)
        assert torch.all(grad[1, :, -1] == 0.0)


def test_zero_probabilities_give_finite_gradients() -> None:
    """deepSVG with p = 0 (log p = -inf) for a class on some pixels, deepG with an empty
    class: finite loss, finite gradients, equal to autograd's."""
    image, logits, roi, weights, mu_ref = _data(11, 2, 4, 3)
    logits[:, 3, :3] = -torch.inf  # p = 0 there
    logits[:, 2] = -torch.inf  # class 2 empty everywhere
    for model, (loss_fn, to_maps) in LOSSES.items():
        ours = _loss_and_grad(loss_fn, to_maps, logits, image, roi, weights, mu_ref,
                              "closed_form")
        ref = _loss_and_grad(loss_fn, to_maps, logits, image, roi, weights, mu_ref,
                             "autograd")
        assert torch.isfinite(ours[0]).all(), model
        assert torch.isfinite(ours[2]).all(), model
        torch.testing.assert_close(ours[2], ref[2], rtol=1e-7, atol=1e-9)


def test_float32_agrees_with_float64() -> None:
    image, logits, roi, weights, mu_ref = _data(5, 3, 4, 3)
    loss_fn, to_maps = LOSSES["deepsvg"]
    ref = _loss_and_grad(loss_fn, to_maps, logits, image, roi, weights, mu_ref, "autograd")
    ours = _loss_and_grad(loss_fn, to_maps, logits.float(), image.float(), roi,
                          weights.float(), mu_ref.float(), "closed_form")
    torch.testing.assert_close(ours[0].double(), ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[2].double(), ref[2], rtol=1e-3, atol=1e-5)


def test_unknown_gradient_mode_is_an_input_error() -> None:
    image, logits, roi, _, _ = _data(0, 1, 2, 2)
    with pytest.raises(InputError, match="gradient"):
        gmm_nll(torch.softmax(logits, 1), image, roi, gradient="numeric")


def test_packing_round_trip_used_by_the_loss() -> None:
    """The loss sees exactly the ROI pixels: NLL on the packed tensors equals the
    public function's."""
    image, logits, roi, _, _ = _data(2, 2, 3, 2)
    index, mask = pack_roi(roi)
    x = gather_roi(image, index, mask)
    p = gather_roi(torch.softmax(logits, 1), index, mask)
    nll = diag_mixture_nll(p, x, mask, mask.sum(1).double(), var_floor=1e-3,
                           spatially_variant=False, mass_eps=1e-12)[0]
    torch.testing.assert_close(nll, gmm_nll(torch.softmax(logits, 1), image, roi,
                                            var_floor=1e-3)[0], rtol=1e-6, atol=1e-9)
