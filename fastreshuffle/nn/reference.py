"""Reference multi-scale reshuffling network in plain PyTorch (Tang & Luo, CLIC 2018, Table 1)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import DOWN_STEPS, IN_CHANNELS, PAD_MULTIPLE, ReshuffleNetConfig


class DenseLayer(nn.Module):
    """``1x1 conv (M -> k*N) -> ELU -> 3x3 conv (k*N -> N)``; the caller concatenates (Eq. 5)."""

    def __init__(self, in_channels: int, growth: int, bottleneck: int):
        super().__init__()
        self.in_channels = in_channels
        self.growth = growth
        self.conv1 = nn.Conv2d(in_channels, bottleneck * growth, kernel_size=1, bias=True)
        self.conv2 = nn.Conv2d(bottleneck * growth, growth, kernel_size=3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.elu(self.conv1(x)))


class DenseBlock(nn.Module):
    def __init__(self, in_channels: int, growth: int, num_layers: int, bottleneck: int):
        super().__init__()
        self.in_channels = in_channels
        self.growth = growth
        self.out_channels = in_channels + growth * num_layers
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + j * growth, growth, bottleneck) for j in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


def pad_to_multiple(x: torch.Tensor, multiple: int = PAD_MULTIPLE):
    """Reflect-pad H and W up to a multiple (replicate where the image is too small to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def check_image_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != IN_CHANNELS:
        raise ValueError(f"expected an image batch of shape (N, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point image in [0, 1], got dtype {x.dtype}")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"image has zero size: {tuple(x.shape)}")


class ReshuffleNet(nn.Module):
    """Plain-PyTorch reference implementation.

    Input: RGB in [0, 1], shape (N, 3, H, W), any H and W (reflect-padded to a multiple of 8
    internally and cropped back).  With ``config.residual`` the network predicts a correction
    that is added to its input.
    """

    def __init__(self, config: Optional[ReshuffleNetConfig] = None):
        super().__init__()
        self.config = config if config is not None else ReshuffleNetConfig()
        cfg = self.config
        self.blocks = nn.ModuleList(
            DenseBlock(c_in, g, n, cfg.bottleneck)
            for (c_in, _), g, n in zip(cfg.block_channels(), cfg.growth, cfg.layers))
        self.tail = nn.Conv2d(cfg.tail_channels, IN_CHANNELS, kernel_size=3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        if x.shape[0] == 0:   # an empty batch (torch's pixel_unshuffle keeps an empty input's shape)
            return x.clone()
        xp, (h, w) = pad_to_multiple(x)
        return self.forward_padded(xp)[..., :h, :w]

    def forward_padded(self, xp: torch.Tensor) -> torch.Tensor:
        """The network on an input whose height and width are multiples of 8 (``forward``
        without the padding and the crop; the ONNX graph pads for itself)."""
        y = xp
        for _ in range(DOWN_STEPS):
            y = F.pixel_unshuffle(y, 2)
        for block in self.blocks:
            y = F.pixel_shuffle(block(y), 2)
        y = self.tail(y)
        if self.config.residual:
            y = y + xp
        return y
