"""Every GPU row of the benchmarks in one run, one table (driven by ``benchmarks/gpu_rows.sh``).

Rows, on one device:

1. per-slice deepSVG fitting of all all-class slices at once (79 MyoPS slices; published
   stopping rule, fresh network per slice, all in one batch);
2. training deepSVG on the 20 training patients (all but 109 114 117 120 122) to
   convergence (published settings: λ = 1, μ_data from 10 training slices, seed 42);
3. prediction throughput of that network on all slices (slices per second);
4. the deepG / deepSVG losses' forward + backward pass on 16 slices (ms per call);
5. EM-GMM and EM-SVGMM (k-means initialisation) on all slices at once.

    python benchmarks/gpu_rows.py [--root ../shared/data/myops2020] [--device cuda]
    python benchmarks/gpu_rows.py --smoke      # tiny sizes on the CPU, a phantom, seconds

``--smoke`` runs every row with a phantom of 3 cases, 64 x 64 crops, a 2-level U-Net with
4 filters, a few iterations and no augmentation, on the CPU: it checks that the rows run,
not how fast.
"""

from __future__ import annotations

import deepgmm  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from deepgmm.data.dataset import load_dataset
from deepgmm.data.mu_data import compute_mu_data
from deepgmm.data.myops import MYOPS_DEV_TEST
from deepgmm.data.slices import make_batch
from deepgmm.fit.loss import pack_slices
from deepgmm.fit.predict import predict
from deepgmm.fit.single import fit_slices
from deepgmm.fit.train import train_network
from deepgmm.mixture.em import em_segment
from deepgmm.mixture.likelihood import gmm_nll_packed, svgmm_nll_packed
from deepgmm.types import SliceBatch

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "myops2020"


def split(batch: SliceBatch, test_ids: set[str]) -> SliceBatch:
    """The slices of ``batch`` whose case is not in ``test_ids``."""
    keep = [i for i, c in enumerate(batch.case_ids) if str(c) not in test_ids]
    index = torch.tensor(keep)
    return SliceBatch(image=batch.image[index], roi=batch.roi[index],
                      labels=None if batch.labels is None else batch.labels[index],
                      case_ids=[batch.case_ids[i] for i in keep],
                      slice_indices=[batch.slice_indices[i] for i in keep],
                      crop_origins=batch.crop_origins[keep],
                      full_shapes=batch.full_shapes[keep], sequences=batch.sequences,
                      spacing=batch.spacing[keep], normalisation=batch.normalisation)


class Timer:
    """Wall seconds of a block, the device synchronised at both ends."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, 0.0

    def __enter__(self) -> Timer:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0


def nll_ms(device: torch.device, crop: int, repeats: int) -> dict[str, float]:
    """Median ms of one forward + backward pass of each loss on 16 slices (K 4, M 3)."""
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(16, 3, crop, crop, generator=gen).to(device)
    yy, xx = torch.meshgrid(torch.arange(crop), torch.arange(crop), indexing="ij")
    disc = ((yy - crop / 2) ** 2 + (xx - crop / 2) ** 2) < (crop / 4) ** 2
    roi = disc.expand(16, crop, crop).to(device)
    packed = pack_slices(image, roi, 4)
    logits = torch.randn(16, 4, crop, crop, generator=gen).to(device)
    out = {}
    for name in ("deepG", "deepSVG"):
        times = []
        for _ in range(repeats + 2):
            leaf = logits.clone().requires_grad_(True)
            with Timer(device) as t:
                if name == "deepG":
                    nll, _ = gmm_nll_packed(leaf.softmax(dim=1), packed, validate=False)
                else:
                    nll, _ = svgmm_nll_packed(leaf.log_softmax(dim=1), packed, validate=False)
                nll.sum().backward()
            times.append(t.seconds)
        out[name] = 1e3 * statistics.median(times[2:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--device", default=None, help="default: cuda, cpu with --smoke")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    args = parser.parse_args()
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: no CUDA device here (torch "
                         f"{torch.__version__}); use --smoke for the CPU check")
    if args.smoke:
        from deepgmm.data.phantom import write_phantom

        root = write_phantom(Path(tempfile.mkdtemp(prefix="deepgmm-gpu-rows-")), n_cases=3,
                             seed=0)
        crop, net = 64, {"depth": 2, "base_filters": 4}
        fit_iter, train_epochs, repeats = {"min_iter": 1, "max_iter": 3}, 1, 2
        augment = False
    else:
        root, crop, net = args.root, 160, {"depth": 4, "base_filters": 32}
        fit_iter, train_epochs, repeats = {}, 100, 20
        augment = True
    batch = make_batch(load_dataset(root), crop_size=(crop, crop), require_labels=True)
    test_ids = set(MYOPS_DEV_TEST) & set(map(str, batch.case_ids)) or {str(batch.case_ids[-1])}
    train = split(batch, test_ids)
    n = len(batch)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}); torch {torch.__version__}; {n} slices of {crop} x {crop}"
          f" from {root}; training slices {len(train)}", flush=True)
    rows: list[tuple[str, str, str]] = []

    def row(what: str, value: str, detail: str) -> None:
        rows.append((what, value, detail))
        print(f"  {what}: {value} ({detail})", flush=True)

    with Timer(device) as t:
        res = fit_slices(batch, model="deepsvg", device=device, concurrent=n,
                         net_config=net, progress=False, **fit_iter)
    row(f"per-slice deepSVG fit, {n} slices at once", f"{t.seconds / n:.3f} s/slice",
        f"{t.seconds:.1f} s in all, {res.n_iter.double().mean():.1f} iterations per slice")

    run = Path(tempfile.mkdtemp(prefix="deepgmm-gpu-run-")) / "run"
    mu = compute_mu_data(train, min(10, len(train)), 42)
    with Timer(device) as t:
        trained = train_network(train, model="deepsvg", lam=1.0, mu_data=mu,
                                epochs=train_epochs, min_epochs=min(10, train_epochs),
                                device=device, run_dir=run, progress=False,
                                augment=augment, **net)
    row(f"deepSVG training on {len(train)} slices", f"{t.seconds:.1f} s",
        f"{trained.n_epochs} epochs, converged {trained.converged}, "
        f"{t.seconds / trained.n_epochs:.2f} s per epoch")

    predict(run, batch, device=device)  # warm-up
    with Timer(device) as t:
        for _ in range(repeats):
            predict(run, batch, device=device)
    row("prediction", f"{repeats * n / t.seconds:.0f} slices/s",
        f"{repeats} passes over {n} slices, 16 per forward pass")

    for loss, ms in nll_ms(device, crop, repeats).items():
        row(f"{loss} NLL forward + backward, 16 slices", f"{ms:.2f} ms", "median")

    for model in ("em-gmm", "em-svgmm"):
        with Timer(device) as t:
            em = em_segment(batch, model=model, init="kmeans", device=device)
        row(f"{model.upper()} (k-means init), {n} slices at once", f"{t.seconds:.2f} s",
            f"{em.n_iter.double().mean():.1f} iterations per slice")

    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'row':<{width}}  {'value':>16}  detail")
    for what, value, detail in rows:
        print(f"{what:<{width}}  {value:>16}  {detail}")


if __name__ == "__main__":
    main()
