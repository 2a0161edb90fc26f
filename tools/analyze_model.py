#!/usr/bin/env python
"""Parameters per module and inference FLOPs of a PSDiff config (paper Table II).

    tools/analyze_model.py --steps 1 8 --config-file configs/psdiff_r50.yaml MODEL.DEVICE cpu
    tools/analyze_model.py --config-file configs/psdiff_swinb.yaml --size 800 608 \\
        MODEL.DEVICE cpu MODEL.PSDIFF.NUM_PROPOSALS_TEST 100

Parameters are listed per top-level module and per CDL part. FLOPs are fvcore's count (one
fused multiply-add = one flop, as Detectron2's and the papers' tables) of one image of --size
through the backbone and `steps` CDL calls, with randomly initialized weights, on MODEL.DEVICE.
fvcore has no rule for `scaled_dot_product_attention`; this tool adds one (the two matmuls).
RoIAlign, NMS and elementwise ops are not counted (listed as skipped).
"""

import dataclasses
import logging
import sys
import warnings
from collections import Counter

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from psdiff.engine import default_argument_parser, setup_cfg
from psdiff.modeling import build_model
from psdiff.utils.errors import exit_status
from psdiff.utils.logger import setup_logger


def sdpa_flop_jit(inputs, outputs):
    """q [.., L, E], k [.., S, E], v [.., S, Ev]: L*S*E (q k^T) + L*S*Ev (weights v) per batch."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for d in q[:-2]:
        batch *= d
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


class ImageInference(nn.Module):
    """model.inference on one image tensor, so fvcore can trace it (tensors in, tensors out)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        inputs = [{"image": image, "height": image.shape[1], "width": image.shape[2],
                   "image_id": "analyze"}]
        out = self.model.inference(inputs)[0]
        return out["boxes"], out["scores"], out["embeddings"]


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


def parameter_table(model):
    """Lines 'name  count' for each top-level module and its parts, then the total."""
    lines = [f"{'module':<34}{'params':>14}"]
    for name, child in model.named_children():
        lines.append(f"{name:<34}{count_parameters(child):>14,}")
        for part, sub in child.named_children():
            lines.append(f"  {name + '.' + part:<32}{count_parameters(sub):>14,}")
    lines.append(f"{'total':<34}{count_parameters(model):>14,}")
    return lines


def count_flops(model, image, steps):
    """fvcore FlopCountAnalysis of inference with `steps` sampling steps: (analysis, total)."""
    model.sampler = dataclasses.replace(model.sampler, steps=steps)
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")  # fvcore's trace
    analysis = FlopCountAnalysis(ImageInference(model), (image,))
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis, analysis.total()


def parse_args(argv=None):
    """The config arguments, the step counts and the image size."""
    parser = default_argument_parser(__doc__, train=False, distributed=False)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 8], help="sampling steps")
    parser.add_argument("--size", type=int, nargs=2, default=[1333, 800], metavar=("W", "H"),
                        help="input image width and height")
    return parser.parse_args(argv)


def main(args):
    cfg = setup_cfg(args)
    model = build_model(cfg).eval()
    print("\n".join(parameter_table(model)))
    width, height = args.size
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, device=model.device)
    n = cfg.MODEL.PSDIFF.NUM_PROPOSALS_TEST
    print(f"\nFLOPs at {width}x{height}, N_test = {n} (fvcore: 1 multiply-add = 1 flop)")
    for steps in args.steps:
        analysis, total = count_flops(model, image, steps)
        by_module = analysis.by_module()
        parts = ", ".join(f"{name} {by_module.get(name, 0) / 1e9:.3f}G"
                          for name in ("model.backbone", "model.cdl"))
        print(f"steps {steps}: {total / 1e9:.3f}G ({parts})")
        skipped = Counter(analysis.unsupported_ops())
        if skipped:
            print("  not counted: " + ", ".join(f"{op} x{k}" for op, k in skipped.most_common()))


if __name__ == "__main__":
    setup_logger(console_level=logging.WARNING)  # the printed tables are the output
    sys.exit(exit_status(lambda: main(parse_args())))
