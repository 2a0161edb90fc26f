"""Multi-head attention of the collaborative interaction (Fig. 3): self- and cross-attention.

The projections are plain Linears and the attention itself is one call to
`scaled_dot_product_attention` in `attend`, kept separate so a fused kernel can replace it.
Unlike `nn.MultiheadAttention`, every matmul is visible to
fvcore's FLOP counter (tools/analyze_model.py counts the SDPA call itself).
"""

import torch.nn.functional as F
from torch import nn

from psdiff.utils.errors import PsdiffError


def attend(q, k, v, num_heads):
    """q: [B, L, C], k and v: [B, S, C] -> [B, L, C], softmax(q k^T / sqrt(C/h)) v per head."""
    batch, length, channels = q.shape
    head_dim = channels // num_heads

    def split(x):
        return x.reshape(batch, x.shape[1], num_heads, head_dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(batch, length, channels)


class MultiHeadAttention(nn.Module):
    """Attention from `query` tokens to `context` tokens (self-attention: the same tensor)."""

    def __init__(self, dim, num_heads, dropout=0.0):
        super().__init__()
        if dim % num_heads:
            raise PsdiffError(f"MODEL.PSDIFF.HIDDEN_DIM ({dim}) is not divisible by "
                              f"MODEL.PSDIFF.NHEADS ({num_heads})")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query, context):
        """query: [B, L, C], context: [B, S, C] -> [B, L, C]."""
        out = attend(self.q_proj(query), self.k_proj(context), self.v_proj(context), self.num_heads)
        return self.dropout(self.out_proj(out))
