"""Observation encoders for image observations (Atari), for the Decision Transformer.

:func:`nature_cnn` is the convolutional stack of the Nature DQN (Mnih et al. 2015), which
the Decision Transformer's Atari experiments (Chen et al. 2021) and the Multi-Game DT put
in front of their transformers: over 4 stacked 84x84 grey frames (Gymnasium's
``AtariPreprocessing`` then ``FrameStackObservation``, see
:func:`ogm.envs.atari.make_atari`) it gives a 7x7x64 feature map, 3136 values, then
one linear layer to the token width. The grid-plane encoder of the model (one 3x3
convolution, then a linear layer over the whole grid) would need 16 * 84 * 84 * n_embd
weights in that last layer, 14.5 million at ``n_embd = 128``; this one needs 0.4 million.
"""

from __future__ import annotations

import torch
from torch import nn

ATARI_FRAME = 84  # AtariPreprocessing's screen size, the Nature DQN's input


class NatureCNN(nn.Module):
    """Three convolutions (8x8 stride 4, 4x4 stride 2, 3x3 stride 1; 32, 64, 64 channels,
    ReLU), flatten, linear to ``n_embd``, on pixels multiplied by ``input_scale``."""

    def __init__(
        self, in_channels: int, n_embd: int, *, frame: int = ATARI_FRAME, input_scale: float
    ) -> None:
        super().__init__()
        if in_channels < 1 or n_embd < 1:
            raise ValueError(
                f"nature_cnn needs in_channels >= 1 and n_embd >= 1, got {in_channels}, {n_embd}"
            )
        side = conv_output_side(frame)
        if side < 1:
            raise ValueError(f"frames of {frame}x{frame} pixels are too small for the Nature CNN")
        self.input_scale = input_scale
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.proj = nn.Linear(64 * side * side, n_embd)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) pixels (any dtype) -> (N, n_embd) features."""
        return self.proj(self.convs(frames.float() * self.input_scale))


def conv_output_side(frame: int) -> int:
    """Side of the Nature CNN's last feature map for square ``frame`` inputs (7 for 84)."""
    for kernel, stride in ((8, 4), (4, 2), (3, 1)):
        frame = (frame - kernel) // stride + 1
    return frame


def nature_cnn(
    in_channels: int, n_embd: int, *, frame: int = ATARI_FRAME, input_scale: float = 1 / 255
) -> NatureCNN:
    """The Nature-DQN encoder for ``in_channels`` stacked ``frame`` x ``frame`` frames.

    ``input_scale`` maps pixels into [0, 1] (the DT normaliser leaves integer observations
    as they are, ``ogm.train.segments.observation_stats``); set it to 1 for inputs that are
    normalised already.
    """
    return NatureCNN(in_channels, n_embd, frame=frame, input_scale=input_scale)
