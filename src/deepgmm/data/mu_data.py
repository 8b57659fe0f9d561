"""μ_data: class-wise mean normalised intensities from the ground truth of a few slices.

The regulariser ``λ ||μ − μ_data||²`` of deepG / deepSVG pins each network channel to a class;
μ_data is ``(K, M)``: row k is class k + 1 (blood, myocardium, edema, scar), column m is
sequence m. :func:`check_mu_data` is the one validator of a μ_data array's shape and values,
used by every method that takes one.

It is stored as JSON with the class and sequence names and how the slices it was computed
from were prepared: ``crop_size`` ``[H, W]`` and ``normalisation`` (``"crop"`` or ``"roi"``,
see :func:`deepgmm.data.slices.make_batch`); z-scored intensities depend on both, so
:func:`load_mu_data` given the slices it will be used with (``batch=``) refuses a file
prepared otherwise. Files written before these fields existed hold neither; they load, and
their preparation counts as unknown (nothing is checked).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepgmm._atomic import atomic_path
from deepgmm.errors import InputError
from deepgmm.params import check_seed
from deepgmm.types import CLASS_NAMES, SliceBatch

PathLike = str | os.PathLike[str]

log = logging.getLogger(__name__)

FORMAT = "deepgmm.mu_data/1"


def check_mu_data(mu: Any, k: int, m: int, *, n_slices: int | None = None,
                  name: str = "mu_data", dtype: torch.dtype = torch.float32,
                  device: str | torch.device | None = None) -> torch.Tensor:
    """``mu`` as a checked tensor of class means.

    Args:
        mu: ``(K, M)`` class means (array-like or tensor), or ``(B, K, M)`` per slice when
            ``n_slices`` is given.
        k: K, the number of classes.
        m: M, the number of sequences.
        n_slices: B, when one mean per slice is allowed; a ``(K, M)`` ``mu`` is then
            broadcast to ``(B, K, M)`` (a view).
        name: how to name ``mu`` in messages.
        dtype: dtype of the result (a plain rounding of the given values).
        device: where to put the result (default: the CPU, or the tensor's own device).

    Returns:
        ``(K, M)``, or ``(B, K, M)`` with ``n_slices``.

    Raises:
        InputError: not numbers, another shape, or NaN / infinite values.
    """
    try:
        t = (mu.detach() if isinstance(mu, torch.Tensor)
             else torch.as_tensor(np.asarray(mu, dtype=np.float64)))
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be a (K, M) array of numbers: {err}") from None
    shapes = [(k, m)] if n_slices is None else [(k, m), (n_slices, k, m)]
    if tuple(t.shape) not in shapes:
        raise InputError(f"{name} must have shape {' or '.join(map(str, shapes))} (K classes x "
                         f"M sequences), got {tuple(t.shape)}")
    t = t.to(dtype=dtype, device=device)
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{name} holds NaN or infinite values")
    if n_slices is not None and t.ndim == 2:
        t = t.expand(n_slices, k, m)
    return t


def draw_slices(n_total: int, n_slices: int = 10, seed: int = 42) -> np.ndarray:
    """Indices of the slices whose ground truth defines μ_data: ``min(n_slices, n_total)``
    of ``0..n_total-1`` drawn without replacement with ``numpy.random.default_rng(seed)``,
    sorted."""
    n_draw = min(int(n_slices), int(n_total))
    return np.sort(np.random.default_rng(seed).choice(int(n_total), size=n_draw,
                                                      replace=False))


def drawn_class_masks(batch: SliceBatch, n_slices: int = 10, seed: int = 42,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The slices of μ_data's draw (:func:`draw_slices`): their image ``(S, M, H, W)`` and
    the one-hot ``(S, K, H, W)`` of their labelled ROI pixels, both float64 (for the
    statistics beyond the means: :mod:`deepgmm.data.class_prior`,
    :mod:`deepgmm.mixture.fusion`). The batch must have labels."""
    chosen = draw_slices(len(batch), n_slices, seed)
    image = batch.image[chosen].double().numpy()
    labels = batch.labels[chosen].numpy()  # type: ignore[union-attr]
    roi = batch.roi[chosen].numpy().astype(bool)
    onehot = ((labels[:, None] == np.arange(1, len(CLASS_NAMES) + 1)[None, :, None, None])
              & roi[:, None]).astype(np.float64)
    return image, onehot


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
        raise InputError(f"n_slices must be at least 1, got {n_slices}", params=("n_slices",))
    check_seed(seed, caller="compute_mu_data")
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


def save_mu_data(mu: np.ndarray, sequences: Sequence[str], path: PathLike, *,
                 crop_size: Sequence[int] | None = None,
                 normalisation: str | None = None,
                 class_gaussians: Mapping[str, Any] | None = None) -> Path:
    """Write μ_data ``(K, M)`` as JSON (atomically) with class and sequence names.

    Args:
        mu: ``(K, M)`` class means.
        sequences: the M sequence names, in channel order.
        path: the JSON file.
        crop_size: ``(H, W)`` of the slices the means come from (``SliceBatch.crop_size``).
        normalisation: their normalisation (``SliceBatch.normalisation``).
        class_gaussians: the same slices' class Gaussians
            (:class:`deepgmm.mixture.fusion.ClassGaussians` ``to_dict``), kept for the
            fusion of ``em`` / ``fit`` / ``segment`` (``--fusion labelled``).

    Raises:
        InputError: wrong shape, non-finite values, or a name count that does not match.
    """
    sequences = [str(s) for s in sequences]
    mu = check_mu_data(mu, len(CLASS_NAMES), len(sequences), name="μ_data",
                       dtype=torch.float64).numpy()
    doc: dict[str, Any] = {"format": FORMAT, "classes": list(CLASS_NAMES),
                           "sequences": sequences, "mu": mu.tolist()}
    if crop_size is not None:
        doc["crop_size"] = [int(s) for s in crop_size]
    if normalisation is not None:
        doc["normalisation"] = str(normalisation)
    if class_gaussians is not None:
        doc["class_gaussians"] = dict(class_gaussians)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def check_prepared_like(crop_size: Sequence[int] | None, normalisation: str | None,
                        batch: SliceBatch, source: str) -> None:
    """Refuse slices prepared otherwise than the ones something was made from.

    Args:
        crop_size: the recorded ``(H, W)``, or None (unknown: not checked).
        normalisation: the recorded normalisation, or None (unknown: not checked).
        batch: the slices about to be used.
        source: the start of the message, naming what was made from which slices, e.g.
            ``"μ_data file 'mu.json' was computed from"``.

    Raises:
        InputError: one line naming both settings.
    """
    diffs = []
    if crop_size is not None and list(crop_size) != list(batch.crop_size):
        diffs.append(f"crop size {list(crop_size)} vs {list(batch.crop_size)}")
    if normalisation is not None and batch.normalisation is not None \
            and normalisation != batch.normalisation:
        diffs.append(f"normalisation {normalisation!r} vs {batch.normalisation!r}")
    if diffs:
        raise InputError(f"{source} slices prepared otherwise than these: "
                         + ", ".join(diffs))


def load_mu_data(path: PathLike, sequences: Sequence[str] | None = None, *,
                 batch: SliceBatch | None = None) -> np.ndarray:
    """Read μ_data written by :func:`save_mu_data`.

    Args:
        path: the JSON file.
        sequences: when given, the sequences the data will be used with; they must match
            the file's, in order.
        batch: when given, the slices the means will be used with: their sequences, crop
            size and normalisation must match the file's (settings a file does not record
            are not checked).

    Returns:
        ``(K, M)`` float64.

    Raises:
        InputError: missing or malformed file, other class names, other sequences, or
            slices prepared otherwise (crop size, normalisation).
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
    if sequences is None and batch is not None:
        sequences = batch.sequences
    if sequences is not None and [str(s) for s in sequences] != file_seqs:
        raise InputError(f"μ_data file {str(path)!r} is for sequences {file_seqs}, but the "
                         f"images have {list(sequences)}")
    crop_size = doc.get("crop_size")
    if crop_size is not None and not (isinstance(crop_size, list) and len(crop_size) == 2
                                      and all(isinstance(v, int) for v in crop_size)):
        raise InputError(f"μ_data file {str(path)!r}: 'crop_size' must be [H, W], got "
                         f"{crop_size!r}")
    if batch is not None:
        check_prepared_like(crop_size, doc.get("normalisation"), batch,
                            f"μ_data file {str(path)!r} was computed from")
    try:
        mu = np.asarray(doc["mu"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"μ_data file {str(path)!r}: 'mu' is not a numeric matrix") from err
    if mu.shape != (len(CLASS_NAMES), len(file_seqs)):
        raise InputError(f"μ_data file {str(path)!r}: 'mu' must be a finite "
                         f"{len(CLASS_NAMES)} x {len(file_seqs)} matrix, got shape {mu.shape}")
    bad = np.argwhere(~np.isfinite(mu))  # (n_bad, 2): class, sequence
    if bad.size:
        where = ", ".join(f"{CLASS_NAMES[k]} in {file_seqs[m]} ({mu[k, m]})"
                          for k, m in bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise InputError(f"μ_data file {str(path)!r}: 'mu' holds NaN or infinite values: "
                         f"{where}")
    return mu
