"""Multi-head attention of the collaborative interaction (Fig. 3): self- and cross-attention.

The projections are plain Linears and the attention itself is one call to
`scaled_dot_product_attention` in `attend`, kept separate so a fused kernel can replace it.
Unlike `nn.MultiheadAttention`, every matmul is visible to
fvcore's FLOP counter (tools/analyze_model.py counts the SDPA call itself).
One query token per row (the CDL's cross-attention) takes `attend_one_query`, which leaves the
context unprojected, in training and at inference.
"""

import math

import torch
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


def attend_one_query(q, context, k_proj, v_proj, num_heads):
    """`attend` of one projected query token per row, q [B, 1, C], to the unprojected context
    [B, S, C] -> [B, 1, C]: the same values up to rounding with S times fewer multiply-adds.

    Per head, q . (W_k x + b_k) = (W_k^T q) . x + q . b_k; and with weights a summing to 1,
    sum_j a_j (W_v x_j + b_v) = W_v (sum_j a_j x_j) + b_v. So the query goes into the context's
    space, not S keys and values into the heads'. The term q . b_k, the same for every key,
    cancels in the softmax; it is added all the same, so b_k gets its (zero) gradient, as
    distributed training expects of every parameter.
    """
    batch, channels = q.shape[0], q.shape[-1]
    head_dim = channels // num_heads
    k_weight = k_proj.weight.view(num_heads, head_dim, channels)
    v_weight = v_proj.weight.view(num_heads, head_dim, channels)
    q = q.view(batch, num_heads, head_dim)
    query = torch.einsum("bhd,hdc->bhc", q, k_weight)
    key_bias = (q * k_proj.bias.view(num_heads, head_dim)).sum(-1, keepdim=True)
    logits = query @ context.transpose(1, 2) + key_bias
    weights = (logits / math.sqrt(head_dim)).softmax(dim=-1)
    out = torch.einsum("bhc,hdc->bhd", weights @ context, v_weight)
    return (out + v_proj.bias.view(num_heads, head_dim)).reshape(batch, 1, channels)


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
        q = self.q_proj(query)
        if query.shape[1] == 1:
            out = attend_one_query(q, context, self.k_proj, self.v_proj, self.num_heads)
        else:
            out = attend(q, self.k_proj(context), self.v_proj(context), self.num_heads)
        return self.dropout(self.out_proj(out))
