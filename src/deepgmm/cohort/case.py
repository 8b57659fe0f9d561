"""The unit of work of a per-case run: one case, from its files to ``OUT/cases/<case>/``.

:func:`run_case` loads one case, cuts its slices, runs the method and writes the case's own
output folder (the layout of :mod:`deepgmm.report.outputs`, without ``report.html``: the
merged report shows the case, and ``deepgmm report OUT/cases/<case>`` renders one)
atomically, together with

- ``slices.safetensors``: the case's slices, the method's result and, with ground truth,
  the per-slice Dice / HD95 / ASSD (the arrays :mod:`deepgmm.cohort.merge` joins into the
  cohort's outputs, so merging never refits nor computes a surface distance again);
- ``manifest.json``: the options of the case and the SHA-256 of its input files, written
  last inside the temporary folder. A case is complete when its folder holds a manifest
  that equals the one the current options and inputs give (:func:`is_complete`), not
  merely when the folder exists.

A :class:`CaseJob` holds only plain values (paths, strings, option dicts), so it pickles
to another process or machine; :func:`run_case` is the function a Dask worker runs. A case
that fails on bad input (:class:`~deepgmm.errors.DeepGMMError`) returns a ``failed``
:class:`CaseOutcome` naming the error instead of raising, so the other cases go on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from deepgmm.errors import DeepGMMError, FitError
from deepgmm.report.outputs import CASES_DIR
from deepgmm.types import CaseVolume, SegmentationResult, SliceBatch

PathLike = str | os.PathLike[str]

MANIFEST_JSON = "manifest.json"
SLICES_FILE = "slices.safetensors"
MANIFEST_FORMAT = 1

Status = Literal["done", "failed", "skipped", "resumed"]


@dataclass(frozen=True)
class CaseJob:
    """Everything needed to segment one case, as plain picklable values.

    Attributes:
        case_id: the case, e.g. ``"101"``.
        out: the run's output folder ``OUT`` (the case goes to ``OUT/cases/<case_id>/``);
            on a cluster it must be on a file system every worker sees.
        source: how to load the case: ``{"kind": "dataset", "root", "roi", "roi_run",
            "sequences"}`` (a data folder, :func:`deepgmm.roi.source.load_with_roi`) or
            ``{"kind": "explicit", "images", "roi", "labels"}``
            (:func:`deepgmm.data.dataset.load_explicit`).
        selection, crop_size, normalisation: how slices are cut
            (:func:`deepgmm.pipeline.prepare_slices`).
        method: ``"em-gmm"``, ``"em-svgmm"``, ``"deepg"``, ``"deepsvg"`` or ``"predict"``
            (trained networks ``runs``).
        options: the method's options (:mod:`deepgmm.options` names, or
            :class:`~deepgmm.options.PredictOptions` names for ``predict``).
        mu_data: μ_data JSON file or ``None``.
        runs: trained run folders for ``predict``.
        class_identity: ``predict`` only: whether the network's classes are in order.
        matching, figures, naming, anatomy: as
            :func:`deepgmm.report.outputs.write_segmentation`.
        fusion: ``em`` / ``fit`` methods: fuse with the μ_data file's class Gaussians
            (:func:`deepgmm.pipeline.fuse_labelled`; ``predict`` has it in ``options``).
        record: the resolved options written to the case's ``run.json`` and compared by
            ``--resume`` (JSON values).
        threads: torch CPU threads while the case runs.
    """

    case_id: str
    out: str
    source: dict[str, Any]
    selection: str
    crop_size: int | tuple[int, int]
    normalisation: str
    method: str
    options: dict[str, Any]
    mu_data: str | None = None
    runs: tuple[str, ...] = ()
    class_identity: bool = False
    matching: str = "hungarian"
    figures: bool = True
    naming: str = "deepgmm"
    anatomy: str = "lv-dice"
    fusion: str = "none"
    record: dict[str, Any] = field(default_factory=dict)
    threads: int = 1

    @property
    def case_dir(self) -> Path:
        """``OUT/cases/<case_id>``."""
        return Path(self.out) / CASES_DIR / self.case_id


@dataclass(frozen=True)
class CaseOutcome:
    """What became of one case.

    Attributes:
        case_id: the case.
        status: ``"done"`` (segmented now), ``"resumed"`` (complete from an earlier run),
            ``"skipped"`` (its ROI was empty) or ``"failed"``.
        error: the message of a failed or skipped case.
        exit_code: 2 for bad input, 3 for a fit that failed (as the CLI's codes).
        seconds: wall time of the case.
    """

    case_id: str
    status: Status
    error: str | None = None
    exit_code: int = 0
    seconds: float = 0.0


def json_value(value: Any) -> Any:
    """``value`` as JSON holds it (paths as strings, tuples as lists, devices as text)."""
    return json.loads(json.dumps(value, default=str))


def case_inputs(job: CaseJob) -> dict[str, str]:
    """Path -> SHA-256 of every file the case reads: its images, labels and ROI mask, the
    μ_data file, the ROI run's and trained runs' model and config."""
    from deepgmm.report.provenance import input_files
    from deepgmm.roi.predict import roi_file_name

    src = job.source
    named: dict[str, Any] = {"mu_data": job.mu_data, "runs": list(job.runs)}
    if src["kind"] == "dataset":
        named.update(root=src["root"], roi_run=src.get("roi_run"))
        roi = str(src.get("roi", "gt"))
        if roi not in ("gt", "auto"):
            named["roi_mask"] = str(Path(roi) / roi_file_name(job.case_id))
    else:
        named.update(images=list(src["images"].values()), roi=src["roi"],
                     labels=src.get("labels"))
    files = input_files(named, [job.case_id])
    return {path: files[path] for path in sorted(files)}


def manifest(job: CaseJob) -> dict[str, Any]:
    """The manifest the case's folder must hold to count as complete."""
    return {"format": MANIFEST_FORMAT, "case": job.case_id,
            "options": json_value(job.record), "inputs": case_inputs(job)}


def is_complete(job: CaseJob) -> bool:
    """Whether ``OUT/cases/<case>/`` holds this case's outputs for the same options and
    the same input files (by SHA-256)."""
    folder = job.case_dir
    path = folder / MANIFEST_JSON
    if not path.is_file() or not (folder / SLICES_FILE).is_file():
        return False
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stored == manifest(job)


# ----------------------------------------------------------------- the arrays of a case
METRICS = ("dice", "hd95", "assd")
"""The per-slice scores a case stores, ``(B, C)`` each, so that the merge need not
compute them again."""


def save_case_arrays(path: Path, volume: CaseVolume, batch: SliceBatch,
                     result: SegmentationResult, class_identity: bool,
                     metrics: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                     ) -> None:
    """Write the case's slices ``(B, ...)``, result, grid and, with ground truth, its
    ``metrics`` (dice, hd95, assd, ``(B, C)`` float64) to one safetensors file."""
    from safetensors.torch import save_file

    tensors = {
        "image": batch.image.detach().cpu().contiguous(),
        "roi": batch.roi.detach().cpu().to(torch.uint8).contiguous(),
        "slice_indices": torch.as_tensor(batch.slice_indices, dtype=torch.int64),
        "crop_origins": torch.from_numpy(np.ascontiguousarray(batch.crop_origins)),
        "full_shapes": torch.from_numpy(np.ascontiguousarray(batch.full_shapes)),
        "spacing": torch.from_numpy(np.ascontiguousarray(batch.spacing)),
        "responsibilities": result.responsibilities.detach().cpu().contiguous(),
        "nll": torch.as_tensor(result.nll).detach().cpu().contiguous(),
        "n_iter": torch.as_tensor(result.n_iter).detach().cpu().contiguous(),
        "seconds": torch.as_tensor(result.seconds).detach().cpu().contiguous(),
        "means": torch.as_tensor(result.means).detach().cpu().contiguous(),
        "affine": torch.from_numpy(np.asarray(volume.affine, dtype=np.float64).copy()),
        "grid": torch.as_tensor(volume.shape, dtype=torch.int64),
        "zooms": torch.as_tensor(volume.zooms, dtype=torch.float64),
    }
    if batch.labels is not None:
        tensors["labels"] = batch.labels.detach().cpu().contiguous()
    if metrics is not None:
        tensors.update({name: torch.from_numpy(np.array(m, dtype=np.float64))
                        for name, m in zip(METRICS, metrics, strict=True)})
    metadata = {"case_id": volume.case_id, "sequences": json.dumps(list(batch.sequences)),
                "method": result.method, "normalisation": str(batch.normalisation),
                "source": volume.source, "class_identity": json.dumps(class_identity)}
    save_file(tensors, str(path), metadata=metadata)


CaseArrays = tuple[CaseVolume, SliceBatch, SegmentationResult, bool,
                   tuple[np.ndarray, np.ndarray, np.ndarray] | None]


def load_case_arrays(path: Path) -> CaseArrays:
    """Read :func:`save_case_arrays`' file: the case's grid (a :class:`CaseVolume` whose
    ``image`` is a zero-memory placeholder of the right shape and whose ``roi`` is empty;
    the merge needs only the grid), its slices, its result, its class identity and its
    metrics (``None`` without ground truth or in a file written without them)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        t = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
    sequences = tuple(json.loads(meta["sequences"]))
    grid = tuple(int(s) for s in t["grid"])
    volume = CaseVolume(
        case_id=meta["case_id"], sequences=sequences,
        image=np.broadcast_to(np.float32(0), (len(sequences), *grid)),
        roi=np.zeros(grid, dtype=bool), labels=None, affine=t["affine"].numpy(),
        zooms=tuple(float(z) for z in t["zooms"]), source=meta["source"])  # type: ignore[arg-type]
    n = int(t["image"].shape[0])
    batch = SliceBatch(
        image=t["image"], roi=t["roi"].bool(), labels=t.get("labels"),
        case_ids=[volume.case_id] * n, slice_indices=[int(z) for z in t["slice_indices"]],
        crop_origins=t["crop_origins"].numpy(), full_shapes=t["full_shapes"].numpy(),
        sequences=sequences, spacing=t["spacing"].numpy(),
        normalisation=None if meta["normalisation"] == "None" else meta["normalisation"])
    result = SegmentationResult(responsibilities=t["responsibilities"], nll=t["nll"],
                                n_iter=t["n_iter"], seconds=t["seconds"], means=t["means"],
                                method=meta["method"])
    metrics = (tuple(t[name].numpy() for name in METRICS)
               if all(name in t for name in METRICS) else None)
    return volume, batch, result, bool(json.loads(meta["class_identity"])), metrics  # type: ignore[return-value]


# ------------------------------------------------------------------------ the unit of work
def _load(job: CaseJob) -> tuple[CaseVolume | None, dict[str, Any]]:
    """The case's volume and the ROI source record; ``None`` when its ROI is empty."""
    src = job.source
    if src["kind"] == "explicit":
        from deepgmm.data.dataset import load_explicit

        volume = load_explicit(dict(src["images"]), src["roi"], src.get("labels"),
                               case_id=job.case_id)
        return volume, {"roi": "file", "roi_path": str(src["roi"]), "roi_skipped": []}
    import warnings

    from deepgmm.errors import InputError
    from deepgmm.roi.source import load_with_roi, parse_roi_option

    source = parse_roi_option(src.get("roi", "gt"), src.get("roi_run"))
    sequences = src.get("sequences")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skipped case is reported by its outcome
            volumes = load_with_roi(src["root"], source, [job.case_id],
                                    sequences=tuple(sequences) if sequences else None,
                                    progress=False)
    except InputError:
        if source.skipped == [job.case_id]:
            return None, source.as_dict()
        raise
    return volumes[0], source.as_dict()


def _segment(job: CaseJob, batch: SliceBatch) -> tuple[SegmentationResult, bool]:
    """Run the job's method on the case's slices; also say whether the class order is
    fixed (μ_data, or a network trained with it)."""
    if job.method == "predict":
        from deepgmm.fit.ensemble import predict_ensemble

        return (predict_ensemble(list(job.runs), batch, progress=False, **job.options),
                job.class_identity)
    from deepgmm.options import method_options
    from deepgmm.pipeline import fixes_class_order, fuse_labelled, load_mu, run_method

    opts = method_options(job.method, job.options, caller="run_case")
    mu = load_mu(job.mu_data, batch.sequences, batch=batch)
    result = run_method(batch, job.method, mu_data=mu, options=opts, progress=False)
    identity = fixes_class_order(job.method, mu, opts.as_dict())
    return fuse_labelled(result, batch, job.mu_data, job.fusion, identity)[0], identity


def segment_one_case(job: CaseJob) -> CaseOutcome:
    """Segment one case into ``OUT/cases/<case>/`` (atomically), raising on bad input.

    Returns:
        ``done``, or ``skipped`` when the case's ROI is empty.
    """
    from deepgmm.pipeline import prepare_slices
    from deepgmm.report.outputs import is_predicted_roi, score_slices, write_segmentation

    start = time.perf_counter()
    volume, roi_info = _load(job)
    if volume is None:
        return CaseOutcome(job.case_id, "skipped", error="its ROI is empty; case skipped")
    batch = prepare_slices([volume], selection=job.selection, crop_size=job.crop_size,
                           normalisation=job.normalisation)
    result, class_identity = _segment(job, batch)
    scores = score_slices([volume], batch, result, job.matching, anatomy=job.anatomy,
                          class_identity=class_identity,
                          predicted_roi=is_predicted_roi(roi_info))
    metrics = None if scores.dice is None else (scores.dice, scores.hd95, scores.assd)
    stamp = manifest(job)

    def add_arrays_and_manifest(tmp: Path) -> None:
        save_case_arrays(tmp / SLICES_FILE, volume, batch, result, class_identity, metrics)
        (tmp / MANIFEST_JSON).write_text(json.dumps(stamp, indent=2) + "\n",
                                         encoding="utf-8")

    # no report.html (the merged one shows the case; `deepgmm report OUT/cases/<case>`
    # renders one) and no warning: replacing OUT is announced once, by the merge
    write_segmentation(job.case_dir, [volume], batch, result, matching=job.matching,
                       figures=job.figures, progress=False, class_identity=class_identity,
                       roi_source=roi_info, naming=job.naming, run_options=job.record,
                       anatomy=job.anatomy, before_commit=add_arrays_and_manifest,
                       metrics=metrics, report=False, announce_replaced=False)
    return CaseOutcome(job.case_id, "done", seconds=time.perf_counter() - start)


def run_case(job: CaseJob) -> CaseOutcome:
    """The task a worker runs: :func:`segment_one_case` with the job's torch thread count,
    a library error turned into a ``failed`` outcome that names it (a bug still raises)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    start = time.perf_counter()
    try:
        return segment_one_case(job)
    except DeepGMMError as err:
        return CaseOutcome(job.case_id, "failed", error=str(err),
                           exit_code=3 if isinstance(err, FitError) else 2,
                           seconds=time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def outcome_record(outcomes: Mapping[str, CaseOutcome]) -> list[dict[str, Any]]:
    """The ``failed_cases`` entry of ``summary.json``: ``[{"case", "error"}]``."""
    return [{"case": o.case_id, "error": o.error} for o in outcomes.values()
            if o.status == "failed"]
