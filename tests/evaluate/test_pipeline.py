"""End to end through the data layer: load, crop, "segment" with the shuffled one-hot truth,
write the output folder, recompute from disk. Dice must be 1 and HD95 0 everywhere, and
the written matched label maps must equal the ground-truth files on the segmented slices
(the own maps hold the shuffled clusters)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from deepgmm.evaluate.recompute import evaluate_outputs
from deepgmm.report.outputs import write_segmentation
from deepgmm.types import CLASS_TO_MYOPS

CLASSES = ("blood", "myocardium", "edema", "scar")


def _round_trip(tmp_path, synth, root, volumes, batch):
    result, perm = synth.shuffled_onehot_result(batch.labels, seed=7)
    out = tmp_path / "out"
    summary = write_segmentation(out, volumes, batch, result, matching="hungarian",
                                 figures=False, progress=False)
    assert summary["dice"] == dict.fromkeys(CLASSES, 1.0)
    assert summary["hd95"] == dict.fromkeys(CLASSES, 0.0)
    ev = evaluate_outputs(out, root)
    assert ev["dice"] == dict.fromkeys(CLASSES, 1.0)
    assert ev["hd95"] == dict.fromkeys(CLASSES, 0.0)
    assert ev["n_slices"] == len(batch) and ev["matching"] == "hungarian"
    rematched = evaluate_outputs(out, root, matching="greedy", write=False)
    assert rematched["dice"] == dict.fromkeys(CLASSES, 1.0)
    own = evaluate_outputs(out, root, matching="none", write=False)
    expected = (perm == np.arange(4)).astype(float)  # (B, 4): Dice 1 where not shuffled
    present = np.stack([(batch.labels.numpy() == c + 1).any(axis=(1, 2)) for c in range(4)], 1)
    for c, name in enumerate(CLASSES):
        assert own["dice"][name] == pytest.approx(expected[present[:, c], c].mean())
    codes = np.asarray(CLASS_TO_MYOPS)
    by_id = {v.case_id: v for v in volumes}
    for cid in dict.fromkeys(batch.case_ids):
        v = by_id[cid]
        seg = np.asanyarray(nib.load(str(out / f"{cid}_seg_matched.nii.gz")).dataobj)
        zs = [z for c, z in zip(batch.case_ids, batch.slice_indices, strict=True) if c == cid]
        np.testing.assert_array_equal(seg[:, :, zs], codes[v.labels[:, :, zs]])
        np.testing.assert_allclose(nib.load(str(out / f"{cid}_seg.nii.gz")).affine, v.affine,
                                   atol=1e-4)


def test_phantom_round_trip(tmp_path, synth, phantom_root, phantom_volumes, phantom_batch):
    _round_trip(tmp_path, synth, phantom_root, phantom_volumes, phantom_batch)


@pytest.mark.myops
def test_myops_round_trip(tmp_path, synth, myops_root):
    from deepgmm.data.dataset import load_dataset
    from deepgmm.data.slices import make_batch

    volumes = load_dataset(myops_root, ["101", "109"])
    batch = make_batch(volumes, require_labels=True)
    _round_trip(tmp_path, synth, myops_root, volumes, batch)


def test_which_runs_have_class_identity():
    from deepgmm.pipeline import fixes_class_order

    mu = np.zeros((4, 3))
    assert fixes_class_order("em-gmm", mu, {}) and fixes_class_order("em-svgmm", mu, {})
    assert fixes_class_order("deepsvg", mu, {"lam": 0.5})
    assert not fixes_class_order("deepsvg", mu, {"lam": 0.0})  # μ_data unused without lam
    assert not fixes_class_order("deepg", mu, {})
    assert not fixes_class_order("em-gmm", None, {"lam": 1.0})
