"""The point encoder: Fourier features of normalized xyz, then one linear layer.

Protocol (design.md §2): for each coordinate x in [-1, 1] and k = 0..K-1 the
features are x·2^k (no π), passed through sin and cos. The layer input is
concat[xyz, sin, cos] = 3 + 3K + 3K dims (51 for K = 8); its output is one
embedding per point, the "point tokens" the LM reads before the code.

The encoder always computes in fp32, whatever dtype the LM runs in: high
frequencies of low-precision coordinates would be noise.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_FOURIER_FREQUENCIES = 8


def fourier_features(xyz: torch.Tensor, num_frequencies: int = NUM_FOURIER_FREQUENCIES) -> torch.Tensor:
    """(..., 3) -> (..., 3 + 6K): concat[xyz, sin(xyz·2^k), cos(xyz·2^k)].

    Within the sin block (and the cos block) the order is coordinate-major:
    x·2^0 .. x·2^(K-1), y·2^0 .., z·2^0 ...
    """
    xyz = xyz.float()
    frequencies = 2.0 ** torch.arange(num_frequencies, device=xyz.device, dtype=torch.float32)
    scaled = (xyz.unsqueeze(-1) * frequencies).flatten(-2)
    return torch.cat([xyz, scaled.sin(), scaled.cos()], dim=-1)


def fourier_dims(num_frequencies: int = NUM_FOURIER_FREQUENCIES) -> int:
    return 3 + 6 * num_frequencies


class PointEncoder(nn.Module):
    """(B, P, 3) normalized points -> (B, P, hidden) fp32 point embeddings."""

    def __init__(self, hidden_size: int, num_frequencies: int = NUM_FOURIER_FREQUENCIES):
        super().__init__()
        self.num_frequencies = num_frequencies
        self.proj = nn.Linear(fourier_dims(num_frequencies), hidden_size)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must have shape (batch, num_points, 3), got {tuple(points.shape)}")
        features = fourier_features(points, self.num_frequencies)
        # autocast would run the matmul in bf16/fp16; the protocol keeps it fp32
        with torch.autocast(device_type=points.device.type, enabled=False):
            return self.proj(features.to(self.proj.weight.dtype))
