"""EM-GMM and EM-SVGMM: agreement with scikit-learn, monotonicity, batching, errors."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from deepgmm.errors import InputError
from deepgmm.mixture import GaussianMixtureEM, SpatiallyVariantEM, em_segment
from deepgmm.mixture.kmeans import batched_kmeans
from deepgmm.types import SegmentationResult, SliceBatch

K, M = 4, 3
CLASS_MEANS = torch.tensor([[-3.0, 0.0, 1.0], [0.0, 3.0, -1.0], [3.0, 0.0, 0.0],
                            [0.0, -3.0, 2.0]], dtype=torch.float64)


def _phantom(seed: int = 0, b: int = 3, h: int = 24, w: int = 24, noise: float = 1.0,
             dtype: torch.dtype = torch.float64):
    """Quadrant phantom: class k fills one quadrant, ROI differs per slice."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    labels = ((yy >= h // 2).long() * 2 + (xx >= w // 2).long()).expand(b, h, w)
    image = CLASS_MEANS[labels].permute(0, 3, 1, 2) + noise * torch.randn(
        b, M, h, w, generator=gen, dtype=torch.float64)
    roi = torch.ones(b, h, w, dtype=torch.bool)
    roi[:, :, :2] = False
    for i in range(b):
        roi[i, : 1 + i] = False  # different pixel counts per slice
    return image.to(dtype), roi, labels


def _sklearn_for_slice(image, roi, b, covariance, means, weights, covs, tol, max_iter):
    x = image[b][:, roi[b]].T.numpy()
    if covariance == "diag":
        precisions = 1.0 / covs.numpy()
    else:
        precisions = np.linalg.inv(covs.numpy())
    gm = GaussianMixture(K, covariance_type=covariance, means_init=means.numpy(),
                         weights_init=weights.numpy(), precisions_init=precisions,
                         reg_covar=1e-6, tol=tol, max_iter=max_iter)
    return gm.fit(x), x


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_gmm_matches_sklearn_from_the_same_start(covariance: str) -> None:
    image, roi, _ = _phantom(noise=1.5)
    means = CLASS_MEANS.roll(1, dims=1) * 0.5  # a poor start: EM has work to do
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    covs = torch.ones(K, M, dtype=torch.float64) * 2.0
    if covariance == "full":
        covs = torch.diag_embed(covs) + 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = GaussianMixtureEM(n_components=K, covariance=covariance, init="mu_data",
                                mu_data=means, weights_init=weights, covariances_init=covs,
                                var_floor=1e-6, tol=1e-6, max_iter=150).fit(image, roi)
    assert est.converged_.any()
    score = est.score(image, roi)
    for b in range(image.shape[0]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm, x = _sklearn_for_slice(image, roi, b, covariance, means, weights, covs,
                                       1e-6, 150)
        assert int(est.n_iter_[b]) == gm.n_iter_
        assert bool(est.converged_[b]) == gm.converged_
        assert float(est.lower_bound_[b]) == pytest.approx(gm.lower_bound_, abs=1e-9)
        assert float(score[b]) == pytest.approx(gm.score(x), abs=1e-9)
        np.testing.assert_allclose(est.means_[b].numpy(), gm.means_, atol=1e-7)
        np.testing.assert_allclose(est.weights_[b].numpy(), gm.weights_, atol=1e-8)
        np.testing.assert_allclose(est.covariances_[b].numpy(), gm.covariances_, atol=1e-7)
        labels = est.predict(image, roi)[b][roi[b]].numpy()
        np.testing.assert_array_equal(labels, gm.predict(x))


def test_batch_fit_equals_per_slice_fits() -> None:
    """Converged slices freeze: fitting together gives each slice's own result."""
    image, roi, _ = _phantom(seed=1, noise=1.5)
    kwargs = dict(init="mu_data", mu_data=CLASS_MEANS * 0.3,
                  weights_init=torch.full((K,), 0.25), covariances_init=torch.ones(K, M),
                  tol=1e-5)
    batch = GaussianMixtureEM(**kwargs).fit(image, roi)
    assert len(set(batch.n_iter_.tolist())) > 1  # slices stopped at different iterations
    for b in range(image.shape[0]):
        one = GaussianMixtureEM(**kwargs).fit(image[b:b + 1], roi[b:b + 1])
        assert int(one.n_iter_[0]) == int(batch.n_iter_[b])
        torch.testing.assert_close(one.means_[0], batch.means_[b], rtol=0, atol=1e-12)
        torch.testing.assert_close(one.lower_bounds_[0], batch.lower_bounds_[b])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(("init", "covariance"),
                         list(itertools.product(["random", "kmeans"], ["diag", "full"])))
def test_em_never_increases_the_nll(init: str, covariance: str) -> None:
    image, roi, _ = _phantom(seed=2, noise=2.0)
    gmm = GaussianMixtureEM(init=init, covariance=covariance, tol=1e-7,
                            max_iter=60).fit(image, roi)
    sv = SpatiallyVariantEM(init=init, covariance=covariance, tol=1e-7,
                            max_iter=40).fit(image, roi)
    for est in (gmm, sv):
        for hist in est.lower_bounds_:
            assert hist.numel() >= 3
            assert torch.isfinite(hist).all()
            # lower_bounds_ = -NLL (GMM) or -NLL_V (SVGMM): never decreases.
            assert (hist[1:] - hist[:-1]).min() >= -1e-12
    # The spatially variant model explains the data at least as well as the GMM it starts
    # from (its per-pixel weights include the GMM's weights as a special case).
    assert (sv.score(image, roi) >= gmm.score(image, roi) - 1e-9).all()


@pytest.mark.parametrize("model", ["gmm", "svgmm"])
@pytest.mark.parametrize("init", ["random", "kmeans"])
def test_phantom_labels_recovered_up_to_permutation(model: str, init: str) -> None:
    image, roi, labels = _phantom(seed=3, noise=0.6, dtype=torch.float32)
    cls = GaussianMixtureEM if model == "gmm" else SpatiallyVariantEM
    pred = cls(init=init).fit(image, roi).predict(image, roi)
    assert pred.shape == labels.shape and pred.dtype == torch.int64
    for b in range(image.shape[0]):
        p, t = pred[b][roi[b]], labels[b][roi[b]]
        best = max((p == torch.tensor(perm)[t]).float().mean().item()
                   for perm in itertools.permutations(range(K)))
        assert best > 0.98


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_reproducible_from_seed() -> None:
    image, roi, _ = _phantom(seed=4, noise=2.0, dtype=torch.float32)
    for init in ("random", "kmeans"):
        a = GaussianMixtureEM(init=init, seed=7, max_iter=5).fit(image, roi)
        b = GaussianMixtureEM(init=init, seed=7, max_iter=5).fit(image, roi)
        c = GaussianMixtureEM(init=init, seed=8, max_iter=5).fit(image, roi)
        assert torch.equal(a.means_, b.means_)
        assert not torch.equal(a.means_, c.means_)


def test_convergence_warning_and_flags() -> None:
    image, roi, _ = _phantom(seed=5, noise=2.0)
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 iterations"):
        est = GaussianMixtureEM(max_iter=2).fit(image, roi)
    assert not est.converged_.any() and (est.n_iter_ == 2).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = GaussianMixtureEM(init="kmeans", tol=1e-3).fit(image, roi)
    assert est.converged_.all()


def test_fitted_shapes_and_probabilities() -> None:
    image, roi, _ = _phantom(seed=6, dtype=torch.float32)
    b, _, h, w = image.shape
    for cov, cov_shape in (("diag", (b, K, M)), ("full", (b, K, M, M))):
        sv = SpatiallyVariantEM(covariance=cov).fit(image, roi)
        assert sv.means_.shape == (b, K, M) and sv.covariances_.shape == cov_shape
        assert sv.weights_.shape == (b, K) and sv.pixel_weights_.shape == (b, K, h, w)
        assert sv.n_iter_.shape == sv.converged_.shape == sv.lower_bound_.shape == (b,)
        torch.testing.assert_close(sv.pixel_weights_.sum(dim=1), torch.ones(b, h, w))
        proba = sv.predict_proba(image, roi)
        assert proba.shape == (b, K, h, w)
        torch.testing.assert_close(proba.sum(dim=1), torch.ones(b, h, w))
        assert torch.isfinite(sv.score(image, roi)).all()


@pytest.mark.parametrize("model", ["em-gmm", "em-svgmm"])
def test_em_segment_result(model: str) -> None:
    image, roi, _ = _phantom(seed=7, dtype=torch.float32)
    b = image.shape[0]
    batch = SliceBatch(image=image, roi=roi, labels=None, case_ids=["p"] * b,
                       slice_indices=list(range(b)), crop_origins=np.zeros((b, 2), int),
                       full_shapes=np.full((b, 2), 24), sequences=("C0", "DE", "T2"))
    res = em_segment(batch, model=model, init="kmeans")
    assert isinstance(res, SegmentationResult)
    assert res.method == model
    assert res.responsibilities.shape == (b, K, 24, 24)
    assert res.responsibilities.dtype == torch.float32
    assert res.nll.shape == res.n_iter.shape == res.seconds.shape == (b,)
    assert res.means.shape == (b, K, M)
    cls = GaussianMixtureEM if model == "em-gmm" else SpatiallyVariantEM
    ref = cls(init="kmeans").fit(image, roi)
    torch.testing.assert_close(res.nll, -ref.score(image, roi))
    with pytest.raises(InputError, match="model must be one of em-gmm, em-svgmm; got 'gmm'"):
        em_segment(batch, model="gmm")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown or inapplicable option 'n_clusters'"):
        em_segment(batch, model=model, n_clusters=3)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_bad_inputs_raise_input_error() -> None:
    image, roi, _ = _phantom(seed=8, b=2, dtype=torch.float32)
    with pytest.raises(InputError, match="'init' parameter of GaussianMixtureEM must be"):
        GaussianMixtureEM(init="kmeans++").fit(image, roi)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="needs mu_data"):
        GaussianMixtureEM(init="mu_data").fit(image, roi)
    with pytest.raises(InputError, match=r"mu_data must have shape \(4, 3\)"):
        GaussianMixtureEM(init="mu_data", mu_data=torch.zeros(3, 3)).fit(image, roi)
    with pytest.raises(InputError, match="'covariance' parameter of SpatiallyVariantEM"):
        SpatiallyVariantEM(covariance="tied").fit(image, roi)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="max_iter"):
        GaussianMixtureEM(max_iter=0).fit(image, roi)
    tiny = torch.zeros_like(roi)
    tiny[1, 5, 5:8] = True
    tiny[0] = True
    with pytest.raises(InputError, match="slice 1: the ROI has 3 pixels, needs at least 4"):
        GaussianMixtureEM().fit(image, tiny)
    nan = image.clone()
    nan[0, 1, 10, 10] = float("nan")
    with pytest.raises(InputError, match="slice 0, sequence 1: image has NaN"):
        SpatiallyVariantEM().fit(nan, roi)
    const = image.clone()
    const[1, 2] = 0.0
    with pytest.raises(InputError, match="slice 1, sequence 2: image is constant"):
        GaussianMixtureEM().fit(const, roi)
    with pytest.raises(InputError, match="not fitted"):
        GaussianMixtureEM().predict(image, roi)
    est = SpatiallyVariantEM(max_iter=3).fit(image, roi)
    with pytest.raises(InputError, match="as fitted"):
        est.predict(image[:, :, :20, :20], roi[:, :20, :20])
    with pytest.raises(InputError, match="roi must be"):
        est.predict(image, roi[0])


def test_nan_outside_the_roi_is_ignored() -> None:
    image, roi, _ = _phantom(seed=9, b=2)
    dirty = torch.where(roi.unsqueeze(1), image, torch.tensor(float("nan"), dtype=image.dtype))
    a = GaussianMixtureEM(init="kmeans").fit(image, roi)
    b = GaussianMixtureEM(init="kmeans").fit(dirty, roi)
    torch.testing.assert_close(a.means_, b.means_)
    torch.testing.assert_close(a.score(image, roi), b.score(dirty, roi))


def test_batched_kmeans_finds_blobs_and_ignores_masked_points() -> None:
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(60) % 3
    x = centers[truth] + 0.3 * torch.randn(60, 2, generator=gen)
    x = torch.stack([x, x + 5.0])  # (2, 60, 2)
    mask = torch.ones(2, 60, dtype=torch.bool)
    mask[1, 50:] = False
    x[1, 50:] = 1e6  # masked outliers must not pull any center
    found, labels = batched_kmeans(x, mask, 3, generator=torch.Generator().manual_seed(1))
    for b, shift in ((0, 0.0), (1, 5.0)):
        dist = torch.cdist(found[b], centers + shift)
        assert dist.min(dim=1).values.max() < 0.5  # every center sits on a blob
        assert torch.equal(dist.argmin(dim=1).sort().values, torch.arange(3))
        valid = mask[b]
        mapping = dist.argmin(dim=1)
        assert torch.equal(mapping[labels[b][valid]], truth[valid])


def test_batched_kmeans_on_a_subsample_labels_every_point() -> None:
    gen = torch.Generator().manual_seed(2)
    centers = torch.tensor([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0]])
    truth = torch.arange(400) % 4
    x = (centers[truth] + 0.5 * torch.randn(400, 2, generator=gen))[None]  # (1, 400, 2)
    mask = torch.ones(1, 400, dtype=torch.bool)
    found, labels = batched_kmeans(x, mask, 4, max_points=40, n_init=3,
                                   generator=torch.Generator().manual_seed(3))
    dist = torch.cdist(found[0], centers)
    assert dist.min(dim=1).values.max() < 0.6
    assert torch.equal(dist.argmin(dim=1)[labels[0]], truth)


def test_mu_data_sets_the_initial_means_of_any_init() -> None:
    image, roi, _ = _phantom(seed=10, b=2, dtype=torch.float32)
    start = CLASS_MEANS.float()[[2, 0, 3, 1]]
    for init in ("random", "kmeans", "mu_data"):
        est = GaussianMixtureEM(init=init, mu_data=start, max_iter=1, tol=0.0)
        with pytest.warns(ConvergenceWarning):
            est.fit(image, roi)
        # One EM step from the true means keeps the class order given by mu_data: each
        # fitted mean is nearest to its own starting mean.
        nearest = torch.cdist(est.means_, start.expand(2, -1, -1)).argmin(dim=2)
        assert torch.equal(nearest, torch.arange(K).expand(2, K))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_collapsing_components_stay_finite(covariance: str) -> None:
    """Two tight clusters, four components: extra components collapse onto few pixels."""
    gen = torch.Generator().manual_seed(11)
    image = (torch.rand(2, M, 16, 16, generator=gen) > 0.5).float() * 4.0
    image = image + 1e-4 * torch.randn(2, M, 16, 16, generator=gen)
    roi = torch.ones(2, 16, 16, dtype=torch.bool)
    for cls in (GaussianMixtureEM, SpatiallyVariantEM):
        est = cls(covariance=covariance, init="kmeans", max_iter=30).fit(image, roi)
        assert torch.isfinite(est.means_).all() and torch.isfinite(est.covariances_).all()
        assert torch.isfinite(est.score(image, roi)).all()
        assert torch.isfinite(est.predict_proba(image, roi)).all()
