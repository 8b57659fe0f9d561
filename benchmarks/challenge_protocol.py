"""The MyoPS challenge protocol end to end: ROI from the images, all slices, no oracle.

Per fold of ``benchmarks/cv_quality.py``'s 5 folds by patient (``FOLDS``):

- the ROI of each test case is ``auto`` (predicted by the fold's ROI run, trained on the
  fold's 20 training patients only: ``--roi-runs DIR`` holds ``fold1`` .. ``fold5``; a
  missing one is trained there with the default :class:`deepgmm.roi.model.RoiSettings`) or,
  for comparison, ``gt`` (the ground truth's left ventricle);
- every slice of the test case with a non-empty ROI is segmented (``--selection roi``; a
  slice or case where the ROI network found nothing gets no prediction), cropped 160 x 160
  around the ROI in use, z-scored over the crop;
- no oracle: the components are read as classes in μ_data's order (``--matching none``).
  μ_data is ``compute_mu_data`` of the training fold's all-class slices (10 slices drawn
  with seed 42 + seed), as in ``cv_quality.py``;
- methods: ``em-svgmm`` (EM-SVGMM per test slice from μ_data, smoothing 4: cv_quality's
  ``em-svgmm-smooth4``), ``deepsvg`` / ``deepg`` (a network trained with the published
  recipe on the training fold's all-class slices, ground-truth ROI, as cv_quality's
  ``deepsvg`` / ``deepg``; the same network then segments the test slices of both ROIs);
- ``<method>+lv``: the same fit (and the same cached network), the label maps made under
  the LV anatomy rule of :mod:`deepgmm.anatomy` (the package's default) instead of each
  pixel's most likely class; ``<method>+fuse+lv``: the probabilities first fused with the
  class Gaussians of the training fold's μ_data slices (:mod:`deepgmm.mixture.fusion`, the
  default of ``deepgmm predict``); ``<method>+fuse+lv-dice``: fused, and the wall labelled
  for the largest expected Dice (:mod:`deepgmm.decision`, the default rule ``lv-dice``);
- score: per case, the 3-D Dice of scar and of edema ∪ scar (the challenge's two figures)
  between the predicted label volume (zero outside the segmented region and on slices not
  segmented) and the ground truth over every slice of the case; mean ± sd over cases.

Each (method, roi, fold, seed) unit is cached under ``--cache`` (``.npz`` of the predicted
label volumes, then ``.json`` with the per-case scores, both atomically); a trained network
is kept under ``--cache``/networks so that a stop loses nothing. A re-run skips finished
units; ``--report`` prints the table from the cache alone.

    PYTHONPATH=src .venv/bin/python benchmarks/challenge_protocol.py \\
        [--methods em-svgmm deepsvg deepg deepsvg+lv ...] [--rois auto gt] [--folds 1 2 3 4 5] \\
        [--seeds 0] [--roi-runs /work/roi-runs/e40] [--cache /work/e2e-cache] \\
        [--root ../shared/data/myops2020] [--threads 1] [--markdown FILE]
    ... benchmarks/challenge_protocol.py --report [--markdown FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepgmm._atomic import atomic_path
from deepgmm.data.slices import make_batch, uncrop
from deepgmm.types import CaseVolume, SliceBatch


def _load_cv_quality() -> Any:
    """``benchmarks/cv_quality.py`` as a module (its folds, μ_data rule and 3-D Dice)."""
    name = "cv_quality"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(
        "cv_quality.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


cv = _load_cv_quality()
FOLDS: dict[int, tuple[str, ...]] = cv.FOLDS
CROP = cv.CROP
METHODS: dict[str, str] = {
    "em-svgmm": "EM-SVGMM per test slice, smoothing 4, init from mu_data (cv_quality's "
                "em-svgmm-smooth4)",
    "deepsvg": "deepSVG trained on the training fold, published recipe (cv_quality's deepsvg)",
    "deepg": "deepG trained on the training fold, published recipe (cv_quality's deepg)",
}
for _base in list(METHODS):  # <method>+lv: the same fits, label maps under the LV rule
    METHODS[f"{_base}+lv"] = (f"{METHODS[_base]}; label maps under the LV anatomy rule "
                              "(deepgmm.anatomy)")
    METHODS[f"{_base}+fuse+lv"] = (f"{METHODS[_base]}; probabilities fused with the class "
                                   "Gaussians of the training fold's μ_data slices "
                                   "(deepgmm.mixture.fusion), label maps under the LV "
                                   "anatomy rule")
    METHODS[f"{_base}+fuse+lv-dice"] = (f"{METHODS[_base]}; fused, label maps under the LV "
                                        "anatomy rule with the wall labelled for the "
                                        "largest expected Dice (deepgmm.decision; the "
                                        "package's default)")
ROIS: tuple[str, ...] = ("auto", "gt")
EM_SMOOTHING = 4.0
DEFAULT_ROI_RUNS = Path("/work/roi-runs/e40")
DEFAULT_CACHE = Path("/work/e2e-cache")
REFERENCE = ("challenge winner (supervised on all pathology labels): scar 0.64 in its own "
             "5-fold cross-validation on the training cases; scar 0.67 / edema ∪ scar 0.73 "
             "on the test set")


# ---------------------------------------------------------------------------------------------
# Folds and scoring (pure)
# ---------------------------------------------------------------------------------------------


def split_fold(patients: Sequence[str], fold: int,
               folds: Mapping[int, Sequence[str]] = FOLDS) -> tuple[list[str], list[str]]:
    """``(training, test)`` patients of ``fold``: the test patients are the fold's, the
    training patients every other one of ``patients``."""
    test = [p for p in patients if p in set(folds[fold])]
    return [p for p in patients if p not in set(test)], test


def predicted_volumes(batch: SliceBatch, probs: np.ndarray,
                      shapes: Mapping[str, tuple[int, int, int]],
                      anatomy: str = "none", predicted_roi: bool = False,
                      ) -> dict[str, np.ndarray]:
    """Label volumes of the segmented slices, pasted back into each case's grid.

    Args:
        batch: the segmented slices (crop origins, full shapes, ROI ``(B, H, W)``).
        probs: ``(B, K, H, W)`` class probabilities, component k read as class k + 1.
        shapes: case id -> ``(X, Y, Z)`` of every case to score (cases without a segmented
            slice get an all-background volume).
        anatomy: ``"none"`` (most likely class), ``"lv"`` or ``"lv-dice"``
            (:mod:`deepgmm.anatomy`).
        predicted_roi: the ROI is ``auto`` (the LV rules leave blood apart from the cavity
            out of the LV).

    Returns:
        case id -> ``(X, Y, Z)`` uint8 class indices (0 outside the ROI and on slices not
        segmented).
    """
    from deepgmm.anatomy import apply_anatomy

    roi = batch.roi.numpy()
    labels = apply_anatomy(anatomy, np.asarray(probs), roi, batch.spacing,
                           predicted_roi=predicted_roi).astype(np.uint8)
    out = {case: np.zeros(shape, dtype=np.uint8) for case, shape in shapes.items()}
    for b, (case, z) in enumerate(zip(batch.case_ids, batch.slice_indices, strict=True)):
        if case in out:
            out[case][:, :, int(z)] = uncrop(labels[b], batch.crop_origins[b],
                                             batch.full_shapes[b])
    return out


def case_scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(scar, edema ∪ scar)`` 3-D Dice of one case's ``(X, Y, Z)`` label volumes (class
    indices, 3 edema, 4 scar); NaN where prediction and truth are both empty."""
    slices_p = np.moveaxis(np.asarray(pred), -1, 0)
    slices_t = np.moveaxis(np.asarray(truth), -1, 0)
    scores = cv.dice_3d_per_case(slices_p, slices_t, ["case"] * slices_p.shape[0])
    return scores["case"]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample sd (ddof 1) over the finite values (NaN when there are none)."""
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


def unit_key(method: str, roi: str, fold: int, seed: int) -> str:
    """Relative path stem of a unit: ``method/roi/fold<f>-seed<s>``."""
    return f"{method}/{roi}/fold{int(fold)}-seed{int(seed)}"


def is_cached(cache: Path, key: str) -> bool:
    """Finished when the ``.json`` (written after the ``.npz``) exists."""
    return (cache / f"{key}.json").is_file() and (cache / f"{key}.npz").is_file()


def save_unit(cache: Path, key: str, volumes: Mapping[str, np.ndarray],
              meta: Mapping[str, Any]) -> None:
    """The predicted label volumes (``.npz``), then the metadata (``.json``), atomically."""
    with atomic_path(cache / f"{key}.npz") as tmp:
        np.savez_compressed(tmp, **{f"case_{c}": v for c, v in volumes.items()})
    with atomic_path(cache / f"{key}.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")


def load_metas(cache: Path) -> list[dict[str, Any]]:
    """The metadata of every finished unit below ``cache``."""
    out = []
    for path in sorted(cache.glob("*/*/fold*-seed*.json")):
        if path.with_suffix(".npz").is_file():
            out.append(json.loads(path.read_text()))
    return out


# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One table row: a method with one ROI over the folds (and seeds) cached."""

    method: str
    roi: str
    folds: list[int]
    seeds: list[int]
    scar: list[float]
    edema_scar: list[float]
    skipped: list[str]


def table_rows(metas: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Rows in method order (``METHODS``), auto before gt; a case's scores are averaged
    over the seeds cached for its fold."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for meta in metas:
        groups.setdefault((meta["method"], meta["roi"]), []).append(meta)
    rows = []
    order = {m: i for i, m in enumerate(METHODS)}
    for (method, roi), units in sorted(groups.items(), key=lambda kv: (
            order.get(kv[0][0], 99), ROIS.index(kv[0][1]) if kv[0][1] in ROIS else 9)):
        per_case: dict[str, list[tuple[float, float]]] = {}
        skipped: set[str] = set()
        for unit in units:
            for case, (scar, both) in unit["cases"].items():
                per_case.setdefault(case, []).append((scar, both))
            skipped.update(unit.get("roi_skipped", []))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = {c: np.nanmean(np.asarray(v, dtype=np.float64), axis=0)
                     for c, v in sorted(per_case.items())}
        rows.append(Row(method=method, roi=roi, folds=sorted({u["fold"] for u in units}),
                        seeds=sorted({u["seed"] for u in units}),
                        scar=[float(m[0]) for m in means.values()],
                        edema_scar=[float(m[1]) for m in means.values()],
                        skipped=sorted(skipped)))
    return rows


def _fmt(values: Sequence[float]) -> str:
    m, s = mean_sd(values)
    return "-" if math.isnan(m) else f"{m:.3f} ± {s:.3f}"


def format_table(rows: Sequence[Row]) -> str:
    """Markdown table: per-case 3-D Dice of scar and edema ∪ scar, mean ± sd over cases,
    and the loss of ``auto`` against ``gt`` (same method, same cases)."""
    lines = ["| method | ROI | folds | seeds | cases | scar | edema ∪ scar | "
             "scar: auto − gt | edema ∪ scar: auto − gt | cases without ROI |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    by_key = {(r.method, r.roi): r for r in rows}
    for r in rows:
        gt = by_key.get((r.method, "gt"))
        d_scar = d_both = "-"
        if r.roi == "auto" and gt is not None and gt.folds == r.folds and gt.seeds == r.seeds:
            d_scar = f"{mean_sd(r.scar)[0] - mean_sd(gt.scar)[0]:+.3f}"
            d_both = f"{mean_sd(r.edema_scar)[0] - mean_sd(gt.edema_scar)[0]:+.3f}"
        lines.append(f"| {r.method} | {r.roi} | {','.join(map(str, r.folds))} | "
                     f"{','.join(map(str, r.seeds))} | {len(r.scar)} | {_fmt(r.scar)} | "
                     f"{_fmt(r.edema_scar)} | {d_scar} | {d_both} | "
                     f"{', '.join(r.skipped) or '-'} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def fold_roi_run(roi_runs: Path, fold: int, train_volumes: Sequence[CaseVolume]) -> Path:
    """The fold's ROI run ``roi_runs/fold<f>``, trained there (default settings) when absent;
    refused when it was trained on other patients than the fold's training patients."""
    from deepgmm.roi.model import load_roi_run
    from deepgmm.roi.train import train_roi

    run = roi_runs / f"fold{fold}"
    wanted = sorted(v.case_id for v in train_volumes)
    if not (run / "config.json").is_file():
        print(f"fold {fold}: training an ROI run in {run}", flush=True)
        train_roi(list(train_volumes), run, progress=False)
    trained_on = sorted(load_roi_run(run).config["train_patients"])
    if trained_on != wanted:
        raise SystemExit(f"error: --roi-runs: {run} was trained on patients "
                         f"{' '.join(trained_on)}, not fold {fold}'s training patients")
    return run


def fold_test_volumes(root: Path, roi: str, run: Path, test_ids: Sequence[str],
                 truth: Mapping[str, CaseVolume]) -> tuple[list[CaseVolume], list[str]]:
    """The fold's test cases with the ROI ``roi`` and the cases skipped (empty ROI)."""
    from deepgmm.roi.source import RoiSource, load_with_roi

    if roi == "gt":
        return [truth[c] for c in test_ids], []
    source = RoiSource(kind="auto", path=str(run))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            volumes = load_with_roi(root, source, list(test_ids), progress=False)
        except Exception as err:  # every test case without ROI
            if not source.skipped:
                raise
            print(f"  no ROI in any test case: {err}", flush=True)
            volumes = []
    for w in caught:
        print(f"  warning: {w.message}", flush=True)
    return volumes, list(source.skipped)


def network_run(cache: Path, method: str, fold: int, seed: int, train: SliceBatch,
                mu: np.ndarray, device: str, precision: str) -> tuple[Path, float]:
    """The fold's trained network (cv_quality's published recipe), trained once and kept
    under ``cache/networks``; returns its folder and the training seconds."""
    from deepgmm.fit.checkpoint import has_checkpoint
    from deepgmm.fit.train import train_network

    run = cache / "networks" / method / f"fold{fold}-seed{seed}"
    done = run / "done.json"
    if done.is_file():
        return run, float(json.loads(done.read_text())["train_seconds"])
    t0 = time.perf_counter()
    res = train_network(train, model=method, lam=1.0, mu_data=mu, seed=seed, device=device,
                        run_dir=run, resume=has_checkpoint(run), progress=False,
                        penalty="batch", precision=precision)
    seconds = time.perf_counter() - t0
    with atomic_path(done) as tmp:
        tmp.write_text(json.dumps({"train_seconds": seconds, "epochs": res.n_epochs,
                                   "train_patients": sorted(set(train.case_ids))}) + "\n")
    return run, seconds


def segment(method: str, batch: SliceBatch, mu: np.ndarray, seed: int, network: Path | None,
            device: str) -> np.ndarray:
    """``(B, K, H, W)`` class probabilities of ``batch`` in μ_data's class order."""
    from deepgmm.device import resolve_device

    if method == "em-svgmm":
        from deepgmm.mixture.em import em_segment

        out = em_segment(batch, "em-svgmm", init="mu_data", mu_data=mu, seed=33 + seed,
                         device=resolve_device(device), smoothing=EM_SMOOTHING)
    else:
        from deepgmm.fit.predict import predict

        out = predict(network, batch, device=device)  # type: ignore[arg-type]
    return out.responsibilities.numpy().astype(np.float32)


def fuse(probs: np.ndarray, batch: SliceBatch, train: SliceBatch, mu_seed: int) -> np.ndarray:
    """``probs`` fused with the class Gaussians of the training batch's μ_data slices (the
    same draw as μ_data; :mod:`deepgmm.mixture.fusion`)."""
    from deepgmm.mixture.fusion import fit_class_gaussians, fuse_probabilities

    gaussians = fit_class_gaussians(train, n_slices=cv.N_MU_SLICES, seed=mu_seed)
    return fuse_probabilities(torch.as_tensor(probs), batch.image, batch.roi,
                              gaussians).numpy()


def cut_or_skip(vols: list, skipped: list[str]) -> list:
    """The volumes whose ROI slices can be cut into :data:`CROP` crops; the others (an ROI
    reaching beyond the crop, e.g. a false detection far from the ventricle) are appended to
    ``skipped`` with a warning, so they score as unsegmented cases rather than stopping the
    fold."""
    from deepgmm.errors import InputError

    kept = []
    for vol in vols:
        try:
            make_batch([vol], selection="roi", crop_size=CROP, normalisation="crop")
        except InputError as err:
            print(f"warning: case {vol.case_id} skipped: {err}", flush=True)
            skipped.append(vol.case_id)
            continue
        kept.append(vol)
    return kept


def run_study(args: argparse.Namespace) -> None:
    from deepgmm.data.dataset import load_dataset
    from deepgmm.data.mu_data import compute_mu_data

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    precision = cv.resolve_precision(args.precision, args.device)
    units = [(m, r, f, s) for m in args.methods for f in args.folds for s in args.seeds
             for r in args.rois if not is_cached(args.cache, unit_key(m, r, f, s))]
    print(f"{len(units)} unit(s) to run, cache {args.cache}, networks in {precision}",
          flush=True)
    if not units:
        return
    volumes = {v.case_id: v for v in load_dataset(args.root)}
    failed = []
    for fold in dict.fromkeys(f for _, _, f, _ in units):
        train_ids, test_ids = split_fold(list(volumes), fold)
        train_vols = [volumes[c] for c in train_ids]
        run = fold_roi_run(args.roi_runs, fold, train_vols)
        train = make_batch(train_vols, crop_size=CROP, normalisation="crop",
                           require_labels=True)
        tests: dict[str, tuple[SliceBatch | None, list[str]]] = {}
        for method, roi, f, seed in units:
            if f != fold:
                continue
            key = unit_key(method, roi, fold, seed)
            base, _, rule = method.partition("+")
            steps = set(rule.split("+"))
            t0 = time.perf_counter()
            try:
                if roi not in tests:
                    vols, skipped = fold_test_volumes(args.root, roi, run, test_ids, volumes)
                    vols = cut_or_skip(vols, skipped)
                    batch = (make_batch(vols, selection="roi", crop_size=CROP,
                                        normalisation="crop") if vols else None)
                    tests[roi] = (batch, skipped)
                batch, skipped = tests[roi]
                mu_seed = cv.mu_seed_for(seed)
                mu = compute_mu_data(train, n_slices=cv.N_MU_SLICES, seed=mu_seed)
                network, train_seconds = (None, 0.0) if base == "em-svgmm" else network_run(
                    args.cache, base, fold, seed, train, mu, args.device, precision)
                t1 = time.perf_counter()
                shapes = {c: volumes[c].shape for c in test_ids}
                if batch is None:
                    pred = {c: np.zeros(s, dtype=np.uint8) for c, s in shapes.items()}
                else:
                    probs = segment(base, batch, mu, seed, network, args.device)
                    if "fuse" in steps:
                        probs = fuse(probs, batch, train, mu_seed)
                    anatomy = next((r for r in ("lv", "lv-dice") if r in steps), "none")
                    pred = predicted_volumes(batch, probs, shapes, anatomy=anatomy,
                                             predicted_roi=roi == "auto")
                scores = {c: case_scores(pred[c], volumes[c].labels) for c in test_ids}
            except Exception:  # one failed unit must not stop the study; it is not cached
                failed.append(key)
                print(f"FAILED {key}:\n{traceback.format_exc()}", flush=True)
                continue
            meta = {"method": method, "description": METHODS[method], "roi": roi,
                    "roi_run": str(run) if roi == "auto" else None, "fold": fold,
                    "seed": seed, "mu_seed": mu_seed, "test_patients": test_ids,
                    "train_patients": train_ids, "roi_skipped": skipped,
                    "n_slices": 0 if batch is None else len(batch),
                    "slices": {c: [int(z) for cc, z in zip(batch.case_ids,
                                                            batch.slice_indices,
                                                            strict=True) if cc == c]
                               for c in test_ids} if batch is not None else {},
                    "cases": scores, "train_seconds": train_seconds,
                    "segment_seconds": time.perf_counter() - t1,
                    "wall_seconds": time.perf_counter() - t0, "precision": precision,
                    "torch_threads": torch.get_num_threads(),
                    "torch_version": torch.__version__,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            save_unit(args.cache, key, pred, meta)
            scar = mean_sd([s[0] for s in scores.values()])[0]
            both = mean_sd([s[1] for s in scores.values()])[0]
            print(f"{method:<9} roi {roi:<4} fold {fold} seed {seed}: scar {scar:.3f}, "
                  f"edema ∪ scar {both:.3f} over {len(scores)} cases, "
                  f"{meta['n_slices']} slices, train {train_seconds:.0f} s, "
                  f"wall {meta['wall_seconds']:.0f} s", flush=True)
    if failed:
        print(f"{len(failed)} unit(s) failed: {failed}", flush=True)
        raise SystemExit(1)


def report(cache: Path) -> str:
    """The table of every finished unit in ``cache`` with a heading naming what it holds."""
    metas = load_metas(cache)
    if not metas:
        raise SystemExit(f"error: --cache {str(cache)!r} holds no finished unit")
    rows = table_rows(metas)
    latest = max(str(m.get("finished", "")) for m in metas)
    head = (f"{len(metas)} unit(s) (method, ROI, fold, seed) from {cache}, the latest "
            f"finished {latest}. Per-case 3-D Dice over all slices of each case, mean ± sd "
            f"over cases; no oracle (class order from μ_data). For reference, the "
            f"{REFERENCE}.")
    return head + "\n\n" + format_table(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=cv.DEFAULT_ROOT)
    parser.add_argument("--roi-runs", type=Path, default=DEFAULT_ROI_RUNS,
                        help="folder of the folds' ROI runs fold1..fold5 (one missing is "
                             "trained there)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=["em-svgmm"])
    parser.add_argument("--rois", nargs="+", choices=list(ROIS), default=list(ROIS))
    parser.add_argument("--folds", nargs="+", type=int, choices=sorted(FOLDS),
                        default=sorted(FOLDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--report", action="store_true", help="print the table from the cache")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        cv._fail(f"--threads must be an integer >= 1, got {args.threads}")
    if not args.report:
        if not (args.root / "train25").is_dir():
            cv._fail(f"--root {str(args.root)!r} holds no MyoPS 2020 data (expected train25/)")
        run_study(args)
    if not args.cache.is_dir():
        cv._fail(f"--cache {str(args.cache)!r} is not a folder")
    text = report(args.cache)
    print(text)
    if args.markdown:
        with atomic_path(args.markdown) as tmp:
            tmp.write_text(text)


if __name__ == "__main__":
    main()
