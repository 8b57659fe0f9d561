"""μ_data: class-wise mean normalised intensities from the ground truth of a few slices.

The regulariser ``λ ||μ − μ_data||²`` of deepG / deepSVG pins each network channel to a class;
μ_data is ``(K, M)``: row k is class k + 1 (blood, myocardium, edema, scar), column m is
sequence m. It is stored as JSON with the class and sequence names.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepgmm._atomic import atomic_path
from deepgmm.errors import InputError
from deepgmm.types import CLASS_NAMES, SliceBatch

PathLike = str | os.PathLike[str]

log = logging.getLogger(__name__)

FORMAT = "deepgmm.mu_data/1"


def draw_slices(n_total: int, n_slices: int = 10, seed: int = 42) -> np.ndarray:
    """Indices of the slices whose ground truth defines μ_data: ``min(n_slices, n_total)``
    of ``0..n_total-1`` drawn without replacement with ``numpy.random.default_rng(seed)``,
    sorted."""
    n_draw = min(int(n_slices), int(n_total))
    return np.sort(np.random.default_rng(seed).choice(int(n_total), size=n_draw,
                                                      replace=False))


def compute_mu_data(batch: SliceBatch, n_slices: int = 10, seed: int = 42) -> np.ndarray:
    """Class-wise mean normalised intensity over ``n_slices`` random labelled slices.

    The slices are drawn without replacement with ``numpy.random.default_rng(seed)``; all
    slices are used when the batch has fewer (with a warning). The mean pools the pixels of
    all drawn slices (it is not a mean of per-slice means).

    Args:
        batch: normalised slices with labels: image ``(B, M, H, W)``, labels ``(B, H, W)``.
        n_slices: how many slices to draw.
        seed: seed of the draw.

    Returns:
        ``(K, M)`` float64 means, K = 4 (blood, myocardium, edema, scar).

    Raises:
        InputError: no labels, ``n_slices < 1``, or a class absent from every drawn slice.
    """
    if batch.labels is None:
        raise InputError("μ_data needs ground-truth labels, but the batch has none")
    if int(n_slices) < 1:
        raise InputError(f"--n-slices must be at least 1, got {n_slices}")
    n_total = len(batch)
    if n_slices > n_total:
        log.warning("μ_data: %d slices asked for, only %d available; using all of them",
                    n_slices, n_total)
    chosen = draw_slices(n_total, n_slices, seed)
    image = batch.image[chosen].double().numpy()  # (n, M, H, W)
    labels = batch.labels[chosen].numpy()  # (n, H, W)
    k = len(CLASS_NAMES)
    onehot = (labels[:, None] == np.arange(1, k + 1)[None, :, None, None])  # (n, K, H, W)
    counts = onehot.sum(axis=(0, 2, 3))  # (K,)
    if (counts == 0).any():
        missing = [CLASS_NAMES[i] for i in np.flatnonzero(counts == 0)]
        raise InputError(f"μ_data: class(es) {', '.join(missing)} absent from the "
                         f"{len(chosen)} drawn slice(s); draw more slices")
    sums = np.einsum("nkhw,nmhw->km", onehot.astype(np.float64), image)  # (K, M)
    return sums / counts[:, None]


def save_mu_data(mu: np.ndarray, sequences: Sequence[str], path: PathLike) -> Path:
    """Write μ_data ``(K, M)`` as JSON (atomically) with class and sequence names.

    Raises:
        InputError: wrong shape, non-finite values, or a name count that does not match.
    """
    mu = np.asarray(mu, dtype=np.float64)
    sequences = [str(s) for s in sequences]
    if mu.ndim != 2 or mu.shape != (len(CLASS_NAMES), len(sequences)):
        raise InputError(f"μ_data must have shape (K={len(CLASS_NAMES)}, M={len(sequences)}) "
                         f"for sequences {sequences}, got {mu.shape}")
    if not np.isfinite(mu).all():
        raise InputError("μ_data holds NaN or infinite values")
    doc = {"format": FORMAT, "classes": list(CLASS_NAMES), "sequences": sequences,
           "mu": mu.tolist()}
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load_mu_data(path: PathLike, sequences: Sequence[str] | None = None) -> np.ndarray:
    """Read μ_data written by :func:`save_mu_data`.

    Args:
        path: the JSON file.
        sequences: when given, the sequences the data will be used with; they must match
            the file's, in order.

    Returns:
        ``(K, M)`` float64.

    Raises:
        InputError: missing or malformed file, other class names, or other sequences.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise InputError(f"μ_data file {str(path)!r} does not exist") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"μ_data file {str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(doc, dict) or not {"classes", "sequences", "mu"} <= doc.keys():
        raise InputError(f"μ_data file {str(path)!r} must hold 'classes', 'sequences' and "
                         f"'mu' (written by 'deepgmm mu-data')")
    file_seqs = [str(s) for s in doc["sequences"]]
    if list(doc["classes"]) != list(CLASS_NAMES):
        raise InputError(f"μ_data file {str(path)!r} has classes {doc['classes']}, expected "
                         f"{list(CLASS_NAMES)}")
    if sequences is not None and [str(s) for s in sequences] != file_seqs:
        raise InputError(f"μ_data file {str(path)!r} is for sequences {file_seqs}, but the "
                         f"images have {list(sequences)}")
    try:
        mu = np.asarray(doc["mu"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"μ_data file {str(path)!r}: 'mu' is not a numeric matrix") from err
    if mu.shape != (len(CLASS_NAMES), len(file_seqs)) or not np.isfinite(mu).all():
        raise InputError(f"μ_data file {str(path)!r}: 'mu' must be a finite "
                         f"{len(CLASS_NAMES)} x {len(file_seqs)} matrix, got shape {mu.shape}")
    return mu
