"""Speed of the deepG / deepSVG losses: forward + backward, ours vs a loop implementation.

The reference is a straightforward implementation of the same formulas as the published
code computes them: densities in probability space, one loop over classes K and one over
sequences M, ``+1e-10`` added to the variances and inside the log (batched over slices).
A second reference follows the published loss's structure more closely: it also loops over
the slices, picks each slice's ROI pixels by boolean indexing and fills the (K, M) means,
variances and densities element by element.

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

from deepgmm.allocator import tune_cpu_allocator
from deepgmm.mixture import gmm_nll, gmm_nll_packed, pack_image, svgmm_nll, svgmm_nll_packed
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


def per_slice_loop_nll(resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor,
                       spatially_variant: bool = False) -> torch.Tensor:
    """Reference with the published loss's structure: loops over slices, K and M.

    Same arguments and result as :func:`loop_gmm_nll`; the mean over the slices is taken
    by the caller.
    """
    n_slices, k_classes = resp.shape[:2]
    m_seq = image.shape[1]
    nll = torch.zeros(n_slices, dtype=image.dtype, device=image.device)
    for b in range(n_slices):
        inside = roi[b]
        p = torch.stack([resp[b, k][inside] for k in range(k_classes)])  # (K, N)
        x = torch.stack([image[b, m][inside] for m in range(m_seq)])  # (M, N)
        mu = torch.zeros(k_classes, m_seq, dtype=image.dtype, device=image.device)
        var = torch.zeros_like(mu)
        for k in range(k_classes):
            for m in range(m_seq):
                mu[k, m] = (p[k] * x[m]).sum() / (p[k].sum() + 1e-10)
                var[k, m] = (p[k] * (x[m] - mu[k, m]) ** 2).sum() / (p[k].sum() + 1e-10) \
                    + 1e-10
        dens = torch.zeros(k_classes, m_seq, x.shape[1], dtype=image.dtype,
                           device=image.device)
        for k in range(k_classes):
            for m in range(m_seq):
                dens[k, m] = torch.exp(-((x[m] - mu[k, m]) ** 2) / (2 * var[k, m])) \
                    / torch.sqrt(2 * math.pi * var[k, m])
        weight = p if spatially_variant else p.mean(dim=1, keepdim=True)
        nll[b] = -torch.log((weight * dens.prod(dim=1)).sum(dim=0) + 1e-10).mean()
    return nll


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


def time_call(fn: Callable[[], None], device: torch.device, repeats: int,
              leaves: tuple[torch.Tensor, ...] = ()) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` calls after 3 warm-up calls; the
    gradients of ``leaves`` are reset (to None, as ``zero_grad``) before each call."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        for leaf in leaves:
            leaf.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run(device: torch.device, repeats: int) -> list[tuple[str, float, str]]:
    """Time every implementation; rows are (label, ms per call, "gmm" or "svgmm")."""
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

    packed = pack_image(image, roi)  # once, as a fit does for its fixed images and ROIs

    def ours_gmm_packed(validate: bool = True) -> None:
        nll, _ = gmm_nll_packed(resp, packed, validate=validate)
        nll.sum().backward()

    def ours_svgmm_packed(validate: bool = True) -> None:
        nll, _ = svgmm_nll_packed(log_resp, packed, validate=validate)
        nll.sum().backward()

    def ours_svgmm() -> None:
        nll, _ = svgmm_nll(log_resp, image, roi)
        nll.sum().backward()

    def loop_gmm() -> None:
        loop_gmm_nll(resp, image, roi).sum().backward()

    def loop_gmm_packed() -> None:
        loop_gmm_nll(resp_packed, image_packed, roi_packed).sum().backward()

    def slice_loop_gmm() -> None:
        per_slice_loop_nll(resp, image, roi).sum().backward()

    def slice_loop_svgmm() -> None:
        per_slice_loop_nll(log_resp.exp(), image, roi, True).sum().backward()

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
        assert torch.allclose(per_slice_loop_nll(resp, image, roi), ref, rtol=1e-4)
        assert torch.allclose(per_slice_loop_nll(log_resp.exp(), image, roi, True), ref_sv,
                              rtol=1e-4)
    rows = [
        ("GMM NLL, loops over slices, K and M", slice_loop_gmm, "gmm"),
        ("GMM NLL, loops over K and M", loop_gmm, "gmm"),
        ("  same, on the packed ROI pixels only", loop_gmm_packed, "gmm"),
        ("gmm_nll (ours)", ours_gmm, "gmm"),
        ("gmm_nll (ours, validate=False)", lambda: ours_gmm(False), "gmm"),
        ("gmm_nll (ours, gradient='autograd')", lambda: ours_gmm(gradient="autograd"), "gmm"),
        ("gmm_nll_packed (ours, ROI packed once)", ours_gmm_packed, "gmm"),
        ("  same, validate=False", lambda: ours_gmm_packed(False), "gmm"),
        ("SVGMM NLL_V, loops over slices, K and M", slice_loop_svgmm, "svgmm"),
        ("SVGMM NLL_V, loops over K and M", loop_svgmm, "svgmm"),
        ("svgmm_nll (ours)", ours_svgmm, "svgmm"),
        ("svgmm_nll_packed (ours, ROI packed once)", ours_svgmm_packed, "svgmm"),
        ("  same, validate=False", lambda: ours_svgmm_packed(False), "svgmm"),
    ]
    leaves = (resp, log_resp, resp_packed)
    return [(label, time_call(fn, device, repeats, leaves), family)
            for label, fn, family in rows]


def main() -> None:
    tune_cpu_allocator()  # as the command line does (DEEPGMM_MALLOC_TUNING=0: off)
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
    print(f"{'implementation':<42} {'ms/call':>9} {'vs K,M loop':>12} {'vs slice loop':>14}")
    k_m = {family: ms for label, ms, family in rows if "loops over K and M" in label}
    per_slice = {family: ms for label, ms, family in rows if "loops over slices" in label}
    for label, ms, family in rows:
        print(f"{label:<42} {ms:9.2f} {k_m[family] / ms:11.1f}x {per_slice[family] / ms:13.1f}x")
    print("speed-up = ms of a loop implementation / ms of this row; 'K,M loop': loops over "
          "classes and sequences,\nbatched over slices; 'slice loop': the published loss's "
          "structure, which also loops over slices")


if __name__ == "__main__":
    main()
