"""Batched k-means (Lloyd) over many slices at once, to initialise EM.

Each slice has its own pixel set (a ROI), so pixels come packed: ``x (B, N, M)`` with a
``(B, N)`` mask. Seeds are K distinct random ROI pixels; ``n_init`` restarts run side by
side (as extra batch entries) and each slice keeps the restart with the lowest inertia.
Random-pixel seeding with restarts replaces k-means++ because k-means++ picks its seeds one
after the other (a loop over classes); restarts run in parallel instead.
"""

from __future__ import annotations

import torch


def batched_kmeans(x: torch.Tensor, mask: torch.Tensor, n_clusters: int, *,
                   n_init: int = 4, max_iter: int = 50,
                   generator: torch.Generator | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means for B independent point sets.

    Args:
        x: ``(B, N, M)`` points (entries outside ``mask`` are ignored; must be finite).
        mask: ``(B, N)`` bool, which points belong to each set; every set needs at least
            ``n_clusters`` points.
        n_clusters: K.
        n_init: restarts per set; the one with the lowest inertia is kept.
        max_iter: Lloyd iterations at most (all sets stop once no label changes).
        generator: CPU random generator for the seeds (reproducible results).

    Returns:
        ``(centers (B, K, M), labels (B, N) int64)``; labels outside ``mask`` are 0.
    """
    b, n, m = x.shape
    r = n_init
    xr = x.repeat_interleave(r, dim=0)  # (B*R, N, M)
    maskr = mask.repeat_interleave(r, dim=0)  # (B*R, N)
    # Seeds are drawn on the CPU so that a seed gives the same result on every device.
    seeds = torch.multinomial(maskr.to("cpu", torch.float64), n_clusters, replacement=False,
                              generator=generator).to(x.device)  # (B*R, K)
    centers = torch.gather(xr, 1, seeds[..., None].expand(-1, -1, m))  # (B*R, K, M)
    weight = maskr.to(x.dtype)[..., None]  # (B*R, N, 1)
    labels = torch.zeros((b * r, n), dtype=torch.long, device=x.device)
    x_sq = xr.square().sum(dim=2, keepdim=True)  # (B*R, N, 1)
    for it in range(max_iter):
        dist = x_sq - 2.0 * xr @ centers.transpose(1, 2) + \
            centers.square().sum(dim=2)[:, None, :]  # (B*R, N, K)
        new_labels = dist.argmin(dim=2)  # (B*R, N)
        onehot = torch.nn.functional.one_hot(new_labels, n_clusters).to(x.dtype) * weight
        counts = onehot.sum(dim=1)  # (B*R, K)
        sums = onehot.transpose(1, 2) @ xr  # (B*R, K, M)
        centers = torch.where(counts[..., None] > 0,
                              sums / counts.clamp_min(1.0)[..., None], centers)
        changed = ((new_labels != labels) & maskr).any()
        labels = new_labels
        if it > 0 and not bool(changed):
            break
    dist = x_sq - 2.0 * xr @ centers.transpose(1, 2) + centers.square().sum(dim=2)[:, None, :]
    min_dist, labels = dist.min(dim=2)  # (B*R, N)
    inertia = (min_dist.clamp_min(0.0) * maskr).sum(dim=1).reshape(b, r)  # (B, R)
    best = inertia.argmin(dim=1) + torch.arange(b, device=x.device) * r  # (B,)
    labels = torch.where(mask, labels[best], torch.zeros((), dtype=torch.long,
                                                         device=x.device))
    return centers[best], labels
