"""Speed of the deepG / deepSVG losses: forward + backward, ours vs a loop implementation.

The reference is a straightforward implementation of the same formulas as the published
code computes them: densities in probability space, one loop over classes K and one over
sequences M, ``+1e-10`` added to the variances and inside the log (batched over slices).

    .venv/bin/python benchmarks/nll_speed.py [--device cpu|cuda] [--repeats 20]

Prints one table per device: implementation, ms per call (median), speed-up over the
reference. Timed: the loss's forward and backward pass from its input (responsibilities
or log-responsibilities, leaves of the graph), for 16 slices with a disc-shaped ROI of
left-ventricle size. The extra reference row runs the same loops on the ROI pixels only,
to separate what packing the ROI gains from what vectorising gains; the ``autograd`` row
differentiates through the formulas instead of using the closed-form backward pass.
"""

from __future__ import annotations

import deepgmm  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from deepgmm.mixture import gmm_nll, svgmm_nll
from deepgmm.mixture.likelihood import gather_roi, pack_roi

B, K, M, H, W = 16, 4, 3, 160, 160


def loop_gmm_nll(resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor,
                 spatially_variant: bool = False) -> torch.Tensor:
    """Reference: the published formulas in probability space, loops over K and M.

    Args:
        resp: ``(B, K, H, W)`` softmax probabilities.
        image: ``(B, M, H, W)``.
        roi: ``(B, H, W)`` bool.

    Returns:
        ``(B,)`` NLL (GMM) or NLL_V (spatially variant).
    """
    mask = roi.to(image.dtype)
    n_roi = mask.sum(dim=(1, 2))
    mix = torch.zeros_like(mask)
    for k in range(resp.shape[1]):
        p = resp[:, k] * mask
        n_k = p.sum(dim=(1, 2))
        dens = torch.ones_like(mask)
        for m in range(image.shape[1]):
            x = image[:, m]
            mu = (p * x).sum(dim=(1, 2)) / n_k
            var = (p * (x - mu[:, None, None]) ** 2).sum(dim=(1, 2)) / n_k + 1e-10
            dens = dens * torch.exp(-((x - mu[:, None, None]) ** 2) / (2 * var[:, None, None])) \
                / torch.sqrt(2 * math.pi * var[:, None, None])
        weight = resp[:, k] if spatially_variant else (n_k / n_roi)[:, None, None]
        mix = mix + weight * dens
    return -(torch.log(mix + 1e-10) * mask).sum(dim=(1, 2)) / n_roi


def make_inputs(device: torch.device, seed: int = 0):
    """Random ``image (B, M, H, W)``, logits ``(B, K, H, W)`` and a disc-shaped ROI of
    about the left ventricle's size (radius 20-30 pixels) per slice."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(B, M, H, W, generator=gen)
    logits = torch.randn(B, K, H, W, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    radius = 20 + 10 * torch.rand(B, generator=gen)
    roi = ((yy - H / 2) ** 2 + (xx - W / 2) ** 2)[None] < radius[:, None, None] ** 2
    return image.to(device), logits.to(device), roi.to(device)


def time_call(fn: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` calls after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run(device: torch.device, repeats: int) -> list[tuple[str, float, str]]:
    """Time every implementation; rows are (label, ms per call, label of its reference)."""
    image, logits, roi = make_inputs(device)
    # The losses' inputs are leaves: forward + backward of the loss alone (the network's
    # softmax is not part of it).
    resp = torch.softmax(logits, dim=1).requires_grad_(True)
    log_resp = torch.log_softmax(logits, dim=1).requires_grad_(True)
    index, mask = pack_roi(roi)
    resp_packed = gather_roi(resp.detach(), index, mask).unsqueeze(2).requires_grad_(True)
    image_packed = gather_roi(image, index, mask).unsqueeze(2)  # (B, M, 1, N)
    roi_packed = mask.unsqueeze(1)  # (B, 1, N)

    def ours_gmm(validate: bool = True, gradient: str = "closed_form") -> None:
        nll, _ = gmm_nll(resp, image, roi, validate=validate, gradient=gradient)
        nll.sum().backward()

    def ours_svgmm() -> None:
        nll, _ = svgmm_nll(log_resp, image, roi)
        nll.sum().backward()

    def loop_gmm() -> None:
        loop_gmm_nll(resp, image, roi).sum().backward()

    def loop_gmm_packed() -> None:
        loop_gmm_nll(resp_packed, image_packed, roi_packed).sum().backward()

    def loop_svgmm() -> None:
        loop_gmm_nll(log_resp.exp(), image, roi, True).sum().backward()

    # Same values (up to the reference's 1e-10 terms) before timing anything.
    with torch.no_grad():
        ref = loop_gmm_nll(resp, image, roi)
        ours, _ = gmm_nll(resp, image, roi, var_floor=1e-10)
        assert torch.allclose(ref, ours, rtol=1e-4), (ref, ours)
        ref_sv = loop_gmm_nll(log_resp.exp(), image, roi, True)
        ours_sv, _ = svgmm_nll(log_resp, image, roi, var_floor=1e-10)
        assert torch.allclose(ref_sv, ours_sv, rtol=1e-4), (ref_sv, ours_sv)
    loop = "GMM NLL, loops over K and M (reference)"
    sv_loop = "SVGMM NLL_V, loops over K and M (reference)"
    return [
        (loop, time_call(loop_gmm, device, repeats), loop),
        ("  same, on the packed ROI pixels only", time_call(loop_gmm_packed, device, repeats),
         loop),
        ("gmm_nll (ours)", time_call(ours_gmm, device, repeats), loop),
        ("gmm_nll (ours, validate=False)", time_call(lambda: ours_gmm(False), device,
                                                     repeats), loop),
        ("gmm_nll (ours, gradient='autograd')",
         time_call(lambda: ours_gmm(gradient="autograd"), device, repeats), loop),
        (sv_loop, time_call(loop_svgmm, device, repeats), sv_loop),
        ("svgmm_nll (ours)", time_call(ours_svgmm, device, repeats), sv_loop),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: keep)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available here: run with --device cpu")
    rows = run(device, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"NLL forward + backward, {B} slices of {H}x{W}, K={K}, M={M}, device: {name}")
    print(f"{'implementation':<46} {'ms/call':>9} {'speed-up':>9}")
    ms_of = {label: ms for label, ms, _ in rows}
    for label, ms, ref in rows:
        print(f"{label:<46} {ms:9.2f} {ms_of[ref] / ms:8.1f}x")
    print("speed-up = ms of the reference loop implementation / ms of this row")

if __name__ == "__main__":
    main()
