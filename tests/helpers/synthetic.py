"""Tiny hand-made cases for the evaluation and report tests (independent of the data layer).

A case is a small ring phantom: blood disk, myocardial ring with an edema and a scar
sector, on a grid with a non-trivial affine.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from deepgmm.types import CLASS_TO_MYOPS, CaseVolume, SegmentationResult, SliceBatch

SEQUENCES = ("C0", "DE", "T2")
CLASS_MEANS = np.array([[0.0, 0.0, 0.0], [3.0, 1.0, 2.0], [1.0, 0.5, 1.0],
                        [1.2, 1.0, 3.0], [1.1, 4.0, 1.5]], dtype=np.float32)


def ring_labels(shape: tuple[int, int, int], centre: tuple[float, float],
                labelled: list[int]) -> np.ndarray:
    """``(X, Y, Z)`` class indices; slices in ``labelled`` hold a ring with all 4 classes."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    labels = np.zeros(shape, dtype=np.int64)
    for z in labelled:
        cx, cy = centre[0] + 0.3 * z, centre[1]
        r = np.hypot(x - cx, y - cy)
        ang = np.degrees(np.arctan2(y - cy, x - cx)) % 360
        sl = np.zeros(shape[:2], dtype=np.int64)
        sl[r <= 1.5] = 1
        ring = (r > 1.5) & (r <= 3.0)
        sl[ring] = 2
        sl[ring & (ang < 100)] = 4
        sl[ring & (ang >= 180) & (ang < 260)] = 3
        labels[:, :, z] = sl
    return labels


def make_volume(case_id: str, labels: np.ndarray, affine: np.ndarray,
                seed: int = 0) -> CaseVolume:
    """A CaseVolume whose sequences are class means plus noise."""
    rng = np.random.default_rng(seed)
    image = np.moveaxis(CLASS_MEANS[labels], -1, 0) + 0.1 * rng.standard_normal(
        (len(SEQUENCES), *labels.shape)).astype(np.float32)
    zooms = tuple(float(z) for z in np.linalg.norm(affine[:3, :3], axis=0))
    return CaseVolume(case_id=case_id, sequences=SEQUENCES, image=image.astype(np.float32),
                      roi=labels > 0, labels=labels, affine=affine, zooms=zooms,
                      source="")


def _crop(a: np.ndarray, origin: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """``(..., X, Y)`` -> ``(..., H, W)`` window at ``origin``, zero-padded outside."""
    pad = max(size) + max(abs(o) for o in origin)
    padded = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(pad, pad), (pad, pad)])
    x0, y0 = origin[0] + pad, origin[1] + pad
    return padded[..., x0:x0 + size[0], y0:y0 + size[1]]


def hand_batch(volumes: list[CaseVolume], slices: dict[str, list[int]],
               origins: dict[str, tuple[int, int]], size: tuple[int, int] = (8, 8),
               with_labels: bool = True) -> SliceBatch:
    """Crop the given slices by hand into a SliceBatch (no normalisation)."""
    imgs, rois, labs, ids, zs, orig, full, spacing = [], [], [], [], [], [], [], []
    for v in volumes:
        for z in slices.get(v.case_id, []):
            imgs.append(_crop(v.image[:, :, :, z], origins[v.case_id], size))
            rois.append(_crop(v.roi[:, :, z], origins[v.case_id], size))
            labs.append(_crop(v.labels[:, :, z], origins[v.case_id], size))
            ids.append(v.case_id)
            zs.append(z)
            orig.append(origins[v.case_id])
            full.append(v.shape[:2])
            spacing.append(v.zooms[:2])
    return SliceBatch(image=torch.as_tensor(np.stack(imgs)), roi=torch.as_tensor(np.stack(rois)),
                      labels=torch.as_tensor(np.stack(labs)) if with_labels else None,
                      case_ids=ids, slice_indices=zs, crop_origins=np.array(orig),
                      full_shapes=np.array(full), sequences=SEQUENCES,
                      spacing=np.array(spacing, dtype=np.float64))


def shuffled_onehot_result(labels: torch.Tensor, seed: int = 0,
                           method: str = "test") -> tuple[SegmentationResult, np.ndarray]:
    """Responsibilities that are the one-hot truth with cluster channels shuffled per slice.

    Returns the result and ``(B, 4)`` ``perm`` with ``perm[b, c]`` = the cluster holding
    class c + 1 on slice b (what matching must recover).
    """
    lab = labels.numpy()
    n_b = lab.shape[0]
    rng = np.random.default_rng(seed)
    onehot = (lab[:, None] == np.arange(1, 5)[None, :, None, None]).astype(np.float32)
    onehot = 0.9 * onehot + 0.025  # soft but with the same argmax
    perm = np.stack([rng.permutation(4) for _ in range(n_b)])
    resp = np.empty_like(onehot)
    resp[np.arange(n_b)[:, None], perm] = onehot
    result = SegmentationResult(
        responsibilities=torch.as_tensor(resp), nll=torch.linspace(1.0, 2.0, n_b),
        n_iter=torch.arange(n_b) + 10, seconds=torch.full((n_b,), 0.5),
        means=torch.zeros(n_b, 4, len(SEQUENCES)), method=method)
    return result, perm


def default_cases() -> list[CaseVolume]:
    """Two cases: 101 (12 x 10 x 3, slices 1 and 2 labelled, rotated affine) and 102
    (9 x 9 x 2, ROI near the corner so its crop is padded)."""
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    a1 = np.eye(4)
    a1[:3, :3] = rot @ np.diag([1.25, 0.8, 8.0])
    a1[:3, 3] = [10.0, -20.0, 5.0]
    a2 = np.diag([1.0, 1.0, 6.0, 1.0])
    a2[:3, 3] = [-3.0, 2.0, 1.0]
    v1 = make_volume("101", ring_labels((12, 10, 3), (5.5, 5.0), [0, 1, 2]), a1, seed=1)
    v2 = make_volume("102", ring_labels((9, 9, 2), (3.0, 3.0), [1]), a2, seed=2)
    return [v1, v2]


SLICES = {"101": [1, 2], "102": [1]}
ORIGINS = {"101": (2, 1), "102": (-1, -1)}


def write_myops(root: Path, volumes: list[CaseVolume], prefix: str = "myops_training",
                with_gd: bool = True) -> Path:
    """Write cases in the MyoPS layout (``train/`` images, ``gd/`` ground truth codes)."""
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "gd").mkdir(parents=True, exist_ok=True)
    for v in volumes:
        for m, name in enumerate(v.sequences):
            img = nib.Nifti1Image(v.image[m], v.affine)
            nib.save(img, str(root / "train" / f"{prefix}_{v.case_id}_{name}.nii.gz"))
        if with_gd:
            codes = np.asarray(CLASS_TO_MYOPS, dtype=np.int16)[v.labels]
            nib.save(nib.Nifti1Image(codes, v.affine),
                     str(root / "gd" / f"{prefix}_{v.case_id}_gd.nii.gz"))
    return root
