"""Prediction from a checkpoint: same answers as the trained network, refinement, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepgmm.data.slices import make_batch
from deepgmm.errors import CheckpointError, InputError
from deepgmm.fit.loss import network_nll, nll_of_log_resp, pack_slices
from deepgmm.fit.predict import predict
from deepgmm.fit.train import TrainResult, train_network
from deepgmm.types import SliceBatch


@pytest.fixture(scope="module")
def batch(phantom_volumes) -> SliceBatch:  # noqa: ANN001
    """The 12 all-class phantom slices, 64 x 64 crops, with labels."""
    return make_batch(phantom_volumes, crop_size=(64, 64), require_labels=True)


@pytest.fixture(scope="module")
def trained(batch: SliceBatch, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, TrainResult]:
    run = tmp_path_factory.mktemp("predict") / "run"
    half = SliceBatch(**{**batch.__dict__, "image": batch.image[:6], "roi": batch.roi[:6],
                         "labels": batch.labels[:6], "case_ids": batch.case_ids[:6],
                         "slice_indices": batch.slice_indices[:6]})
    res = train_network(half, model="deepsvg", lam=1.0, epochs=1, min_epochs=1, seed=0,
                        depth=2, base_filters=4, device="cpu", progress=False, run_dir=run)
    return run, res


def test_checkpoint_gives_the_trained_networks_answers(batch: SliceBatch, trained) -> None:  # noqa: ANN001
    run, res = trained
    out = predict(run, batch, device="cpu", chunk_size=5)
    with torch.no_grad():
        nll, resp, means = network_nll(res.network.cpu().eval(), batch.image, batch.roi,
                                     "deepsvg")
    assert out.method == "deepsvg"
    assert out.responsibilities.shape == (12, 4, 64, 64)
    assert torch.allclose(out.responsibilities, resp, atol=1e-6)
    assert torch.allclose(out.nll, nll, atol=1e-5)
    assert torch.allclose(out.means, means, atol=1e-5)
    assert torch.equal(out.n_iter, torch.zeros(12, dtype=torch.int64))
    assert out.seconds.shape == (12,) and bool((out.seconds > 0).all())
    # Responsibilities are a distribution over K at every pixel.
    assert torch.allclose(out.responsibilities.sum(dim=1), torch.ones(12, 64, 64), atol=1e-5)
    # Chunking does not change the answer.
    whole = predict(run, batch, device="cpu", chunk_size=64)
    assert torch.allclose(whole.responsibilities, out.responsibilities, atol=1e-6)


def test_other_sequences_refused(batch: SliceBatch, trained) -> None:  # noqa: ANN001
    run, _ = trained
    swapped = SliceBatch(**{**batch.__dict__, "sequences": ("DE", "C0", "T2")})
    with pytest.raises(CheckpointError, match="trained on the sequences C0, DE, T2"):
        predict(run, swapped, device="cpu")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        predict(run.parent, batch, device="cpu")


def test_bad_options_refused(batch: SliceBatch, trained) -> None:  # noqa: ANN001
    run, _ = trained
    with pytest.raises(InputError, match="refine"):
        predict(run, batch, refine=-1, device="cpu")
    with pytest.raises(InputError, match="refine_lam"):
        predict(run, batch, refine=1, refine_lam=-1.0, device="cpu")
    with pytest.raises(InputError, match="chunk_size"):
        predict(run, batch, chunk_size=0, device="cpu")
    with pytest.raises(InputError, match="tta"):
        predict(run, batch, refine=1, tta=True, device="cpu")


def test_tta_averages_the_symmetric_copies(batch: SliceBatch, trained) -> None:  # noqa: ANN001
    run, res = trained
    out = predict(run, batch, tta=True, device="cpu", chunk_size=5)
    net = res.network.cpu().eval()
    with torch.no_grad():  # reference: the 8 turned / mirrored images, one at a time
        probs = torch.zeros(12, 4, 64, 64)
        for turns in range(4):
            for mirror in (False, True):
                x = torch.rot90(batch.image, turns, dims=(2, 3))
                x = x.flip(3) if mirror else x
                p = torch.softmax(net(x), dim=1)
                p = p.flip(3) if mirror else p
                probs += torch.rot90(p, -turns, dims=(2, 3)) / 8
        nll, mixture = nll_of_log_resp(probs.log(), pack_slices(batch.image, batch.roi),
                                       "deepsvg")
        means = mixture.means
    assert torch.allclose(out.responsibilities, probs, atol=1e-5)
    assert torch.allclose(out.nll, nll, atol=1e-4)
    assert torch.allclose(out.means, means, atol=1e-4)
    plain = predict(run, batch, device="cpu")
    assert (plain.responsibilities - out.responsibilities).abs().max() > 1e-3


def test_refine_starts_from_the_trained_weights(batch: SliceBatch, trained) -> None:  # noqa: ANN001
    pytest.importorskip("deepgmm.fit.single")
    run, _ = trained
    few = SliceBatch(image=batch.image[:2], roi=batch.roi[:2], labels=batch.labels[:2],
                     case_ids=batch.case_ids[:2], slice_indices=batch.slice_indices[:2],
                     crop_origins=batch.crop_origins[:2], full_shapes=batch.full_shapes[:2],
                     sequences=batch.sequences, spacing=batch.spacing[:2])
    plain = predict(run, few, device="cpu")
    # A negligible learning rate: the refined slices stay where the trained network was.
    still = predict(run, few, refine=1, refine_lr=1e-12, device="cpu")
    assert torch.equal(still.n_iter, torch.ones(2, dtype=still.n_iter.dtype))
    assert torch.allclose(still.responsibilities, plain.responsibilities, atol=1e-4)
    # Real refinement runs exactly N iterations per slice and moves the answer.
    moved = predict(run, few, refine=2, refine_lr=1e-3, device="cpu")
    assert torch.equal(moved.n_iter, torch.full((2,), 2, dtype=moved.n_iter.dtype))
    assert (moved.responsibilities - plain.responsibilities).abs().max() > 1e-3
    # Without the penalty the refinement follows the NLL alone: a different path.
    free = predict(run, few, refine=2, refine_lr=1e-3, refine_lam=0.0, device="cpu")
    assert (free.responsibilities - moved.responsibilities).abs().max() > 1e-4


def test_precision_defaults_to_the_trained_one(batch: SliceBatch, trained) -> None:  # noqa: ANN001
    run, _ = trained  # trained in fp32
    default = predict(run, batch, device="cpu")
    full = predict(run, batch, device="cpu", precision="fp32")
    half = predict(run, batch, device="cpu", precision="bf16")
    assert torch.equal(default.responsibilities, full.responsibilities)
    assert not torch.equal(half.responsibilities, full.responsibilities)
    assert half.responsibilities.dtype == torch.float32
    torch.testing.assert_close(half.responsibilities, full.responsibilities, atol=0.05, rtol=0)
    with pytest.raises(InputError, match=r"'precision' parameter of predict must be a str "
                       r"among \{'fp32', 'bf16'\} or None. Got 'half'"):
        predict(run, batch, device="cpu", precision="half")


def test_bf16_run_predicts_in_bf16_by_default(batch: SliceBatch, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_network(batch, model="deepg", lam=1.0, epochs=1, min_epochs=1, seed=0, depth=2,
                  base_filters=4, device="cpu", progress=False, run_dir=run, precision="bf16")
    default = predict(run, batch, device="cpu")
    half = predict(run, batch, device="cpu", precision="bf16")
    full = predict(run, batch, device="cpu", precision="fp32")
    assert torch.equal(default.responsibilities, half.responsibilities)
    assert not torch.equal(default.responsibilities, full.responsibilities)


def test_slices_prepared_otherwise_refused(trained: tuple[Path, TrainResult],
                                           batch: SliceBatch) -> None:
    run, _ = trained
    other = SliceBatch(**{**batch.__dict__, "normalisation": "roi"})
    with pytest.raises(InputError, match=r"was trained on slices prepared otherwise than "
                                         r"these: normalisation 'crop' vs 'roi'$"):
        predict(run, other, device="cpu")
    smaller = SliceBatch(**{**batch.__dict__, "image": batch.image[..., 16:48, 16:48],
                            "roi": batch.roi[..., 16:48, 16:48]})
    assert predict(run, smaller, device="cpu").responsibilities.shape[-2:] == (32, 32)
    with pytest.raises(InputError, match=r"μ_data of checkpoint .* was computed from slices "
                                         r"prepared otherwise than these: crop size \[64, 64\] "
                                         r"vs \[32, 32\]$"):
        predict(run, smaller, device="cpu", refine=1)


def test_fusion_uses_the_runs_labelled_class_gaussians(batch: SliceBatch, trained) -> None:  # noqa: ANN001
    import json

    from deepgmm.mixture.fusion import ClassGaussians, fit_class_gaussians, fuse_probabilities

    run, _ = trained
    stored = json.loads((run / "config.json").read_text())["class_gaussians"]
    half = SliceBatch(**{**batch.__dict__, "image": batch.image[:6], "roi": batch.roi[:6],
                         "labels": batch.labels[:6], "case_ids": batch.case_ids[:6],
                         "slice_indices": batch.slice_indices[:6]})
    expected = fit_class_gaussians(half, seed=42)  # μ_data's draw of the training slices
    np.testing.assert_allclose(stored["covariances"], expected.covariances, atol=1e-12)
    plain = predict(run, batch, device="cpu")
    fused = predict(run, batch, device="cpu", fusion="labelled")
    ref = fuse_probabilities(plain.responsibilities, batch.image, batch.roi,
                             ClassGaussians.from_dict(stored, 4, 3))
    torch.testing.assert_close(fused.responsibilities, ref)
    assert not torch.allclose(fused.responsibilities, plain.responsibilities, atol=1e-3)
    # outside the ROI and the mixture's NLL / means: the network's
    outside = ~batch.roi[:, None].expand_as(plain.responsibilities)
    assert torch.equal(fused.responsibilities[outside], plain.responsibilities[outside])
    assert torch.equal(fused.nll, plain.nll)
    with pytest.raises(InputError, match="fusion"):
        predict(run, batch, device="cpu", fusion="bayes")


def test_fusion_without_labelled_gaussians_warns_and_keeps_the_network(
        batch: SliceBatch, tmp_path: Path) -> None:
    unlabelled = SliceBatch(**{**batch.__dict__, "labels": None})
    mu = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 2.0, 0.0]])
    run = tmp_path / "run"
    train_network(unlabelled, model="deepg", lam=1.0, mu_data=mu, epochs=1, min_epochs=1,
                  seed=0, depth=2, base_filters=4, device="cpu", progress=False,
                  run_dir=run, augment=False)
    plain = predict(run, batch, device="cpu")
    with pytest.warns(UserWarning, match="stores no class Gaussians"):
        fused = predict(run, batch, device="cpu", fusion="labelled")
    assert torch.equal(fused.responsibilities, plain.responsibilities)


def test_fusion_is_refused_for_a_run_without_class_order(batch: SliceBatch,
                                                          tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_network(batch, model="deepg", lam=0.0, epochs=1, min_epochs=1, seed=0, depth=2,
                  base_filters=4, device="cpu", progress=False, run_dir=run, augment=False)
    import json

    assert json.loads((run / "config.json").read_text())["class_gaussians"] is not None
    plain = predict(run, batch, device="cpu")
    with pytest.warns(UserWarning, match="lam 0"):
        fused = predict(run, batch, device="cpu", fusion="labelled")
    assert torch.equal(fused.responsibilities, plain.responsibilities)
