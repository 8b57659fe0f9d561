"""Speed of single-slice deepG / deepSVG fitting: seconds per slice, alone and in batches.

For each U-Net width / learning rate (``--configs BASE:LR``), mechanism and batch size N,
fits N slices (160 x 160 crops of MyoPS or of the built-in phantom) with
:func:`deepgmm.fit.single.fit_slices` in one call and prints seconds per slice, mean
iterations and mean final NLL. ``reference`` rows run the straightforward implementation of
the same maths for comparison: one ``UNet`` module and one ``torch.optim.AdamW`` per slice,
slices one after the other (the published code's structure, with our log-space loss).

    .venv/bin/python benchmarks/fit_speed.py [--data myops|phantom] [--root DIR]
        [--model deepg] [--sizes 1 8 32] [--configs 32:1e-4 16:1e-4]
        [--mechanisms auto reference] [--devices cpu] [--max-iter 200] [--threads 2]
        [--precisions fp32 bf16]

``--devices cuda`` adds GPU rows where a CUDA device exists (skipped otherwise). Ratios in
the last column are against the first row of the same device and configuration.
``--precisions fp32 bf16`` runs every row in both arithmetic precisions (see
:mod:`deepgmm.fit.precision`; the reference rows under the same ``torch.autocast``).

``--settings`` (names from ``benchmarks/fit_settings.py``: ``default``, ``stop=labels``,
``base_filters=16``, ``channels_last=true``, ``init=RUN,max_iter=10``, ...) runs every
row under each setting, one after the other in the same process; the ``ratio`` column is
then against the first setting's row of the same device, configuration, precision,
mechanism and N (today's default when ``default`` comes first). ``torch.compile`` has no
setting: its default backend compiles generated C++ (CPU) or Triton kernels (GPU) with a
compiler at run time, and the backends without one run the same kernels as eager mode.

The ``GFLOP/s`` column is the U-Net's arithmetic per iteration and slice (forward +
backward, counted by ``torch.utils.flop_counter``) over the measured seconds per iteration;
the footer gives a large single-precision matrix multiply's rate on the same device and
threads as a yardstick, and the time per iteration at that rate.
"""

from __future__ import annotations

import deepgmm  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from fit_settings import fit_arguments, parse_setting

from deepgmm.allocator import tune_cpu_allocator
from deepgmm.data.dataset import load_dataset
from deepgmm.data.slices import make_batch
from deepgmm.fit.precision import PRECISIONS, network_autocast
from deepgmm.fit.single import fit_slices
from deepgmm.fit.stacked import init_state, slice_seed
from deepgmm.fit.warm import load_warm_start
from deepgmm.mixture.likelihood import gmm_nll, svgmm_nll
from deepgmm.nets.unet import UNet
from deepgmm.types import SliceBatch

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "myops2020"


def load_slices(data: str, root: Path, n: int) -> SliceBatch:
    """At least ``n`` all-class slices, 160 x 160, from MyoPS or from a phantom."""
    if data == "myops":
        batch = make_batch(load_dataset(root), crop_size=(160, 160))
    else:
        tmp = Path(tempfile.mkdtemp(prefix="deepgmm-phantom-"))
        from deepgmm.data.phantom import write_phantom

        n_cases = max(2, int(np.ceil(n / 3)) + 1)
        batch = make_batch(load_dataset(write_phantom(tmp, n_cases=n_cases, seed=0)),
                           crop_size=(160, 160))
    if len(batch) < n:
        raise SystemExit(f"only {len(batch)} slices available, {n} asked for")
    return batch


def take(batch: SliceBatch, n: int) -> SliceBatch:
    """The first ``n`` slices."""
    return SliceBatch(image=batch.image[:n], roi=batch.roi[:n],
                      labels=None if batch.labels is None else batch.labels[:n],
                      case_ids=batch.case_ids[:n], slice_indices=batch.slice_indices[:n],
                      crop_origins=batch.crop_origins[:n], full_shapes=batch.full_shapes[:n],
                      sequences=batch.sequences, spacing=batch.spacing[:n],
                      normalisation=batch.normalisation)


def reference_fit(batch: SliceBatch, *, model: str, base: int, lr: float, max_iter: int,
                  device: torch.device, precision: str = "fp32"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Straightforward loop: a module and an optimiser per slice, one slice at a time.

    Returns ``(n_iter (B,), nll (B,))``; same initialisation, loss and stopping rule as
    :func:`fit_slices` (tol 1e-3, min 10 iterations).
    """
    config = {"in_channels": int(batch.image.shape[1]), "n_classes": 4, "depth": 4,
              "base_filters": base}
    autocast = network_autocast(precision, device)
    iters, nlls = [], []
    for i in range(len(batch)):
        net = UNet(**config)
        net.load_state_dict(init_state(config, slice_seed(0, batch.case_ids[i],
                                                          batch.slice_indices[i])))
        net.to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-3)
        x, roi = batch.image[i:i + 1].to(device), batch.roi[i:i + 1].to(device)
        prev = float("inf")
        for it in range(1, max_iter + 1):
            opt.zero_grad()
            with autocast():
                logits = net(x)
            logits = logits.float()
            if model == "deepg":
                nll, _ = gmm_nll(logits.softmax(dim=1), x, roi)
            else:
                nll, _ = svgmm_nll(logits.log_softmax(dim=1), x, roi)
            value = float(nll.detach())
            if (it > 10 and abs(value - prev) < 1e-3) or it == max_iter:
                break
            prev = value
            nll.sum().backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
            opt.step()
        iters.append(it)
        nlls.append(value)
    return np.array(iters), np.array(nlls)


def unet_flops(base: int, in_channels: int, h: int, w: int) -> float:
    """FLOPs of one forward + backward pass of the default-depth U-Net on one slice."""
    from torch.utils.flop_counter import FlopCounterMode

    net = UNet(in_channels, n_classes=4, depth=4, base_filters=base)
    x = torch.randn(1, in_channels, h, w)
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    return float(counter.get_total_flops())


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """Measured GFLOP/s of a ``size x size`` float32 matrix multiply on ``device``."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - t0) / 1e9


def main() -> None:
    tune_cpu_allocator()  # as the command line does (DEEPGMM_MALLOC_TUNING=0: off)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("myops", "phantom"), default="myops")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--model", choices=("deepg", "deepsvg"), default="deepg")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--configs", nargs="+", default=["32:1e-4"],
                        help="BASE_FILTERS:LR pairs")
    parser.add_argument("--mechanisms", nargs="+", default=["auto", "reference"],
                        choices=("auto", "loop", "vmap", "threads", "reference"))
    parser.add_argument("--devices", nargs="+", default=["cpu"], choices=("cpu", "cuda"))
    parser.add_argument("--reference-slices", type=int, default=4,
                        help="slices for the reference rows (they run one at a time)")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=PRECISIONS)
    parser.add_argument("--settings", nargs="+", default=["default"],
                        help="named settings (benchmarks/fit_settings.py)")
    args = parser.parse_args()
    settings = {spec: parse_setting(spec) for spec in args.settings}
    width = max(8, *(len(spec) + 1 for spec in settings))
    torch.set_num_threads(args.threads)

    batch = load_slices(args.data, args.root, max(args.sizes))
    print(f"data: {args.data}, {len(batch)} slices of 160 x 160 available; model "
          f"{args.model}; {torch.get_num_threads()} CPU threads; max {args.max_iter} "
          f"iterations, tol 1e-3")
    print(f"{'device':<7}{'base':>5}{'lr':>8} {'prec':<5}{'setting':<{width}}{'mechanism':<10}"
          f"{'N':>4}{'s/slice':>9}"
          f"{'iter':>7}{'s/iter':>8}{'NLL':>8}{'ratio':>7}{'GFLOP/s':>9}")
    m, h, w = (int(s) for s in batch.image.shape[1:])
    bases = {int(spec.split(":")[0]) for spec in args.configs}
    bases |= {int(v["base_filters"]) for v in settings.values() if "base_filters" in v}
    flops = {base: unet_flops(base, m, h, w) for base in sorted(bases)}
    for device_name in args.devices:
        if device_name == "cuda" and not torch.cuda.is_available():
            print("cuda: no CUDA device here, rows skipped")
            continue
        device = torch.device(device_name)
        for spec in args.configs:
            base_s, lr_s = spec.split(":")
            base, lr = int(base_s), float(lr_s)
            first: dict[tuple[str, str, int], float] = {}
            for precision in args.precisions:
                for spec, setting in settings.items():
                    for mechanism in args.mechanisms:
                        if mechanism == "reference" and setting:
                            continue  # the reference loop has today's settings only
                        sizes = [args.reference_slices] if mechanism == "reference" \
                            else args.sizes
                        for n in sizes:
                            part = take(batch, n)
                            fit_args = fit_arguments(setting, {
                                "lr": lr, "max_iter": args.max_iter,
                                "net_config": {"base_filters": base}})
                            row_base = int(fit_args["net_config"]["base_filters"])
                            t0 = time.perf_counter()
                            if "init" in setting:
                                warm = load_warm_start(setting["init"], part)
                                fit_args["net_config"] = warm.network
                                fit_args["init_state"] = warm.state
                                row_base = int(warm.network["base_filters"])
                            if mechanism == "reference":
                                iters, nll = reference_fit(part, model=args.model, base=base,
                                                           lr=lr, max_iter=args.max_iter,
                                                           device=device, precision=precision)
                            else:
                                fit_args.setdefault("mechanism", mechanism)
                                res = fit_slices(part, model=args.model, device=device,
                                                 concurrent=n, progress=False,
                                                 precision=precision, **fit_args)
                                iters, nll = res.n_iter.numpy(), res.nll.numpy()
                            if device.type == "cuda":
                                torch.cuda.synchronize()
                            per_slice = (time.perf_counter() - t0) / n
                            if row_base not in flops:
                                flops[row_base] = unet_flops(row_base, m, h, w)
                            key = (precision, mechanism, n)
                            ratio = per_slice / first.setdefault(key, per_slice)
                            per_iter = per_slice / iters.mean()
                            print(f"{device_name:<7}{row_base:>5}{lr:>8.0e} {precision:<5}"
                                  f"{spec:<{width}}{mechanism:<10}{n:>4}"
                                  f"{per_slice:>9.2f}{iters.mean():>7.1f}"
                                  f"{per_iter:>8.3f}{nll.mean():>8.3f}{ratio:>7.2f}"
                                  f"{flops[row_base] / per_iter / 1e9:>9.0f}", flush=True)
        peak = matmul_gflops(device)
        print(f"{device_name}: 2048 x 2048 float32 matrix multiply {peak:.0f} GFLOP/s "
              "(yardstick for the GFLOP/s column); "
              + "; ".join(f"U-Net base {b} forward + backward {f / 1e9:.1f} GFLOP per slice "
                          f"({f / 1e9 / peak:.3f} s at that rate)"
                          for b, f in flops.items()), flush=True)


if __name__ == "__main__":
    main()
