"""Time conditioning of the CDL: the step t of Eq. 12 as a feature vector.

Sinusoidal embedding of the integer step (sin block, then cos block, as DiffusionDet) followed
by a two-layer MLP. DiffusionDet widens to 4C = 1024 (1.3M parameters); PSDiff's budget of
31M parameters (Table II) keeps the MLP at width C.
"""

import math

import torch
from torch import nn


def sinusoidal_embedding(t, dim):
    """[B] integer steps -> [B, dim]: sin(t * f_i) then cos(t * f_i), f_i = 10000^(-i/(dim/2-1))."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000) / (half - 1))
    )
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimeEmbedding(nn.Module):
    """t -> [B, dim] feature: sinusoidal embedding, Linear, GELU, Linear."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, t):
        return self.mlp(sinusoidal_embedding(t, self.dim))
