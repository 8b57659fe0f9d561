"""Every option of every command reaches the function that uses it, under the right name.

Each command is invoked through typer's CliRunner with every option set to a value other
than its default. The functions at the end of the chain (the methods, data loading, output
writing) are replaced by recorders; the test then checks that each option's value arrived
under the expected parameter name. The options are enumerated from the typer command
objects, so an option added to a command without a route here fails
:func:`test_every_option_has_a_route`. Options that a model does not take are refused.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from helpers import regions
from typer.testing import CliRunner

from deepgmm.cli import app
from deepgmm.fit.warm import WarmStart
from deepgmm.roi.source import RoiSource
from deepgmm.types import CLASS_NAMES, SegmentationResult, SliceBatch

runner = CliRunner()

# Parameter names of functions another part of the code base renames; one place to change.
EM_MODEL = {"em-gmm": "em-gmm", "em-svgmm": "em-svgmm"}  # em_segment's model values
EM_SEED = "seed"  # em_segment's seed keyword
NORMALISATION = "normalisation"  # make_batch's normalisation keyword


class Reached(Exception):
    """Raised by the last recorder of a chain: the command got there, nothing else to do."""


def _fake_result(batch: SliceBatch, method: str) -> SegmentationResult:
    b, _, h, w = batch.image.shape
    k = len(CLASS_NAMES)
    return SegmentationResult(responsibilities=torch.full((b, k, h, w), 1.0 / k),
                              nll=torch.zeros(b), n_iter=torch.zeros(b, dtype=torch.int64),
                              seconds=torch.zeros(b, dtype=torch.float64),
                              means=torch.zeros(b, k, batch.image.shape[1]), method=method)


class Recorder:
    """Replaces library functions by recorders of their arguments (by parameter name)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self.originals: dict[tuple[str, str], Callable[..., Any]] = {}

    def patch(self, module: str, name: str,
              then: Callable[..., Any] | None = None, *, call_real: bool = False) -> None:
        """Record calls of ``module.name``; then return ``then(**arguments)``, the real
        function's result (``call_real``) or raise :class:`Reached`."""
        import importlib

        mod = importlib.import_module(module)
        real = self.originals.setdefault((module, name), getattr(mod, name))
        signature = inspect.signature(real)

        def recorder(*args: Any, **kwargs: Any) -> Any:
            bound = dict(signature.bind(*args, **kwargs).arguments)
            for pname, param in signature.parameters.items():  # flatten **kwargs
                if param.kind is inspect.Parameter.VAR_KEYWORD and pname in bound:
                    bound.update(bound.pop(pname))
            self.calls.setdefault(name, []).append(dict(bound))
            if call_real:
                return real(*args, **kwargs)
            if then is not None:
                return then(**bound)
            raise Reached(name)

        self.monkeypatch.setattr(mod, name, recorder)

    def get(self, target: str) -> Any:
        """``"fit_slices.net_config.depth"`` -> that argument of the first recorded call."""
        name, *path = target.split(".")
        assert name in self.calls, f"{name} was never called (calls: {sorted(self.calls)})"
        value: Any = self.calls[name][0]
        for key in path:
            assert key in value, f"{name} did not receive {key!r}: {sorted(value)}"
            value = value[key]
        return value


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, phantom_root: Path) -> Recorder:
    rec = Recorder(monkeypatch)
    rec.patch("deepgmm.data.dataset", "load_dataset", call_real=True)
    rec.patch("deepgmm.data.dataset", "load_explicit", call_real=True)
    rec.patch("deepgmm.data.slices", "make_batch", call_real=True)
    rec.patch("deepgmm.mixture.em", "em_segment",
              lambda batch, model, **_: _fake_result(batch, model))
    rec.patch("deepgmm.fit.single", "fit_slices",
              lambda batch, model, **_: _fake_result(batch, model))
    rec.patch("deepgmm.fit.predict", "predict", lambda batch, **_: _fake_result(batch, "deepg"))
    rec.patch("deepgmm.fit.predict", "fuse_result", lambda result, **_: result)
    rec.patch("deepgmm.pipeline", "fuse_labelled", call_real=True)
    rec.patch("deepgmm.fit.checkpoint", "read_config", lambda **_: {
        "sequences": ["C0", "DE", "T2"], "train_patients": ["104"], "crop_size": [64, 64],
        "normalisation": "crop", "mu_data": None, "lam": 1.0})
    rec.patch("deepgmm.fit.warm", "load_warm_start", lambda **_: WarmStart(
        state={}, network={}, run_dir="warm-run"))
    rec.patch("deepgmm.report.outputs", "write_segmentation")
    rec.patch("deepgmm.report.html", "render_report")
    rec.patch("deepgmm.fit.train", "train_network")
    rec.patch("deepgmm.data.mu_data", "compute_mu_data", call_real=True)
    rec.patch("deepgmm.data.mu_data", "save_mu_data")
    rec.patch("deepgmm.commands.data", "describe_data", lambda **_: [])
    rec.patch("deepgmm.evaluate.recompute", "evaluate_outputs")
    rec.patch("deepgmm.data.phantom", "write_phantom", lambda **_: phantom_root)
    rec.patch("deepgmm.roi.source", "parse_roi_option", call_real=True)
    rec.patch("deepgmm.roi.source", "load_with_roi", _cases_with_gt_roi)
    rec.patch("deepgmm.cohort.run", "run_cohort")
    rec.patch("deepgmm.roi.source", "explicit_roi", _explicit_roi_from_gt)
    return rec


def _explicit_roi_from_gt(roi: Any, roi_run: Any, images: Any, labels: Any, **_: Any) -> Any:
    """Stands in for one case's ROI source: a mask file as given, else the ground truth's
    left ventricle (no ROI network runs here)."""
    kind = str(roi) if str(roi) in ("gt", "auto") else "file"
    return RoiSource(kind=kind, path=str(roi_run or roi)), (
        None if kind != "file" else Path(roi))


def _cases_with_gt_roi(root: Path, source: Any, patients: Any = None, **_: Any) -> Any:
    """Stands in for the ROI source: the cases with the ground truth's ROI (no ROI network
    runs here)."""
    from deepgmm.data import dataset

    return dataset.load_dataset(root, patients)


@pytest.fixture(scope="module")
def files(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """μ_data files for three and two sequences (from 64 x 64 crops z-scored over the ROI,
    as the invocations below prepare their slices), and one case's images and labels."""
    from deepgmm.data.dataset import load_dataset
    from deepgmm.data.mu_data import compute_mu_data, save_mu_data
    from deepgmm.data.slices import make_batch

    folder = tmp_path_factory.mktemp("options")
    paths = {}
    for key, sequences in (("mu3", ("C0", "DE", "T2")), ("mu2", ("C0", "DE"))):
        volumes = load_dataset(phantom_root, ["101", "102"], sequences=sequences)
        batch = make_batch(volumes, crop_size=(64, 64), normalisation="roi")
        paths[key] = save_mu_data(compute_mu_data(batch, n_slices=2), batch.sequences,
                                  folder / f"{key}.json", crop_size=batch.crop_size,
                                  normalisation=batch.normalisation)
    paths["C0"] = next(phantom_root.rglob("*_101_C0.nii.gz"))
    paths["DE"] = next(phantom_root.rglob("*_101_DE.nii.gz"))
    paths["gt"] = next(phantom_root.rglob("*_101_gd.nii.gz"))
    return paths


def _mu(path: Path) -> np.ndarray:
    from deepgmm.data.mu_data import load_mu_data

    return np.asarray(load_mu_data(path), dtype=np.float32)


CPU = torch.device("cpu")
NO = object()  # expected value: "not None" (the loaded μ_data array is compared separately)


def _routes(root: Path, tmp: Path, files: dict[str, Path]) -> dict[str, list[dict]]:
    """Per command, invocations: ``{param: (argv, [(target, expected), ...])}``.

    ``target`` is ``"function.parameter[.key]"``; every parameter of every command must
    appear in at least one invocation of its command."""
    out = tmp / "out"
    mu3, mu2 = files["mu3"], files["mu2"]
    shared_data = {
        "root": ([str(root)], [("load_dataset.root", root)]),
        "patients": (["--patients", "101", "102"], [("load_dataset.patients", ["101", "102"])]),
        "selection": (["--selection", "roi"], [("make_batch.selection", "roi")]),
        "crop_size": (["--crop", "64"], [("make_batch.crop_size", (64, 64))]),
        "normalisation": (["--normalisation", "roi"], [(f"make_batch.{NORMALISATION}", "roi")]),
    }
    roi_run = tmp / "roi-run"
    shared_roi = {
        "roi": (["--roi", "auto"], [("parse_roi_option.roi", "auto"),
                                    ("load_with_roi.source",
                                     RoiSource(kind="auto", path=str(roi_run)))]),
        "roi_run": (["--roi-run", str(roi_run)], [("parse_roi_option.roi_run", roi_run)]),
    }
    shared_out = {
        "out": (["--out", str(out)], [("write_segmentation.out_dir", out)]),
        "matching": (["--matching", "greedy"], [("write_segmentation.matching", "greedy")]),
        "figures": (["--no-figures"], [("write_segmentation.figures", False)]),
        "naming": (["--naming", "bids"], [("write_segmentation.naming", "bids")]),
        # an explicit --anatomy wins over the recipe's (published: none); the recipe alone
        # is tested in tests/test_anatomy_cli.py
        "anatomy": (["--anatomy", "lv"], [("write_segmentation.anatomy", "lv")]),
        "recipe": (["--recipe", "published"], [("write_segmentation.anatomy", "lv")]),
        "fusion": (["--fusion", "none"], [("fuse_labelled.fusion", "none")]),
    }
    em = {
        **shared_data, **shared_out, **shared_roi,
        "model": (["--model", "em-svgmm"], [("em_segment.model", EM_MODEL["em-svgmm"])]),
        "covariance": (["--covariance", "full"], [("em_segment.covariance", "full")]),
        "init": (["--init", "random"], [("em_segment.init", "random")]),
        "mu_data": (["--mu-data", str(mu3)], [("em_segment.mu_data", NO)]),
        "tol": (["--tol", "0.01"], [("em_segment.tol", 0.01)]),
        "max_iter": (["--max-iter", "7"], [("em_segment.max_iter", 7)]),
        "var_floor": (["--var-floor", "0.01"], [("em_segment.var_floor", 0.01)]),
        "n_kmeans_init": (["--n-kmeans-init", "2"], [("em_segment.n_kmeans_init", 2)]),
        "gmm_tol": (["--gmm-tol", "0.002"], [("em_segment.gmm_tol", 0.002)]),
        "gmm_max_iter": (["--gmm-max-iter", "9"], [("em_segment.gmm_max_iter", 9)]),
        "smoothing": (["--smooth", "1.5"], [("em_segment.smoothing", 1.5)]),
        "device": (["--device", "cpu"], [("em_segment.device", CPU)]),
        "seed": (["--seed", "5"], [(f"em_segment.{EM_SEED}", 5)]),
        "progress": (["--no-progress"], [("write_segmentation.progress", False)]),
    }
    deep = {
        "lam": (["--lam", "0.5"], [("fit_slices.lam", 0.5)]),
        "mu_data": (["--mu-data", str(mu3)], [("fit_slices.mu_data", NO)]),
        "tol": (["--tol", "0.01"], [("fit_slices.tol", 0.01)]),
        "min_iter": (["--min-iter", "3"], [("fit_slices.min_iter", 3)]),
        "max_iter": (["--max-iter", "7"], [("fit_slices.max_iter", 7)]),
        "lr": (["--lr", "0.01"], [("fit_slices.lr", 0.01)]),
        "weight_decay": (["--weight-decay", "0.01"], [("fit_slices.weight_decay", 0.01)]),
        "clip_norm": (["--clip-norm", "5"], [("fit_slices.clip_norm", 5.0)]),
        "concurrent": (["--concurrent", "2"], [("fit_slices.concurrent", 2)]),
        "base_filters": (["--base-filters", "8"], [("fit_slices.net_config.base_filters", 8)]),
        "depth": (["--depth", "2"], [("fit_slices.net_config.depth", 2)]),
        "mechanism": (["--mechanism", "loop"], [("fit_slices.mechanism", "loop")]),
        "precision": (["--precision", "bf16"], [("fit_slices.precision", "bf16")]),
        "device": (["--device", "cpu"], [("fit_slices.device", CPU)]),
        "seed": (["--seed", "5"], [("fit_slices.seed", 5)]),
        "progress": (["--no-progress"], [("fit_slices.progress", False),
                                         ("write_segmentation.progress", False)]),
        "stop": (["--stop", "labels"], [("fit_slices.stop", "labels")]),
        "label_tol": (["--label-tol", "0.02"], [("fit_slices.label_tol", 0.02)]),
        "label_window": (["--label-window", "3"], [("fit_slices.label_window", 3)]),
        "lr_warmup": (["--lr-warmup", "4"], [("fit_slices.lr_warmup", 4)]),
        "lr_half_life": (["--lr-half-life", "20"], [("fit_slices.lr_half_life", 20.0)]),
        "channels_last": (["--channels-last"], [("fit_slices.channels_last", True)]),
    }
    fit = {**shared_data, **shared_out, **shared_roi, **deep,
           "model": (["--model", "deepg"], [("fit_slices.model", "deepg")]),
           "init_run": (["--init", str(tmp / "warm-run")],
                        [("load_warm_start.run_dir", tmp / "warm-run"),
                         ("load_warm_start.net_options", {"n_classes": 4, "depth": 2,
                                                          "base_filters": 8}),
                         ("fit_slices.init_state", NO)])}
    case = {
        "out": shared_out["out"], "figures": shared_out["figures"],
        "matching": shared_out["matching"], "normalisation": shared_data["normalisation"],
        "naming": shared_out["naming"], "anatomy": shared_out["anatomy"],
        "recipe": shared_out["recipe"], "fusion": shared_out["fusion"],
        "crop_size": shared_data["crop_size"],
        "images": (["--image", f"C0={files['C0']}", "--image", f"DE={files['DE']}"],
                   [("load_explicit.images", {"C0": str(files["C0"]), "DE": str(files["DE"])})]),
        "roi": (["--roi", str(files["gt"])], [("load_explicit.roi", files["gt"])]),
        "labels": (["--gt", str(files["gt"])], [("load_explicit.labels", files["gt"])]),
        "case_id": (["--case-id", "p7"], [("load_explicit.case_id", "p7")]),
        "selection": (["--selection", "all-classes"], [("make_batch.selection", "all-classes")]),
    }
    mu2_deep = {**deep, "mu_data": (["--mu-data", str(mu2)], [("fit_slices.mu_data", NO)])}
    mu2_em = {**{k: v for k, v in em.items()
                 if k not in shared_data and k not in shared_out and k not in shared_roi},
              "mu_data": (["--mu-data", str(mu2)], [("em_segment.mu_data", NO)])}
    segment = [
        {**case, **mu2_deep, "model": (["--model", "deepg"], [("fit_slices.model", "deepg")])},
        {**case, **mu2_em,
         "roi": (["--roi", "auto"], [("explicit_roi.roi", "auto")]),
         "roi_run": (["--roi-run", str(roi_run)], [("explicit_roi.roi_run", roi_run)])},
    ]
    train = {
        "root": ([str(root)], [("load_dataset.root", root)]),
        "run_dir": (["--out", str(tmp / "run")], [("train_network.run_dir", tmp / "run")]),
        "model": (["--model", "deepsvg"], [("train_network.model", "deepsvg")]),
        "lam": (["--lam", "0.5"], [("train_network.lam", 0.5)]),
        "mu_data": (["--mu-data", str(mu2)], [("train_network.mu_data", NO)]),
        "train_patients": (["--train-patients", "101", "102"],
                           [("load_dataset.patients", ["101", "102"])]),
        "epochs": (["--epochs", "3"], [("train_network.epochs", 3)]),
        "min_epochs": (["--min-epochs", "2"], [("train_network.min_epochs", 2)]),
        "batch_size": (["--batch-size", "2"], [("train_network.batch_size", 2)]),
        "lr": (["--lr", "0.01"], [("train_network.lr", 0.01)]),
        "weight_decay": (["--weight-decay", "0.01"], [("train_network.weight_decay", 0.01)]),
        "tol": (["--tol", "0.01"], [("train_network.tol", 0.01)]),
        "penalty": (["--penalty", "slice"], [("train_network.penalty", "slice")]),
        "clip_norm": (["--clip-norm", "5"], [("train_network.clip_norm", 5.0)]),
        "label_weight": (["--label-weight", "0.5"], [("train_network.label_weight", 0.5)]),
        "labelled_slices": (["--labelled-slices", "3"],
                            [("train_network.labelled_slices", 3)]),
        "context": (["--context", "distance"], [("train_network.context", "distance")]),
        "potts_weight": (["--potts-weight", "0.5"], [("train_network.potts_weight", 0.5)]),
        "consistency_weight": (["--consistency-weight", "0.5"],
                               [("train_network.consistency_weight", 0.5)]),
        "labelled_seed": (["--labelled-seed", "7"], [("train_network.labelled_seed", 7)]),
        "prior": (["--prior", "all"], [("train_network.prior", "all")]),
        "lam_var": (["--lam-var", "0.25"], [("train_network.lam_var", 0.25)]),
        "lam_weights": (["--lam-weights", "2"], [("train_network.lam_weights", 2.0)]),
        "components_per_class": (["--components-per-class", "2"],
                                 [("train_network.components_per_class", 2)]),
        "augment": (["--no-augment"], [("train_network.augment", False)]),
        "crop_size": (["--crop", "64"], [("make_batch.crop_size", (64, 64))]),
        "normalisation": (["--normalisation", "roi"],
                          [(f"make_batch.{NORMALISATION}", "roi")]),
        # an explicit --normalisation wins over the recipe's (published: crop); the recipe
        # alone is tested in tests/fit/test_train_cli.py
        "recipe": (["--recipe", "published"], [(f"make_batch.{NORMALISATION}", "roi")]),
        "base_filters": (["--base-filters", "8"], [("train_network.base_filters", 8)]),
        "depth": (["--depth", "2"], [("train_network.depth", 2)]),
        "sequences": (["--sequences", "C0,DE"], [("load_dataset.sequences", ("C0", "DE"))]),
        "device": (["--device", "cpu"], [("train_network.device", "cpu")]),
        "precision": (["--precision", "bf16"], [("train_network.precision", "bf16")]),
        "seed": (["--seed", "5"], [("train_network.seed", 5)]),
        "resume": (["--resume"], [("train_network.resume", True)]),
        "progress": (["--no-progress"], [("train_network.progress", False)]),
    }
    run = tmp / "trained"
    predict_common = {
        "runs": ([str(run)], [("predict.run_dir", run)]),
        "root": ([str(root)], [("load_dataset.root", root)]),
        "out": shared_out["out"],
        "naming": shared_out["naming"],
        "anatomy": shared_out["anatomy"], "recipe": shared_out["recipe"],
        "fusion": (["--fusion", "none"], [("fuse_result.fusion", "none")]),
    }
    predict = [{
        **predict_common,
        "patients": (["--patients", "101"], [("load_dataset.patients", ["101"])]),
        "refine": (["--refine", "2"], [("predict.refine", 2)]),
        "refine_lr": (["--refine-lr", "0.01"], [("predict.refine_lr", 0.01)]),
        "refine_lam": (["--refine-lam", "0.5"], [("predict.refine_lam", 0.5)]),
        "chunk_size": (["--chunk-size", "4"], [("predict.chunk_size", 4)]),
        **shared_roi,
        "selection": (["--selection", "roi"], [("make_batch.selection", "roi")]),
        "device": (["--device", "cpu"], [("predict.device", "cpu")]),
        "precision": (["--precision", "bf16"], [("predict.precision", "bf16")]),
        "figures": shared_out["figures"],
        "progress": (["--no-progress"], [("predict.progress", False),
                                         ("write_segmentation.progress", False)]),
    }, {**predict_common, "tta": (["--tta"], [("predict.tta", True)])}]
    from deepgmm.cohort import ClusterOptions

    local = ClusterOptions(workers=3, resources={"GPU": 1.0}, threads=2, resume=True)
    remote = ClusterOptions(scheduler="tcp://head:8786")

    def cluster_routes(base: dict[str, list[str]]) -> list[dict]:
        """The per-case run options of a command, given with the arguments ``base``."""
        given = {name: (argv, []) for name, argv in base.items()}
        return [{**given, **{name: (argv, [("run_cohort.cluster", local)]) for name, argv in (
            ("workers", ["--workers", "3"]), ("resources", ["--resources", "GPU=1"]),
            ("threads", ["--threads", "2"]), ("resume", ["--resume"]))}},
            {**given, "scheduler": (["--scheduler", "tcp://head:8786"],
                                    [("run_cohort.cluster", remote)])}]

    data_base = {"root": [str(root)], "out": ["--out", str(out)]}
    case_base = {"out": ["--out", str(out)], "images": case["images"][0],
                 "roi": case["roi"][0]}
    return {
        "em": [em, *cluster_routes(data_base)], "fit": [fit, *cluster_routes(data_base)],
        "segment": [*segment, *cluster_routes(case_base)], "train": [train],
        "predict": [*predict, *cluster_routes({"runs": [str(run)], **data_base})],
        # a command group: the options of `roi train` / `roi predict` are tested in
        # tests/roi/test_cli_roi.py
        "roi": [],
        "report": [{"out": ([str(tmp)], [("render_report.folder", tmp)])}],
        "phantom": [{
            "out_dir": (["--out", str(out)], [("write_phantom.out_dir", out)]),
            "n_cases": (["--cases", "2"], [("write_phantom.n_cases", 2)]),
            "seed": (["--seed", "5"], [("write_phantom.seed", 5)]),
            "n_slices": (["--slices", "2"], [("write_phantom.n_slices", 2)]),
            "size": (["--size", "64"], [("write_phantom.shape", (64, 64))]),
            "layout": (["--layout", "nnunet"], [("write_phantom.layout", "nnunet")]),
            "noise": (["--noise", "0.1"], [("write_phantom.noise", 0.1)]),
        }],
        "info": [{
            "root": ([str(root)], [("describe_data.root", root)]),
            "patients": (["--patients", "101", "102"],
                         [("describe_data.patients", ["101", "102"])]),
        }],
        "mu-data": [{
            "root": ([str(root)], [("load_dataset.root", root)]),
            "path": (["--out", str(tmp / "mu.json")], [("save_mu_data.path", tmp / "mu.json")]),
            "patients": (["--patients", "101,102,103"],
                         [("load_dataset.patients", ["101", "102", "103"])]),
            "exclude": (["--exclude", "103"], [("load_dataset.exclude", ["103"])]),
            "n_slices": (["--n-slices", "2"], [("compute_mu_data.n_slices", 2)]),
            "seed": (["--seed", "5"], [("compute_mu_data.seed", 5)]),
            "selection": (["--selection", "roi"], [("make_batch.selection", "roi")]),
            "crop_size": shared_data["crop_size"],
            "normalisation": shared_data["normalisation"],
        }],
        "demo": [{
            "out": (["--out", str(out)], [("write_phantom.out_dir", out / "phantom")]),
            "seed": (["--seed", "5"], [("write_phantom.seed", 5), (f"em_segment.{EM_SEED}", 5),
                                       ("train_network.seed", 5)]),
            "epochs": (["--epochs", "12"], [("train_network.epochs", 12)]),
            "progress": (["--no-progress"], [("train_network.progress", False)]),
        }],
        "evaluate": [{
            "root": ([str(root)], [("evaluate_outputs.root", root)]),
            "out_dir": (["--out", str(out)], [("evaluate_outputs.out_dir", out)]),
            "patients": (["--patients", "101"], [("evaluate_outputs.patients", ["101"])]),
            "matching": (["--matching", "greedy"], [("evaluate_outputs.matching", "greedy")]),
            "roi": (["--roi", "auto"], [("evaluate_outputs.roi", "auto")]),
            "roi_run": (["--roi-run", str(roi_run)], [("evaluate_outputs.roi_run", roi_run)]),
        }],
    }


def _command_params() -> dict[str, list[str]]:
    """Command name -> its parameters' names, from the typer command objects."""
    group = typer.main.get_command(app)
    return {name: [p.name for p in cmd.params if p.name is not None]
            for name, cmd in group.commands.items()}  # type: ignore[attr-defined]


def _argv(command: str, invocation: dict) -> list[str]:
    """Arguments first, in the command's order, then the options."""
    group = typer.main.get_command(app)
    params = group.commands[command].params  # type: ignore[attr-defined]
    positional = [invocation[p.name][0] for p in params
                  if isinstance(p, typer.core.TyperArgument)]
    options = [argv for name, (argv, _) in invocation.items()
               if not any(p.name == name and isinstance(p, typer.core.TyperArgument)
                          for p in params)]
    return [command, *[a for part in positional for a in part],
            *[a for part in options for a in part]]


def test_every_option_has_a_route(phantom_root: Path, tmp_path: Path,
                                  files: dict[str, Path]) -> None:
    routes = _routes(phantom_root, tmp_path, files)
    params = _command_params()
    assert set(routes) == set(params)
    for command, names in params.items():
        routed = set().union(*(inv.keys() for inv in routes[command]))
        assert set(names) - routed == set(), f"{command}: options without a route"
        assert routed - set(names) == set(), f"{command}: routes of options it lacks"


def _invocations() -> list[tuple[str, int]]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        fake = Path(tmp)
        routes = _routes(fake, fake, {k: fake / k for k in ("mu3", "mu2", "C0", "DE", "gt")})
    return [(command, i) for command, invs in routes.items() for i in range(len(invs))]


@pytest.mark.parametrize(("command", "index"), _invocations())
def test_every_option_reaches_its_function(command: str, index: int, recorder: Recorder,
                                           phantom_root: Path, tmp_path: Path,
                                           files: dict[str, Path]) -> None:
    invocation = _routes(phantom_root, tmp_path, files)[command][index]
    if command == "demo":  # it writes EM-SVGMM's outputs before it trains deepSVG
        recorder.patch("deepgmm.report.outputs", "write_segmentation", lambda **_: {
            "dice": dict.fromkeys(CLASS_NAMES, 0.0), "seconds_per_slice": 0.0})
    result = runner.invoke(app, _argv(command, invocation))
    if not isinstance(result.exception, Reached):
        assert result.exit_code == 0, (result.output, result.exception)
    for name, (argv, checks) in invocation.items():
        for target, expected in checks:
            got = recorder.get(target)
            if expected is NO:
                assert got is not None, (name, target)
            else:
                assert got == expected, (name, argv, target, got)
    if "mu_data" in invocation:  # the μ_data file's means, not just some array
        target = invocation["mu_data"][1][0][0]
        path = Path(invocation["mu_data"][0][1])
        np.testing.assert_array_equal(np.asarray(recorder.get(target), dtype=np.float32),
                                      _mu(path))


def _one_error_line(result, *fragments: str, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize(("argv", "flag", "model"), [
    (["segment", "--model", "em-gmm", "--lam", "1"], "--lam", "em-gmm"),
    (["segment", "--model", "em-svgmm", "--lr", "0.1"], "--lr", "em-svgmm"),
    (["segment", "--model", "em-gmm", "--concurrent", "2"], "--concurrent", "em-gmm"),
    (["segment", "--model", "deepg", "--smooth", "4"], "--smooth", "deepg"),
    (["segment", "--model", "deepsvg", "--covariance", "full"], "--covariance", "deepsvg"),
    (["segment", "--model", "deepsvg", "--init", "random"], "--init", "deepsvg"),
    (["segment", "--model", "em-gmm", "--gmm-tol", "0.1"], "--gmm-tol", "em-gmm"),
    (["em", "{root}", "--model", "em-gmm", "--smooth", "2"], "--smooth", "em-gmm"),
    (["em", "{root}", "--model", "em-gmm", "--gmm-max-iter", "3"], "--gmm-max-iter",
     "em-gmm"),
])
def test_an_inapplicable_option_is_refused(argv: list[str], flag: str, model: str,
                                           phantom_root: Path, tmp_path: Path,
                                           files: dict[str, Path]) -> None:
    out = tmp_path / "out"
    case = ([] if argv[0] != "segment" else
            ["--image", f"C0={files['C0']}", "--roi", str(files["gt"])])
    args = [a.format(root=phantom_root) for a in argv] + case + ["--out", str(out)]
    line = _one_error_line(runner.invoke(app, args), model)
    assert re.search(rf"option {re.escape(flag)} does not apply", line), line
    assert not out.exists()


def test_a_model_outside_the_command_family_is_refused(phantom_root: Path,
                                                       tmp_path: Path) -> None:
    for command, model in (("em", "deepsvg"), ("fit", "em-gmm"), ("em", "svgmm")):
        result = runner.invoke(app, [command, str(phantom_root), "--model", model,
                                     "--out", str(tmp_path / "out")])
        _one_error_line(result, "--model", repr(model))
    assert not (tmp_path / "out").exists()


def test_the_api_refuses_inapplicable_options_before_reading_data(tmp_path: Path) -> None:
    from deepgmm.errors import InputError
    from deepgmm.pipeline import run_method, segment_case, segment_dataset

    with pytest.raises(InputError, match=r"option 'lam' does not apply to model 'em-gmm'"):
        segment_dataset(tmp_path / "no-such-folder", tmp_path / "out", model="em-gmm",
                        lam=1.0)
    with pytest.raises(InputError, match=r"options 'covariance', 'smoothing' do not apply to "
                                         r"model 'deepsvg'"):
        segment_case({"C0": tmp_path / "c0.nii.gz"}, tmp_path / "roi.nii.gz", tmp_path / "o",
                     model="deepsvg", smoothing=1.0, covariance="full")
    batch = regions.region_batch(1, n_regions=2, size=16)
    with pytest.raises(InputError, match="'max_iters' does not apply to model 'deepg'"):
        run_method(batch, "deepg", options={"max_iters": 3})  # a typo: not a TypeError
    assert not (tmp_path / "out").exists()


def test_a_failed_fit_exits_3_naming_the_flag(phantom_root: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from deepgmm.errors import FitError

    def diverge(*_: Any, **__: Any) -> None:
        raise FitError("the NLL became non-finite at iteration 3 (lr 0.5); try a lower lr or "
                       "max_iter", params=("lr", "max_iter"))

    monkeypatch.setattr("deepgmm.fit.single.fit_slices", diverge)
    result = runner.invoke(app, ["fit", str(phantom_root), "--patients", "101", "--crop", "64",
                                 "--out", str(tmp_path / "out"), "--no-progress"])
    line = _one_error_line(result, code=3)
    assert line == ("error: the NLL became non-finite at iteration 3 (--lr 0.5); try a lower "
                    "--lr or --max-iter")


@pytest.mark.parametrize(("message", "params", "expected"), [
    ("The 'max_iter' parameter of fit_slices must be an int in the range [1, inf). "
     "Got 0 instead.", ("max_iter",),
     "--max-iter must be an int in the range [1, inf). Got 0 instead."),
    ("min_iter (5) must not exceed max_iter (2)", ("min_iter", "max_iter"),
     "--min-iter (5) must not exceed --max-iter (2)"),
    ("lam > 0 needs mu_data (class means)", ("lam", "mu_data"),
     "--lam > 0 needs --mu-data (class means)"),
    ("option 'lam' does not apply to model 'em-gmm' (it takes tol, n_components)",
     ("lam", "model", "tol", "n_components"),
     "option --lam does not apply to --model 'em-gmm' (it takes --tol, n_components)"),
    ("the tolerance tol of gmm_tol", ("tol",), "the tolerance --tol of gmm_tol"),
    ("lam is named but not listed", (), "lam is named but not listed"),
])
def test_parameter_names_become_flags(message: str, params: tuple[str, ...],
                                      expected: str) -> None:
    from deepgmm.cli import flag_message
    from deepgmm.errors import InputError

    flags = {"max_iter": "--max-iter", "min_iter": "--min-iter", "lam": "--lam",
             "mu_data": "--mu-data", "model": "--model", "tol": "--tol",
             "gmm_tol": "--gmm-tol"}
    assert flag_message(InputError(message, params=params), flags) == expected


def test_command_flags_are_read_from_the_declarations() -> None:
    from deepgmm.cli import command_flags
    from deepgmm.commands.data import phantom_command
    from deepgmm.commands.segment import em_command, segment_command
    from deepgmm.commands.train import predict_command, train_command

    em = command_flags(em_command)
    assert (em["smoothing"], em["crop_size"], em["max_iter"], em["root"]) == (
        "--smooth", "--crop", "--max-iter", "ROOT")
    assert em["figures"] == "--figures" and em["out"] == "--out"
    assert command_flags(segment_command)["labels"] == "--gt"
    assert command_flags(train_command)["run_dir"] == "--out"
    assert command_flags(predict_command)["runs"] == "RUN..."
    assert command_flags(phantom_command)["n_cases"] == "--cases"
