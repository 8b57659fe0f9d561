"""From inputs to outputs: load slices, run one method, write maps and tables.

This is the one place that chains the stages (data -> method -> outputs); the CLI commands
and the Python API call it. Nothing here does maths of its own.

Example:
    >>> from deepgmm import segment_dataset
    >>> summary = segment_dataset("myops2020", "out", model="deepsvg",
    ...                           patients=["109", "114"], matching="hungarian")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from deepgmm.anatomy import ANATOMY_RULES
from deepgmm.errors import InputError
from deepgmm.options import (
    NORMALISATIONS,
    EMGMMOptions,
    FitOptions,
    MethodOptions,
    method_options,
)
from deepgmm.params import StrOptions, check_params
from deepgmm.types import CaseVolume, SegmentationResult, SliceBatch

Matching = Literal["hungarian", "greedy", "none"]
MATCHINGS: tuple[str, ...] = ("hungarian", "greedy", "none")
SELECTIONS: tuple[str, ...] = ("all-classes", "roi")

PathLike = str | os.PathLike[str]

RUN_CONSTRAINTS = {
    "anatomy": [StrOptions(dict.fromkeys(ANATOMY_RULES).keys())],
    "fusion": [StrOptions({"labelled", "none"})],
    "roi": [StrOptions({"gt", "auto"}), str, os.PathLike],
    "roi_run": [str, os.PathLike, None],
    "selection": [StrOptions(dict.fromkeys(SELECTIONS).keys())],
    "normalisation": [StrOptions(dict.fromkeys(NORMALISATIONS).keys())],
    "matching": [StrOptions(dict.fromkeys(MATCHINGS).keys())],
}
"""The pipeline's own options (where the ROI comes from, which slices, how normalised, how
clusters meet classes); the method's options are :mod:`deepgmm.options`'."""


def prepare_slices(volumes: Sequence[CaseVolume], *, selection: str = "all-classes",
                   crop_size: int | tuple[int, int] = 160,
                   normalisation: str = "crop") -> SliceBatch:
    """Cut the selected slices of ``volumes`` into one :class:`SliceBatch` ``(B, M, H, W)``."""
    from deepgmm.data.slices import make_batch

    size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    batch = make_batch(list(volumes), selection=selection, crop_size=size,
                       normalisation=normalisation)
    _refuse_constant_in_roi(batch, volumes)
    return batch


def _refuse_constant_in_roi(batch: SliceBatch, volumes: Sequence[CaseVolume]) -> None:
    """Refuse a slice whose sequence is constant inside the ROI (nothing to separate),
    naming the case, the slice, the sequence and its file."""
    roi = batch.roi[:, None]                                              # (B, 1, H, W)
    inf = torch.tensor(float("inf"), dtype=batch.image.dtype)
    hi = torch.where(roi, batch.image, -inf).amax(dim=(2, 3))             # (B, M)
    lo = torch.where(roi, batch.image, inf).amin(dim=(2, 3))
    constant = (hi <= lo) & roi.any(dim=(2, 3))
    if not bool(constant.any()):
        return
    b, m = (int(i) for i in torch.nonzero(constant)[0])
    case = batch.case_ids[b]
    vol = next((v for v in volumes if v.case_id == case), None)
    file = (vol.files[m] if vol is not None and len(vol.files) == len(batch.sequences)
            else vol.source if vol is not None else "")
    raise InputError(f"case {case!r}, slice {batch.slice_indices[b]}, sequence "
                     f"{batch.sequences[m]}{f' ({file})' if file else ''}: the image is "
                     "constant inside the ROI, nothing to separate (check the file and its "
                     "scaling)")


def load_mu(mu_data: PathLike | np.ndarray | None, sequences: Sequence[str], *,
            batch: SliceBatch | None = None) -> np.ndarray | None:
    """μ_data ``(K, M)`` from a JSON file or an array; ``None`` passes through. A file
    must have been computed from slices prepared as ``batch`` (crop size, normalisation)."""
    if mu_data is None:
        return None
    if isinstance(mu_data, np.ndarray | torch.Tensor):
        return np.asarray(mu_data, dtype=np.float32)
    from deepgmm.data.mu_data import load_mu_data

    return load_mu_data(mu_data, sequences=tuple(sequences), batch=batch)


def _check_run(model: str, options: Mapping[str, Any] | MethodOptions | None,
               mu_data: object, *, caller: str, **run: Any) -> MethodOptions:
    """Validate the method's and the pipeline's options before any work is done."""
    check_params(RUN_CONSTRAINTS, run, caller=caller)
    opts = method_options(model, options, caller=caller)
    if getattr(opts, "lam", 0.0) > 0 and mu_data is None:
        raise InputError("lam > 0 needs mu_data (class means, e.g. from `deepgmm mu-data`)",
                         params=("lam", "mu_data"))
    return opts


def run_method(batch: SliceBatch, model: str, *, mu_data: np.ndarray | None = None,
               options: Mapping[str, Any] | MethodOptions | None = None,
               progress: bool = True,
               init_state: Mapping[str, Any] | None = None) -> SegmentationResult:
    """Segment every slice of ``batch`` with one method.

    Args:
        batch: slices ``(B, M, H, W)`` with ROI ``(B, H, W)``.
        model: ``"em-gmm"``, ``"em-svgmm"``, ``"deepg"`` or ``"deepsvg"``.
        mu_data: ``(K, M)`` class means: EM initialisation (``init="mu_data"``) or the
            deepG/deepSVG penalty target (with ``lam > 0``).
        options: the model's options, as a mapping (names of
            :class:`~deepgmm.options.EMGMMOptions`, :class:`~deepgmm.options.EMSVGMMOptions`
            or :class:`~deepgmm.options.FitOptions`) or as one of those objects; an option
            the model does not take is an :class:`InputError`.
        progress: show a progress bar where the method has one.
        init_state: deepG / deepSVG only: a U-Net state dict every slice starts from (a
            warm start, :mod:`deepgmm.fit.warm`); None: fresh networks.

    Returns:
        :class:`SegmentationResult` with responsibilities ``(B, K, H, W)``.
    """
    from deepgmm.device import resolve_device

    opts = method_options(model, options, caller="run_method")
    device = resolve_device(opts.device)
    if isinstance(opts, EMGMMOptions):
        if init_state is not None:
            raise InputError(f"a warm start (init) applies to deepg / deepsvg, not {model}",
                             params=("init",))
        from deepgmm.mixture.em import em_segment

        params = {**opts.estimator_params(), "device": device}
        return em_segment(batch, model=model, mu_data=mu_data, **params)
    from deepgmm.fit.single import fit_slices

    assert isinstance(opts, FitOptions)
    params = {**opts.fit_params(), "device": device}
    return fit_slices(batch, mu_data=mu_data, progress=progress, init_state=init_state,
                      **params)


def write_result(out: PathLike, volumes: Sequence[CaseVolume], batch: SliceBatch,
                 result: SegmentationResult, *, matching: str = "hungarian",
                 figures: bool = True, progress: bool = True,
                 class_identity: bool = False,
                 roi_source: Mapping[str, Any] | None = None, naming: str = "deepgmm",
                 run_options: Mapping[str, Any] | None = None,
                 anatomy: str = "lv-dice") -> dict[str, Any]:
    """Write label/probability NIfTI maps, ``results.csv``, ``summary.json`` and PNGs
    (``class_identity``: μ_data fixed the class order; ``roi_source``: where the ROI came
    from; ``naming``: ``"deepgmm"`` or ``"bids"`` file names; ``run_options``: recorded in
    ``run.json``; ``anatomy``: ``"lv-dice"``, ``"lv"`` or ``"none"``, :mod:`deepgmm.anatomy`; see
    :func:`deepgmm.report.outputs.write_segmentation`)."""
    from deepgmm.report.outputs import write_segmentation

    check_params(RUN_CONSTRAINTS, {"matching": matching, "anatomy": anatomy},
                 caller="write_result")
    return write_segmentation(Path(out), list(volumes), batch, result, matching=matching,
                              figures=figures, progress=progress,
                              class_identity=class_identity, roi_source=roi_source,
                              naming=naming, run_options=run_options, anatomy=anatomy)


def _input_paths(*values: object) -> list[Path]:
    """The values that name files (not arrays, not ``None``), as paths."""
    return [Path(v) for v in values if isinstance(v, str | os.PathLike)]


def fusion_applied(fusion: str, mu_data: object, model: str,
                   options: Mapping[str, Any]) -> str:
    """``"labelled"`` when ``fusion`` asks for it, μ_data fixes the class order
    (:func:`fixes_class_order`) and the μ_data file carries class Gaussians; else
    ``"none"``: what :func:`fuse_labelled` will do, known before any fit (for records)."""
    import json

    if fusion == "none" or not isinstance(mu_data, str | os.PathLike) \
            or not fixes_class_order(model, mu_data, options):
        return "none"
    try:
        doc = json.loads(Path(mu_data).read_text())
    except (OSError, ValueError):
        return "none"  # load_mu_data reports an unreadable file
    return "labelled" if isinstance(doc, dict) and doc.get("class_gaussians") else "none"


def fuse_labelled(result: SegmentationResult, batch: SliceBatch, mu_data: object,
                  fusion: str, class_identity: bool) -> tuple[SegmentationResult, str]:
    """``(result, applied)``: ``result``'s probabilities fused with the class Gaussians of
    the μ_data file's labelled slices (:mod:`deepgmm.mixture.fusion`) and ``"labelled"``
    when ``fusion`` asks for it, the class order is μ_data's (``class_identity``) and the
    file carries them (``deepgmm mu-data`` writes them); else ``result`` and ``"none"``."""
    if fusion == "none" or not class_identity or not isinstance(mu_data, str | os.PathLike):
        return result, "none"
    from dataclasses import replace

    from deepgmm.mixture.fusion import fuse_probabilities, read_class_gaussians

    gaussians = read_class_gaussians(mu_data, len(batch.sequences))
    if gaussians is None:
        return result, "none"
    fused = fuse_probabilities(result.responsibilities, batch.image, batch.roi, gaussians)
    return replace(result, responsibilities=fused), "labelled"


def fixes_class_order(model: str, mu_data: object, options: Mapping[str, Any]) -> bool:
    """Whether μ_data gives the components class identity: it sets the EM initial means,
    and it pulls the deep methods' means only with ``lam > 0``."""
    return mu_data is not None and (model.startswith("em-")
                                    or float(options.get("lam", 0.0)) > 0)


def segment_dataset(root: PathLike, out: PathLike, *, model: str = "deepsvg",
                    patients: Sequence[str] | None = None, selection: str = "all-classes",
                    crop_size: int | tuple[int, int] = 160, normalisation: str = "crop",
                    mu_data: PathLike | np.ndarray | None = None,
                    matching: str = "hungarian", roi: str | PathLike = "gt",
                    roi_run: PathLike | None = None, figures: bool = True,
                    progress: bool = True, naming: str = "deepgmm",
                    init_run: PathLike | None = None, anatomy: str = "lv-dice",
                    fusion: str = "labelled", **options: Any) -> dict[str, Any]:
    """Segment the cases below ``root`` (MyoPS layout) and write the outputs to ``out``.

    Args:
        root: folder holding ``<prefix>_<n>_{C0,DE,T2}.nii.gz`` (+ ``_gd`` ground truth).
        out: output folder (created; replaced atomically once complete).
        model: ``"em-gmm"``, ``"em-svgmm"``, ``"deepg"`` or ``"deepsvg"``.
        patients: case ids to use (default: all).
        selection: ``"all-classes"`` (slices with all classes) or ``"roi"`` (non-empty ROI).
        crop_size: square (int) or ``(H, W)`` crop around the ROI.
        normalisation: z-score each slice over the ``"crop"`` or over the ``"roi"``.
        mu_data: JSON file or ``(K, M)`` array of class means.
        matching: cluster-to-class rule for evaluation and label maps.
        roi: where the ROI comes from (:mod:`deepgmm.roi.source`): ``"gt"`` (the ground
            truth's LV), ``"auto"`` (predicted by the ROI run ``roi_run``; cases without
            ground truth are segmented, not scored) or a folder of ``<case>_roi.nii.gz``
            masks. The ``"roi"`` selection and the crop centre follow it; it is recorded
            in ``summary.json`` and ``results.csv``.
        roi_run: the ROI run folder (``deepgmm roi train``) for ``roi="auto"``.
        naming: ``"deepgmm"`` or ``"bids"`` file names of the maps.
        init_run: deepG / deepSVG only: a ``train`` run whose weights every slice starts
            from (:mod:`deepgmm.fit.warm`; same sequences, crop size, normalisation and
            network, no context channels).
        anatomy: how the label maps follow from the probabilities (:mod:`deepgmm.anatomy`):
            ``"lv-dice"`` (one convex blood pool, a smooth wall labelled for the largest
            expected Dice; where the class order is known), ``"lv"`` (the same wall, each
            pixel its most likely class) or ``"none"`` (the most likely class, as
            published).
        fusion: ``"labelled"``: where μ_data fixes the class order and its file carries the
            labelled slices' class Gaussians (``deepgmm mu-data``), the probabilities are
            fused with them (:mod:`deepgmm.mixture.fusion`); ``"none"``: as fitted.
        **options: the model's options (:mod:`deepgmm.options`: e.g. ``lam``, ``max_iter``,
            ``seed``); one the model does not take is refused.

    Returns:
        The summary written to ``out/summary.json``.

    Raises:
        InputError: a bad or inapplicable option (before any data is read), bad data.
        CheckpointError: a bad ROI run, or one trained on other sequences than the data; an
            ``init_run`` that does not fit the data or the network options.
    """
    from deepgmm.report.naming import map_names
    from deepgmm.report.outputs import check_output_dir
    from deepgmm.roi.source import load_with_roi, parse_roi_option

    opts = _check_run(model, options, mu_data, caller="segment_dataset", selection=selection,
                      normalisation=normalisation, matching=matching, roi=roi,
                      roi_run=roi_run, anatomy=anatomy, fusion=fusion)
    if init_run is not None and not isinstance(opts, FitOptions):
        raise InputError(f"init_run applies to deepg / deepsvg, not {model}",
                         params=("init_run",))
    map_names(naming)
    source = parse_roi_option(roi, roi_run)
    check_output_dir(Path(out), [root, *([source.path] if source.path else []),
                                 *_input_paths(mu_data, roi_run)])
    volumes = load_with_roi(root, source, list(patients) if patients else None,
                            progress=progress)
    batch = prepare_slices(volumes, selection=selection, crop_size=crop_size,
                           normalisation=normalisation)
    mu = load_mu(mu_data, batch.sequences, batch=batch)
    init_state = None
    if init_run is not None:
        from deepgmm.fit.warm import load_warm_start

        assert isinstance(opts, FitOptions)
        init_state = load_warm_start(init_run, batch, {
            "n_classes": opts.n_classes, "depth": opts.depth,
            "base_filters": opts.base_filters}).state
    result = run_method(batch, model, mu_data=mu, options=opts, progress=progress,
                        init_state=init_state)
    identity = fixes_class_order(model, mu, opts.as_dict())
    result, fused = fuse_labelled(result, batch, mu_data, fusion, identity)
    run_options = {"model": model, "root": root, "patients": patients,
                   "selection": selection, "crop_size": crop_size,
                   "normalisation": normalisation,
                   "mu_data": mu_data if not isinstance(mu_data, np.ndarray) else "array",
                   "matching": matching, "roi": roi, "roi_run": roi_run, "naming": naming,
                   "anatomy": anatomy, "fusion": fused,
                   **({"init_run": init_run} if init_run is not None else {}),
                   **opts.as_dict()}
    return write_result(out, volumes, batch, result, matching=matching, figures=figures,
                        progress=progress, class_identity=identity,
                        roi_source=source.as_dict(), naming=naming,
                        run_options=run_options, anatomy=anatomy)


def segment_case(images: Mapping[str, PathLike], roi: str | PathLike, out: PathLike, *,
                 labels: PathLike | None = None, roi_run: PathLike | None = None,
                 model: str = "deepsvg",
                 case_id: str = "case", selection: str = "roi",
                 crop_size: int | tuple[int, int] = 160, normalisation: str = "crop",
                 mu_data: PathLike | np.ndarray | None = None, matching: str | None = None,
                 figures: bool = True, progress: bool = True, naming: str = "deepgmm",
                 anatomy: str = "lv-dice", fusion: str = "labelled",
                 **options: Any) -> dict[str, Any]:
    """Segment one case of any co-registered sequences given explicitly.

    Args:
        images: sequence name -> NIfTI file (any names, any number M).
        roi: the region to segment: a NIfTI mask file (non-zero = inside), ``"gt"`` (the
            left ventricle of ``labels``) or ``"auto"`` (predicted from the images by the
            ROI run ``roi_run``, which needs its sequences among the ``images`` names);
            recorded in ``summary.json`` and ``results.csv``.
        labels: optional ground truth (MyoPS codes) for Dice.
        roi_run: the ROI run folder (``deepgmm roi train``) for ``roi="auto"``.
        matching: defaults to ``"hungarian"`` with labels and ``"none"`` without.
        model, case_id, selection, crop_size, normalisation, mu_data, figures, progress,
        anatomy, fusion, **options: as :func:`segment_dataset`.

    Returns:
        The summary written to ``out/summary.json``.
    """
    from deepgmm.data.dataset import load_explicit
    from deepgmm.report.outputs import check_output_dir

    if matching is None:
        matching = "hungarian" if labels is not None else "none"
    opts = _check_run(model, options, mu_data, caller="segment_case", selection=selection,
                      normalisation=normalisation, matching=matching, roi=roi,
                      roi_run=roi_run, anatomy=anatomy, fusion=fusion)
    if matching != "none" and labels is None:
        raise InputError(f"matching {matching!r} needs ground truth: give labels, or use "
                         "matching 'none'", params=("matching", "labels"))
    from deepgmm.report.naming import map_names
    from deepgmm.roi.source import explicit_roi

    map_names(naming)
    inputs = [Path(p) for p in images.values()]
    inputs += [Path(p) for p in (labels, roi_run) if p is not None]
    if str(roi) not in ("gt", "auto"):
        inputs.append(Path(roi))
    check_output_dir(Path(out), [*inputs, *_input_paths(mu_data)])
    source, roi_mask = explicit_roi(roi, roi_run, images, labels, case_id=case_id)
    volume = load_explicit(dict(images), roi_mask, labels, case_id=case_id)
    batch = prepare_slices([volume], selection=selection, crop_size=crop_size,
                           normalisation=normalisation)
    mu = load_mu(mu_data, batch.sequences, batch=batch)
    result = run_method(batch, model, mu_data=mu, options=opts, progress=progress)
    identity = fixes_class_order(model, mu, opts.as_dict())
    result, fused = fuse_labelled(result, batch, mu_data, fusion, identity)
    run_options = {"model": model, "images": dict(images), "roi": roi, "roi_run": roi_run,
                   "labels": labels, "case_id": case_id, "selection": selection,
                   "crop_size": crop_size,
                   "normalisation": normalisation,
                   "mu_data": mu_data if not isinstance(mu_data, np.ndarray) else "array",
                   "matching": matching, "naming": naming, "anatomy": anatomy,
                   "fusion": fused, **opts.as_dict()}
    return write_result(out, [volume], batch, result, matching=matching, figures=figures,
                        progress=progress, class_identity=identity,
                        roi_source=source.as_dict(),
                        naming=naming, run_options=run_options, anatomy=anatomy)
