"""A per-case run of a cohort: one job per case, run here or on Dask, then merged.

:func:`segment_cohort` (``em`` / ``fit``), :func:`predict_cohort` (``predict``) and
:func:`segment_case_cohort` (``segment``) check every option first, as their one-process
counterparts in :mod:`deepgmm.pipeline` do, build one :class:`~deepgmm.cohort.case.CaseJob`
per case, skip the cases already complete when ``resume`` is set, run the rest
(:func:`deepgmm.cohort.cluster.run_jobs`) and merge every complete case into ``OUT``
(:func:`deepgmm.cohort.merge.merge_cases`).

Each case is fitted as a batch of its own. A case's result therefore does not depend on
where it ran or on the other cases: ``--workers N`` on any N, ``--scheduler`` and a serial
per-case run (``--resume`` alone) write the same label maps. A one-process run fits all
cases as one batch, and EM draws its random initialisation per batch, so its EM results are
other (equally valid) draws; the deep fits agree with it to float rounding.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepgmm.cohort.case import CaseJob, CaseOutcome, is_complete, json_value, outcome_record
from deepgmm.cohort.cluster import check_cluster_options, run_jobs
from deepgmm.errors import InputError
from deepgmm.report.outputs import CASES_DIR

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how a per-case run executes.

    Attributes:
        workers: start a local Dask cluster of this many single-threaded workers.
        scheduler: address of an existing Dask scheduler (``tcp://host:8786``).
        resources: Dask resources every case needs (``{"GPU": 1}``).
        threads: torch CPU threads per case (per worker).
        resume: skip the cases whose folder is complete for the same options and inputs.
    """

    workers: int | None = None
    scheduler: str | None = None
    resources: dict[str, float] | None = None
    threads: int = 1
    resume: bool = False

    def check(self) -> None:
        """Raise :class:`InputError` on contradicting or out-of-range values."""
        check_cluster_options(self.workers, self.scheduler, self.resources, self.threads)

    def as_dict(self) -> dict[str, Any]:
        """For ``run.json``."""
        return {"workers": self.workers, "scheduler": self.scheduler,
                "resources": self.resources, "threads": self.threads, "resume": self.resume}


@dataclass
class CohortRun:
    """What a per-case run did.

    Attributes:
        summary: the merged ``summary.json`` (with ``failed_cases``).
        outcomes: case id -> :class:`CaseOutcome`, in case order.
    """

    summary: dict[str, Any]
    outcomes: dict[str, CaseOutcome] = field(default_factory=dict)

    def ids(self, status: str) -> list[str]:
        """The cases with ``status`` (``done``, ``resumed``, ``skipped``, ``failed``)."""
        return [c for c, o in self.outcomes.items() if o.status == status]

    @property
    def failed(self) -> list[CaseOutcome]:
        """The failed cases' outcomes."""
        return [o for o in self.outcomes.values() if o.status == "failed"]


def _absolute(path: PathLike | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _method_values(opts: Any) -> dict[str, Any]:
    """A method's options as the keywords :func:`deepgmm.options.method_options` takes."""
    return {k: v for k, v in opts.as_dict().items() if k != "model"}


def remove_stale_temporaries(out: Path) -> None:
    """Remove the temporary folders a killed worker left in ``OUT/cases/`` (names starting
    with a dot; call only once no case is running)."""
    cases = out / CASES_DIR
    if not cases.is_dir():
        return
    for entry in cases.iterdir():
        if entry.name.startswith(".") and entry.name.endswith((".tmp", ".old")):
            shutil.rmtree(entry, ignore_errors=True)


def run_cohort(out: PathLike, jobs: Sequence[CaseJob], cluster: ClusterOptions, *,
               matching: str, naming: str, roi_source: Mapping[str, Any],
               run_options: Mapping[str, Any], progress: bool = True,
               anatomy: str = "lv-dice") -> CohortRun:
    """Run ``jobs`` (resuming complete ones when asked) and merge the complete cases.

    Raises:
        InputError: no case could be segmented (every one failed or had an empty ROI; the
            message names each case and why).
    """
    from deepgmm.cohort.merge import merge_cases

    out = Path(out)
    outcomes: dict[str, CaseOutcome] = {}
    todo: list[CaseJob] = []
    for job in jobs:
        if cluster.resume and is_complete(job):
            outcomes[job.case_id] = CaseOutcome(job.case_id, "resumed")
        else:
            todo.append(job)
    ran = run_jobs(todo, workers=cluster.workers, scheduler=cluster.scheduler,
                   resources=cluster.resources, progress=progress)
    outcomes.update({o.case_id: o for o in ran})
    outcomes = {job.case_id: outcomes[job.case_id] for job in jobs}
    remove_stale_temporaries(out)
    complete = [j for j in jobs if outcomes[j.case_id].status in ("done", "resumed")]
    if not complete:
        why = "; ".join(f"case {o.case_id}: {o.error}" for o in outcomes.values())
        raise InputError(f"no case was segmented ({why})")
    source = {**roi_source, "roi_skipped": [c for c, o in outcomes.items()
                                            if o.status == "skipped"]}
    record = {**run_options, "cluster": cluster.as_dict(),
              "cases_run": [o.case_id for o in ran if o.status == "done"],
              "cases_resumed": [c for c, o in outcomes.items() if o.status == "resumed"]}
    summary = merge_cases(out, complete, matching=matching, naming=naming,
                          roi_source=source, run_options=record,
                          summary_extra={"failed_cases": outcome_record(outcomes)},
                          progress=progress, anatomy=anatomy)
    return CohortRun(summary=summary, outcomes=outcomes)


def _dataset_case_ids(root: PathLike, source: Any, patients: Sequence[str] | None,
                      sequences: Sequence[str] | None) -> tuple[list[str], tuple[str, ...]]:
    """The case ids to run and the sequences they are loaded with (the ROI run's for
    ``auto``)."""
    from deepgmm.data.dataset import select_cases
    from deepgmm.data.myops import MYOPS_SEQUENCES, discover_cases

    wanted = tuple(sequences or MYOPS_SEQUENCES)
    if source.kind == "auto" and sequences is None:
        from deepgmm.roi.predict import open_roi_run_for

        wanted = tuple(open_roi_run_for(source.path, root).sequences)
    cases = select_cases(discover_cases(root, wanted), patients)
    return [c.case_id for c in cases], tuple(next(iter(cases)).images)


def segment_cohort(root: PathLike, out: PathLike, *, model: str = "deepsvg",
                   patients: Sequence[str] | None = None, selection: str = "all-classes",
                   crop_size: int | tuple[int, int] = 160, normalisation: str = "crop",
                   mu_data: PathLike | None = None, matching: str = "hungarian",
                   roi: str | PathLike = "gt", roi_run: PathLike | None = None,
                   figures: bool = True, progress: bool = True, naming: str = "deepgmm",
                   cluster: ClusterOptions | None = None, anatomy: str = "lv-dice",
                   fusion: str = "labelled", **options: Any) -> CohortRun:
    """:func:`deepgmm.pipeline.segment_dataset`, one case at a time (see the module).

    Args:
        cluster: where the cases run and whether to resume (default: here, serially).
        (others): as :func:`~deepgmm.pipeline.segment_dataset`; ``mu_data`` is a file.

    Returns:
        The merged summary and every case's outcome.
    """
    from deepgmm.pipeline import _check_run, fusion_applied
    from deepgmm.report.naming import map_names
    from deepgmm.report.outputs import check_output_dir
    from deepgmm.roi.source import parse_roi_option

    cluster = cluster or ClusterOptions()
    if mu_data is not None and not isinstance(mu_data, str | os.PathLike):
        raise InputError("a per-case run takes mu_data as a JSON file", params=("mu_data",))
    opts = _check_run(model, options, mu_data, caller="segment_cohort", selection=selection,
                      normalisation=normalisation, matching=matching, roi=roi,
                      roi_run=roi_run, anatomy=anatomy, fusion=fusion)
    applied = fusion_applied(fusion, mu_data, model, opts.as_dict())
    cluster.check()
    map_names(naming)
    source = parse_roi_option(roi, roi_run)
    check_output_dir(Path(out), [root, *([source.path] if source.path else [])])
    ids, sequences = _dataset_case_ids(root, source, patients, None)
    roi_value = roi if str(roi) in ("gt", "auto") else _absolute(roi)
    load = {"kind": "dataset", "root": _absolute(root), "roi": roi_value,
            "roi_run": _absolute(roi_run), "sequences": list(sequences)}
    record = json_value({"model": model, "selection": selection, "crop_size": crop_size,
                         "normalisation": normalisation, "mu_data": _absolute(mu_data),
                         "matching": matching, "roi": roi_value,
                         "roi_run": _absolute(roi_run), "naming": naming,
                         "anatomy": anatomy, "fusion": applied, "figures": figures,
                         **opts.as_dict()})
    jobs = [CaseJob(case_id=c, out=str(Path(out).resolve()), source=load,
                    selection=selection, crop_size=crop_size, normalisation=normalisation,
                    method=model, options=_method_values(opts), mu_data=_absolute(mu_data),
                    matching=matching, figures=figures, naming=naming, anatomy=anatomy,
                    fusion=applied, record=record, threads=cluster.threads) for c in ids]
    return run_cohort(out, jobs, cluster, matching=matching, naming=naming,
                      roi_source=source.as_dict(),
                      run_options={**record, "root": root, "patients": patients},
                      progress=progress, anatomy=anatomy)


def predict_cohort(runs: Sequence[PathLike], root: PathLike, out: PathLike, *,
                   patients: Sequence[str] | None, selection: str = "all-classes",
                   roi: str | PathLike = "gt", roi_run: PathLike | None = None,
                   figures: bool = True, progress: bool = True, naming: str = "deepgmm",
                   options: Mapping[str, Any] | None = None,
                   cluster: ClusterOptions | None = None, anatomy: str = "lv-dice") -> CohortRun:
    """``deepgmm predict`` one case at a time: trained networks ``runs`` applied to the
    cases ``patients`` below ``root`` (slices cut as in training).

    Args:
        options: :class:`~deepgmm.options.PredictOptions` names and values.
    """
    from deepgmm.fit.checkpoint import read_config
    from deepgmm.fit.ensemble import check_ensemble
    from deepgmm.fit.predict import fusion_applies
    from deepgmm.options import PredictOptions
    from deepgmm.report.naming import map_names
    from deepgmm.report.outputs import check_output_dir
    from deepgmm.roi.source import parse_roi_option

    cluster = cluster or ClusterOptions()
    predict_options = PredictOptions(**dict(options or {})).as_dict()
    cluster.check()
    source = parse_roi_option(roi, roi_run)
    map_names(naming)
    configs = [read_config(r) for r in runs]
    check_ensemble(configs, runs)
    config = configs[0]
    check_output_dir(Path(out), [root, *runs, *([source.path] if source.path else [])])
    ids, sequences = _dataset_case_ids(root, source, patients, tuple(config["sequences"]))
    crop_size = tuple(config["crop_size"])
    roi_value = roi if str(roi) in ("gt", "auto") else _absolute(roi)
    class_identity = config["mu_data"] is not None and float(config["lam"]) > 0
    record = json_value({
        "runs": [_absolute(r) for r in runs], "selection": selection,
        "crop_size": crop_size, "normalisation": config["normalisation"], "roi": roi_value,
        "roi_run": _absolute(roi_run), "naming": naming, "figures": figures,
        "anatomy": anatomy, **predict_options,
        "fusion": predict_options["fusion"] if fusion_applies(configs) else "none",
        "precision": predict_options.get("precision") or config.get("precision")})
    load = {"kind": "dataset", "root": _absolute(root), "roi": roi_value,
            "roi_run": _absolute(roi_run), "sequences": list(sequences)}
    jobs = [CaseJob(case_id=c, out=str(Path(out).resolve()), source=load,
                    selection=selection, crop_size=crop_size,  # type: ignore[arg-type]
                    normalisation=config["normalisation"], method="predict",
                    options=predict_options, runs=tuple(_absolute(r) for r in runs),
                    class_identity=class_identity, matching="none", figures=figures,
                    naming=naming, anatomy=anatomy, record=record,
                    threads=cluster.threads) for c in ids]
    return run_cohort(out, jobs, cluster, matching="none", naming=naming,
                      roi_source=source.as_dict(),
                      run_options={**record, "root": root, "ids": ids,
                                   "training_seed": config.get("seed")},
                      progress=progress, anatomy=anatomy)


def segment_case_cohort(images: Mapping[str, PathLike], roi: PathLike, out: PathLike, *,
                        labels: PathLike | None = None, model: str = "deepsvg",
                        case_id: str = "case", selection: str = "roi",
                        crop_size: int | tuple[int, int] = 160, normalisation: str = "crop",
                        mu_data: PathLike | None = None, matching: str | None = None,
                        figures: bool = True, progress: bool = True,
                        naming: str = "deepgmm", cluster: ClusterOptions | None = None,
                        anatomy: str = "lv-dice", fusion: str = "labelled",
                        **options: Any) -> CohortRun:
    """:func:`deepgmm.pipeline.segment_case` as a per-case job (e.g. to run it on a GPU
    worker of a cluster with ``resources={"GPU": 1}``)."""
    from deepgmm.pipeline import _check_run, fusion_applied
    from deepgmm.report.naming import map_names
    from deepgmm.report.outputs import check_output_dir

    cluster = cluster or ClusterOptions()
    if matching is None:
        matching = "hungarian" if labels is not None else "none"
    opts = _check_run(model, options, mu_data, caller="segment_case", selection=selection,
                      normalisation=normalisation, matching=matching, anatomy=anatomy,
                      fusion=fusion)
    applied = fusion_applied(fusion, mu_data, model, opts.as_dict())
    if matching != "none" and labels is None:
        raise InputError(f"matching {matching!r} needs ground truth: give labels, or use "
                         "matching 'none'", params=("matching", "labels"))
    cluster.check()
    map_names(naming)
    inputs = [Path(p) for p in images.values()] + [Path(roi)]
    if labels is not None:
        inputs.append(Path(labels))
    check_output_dir(Path(out), inputs)
    load = {"kind": "explicit", "images": {k: _absolute(v) for k, v in images.items()},
            "roi": _absolute(roi), "labels": _absolute(labels)}
    record = json_value({"model": model, **load, "case_id": case_id, "selection": selection,
                         "crop_size": crop_size, "normalisation": normalisation,
                         "mu_data": _absolute(mu_data), "matching": matching,
                         "naming": naming, "anatomy": anatomy, "fusion": applied,
                         "figures": figures, **opts.as_dict()})
    job = CaseJob(case_id=str(case_id), out=str(Path(out).resolve()), source=load,
                  selection=selection, crop_size=crop_size, normalisation=normalisation,
                  method=model, options=_method_values(opts), mu_data=_absolute(mu_data),
                  matching=matching, figures=figures, naming=naming, anatomy=anatomy,
                  fusion=applied, record=record, threads=cluster.threads)
    return run_cohort(out, [job], cluster, matching=matching, naming=naming,
                      roi_source={"roi": "file", "roi_path": str(roi), "roi_skipped": []},
                      run_options=record, progress=progress, anatomy=anatomy)
