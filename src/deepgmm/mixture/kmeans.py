"""Batched k-means (Lloyd) over many slices at once, to initialise EM.

Each slice has its own pixel set (a ROI), so pixels come packed: ``x (B, N, M)`` with a
``(B, N)`` mask. Lloyd's iterations run on a random subsample of at most ``max_points``
pixels per slice (enough to place K = 4 centres; every pixel is labelled at the end).
Seeds are K distinct random pixels of that subsample; ``n_init`` restarts run side by side
(as extra batch entries) and each slice keeps the restart with the lowest inertia.
Random-pixel seeding with restarts replaces k-means++ because k-means++ picks its seeds one
after the other (a loop over classes); restarts run in parallel instead.
"""

from __future__ import annotations

import torch


def _sq_dist(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``(B, N, K)`` squared distances of ``x (B, N, M)`` to ``centers (B, K, M)``."""
    return (x.square().sum(dim=2, keepdim=True) - 2.0 * x @ centers.transpose(1, 2)
            + centers.square().sum(dim=2)[:, None, :]).clamp_min(0.0)


def batched_kmeans(x: torch.Tensor, mask: torch.Tensor, n_clusters: int, *,
                   n_init: int = 4, max_iter: int = 50, max_points: int = 2048,
                   tol: float = 1e-4,
                   generator: torch.Generator | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means for B independent point sets.

    Args:
        x: ``(B, N, M)`` points (entries outside ``mask`` are ignored; must be finite).
        mask: ``(B, N)`` bool, which points belong to each set; every set needs at least
            ``n_clusters`` points.
        n_clusters: K.
        n_init: restarts per set; the one with the lowest inertia is kept.
        max_iter: Lloyd iterations at most.
        tol: stop once no centre moves by more than ``tol`` times the mean per-feature
            variance of its set (squared distance, as scikit-learn's ``KMeans``), or no
            label changes.
        max_points: Lloyd's iterations use at most this many random points per set.
        generator: CPU random generator for the seeds and the subsample (reproducible
            results: the draws happen on the CPU whatever the device).

    Returns:
        ``(centers (B, K, M), labels (B, N) int64)``: labels of every point (0 outside
        ``mask``).
    """
    b, n, m = x.shape
    k, r = n_clusters, n_init
    count = mask.sum(dim=1)  # (B,)
    s = min(n, max_points)
    # A random subsample: the s smallest of uniform keys, padding keyed last.
    keys = torch.rand((b, n), generator=generator, dtype=torch.float64).to(x.device)
    keys = torch.where(mask, keys, torch.full((), 2.0, dtype=keys.dtype, device=x.device))
    sample = keys.topk(s, dim=1, largest=False, sorted=True).indices  # (B, S)
    sample_count = count.clamp_max(s)  # (B,) valid entries lead the sample
    xs = torch.gather(x, 1, sample[..., None].expand(b, s, m))  # (B, S, M)
    valid = torch.arange(s, device=x.device)[None, :] < sample_count[:, None]  # (B, S)
    # Seeds of restart j: sample positions j*K .. j*K+K-1 (mod the count: distinct).
    pos = (torch.arange(r * k, device=x.device)[None, :] % sample_count[:, None])  # (B, R*K)
    seeds = torch.gather(xs, 1, pos[..., None].expand(b, r * k, m))  # (B, R*K, M)
    centers = seeds.reshape(b * r, k, m)
    xr = xs.repeat_interleave(r, dim=0)  # (B*R, S, M)
    validr = valid.repeat_interleave(r, dim=0)  # (B*R, S)
    weight = validr.to(x.dtype)[..., None]  # (B*R, S, 1)
    n_valid = valid.sum(dim=1, keepdim=True).to(x.dtype)  # (B, 1)
    mean = (xs * valid[..., None]).sum(dim=1) / n_valid  # (B, M)
    var = (((xs - mean[:, None]) ** 2) * valid[..., None]).sum(dim=1) / n_valid  # (B, M)
    limit = (tol * var.mean(dim=1)).repeat_interleave(r)  # (B*R,)
    classes = torch.arange(k, device=x.device)
    # Working copies of the runs still moving; a run that has settled is dropped.
    act = torch.arange(b * r, device=x.device)
    xa, wa, ca, lim = xr, weight, centers, limit
    la = torch.full((b * r, s), -1, dtype=torch.long, device=x.device)
    for _ in range(max_iter):
        new_labels = _sq_dist(xa, ca).argmin(dim=2)  # (A, S)
        onehot = (new_labels[..., None] == classes).to(x.dtype) * wa  # (A, S, K)
        counts = onehot.sum(dim=1)  # (A, K)
        new_c = torch.where(counts[..., None] > 0,
                            (onehot.transpose(1, 2) @ xa) / counts.clamp_min(1.0)[..., None],
                            ca)  # (A, K, M)
        shift = (new_c - ca).square().sum(dim=2).amax(dim=1)  # (A,)
        moving = ((new_labels != la) & (wa[..., 0] > 0)).any(dim=1) & (shift > lim)
        centers = centers.index_copy(0, act, new_c)
        if not bool(moving.any()):
            break
        if not bool(moving.all()):
            act, xa, wa, lim = act[moving], xa[moving], wa[moving], lim[moving]
            new_c, new_labels = new_c[moving], new_labels[moving]
        ca, la = new_c, new_labels
    weight = validr.to(x.dtype)
    inertia = (_sq_dist(xr, centers).amin(dim=2) * weight).sum(dim=1)  # (B*R,)
    best = inertia.reshape(b, r).argmin(dim=1) + torch.arange(b, device=x.device) * r
    centers = centers[best]  # (B, K, M)
    labels = _sq_dist(x, centers).argmin(dim=2)  # (B, N)
    return centers, torch.where(mask, labels, torch.zeros((), dtype=torch.long,
                                                          device=x.device))
