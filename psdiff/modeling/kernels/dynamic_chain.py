"""Triton twin of `dynamic_conv.dynamic_chain`: each layer's bmm, LayerNorm and ReLU in one kernel.

The PyTorch chain runs three kernels per layer and writes [K, L, d] twice between them; here a
program holds a block of one box's L tokens, multiplies by that box's kernel with an fp32
accumulator, normalizes the full row and writes it once. Forward only (inference): the chain
is not differentiable this way, so `dynamic_conv` keeps the PyTorch chain when grad is needed.
Precision follows PyTorch's: the dot runs in the kernels' dtype (bf16 under autocast), with
TF32 for fp32 only when `torch.backends.cuda.matmul.allow_tf32` is set, and LayerNorm in fp32.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _bmm_layernorm_relu(x_ptr, w_ptr, gamma_ptr, beta_ptr, out_ptr, length, c_in, c_out, eps,
                        sxk, sxl, sxc, swk, swi, swo, sok, sol, soc,
                        BLOCK_L: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr,
                        PRECISION: tl.constexpr):
    """relu(LayerNorm(x[k] @ w[k])) for one box k and BLOCK_L of its tokens (program ids k, l)."""
    box = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    cols = tl.arange(0, BLOCK_O)
    row_ok = rows < length
    col_ok = cols < c_out
    acc = tl.zeros((BLOCK_L, BLOCK_O), dtype=tl.float32)
    for start in range(0, c_in, BLOCK_I):
        inner = start + tl.arange(0, BLOCK_I)
        inner_ok = inner < c_in
        x = tl.load(x_ptr + box * sxk + rows[:, None] * sxl + inner[None, :] * sxc,
                    mask=row_ok[:, None] & inner_ok[None, :], other=0.0)
        w = tl.load(w_ptr + box * swk + inner[:, None] * swi + cols[None, :] * swo,
                    mask=inner_ok[:, None] & col_ok[None, :], other=0.0)
        acc += tl.dot(x.to(w.dtype), w, input_precision=PRECISION)
    mean = tl.sum(acc, axis=1) / c_out  # padded columns are 0 and do not count
    centered = tl.where(col_ok[None, :], acc - mean[:, None], 0.0)
    var = tl.sum(centered * centered, axis=1) / c_out
    gamma = tl.load(gamma_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = centered * tl.rsqrt(var + eps)[:, None] * gamma[None, :] + beta[None, :]
    y = tl.maximum(y, 0.0)
    tl.store(out_ptr + box * sok + rows[:, None] * sol + cols[None, :] * soc,
             y.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def _layer(x, kernel, norm):
    """One fused layer: x [K, L, C_in], kernel [K, C_in, C_out] -> [K, L, C_out]."""
    boxes, length, c_in = x.shape
    c_out = kernel.shape[2]
    dtype = torch.promote_types(torch.promote_types(x.dtype, kernel.dtype), norm.weight.dtype)
    out = torch.empty(boxes, length, c_out, device=x.device, dtype=dtype)
    block_l = min(64, max(16, triton.next_power_of_2(length)))
    block_o = max(16, triton.next_power_of_2(c_out))
    block_i = min(32, max(16, triton.next_power_of_2(c_in)))
    # Triton's default "tf32" only matters for fp32 operands: "ieee" when torch's matmuls would
    # not use TF32 either
    exact = kernel.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    grid = (boxes, triton.cdiv(length, block_l))
    _bmm_layernorm_relu[grid](
        x, kernel, norm.weight, norm.bias, out, length, c_in, c_out, norm.eps,
        *x.stride(), *kernel.stride(), *out.stride(),
        BLOCK_L=block_l, BLOCK_I=block_i, BLOCK_O=block_o,
        PRECISION="ieee" if exact else "tf32", num_warps=8 if block_o >= 256 else 4,
    )
    return out


def fused_dynamic_chain(features, kernels, norms):
    """`dynamic_chain` (same arguments, same result within rounding) with one kernel a layer."""
    x = features
    for kernel, norm in zip(kernels, norms):
        x = _layer(x, kernel, norm)
    return x
