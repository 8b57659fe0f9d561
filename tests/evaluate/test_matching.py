"""Label matching: hand-computed cases where greedy and Hungarian differ, permutations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepgmm.errors import InputError
from deepgmm.evaluate.matching import (
    apply_permutation,
    cluster_maps,
    dice_matrix,
    match_clusters,
)


def _strip_case():
    """One 1 x 24 slice. Truth: blood 0..5, myocardium 6..13, edema 14..16, scar 17..19,
    background 20..23 (outside the ROI). Clusters: 2 = blood 0..4 + all myocardium,
    0 = blood pixel 5, 3 = edema, 1 = scar; outside the ROI the clusters say 3."""
    truth = np.array([1] * 6 + [2] * 8 + [3] * 3 + [4] * 3 + [0] * 4).reshape(1, 1, 24)
    clusters = np.array([2] * 5 + [0] + [2] * 8 + [3] * 3 + [1] * 3 + [3] * 4).reshape(1, 1, 24)
    roi = truth > 0
    return clusters, truth, roi


def _resp(clusters: np.ndarray, k: int = 4) -> np.ndarray:
    """Soft responsibilities ``(B, K, H, W)`` whose argmax is ``clusters``."""
    onehot = (clusters[:, None] == np.arange(k)[None, :, None, None]).astype(np.float32)
    return 0.7 * onehot + 0.1


def test_dice_matrix_hand_values():
    clusters, truth, roi = _strip_case()
    cl, k = cluster_maps(clusters + 1, roi)
    assert k == 4
    assert np.all(cl[~roi] == -1)
    d = dice_matrix(cl, truth, 4)
    assert d.shape == (1, 4, 4)
    assert d[0, 2, 0] == pytest.approx(2 * 5 / (13 + 6))   # big cluster vs blood
    assert d[0, 0, 0] == pytest.approx(2 * 1 / (1 + 6))    # one pixel vs blood
    assert d[0, 2, 1] == pytest.approx(2 * 8 / (13 + 8))   # big cluster vs myocardium
    assert d[0, 3, 2] == pytest.approx(1.0)                # outside-ROI pixels ignored
    assert d[0, 1, 3] == pytest.approx(1.0)
    assert d[0, 0, 1] == 0.0


def test_greedy_and_hungarian_differ_as_computed_by_hand():
    clusters, truth, roi = _strip_case()
    resp = _resp(clusters)
    # greedy: blood <- 2 (10/19 beats 2/7), myocardium <- first free cluster (all 0) = 0,
    # scar <- 1, edema <- 3; total Dice 10/19 + 0 + 1 + 1
    greedy = match_clusters(resp, truth, roi, "greedy")
    np.testing.assert_array_equal(greedy, [[2, 0, 3, 1]])
    # hungarian: blood <- 0, myocardium <- 2: total 2/7 + 16/21 + 2 is larger
    hung = match_clusters(resp, truth, roi, "hungarian")
    np.testing.assert_array_equal(hung, [[0, 2, 3, 1]])
    assert 2 / 7 + 16 / 21 > 10 / 19
    # label input (1..K in the ROI) gives the same answers
    np.testing.assert_array_equal(match_clusters(clusters + 1, truth, roi, "greedy"), greedy)
    np.testing.assert_array_equal(
        match_clusters(torch.as_tensor(clusters + 1), torch.as_tensor(truth),
                       torch.as_tensor(roi), "hungarian"), hung)


def test_matching_batch_recovers_shuffled_perfect_clusters():
    clusters, truth, roi = _strip_case()
    rng = np.random.default_rng(0)
    perms = [rng.permutation(4) for _ in range(3)]
    true_cls = np.where(roi, truth - 1, 0)
    # slice b: class c is held by cluster perms[b][c]
    shuffled = np.concatenate([np.asarray(p)[true_cls] for p in perms])
    truth3 = np.repeat(truth, 3, axis=0)
    roi3 = np.repeat(roi, 3, axis=0)
    stacked = np.stack(perms)
    for rule in ("hungarian", "greedy"):
        np.testing.assert_array_equal(
            match_clusters(_resp(shuffled), truth3, roi3, rule), stacked)
    # the hand case as slice 1 of a batch keeps its own answer
    mixed = np.concatenate([shuffled[:1], clusters, shuffled[2:]])
    np.testing.assert_array_equal(match_clusters(_resp(mixed), truth3, roi3, "greedy")[1],
                                  [2, 0, 3, 1])


def test_none_is_identity_and_needs_no_truth():
    clusters, _, roi = _strip_case()
    perm = match_clusters(_resp(np.repeat(clusters, 2, 0)), None, np.repeat(roi, 2, 0), "none")
    np.testing.assert_array_equal(perm, [[0, 1, 2, 3], [0, 1, 2, 3]])


def test_matching_errors():
    clusters, truth, roi = _strip_case()
    resp = _resp(clusters)
    with pytest.raises(InputError, match="needs ground-truth"):
        match_clusters(resp, None, roi, "hungarian")
    with pytest.raises(InputError, match="one of hungarian, greedy, none"):
        match_clusters(resp, truth, roi, "best")
    with pytest.raises(InputError, match="K = 4"):
        match_clusters(_resp(clusters, k=5), truth, roi, "hungarian")
    with pytest.raises(InputError, match="roi"):
        match_clusters(resp, truth, roi[:, :, :10], "hungarian")
    with pytest.raises(InputError, match=r"1\.\.4"):
        match_clusters(clusters, truth, roi, "hungarian")  # 0-based labels are refused


def test_apply_permutation_numpy_and_torch():
    resp = np.arange(2 * 4 * 1 * 2, dtype=np.float32).reshape(2, 4, 1, 2)
    perm = np.array([[2, 0, 3, 1], [0, 1, 2, 3]])
    out = apply_permutation(resp, perm)
    assert out.shape == resp.shape
    np.testing.assert_array_equal(out[0, 0], resp[0, 2])
    np.testing.assert_array_equal(out[0, 1], resp[0, 0])
    np.testing.assert_array_equal(out[0, 2], resp[0, 3])
    np.testing.assert_array_equal(out[0, 3], resp[0, 1])
    np.testing.assert_array_equal(out[1], resp[1])
    out_t = apply_permutation(torch.as_tensor(resp), torch.as_tensor(perm))
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_array_equal(out_t.numpy(), out)
    with pytest.raises(InputError, match="permutation"):
        apply_permutation(resp, np.array([[0, 0, 1, 2], [0, 1, 2, 3]]))
    with pytest.raises(InputError, match=r"\(B, K\)"):
        apply_permutation(resp, perm[:1])


def test_matched_labels_reach_the_hand_computed_dice():
    from deepgmm.evaluate.metrics import dice_per_class

    clusters, truth, roi = _strip_case()
    resp = _resp(clusters)
    for rule, expected in (("greedy", [10 / 19, 0.0, 1.0, 1.0]),
                           ("hungarian", [2 / 7, 16 / 21, 1.0, 1.0])):
        matched = apply_permutation(resp, match_clusters(resp, truth, roi, rule))
        labels = np.where(roi, matched.argmax(axis=1) + 1, 0)
        np.testing.assert_allclose(dice_per_class(labels, truth)[0], expected)
