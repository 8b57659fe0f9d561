"""Join the per-case folders ``OUT/cases/<case>/`` into the run's usual outputs.

The arrays each case stored (``slices.safetensors``) are concatenated in case order into
one batch and one result, and :func:`deepgmm.report.outputs.write_segmentation` writes
``OUT`` from them exactly as a one-process run writes it from its batch: the same maps,
``results.csv``, ``cases.csv``, ``summary.json`` (plus ``failed_cases``) and ``report.html``.
Nothing is computed twice: the cases' per-slice Dice / HD95 / ASSD are joined, not
recomputed (every score is per slice), and each case's maps with their sidecars and its
``figures/`` PNGs are copied from its folder (the bytes a new write would give), so the
merge only matches, tabulates and renders the report. ``OUT/cases/`` is kept.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepgmm.cohort.case import SLICES_FILE, CaseJob, load_case_arrays
from deepgmm.errors import InputError
from deepgmm.types import CaseVolume, SegmentationResult, SliceBatch


def concat_batches(batches: Sequence[SliceBatch]) -> SliceBatch:
    """One :class:`SliceBatch` of several, in order (labels kept only when every batch has
    them, as :func:`deepgmm.data.slices.make_batch` does for its cases)."""
    first = batches[0]
    labels = None
    if all(b.labels is not None for b in batches):
        labels = torch.cat([b.labels for b in batches])  # type: ignore[misc]
    return SliceBatch(
        image=torch.cat([b.image for b in batches]), roi=torch.cat([b.roi for b in batches]),
        labels=labels, case_ids=[c for b in batches for c in b.case_ids],
        slice_indices=[z for b in batches for z in b.slice_indices],
        crop_origins=np.concatenate([b.crop_origins for b in batches]),
        full_shapes=np.concatenate([b.full_shapes for b in batches]),
        sequences=first.sequences, spacing=np.concatenate([b.spacing for b in batches]),
        normalisation=first.normalisation)


def concat_results(results: Sequence[SegmentationResult]) -> SegmentationResult:
    """One :class:`SegmentationResult` of several, in order."""
    return SegmentationResult(
        responsibilities=torch.cat([r.responsibilities for r in results]),
        nll=torch.cat([torch.as_tensor(r.nll) for r in results]),
        n_iter=torch.cat([torch.as_tensor(r.n_iter) for r in results]),
        seconds=torch.cat([torch.as_tensor(r.seconds) for r in results]),
        means=torch.cat([torch.as_tensor(r.means) for r in results]),
        method=results[0].method)


def _copy_figures(case_dirs: Sequence[Path]):  # noqa: ANN202 - a before_commit callback
    def copy(tmp: Path) -> None:
        for folder in case_dirs:
            figures = folder / "figures"
            if figures.is_dir():
                (tmp / "figures").mkdir(exist_ok=True)
                for png in sorted(figures.glob("*.png")):
                    shutil.copy2(png, tmp / "figures" / png.name)
    return copy


def merge_cases(out: Path, jobs: Sequence[CaseJob], *, matching: str, naming: str,
                roi_source: Mapping[str, Any], run_options: Mapping[str, Any],
                summary_extra: Mapping[str, Any] | None = None,
                progress: bool = True, anatomy: str = "lv-dice") -> dict[str, Any]:
    """Write ``out``'s merged outputs from the complete case folders of ``jobs``.

    Args:
        out: the run's output folder.
        jobs: the cases to merge, in output order (each folder must be complete).
        matching, naming, anatomy: as the cases were written.
        roi_source: the run's ROI record (``roi``, ``roi_path``, ``roi_skipped``).
        run_options: resolved options for ``run.json``.
        summary_extra: added to ``summary.json`` (``failed_cases``).

    Returns:
        The merged summary.
    """
    from deepgmm.report.naming import map_names
    from deepgmm.report.outputs import case_map_files, write_segmentation

    if not jobs:
        raise InputError("no case was segmented: nothing to merge")
    volumes: list[CaseVolume] = []
    batches: list[SliceBatch] = []
    results: list[SegmentationResult] = []
    identities: set[bool] = set()
    case_metrics: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
    for job in jobs:
        volume, batch, result, class_identity, metrics = load_case_arrays(
            job.case_dir / SLICES_FILE)
        volumes.append(volume)
        batches.append(batch)
        results.append(result)
        identities.add(class_identity)
        case_metrics.append(metrics)
    if len(identities) != 1:
        raise InputError(f"the cases below {str(out / 'cases')!r} disagree on the class "
                         "order (some fixed by mu_data, some not); rerun without --resume")
    batch = concat_batches(batches)
    joined = None
    if batch.labels is not None and all(m is not None for m in case_metrics):
        joined = tuple(np.concatenate([m[k] for m in case_metrics])  # type: ignore[index]
                       for k in range(3))
    names = map_names(naming)
    matched = matching != "none"
    maps_from = {job.case_id: job.case_dir for job in jobs
                 if all((job.case_dir / name).is_file()
                        for name in case_map_files(job.case_id, names, matched=matched))}
    return write_segmentation(out, volumes, batch, concat_results(results),
                              matching=matching, figures=False, progress=progress,
                              class_identity=identities.pop(), roi_source=roi_source,
                              naming=naming, run_options=run_options,
                              summary_extra=summary_extra, anatomy=anatomy,
                              before_commit=_copy_figures([j.case_dir for j in jobs]),
                              metrics=joined, maps_from=maps_from)  # type: ignore[arg-type]
