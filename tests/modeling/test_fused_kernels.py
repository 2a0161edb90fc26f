"""The fused Triton dynamic-conv chain against its PyTorch twin (MODEL.PSDIFF.FUSED_KERNELS).

Small shapes run on the session's device: CUDA when present, else the CPU in Triton's
interpreter (TRITON_INTERPRET=1, set by tests/conftest.py); on CUDA (skipped without a GPU) the
R50 config's shape also runs, fp32 and under bf16 autocast. Tolerances: fp32 1e-4 (both sum
the same fp32 products, in another order); bf16 autocast 3e-2 on LayerNorm-scaled values of
size ~1 (both round the operands to bf16 alike, then accumulate in a different order). bf16
runs on CUDA only: Triton 3.8's interpreter multiplies bf16 operands as their raw uint16 bits.
"""

import pytest
import torch
from torch import nn

from psdiff.modeling import dynamic_conv
from psdiff.modeling.dynamic_conv import DynamicConv, dynamic_chain

triton_chain = pytest.importorskip("psdiff.modeling.kernels.dynamic_chain")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: Triton's interpreter


def chain_inputs(boxes, length, widths, device="cpu", seed=0):
    """features [K, L, widths[0]], kernels [K, w_i, w_i+1] as non-contiguous slices of one
    generated matrix (as DynamicConv makes them), LayerNorms with random affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(boxes, length, widths[0], generator=generator)
    sizes = [a * b for a, b in zip(widths[:-1], widths[1:])]
    params = torch.randn(boxes, sum(sizes), generator=generator) / widths[0] ** 0.5
    kernels = [c.reshape(boxes, a, b) for c, a, b in
               zip(params.to(device).split(sizes, dim=-1), widths[:-1], widths[1:])]
    norms = nn.ModuleList(nn.LayerNorm(w) for w in widths[1:])
    for norm in norms:
        nn.init.normal_(norm.weight, 1.0, 0.5, generator=generator)
        nn.init.normal_(norm.bias, 0.0, 0.5, generator=generator)
    return features.to(device), kernels, norms.to(device)


@pytest.mark.parametrize("boxes, length, widths", [
    (3, 49, [32, 8, 32]),  # L = 7 x 7 bins, not a power of 2
    (2, 9, [40, 24, 12, 40]),  # three layers, widths not powers of 2, C_in over one block
    (1, 70, [16, 16]),  # L over one 64-row block
])
def test_kernel_matches_the_twin(boxes, length, widths):
    features, kernels, norms = chain_inputs(boxes, length, widths, DEVICE)
    with torch.no_grad():
        fused = triton_chain.fused_dynamic_chain(features, kernels, norms)
        twin = dynamic_chain(features, kernels, norms)
    assert fused.shape == twin.shape == (boxes, length, widths[-1])
    assert (twin == 0).any() and (twin > 0).any()  # the ReLU cuts: the test sees it
    torch.testing.assert_close(fused, twin, atol=1e-4, rtol=1e-4)


@pytest.fixture
def counted(monkeypatch):
    """Counts calls of the fused chain (it still computes), as DynamicConv imports it."""
    calls = []
    original = triton_chain.fused_dynamic_chain

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(triton_chain, "fused_dynamic_chain", counting)
    return calls


def dynamic_convs():
    torch.manual_seed(0)
    twin = DynamicConv(32, 8, 2, 4, 7)
    fused = DynamicConv(32, 8, 2, 4, 7, fused=True)
    fused.load_state_dict(twin.state_dict())
    return twin, fused


def test_dynamic_conv_takes_the_kernel_only_where_it_applies(monkeypatch, counted):
    """Fused: under no_grad, on CUDA or in the interpreter; never while recording grad."""
    twin, fused = dynamic_convs()
    with monkeypatch.context() as env:
        env.delenv("TRITON_INTERPRET", raising=False)
        with torch.no_grad():
            fused(torch.randn(4, 49, 32), torch.randn(4, 32))
    assert counted == []  # CPU tensors without the interpreter: the twin
    twin, fused = twin.to(DEVICE), fused.to(DEVICE)
    det, reid = torch.randn(4, 49, 32, device=DEVICE), torch.randn(4, 32, device=DEVICE)
    fused(det, reid).sum().backward()
    assert counted == [] and fused.kernel_generator.weight.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(fused(det, reid), twin(det, reid), atol=1e-4, rtol=1e-4)
    assert counted == [1]


def test_fused_kernels_key_reaches_the_dynamic_conv():
    from tiny_config import tiny_cfg

    from psdiff.modeling import build_model

    model = build_model(tiny_cfg("MODEL.PSDIFF.FUSED_KERNELS", "True"))
    assert model.cdl.dynamic_conv.fused
    assert not build_model(tiny_cfg()).cdl.dynamic_conv.fused
    assert dynamic_conv.dynamic_chain is dynamic_chain  # the twin stays the module's chain


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_kernel_matches_the_twin_at_the_r50_shape(monkeypatch, dtype):
    """300 boxes x 49 bins, 256 -> 64 -> 256 (MODEL.PSDIFF defaults); bf16 under autocast."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    features, kernels, norms = chain_inputs(300, 49, [256, 64, 256], device="cuda")
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        kernels = [k.to(dtype) for k in kernels]  # the generator Linear's output under autocast
        fused = triton_chain.fused_dynamic_chain(features, kernels, norms)
        twin = dynamic_chain(features, kernels, norms)
    assert fused.dtype == twin.dtype
    torch.testing.assert_close(fused, twin, atol=tolerance, rtol=tolerance)
