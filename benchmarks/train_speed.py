"""Speed of training one network on many slices, and of prediction, ours vs loop references.

Training epoch, same network, optimiser, mini-batches and augmentation maths:

- ours: :func:`deepgmm.fit.train.train_network` (slices kept on the device, one batched
  augmentation call and one log-space loss per mini-batch, one host sync per epoch);
- loop reference: the way the published code is organised: slices stay on the host and
  each mini-batch is copied to the device, augmentation runs one slice at a time, the loss
  is the published probability-space formula with loops over classes K and sequences M
  (``loop_gmm_nll`` of ``benchmarks/nll_speed.py``), and the loss is read back every step.

Prediction: :func:`deepgmm.fit.predict.predict` with 16 slices per forward pass vs one
slice at a time. Optionally (``--converge``) one full training run with the published
settings (max 100 epochs, min 10, tol 5e-3) gives the time to convergence.

    .venv/bin/python benchmarks/train_speed.py [--root DATA] [--device cpu cuda]
        [--epochs 1] [--repeats 3] [--base-filters 32] [--crop 160] [--converge] [--bf16]

``--bf16`` adds rows for ours with the network in bfloat16 (``precision="bf16"``, see
:mod:`deepgmm.fit.precision`), timed in the same interleaved repeats.

Without ``--root`` a phantom of 20 cases (60 slices, as many as the paper's training set)
is written to a temporary folder. Prints one table per device.
"""

from __future__ import annotations

import deepgmm  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nll_speed import loop_gmm_nll  # noqa: E402

from deepgmm.allocator import tune_cpu_allocator
from deepgmm.data.augment import AugmentConfig, augment_batch  # noqa: E402
from deepgmm.data.dataset import load_dataset  # noqa: E402
from deepgmm.data.mu_data import compute_mu_data  # noqa: E402
from deepgmm.data.myops import MYOPS_DEV_TEST  # noqa: E402
from deepgmm.data.slices import make_batch  # noqa: E402
from deepgmm.device import resolve_device  # noqa: E402
from deepgmm.fit.predict import predict  # noqa: E402
from deepgmm.fit.train import train_network  # noqa: E402
from deepgmm.mixture.likelihood import m_step, mu_penalty  # noqa: E402
from deepgmm.nets.unet import UNet  # noqa: E402
from deepgmm.types import SliceBatch  # noqa: E402


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def loop_epochs(batch: SliceBatch, *, epochs: int, batch_size: int, lr: float,
                base_filters: int, mu: torch.Tensor, dev: torch.device,
                seed: int = 0) -> float:
    """Seconds per epoch of the loop reference (see the module docstring)."""
    torch.manual_seed(seed)
    net = UNet(batch.image.shape[1], base_filters=base_filters).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(seed)
    cfg = AugmentConfig()
    mu = mu.to(dev)
    n = len(batch)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            parts = [augment_batch(batch.image[i:i + 1], batch.roi[i:i + 1], None,
                                   generator=gen, config=cfg)
                     for i in order[start:start + batch_size].tolist()]
            img = torch.cat([p[0] for p in parts]).to(dev)
            roi = torch.cat([p[1] for p in parts]).to(dev)
            resp = torch.softmax(net(img), dim=1)
            nll = loop_gmm_nll(resp, img, roi)
            means = m_step(resp, img, roi).means
            loss = (nll + mu_penalty(means, mu)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
    sync(dev)
    return (time.perf_counter() - t0) / epochs


def main() -> None:
    tune_cpu_allocator()  # as the command line does (DEEPGMM_MALLOC_TUNING=0: off)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--device", nargs="+", default=["cpu"])
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base-filters", type=int, default=32)
    parser.add_argument("--crop", type=int, default=160)
    parser.add_argument("--converge", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="add bfloat16 rows")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            from deepgmm.data.phantom import write_phantom

            root = write_phantom(Path(tmp) / "phantom", n_cases=20, seed=0)
            source = "phantom, 20 cases"
            volumes = load_dataset(root)
        else:
            volumes = [v for v in load_dataset(args.root) if v.case_id not in MYOPS_DEV_TEST]
            source = f"{args.root}, {len(volumes)} training cases"
        batch = make_batch(volumes, crop_size=(args.crop, args.crop), require_labels=True)
        mu = torch.as_tensor(compute_mu_data(batch), dtype=torch.float32)
        print(f"data: {source}, {len(batch)} slices of {args.crop} x {args.crop}, "
              f"U-Net base {args.base_filters}, batch 4, deepG, lam 1, augmentation on; "
              f"torch threads {torch.get_num_threads()}")
        for name in args.device:
            dev = resolve_device(name)
            run = Path(tmp) / f"run-{dev.type}"
            common = {"model": "deepg", "lam": 1.0, "mu_data": mu,
                      "base_filters": args.base_filters, "device": dev, "progress": False}
            # Warm-up both (first calls pay for allocations and kernel selection); the
            # warm-up run of ours is the checkpoint used for the prediction timings.
            train_network(batch, epochs=1, min_epochs=1, run_dir=run, **common)
            loop_epochs(batch, epochs=1, batch_size=4, lr=1e-3,
                        base_filters=args.base_filters, mu=mu, dev=dev)
            if args.bf16:
                train_network(batch, epochs=1, min_epochs=1, run_dir=Path(tmp) / "run-bf16",
                              precision="bf16", **common)
            ours_t, ref_t, half_t = [], [], []
            for rep in range(args.repeats):  # interleaved: all see the same machine load
                res = train_network(batch, epochs=args.epochs, min_epochs=args.epochs,
                                    seed=rep, **common)
                ours_t.append(sum(res.config["history"]["seconds"]) / args.epochs)
                if args.bf16:
                    res = train_network(batch, epochs=args.epochs, min_epochs=args.epochs,
                                        seed=rep, precision="bf16", **common)
                    half_t.append(sum(res.config["history"]["seconds"]) / args.epochs)
                ref_t.append(loop_epochs(batch, epochs=args.epochs, batch_size=4, lr=1e-3,
                                         base_filters=args.base_filters, mu=mu, dev=dev,
                                         seed=rep))
            ours, ref = statistics.median(ours_t), statistics.median(ref_t)
            print(f"\ntraining, device {dev} (seconds per epoch: median of {args.repeats} "
                  f"interleaved repeats of {args.epochs} epoch(s), after a warm-up)")
            print(f"{'implementation':<40}{'s/epoch':>10}{'slices/s':>10}{'speed-up':>10}"
                  f"{'min s/epoch':>13}")
            print(f"{'loop reference':<40}{ref:>10.2f}{len(batch) / ref:>10.1f}{1.0:>10.2f}"
                  f"{min(ref_t):>13.2f}")
            print(f"{'ours (train_network)':<40}{ours:>10.2f}{len(batch) / ours:>10.1f}"
                  f"{ref / ours:>10.2f}{min(ours_t):>13.2f}")
            if half_t:
                half = statistics.median(half_t)
                print(f"{'ours, bf16':<40}{half:>10.2f}{len(batch) / half:>10.1f}"
                      f"{ref / half:>10.2f}{min(half_t):>13.2f}")

            predict(run, batch, device=dev, chunk_size=16)  # warm-up
            timings = {}
            variants = [(1, "fp32"), (16, "fp32")] + ([(16, "bf16")] if args.bf16 else [])
            for chunk, precision in variants:
                sync(dev)
                t0 = time.perf_counter()
                predict(run, batch, device=dev, chunk_size=chunk, precision=precision)
                sync(dev)
                timings[chunk, precision] = time.perf_counter() - t0
            print(f"\nprediction, device {dev} ({len(batch)} slices, checkpoint loading "
                  "included)")
            print(f"{'implementation':<40}{'seconds':>10}{'slices/s':>10}{'speed-up':>10}")
            labels = {(1, "fp32"): "one slice per forward pass",
                      (16, "fp32"): "ours, 16 slices per forward pass",
                      (16, "bf16"): "ours, 16 slices per pass, bf16"}
            base = timings[1, "fp32"]
            for key, seconds in timings.items():
                print(f"{labels[key]:<40}{seconds:>10.2f}"
                      f"{len(batch) / seconds:>10.1f}{base / seconds:>10.2f}")

            if args.converge:
                t0 = time.perf_counter()
                full = train_network(batch, model="deepg", lam=1.0, mu_data=mu,
                                     base_filters=args.base_filters, device=dev,
                                     progress=False)
                total = time.perf_counter() - t0
                print(f"\ntime to convergence, device {dev}: {full.n_epochs} epochs, "
                      f"{total:.1f} s ({'converged' if full.converged else 'epoch limit'}), "
                      f"final epoch NLL {full.nll_history[-1]:.3f}")


if __name__ == "__main__":
    main()
