"""AdamW with per-slice gradient-norm clipping for N networks stacked along axis 0.

Each slice behaves exactly as if it had its own ``torch.nn.utils.clip_grad_norm_`` and
``torch.optim.AdamW``: the norm is taken over that slice's parameters only, and each slice
carries its own step count (slices may join a running batch later than others).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from deepgmm.fit.stacked import StackedFit


def slice_grad_norms(grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``(N,)`` L2 norm of each slice's gradient over all its parameters.

    Args:
        grads: name -> ``(N, *shape)`` gradients.
    """
    sq = [g.reshape(g.shape[0], -1).square().sum(dim=1) for g in grads.values()]
    return torch.stack(sq).sum(dim=0).sqrt()


def clip_per_slice_(grads: Mapping[str, torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """Scale each slice's gradients in place so its norm is at most ``max_norm``.

    Same rule as ``torch.nn.utils.clip_grad_norm_``: factor
    ``min(1, max_norm / (norm + 1e-6))``.

    Returns:
        ``(N,)`` gradient norms before clipping.
    """
    norms = slice_grad_norms(grads)
    if max_norm is None:
        return norms
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # (N,)
    for g in grads.values():
        g.mul_(factor.to(g.dtype).reshape(-1, *([1] * (g.ndim - 1))))
    return norms


@torch.no_grad()
def adamw_step_(state: StackedFit, grads: Mapping[str, torch.Tensor], *, lr: float,
                weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                eps: float = 1e-8) -> None:
    """One decoupled-weight-decay Adam step for every slice, in place.

    Args:
        state: N networks' parameters, moments and ``(N,)`` step counts.
        grads: name -> ``(N, *shape)`` gradients (already clipped).
        lr, weight_decay, betas, eps: as in ``torch.optim.AdamW``.
    """
    beta1, beta2 = betas
    state.step += 1
    n = len(state)
    bc1 = 1.0 - torch.pow(beta1, state.step)  # (N,)
    bc2_sqrt = (1.0 - torch.pow(beta2, state.step)).sqrt()  # (N,)
    step_size = (lr / bc1).to(torch.float32)
    bc2_sqrt = bc2_sqrt.to(torch.float32)
    decay = 1.0 - lr * weight_decay
    for name, p in state.params.items():
        g = grads[name]
        m, v = state.exp_avg[name], state.exp_avg_sq[name]
        shape = (n, *([1] * (p.ndim - 1)))
        if decay != 1.0:
            p.mul_(decay)
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = (v.sqrt() / bc2_sqrt.reshape(shape)).add_(eps)
        p.sub_(step_size.reshape(shape) * m / denom)
