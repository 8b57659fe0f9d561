"""The 2-D U-Net of deepG / deepSVG: image ``(B, C, H, W)`` -> logits ``(B, K, H, W)``.

The default configuration is the published one: ``depth`` = 4 down-sampling steps, 32
start filters doubling per level (32 -> 512), and per level a block of

    conv 3x3 (bias) -> LeakyReLU(0.01) -> conv 3x3 (no bias) -> InstanceNorm (affine)
    -> LeakyReLU(0.01)

with 2 x 2 max-pooling between levels. Each up-sampling step is nearest-neighbour
up-sampling by 2 followed by a 1 x 1 convolution that halves the channels; the result is
concatenated with the skip connection (up-sampled features first) and passed through a
block. A final 1 x 1 convolution gives K channels, returned as logits: the softmax (or
log-softmax) belongs to the loss.

MONAI's ``BasicUNet`` differs (normalisation after every convolution, a fixed depth, a
different up-sampling head) and its ``UNet`` uses strided residual units, so neither
reproduces this network; it is written out here in plain PyTorch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepgmm.errors import InputError

__all__ = ["ConvBlock", "UNet", "UpBlock"]


class ConvBlock(nn.Module):
    """Two 3 x 3 convolutions, instance norm after the second, LeakyReLU after each.

    Input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *,
                 negative_slope: float = 0.01) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm = nn.InstanceNorm2d(out_channels, affine=True)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``."""
        x = F.leaky_relu(self.conv1(x), self.negative_slope)
        x = self.norm(self.conv2(x))
        return F.leaky_relu(x, self.negative_slope)


class UpBlock(nn.Module):
    """Nearest up-sampling x2, 1 x 1 convolution, concatenation with the skip, block.

    ``x (B, in_channels, H, W)`` and ``skip (B, out_channels, 2H, 2W)`` ->
    ``(B, out_channels, 2H, 2W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *,
                 negative_slope: float = 0.01) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1, bias=True)
        self.block = ConvBlock(2 * out_channels, out_channels, negative_slope=negative_slope)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x (B, C_in, H, W)``, ``skip (B, C_out, 2H, 2W)`` -> ``(B, C_out, 2H, 2W)``."""
        up = self.proj(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.block(torch.cat([up, skip], dim=1))


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"UNet: {name} must be an integer >= {minimum}, got {value!r}")
    return value


class UNet(nn.Module):
    """U-Net returning K logits per pixel (see the module docstring for the layout).

    Args:
        in_channels: M, number of input sequences.
        n_classes: K, number of output channels (classes).
        depth: number of down-sampling steps; inputs need H and W divisible by
            ``2 ** depth``.
        base_filters: channels of the first level; level i has ``base_filters * 2 ** i``.
        negative_slope: slope of the LeakyReLU for negative inputs.

    Shapes: ``forward((B, in_channels, H, W)) -> (B, n_classes, H, W)`` logits.
    """

    def __init__(self, in_channels: int, n_classes: int = 4, depth: int = 4,
                 base_filters: int = 32, *, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.n_classes = _positive_int(n_classes, "n_classes")
        self.depth = _positive_int(depth, "depth")
        self.base_filters = _positive_int(base_filters, "base_filters")
        if not 0.0 <= float(negative_slope) < 1.0:
            raise InputError(f"UNet: negative_slope must be in [0, 1), got {negative_slope!r}")
        self.negative_slope = float(negative_slope)
        widths = [base_filters * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c_in = in_channels
        for width in widths:
            self.down.append(ConvBlock(c_in, width, negative_slope=self.negative_slope))
            c_in = width
        self.up = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], negative_slope=self.negative_slope)
            for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], n_classes, 1, bias=True)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments; ``UNet(**net.config)`` rebuilds the same architecture."""
        return {"in_channels": self.in_channels, "n_classes": self.n_classes,
                "depth": self.depth, "base_filters": self.base_filters,
                "negative_slope": self.negative_slope}

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` unless ``x`` is ``(B, in_channels, H, W)`` with H and W
        divisible by ``2 ** depth``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise InputError(f"UNet input must be (B, {self.in_channels}, H, W), "
                             f"got shape {tuple(x.shape)}")
        factor = 2**self.depth
        h, w = int(x.shape[2]), int(x.shape[3])
        if h % factor or w % factor or h == 0 or w == 0:
            raise InputError(f"UNet input H and W must be positive multiples of "
                             f"2**depth = {factor} (depth {self.depth}), got H x W = {h} x {w}; "
                             f"crop or pad the image, or lower depth")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, n_classes, H, W)`` logits."""
        self.check_input(x)
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottom level has no skip connection
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)
