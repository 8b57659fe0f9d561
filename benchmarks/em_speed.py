"""EM-GMM on the MyoPS all-class slices: ours (all slices at once) vs scikit-learn.

scikit-learn's ``GaussianMixture`` (what the published baseline used) runs slice by slice
on each slice's ROI pixels; ours fits one mixture per slice for all slices in one batched
loop. Same hyperparameters on both sides: K=4, diagonal covariance, tol 2e-4, at most 100
iterations, seed 33 (scikit-learn's ``random_state``), the same variance floor
(``reg_covar``). Both work in float32.

    .venv/bin/python benchmarks/em_speed.py [--root ../shared/data/myops2020]
        [--device cpu|cuda] [--init random kmeans] [--threads N]

Prints: implementation, seconds in total, ms per slice, mean NLL over slices (lower is
better), how many slices converged, speed-up over scikit-learn with the same init.
Needs the MyoPS 2020 training data; exits with a message when they are absent.
"""

from __future__ import annotations

import deepgmm  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from deepgmm.allocator import tune_cpu_allocator
from deepgmm.mixture import GaussianMixtureEM, SpatiallyVariantEM

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "myops2020"


def load_batch(root: Path):
    """All-class MyoPS slices, cropped 160x160 and z-scored, as a SliceBatch."""
    from deepgmm.data.dataset import load_dataset
    from deepgmm.data.slices import make_batch

    return make_batch(load_dataset(root), selection="all-classes", crop_size=160)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(cls, image: torch.Tensor, roi: torch.Tensor, device: torch.device, init: str,
             var_floor: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Seconds, per-slice NLL and converged flags of one batched fit (after a warm-up)."""
    kwargs = dict(init=init, seed=33, var_floor=var_floor, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cls(**kwargs).fit(image[:2], roi[:2])  # warm-up: allocator, kernels
        sync(device)
        start = time.perf_counter()
        est = cls(**kwargs).fit(image, roi)
        nll = -est.score(image, roi)
        sync(device)
        seconds = time.perf_counter() - start
    return seconds, nll.cpu().numpy(), est.converged_.cpu().numpy()


def run_sklearn(image: np.ndarray, roi: np.ndarray, init: str, var_floor: float,
                ) -> tuple[float, np.ndarray, np.ndarray]:
    """Seconds, per-slice NLL and converged flags of GaussianMixture slice by slice."""
    nll, converged = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        for b in range(image.shape[0]):
            x = image[b][:, roi[b]].T  # (N, M) float32
            gm = GaussianMixture(4, covariance_type="diag", init_params=init, tol=2e-4,
                                 max_iter=100, random_state=33, reg_covar=var_floor).fit(x)
            nll.append(-gm.score(x))
            converged.append(gm.converged_)
        seconds = time.perf_counter() - start
    return seconds, np.array(nll), np.array(converged)


def main() -> None:
    tune_cpu_allocator()  # as the command line does (DEEPGMM_MALLOC_TUNING=0: off)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--init", nargs="+", default=["random", "kmeans"],
                        choices=["random", "kmeans"])
    parser.add_argument("--var-floor", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: keep)")
    args = parser.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"MyoPS 2020 data not found at {args.root.resolve()}: "
                         "pass --root; skipping the EM benchmark")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available here: run with --device cpu")
    batch = load_batch(args.root)
    image, roi = batch.image, batch.roi
    b = len(batch)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} torch threads"
    print(f"EM-GMM, {b} MyoPS all-class slices {tuple(image.shape[2:])}, "
          f"ROI {int(roi.sum(dim=(1, 2)).min())}-{int(roi.sum(dim=(1, 2)).max())} pixels, "
          f"K=4 diag, var floor {args.var_floor:g}; ours on {where}")
    header = (f"{'implementation':<44} {'total s':>8} {'ms/slice':>9} {'mean NLL':>9} "
              f"{'converged':>9} {'speed-up':>9}")
    print(header)
    image_np, roi_np = image.numpy(), roi.numpy()
    for init in args.init:
        sk_s, sk_nll, sk_conv = run_sklearn(image_np, roi_np, init, args.var_floor)
        ours_s, ours_nll, ours_conv = run_ours(GaussianMixtureEM, image, roi, device, init,
                                               args.var_floor)
        for label, sec, nll, conv in (
                (f"scikit-learn GaussianMixture, init={init}", sk_s, sk_nll, sk_conv),
                (f"GaussianMixtureEM (ours, batched), init={init}", ours_s, ours_nll,
                 ours_conv)):
            print(f"{label:<44} {sec:8.2f} {1e3 * sec / b:9.1f} {nll.mean():9.4f} "
                  f"{int(conv.sum()):>5}/{b:<3} {sk_s / sec:8.1f}x")
        diff = ours_nll - sk_nll
        print(f"  per-slice NLL, ours - scikit-learn: mean {diff.mean():+.4f}, "
              f"median {np.median(diff):+.4f}, ours lower on {(diff < 0).sum()}/{b} slices")
    sv_s, sv_nll, sv_conv = run_ours(SpatiallyVariantEM, image, roi, device, "kmeans",
                                     args.var_floor)
    print(f"{'SpatiallyVariantEM (ours), init=kmeans':<44} {sv_s:8.2f} {1e3 * sv_s / b:9.1f} "
          f"{sv_nll.mean():9.4f} {int(sv_conv.sum()):>5}/{b:<3} {'':>9}  (NLL_V)")
    print("speed-up = scikit-learn seconds / this row's seconds, same init")


if __name__ == "__main__":
    main()
