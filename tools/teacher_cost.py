#!/usr/bin/env python
"""Measure what a frozen teacher run inside the PSDiff training loop would add to an iteration.

    tools/teacher_cost.py MODEL.DEVICE cpu
    tools/teacher_cost.py --config-file configs/psdiff_r50.yaml --batch 8 MODEL.DEVICE cuda
    tools/teacher_cost.py --scale 0.25 --batch 8 MODEL.DEVICE cpu

e0 = Teacher(S, b0) can be read from a precomputed cache or computed in the loop (docs/teacher.md
has the measurement and the choice). On MODEL.DEVICE, in one process, this times
  * a PSDiff training step: the real model of --config-file (default: the paper's ResNet-50
    config), forward + backward on a batch of images with ground-truth boxes and e0;
  * the in-loop teacher: RoIAlign of the same boxes to TEACHER.INPUT_SIZE crops (HHCL: 256x128)
    + the forward of the frozen teacher built from the config's TEACHER.* keys (no gradient);
and counts, with fvcore, the forward FLOPs per image of the PSDiff backbone and of the
teacher at full size (a device-independent cross-check). Defaults are the paper's per-image
sizes (1333x800, ~4.9 boxes per CUHK-SYSU training image); --scale shrinks images and crops
together, --batch sets images per step (the paper's GPUs hold 8). Prints one JSON line.
"""

import json
import logging
import os
import sys
import time

import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis
from torchvision.ops import roi_align

from psdiff.engine import default_argument_parser, setup_cfg
from psdiff.modeling import build_model
from psdiff.teacher.network import ReIDNetwork
from psdiff.utils.errors import exit_status
from psdiff.utils.logger import setup_logger

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "psdiff_r50.yaml")


def _batch(args, height, width, dim, generator):
    """Random images with `boxes_per_image` person-shaped (1:2.5) boxes and unit e0 each."""
    inputs = []
    for i in range(args.batch):
        boxes = []
        for _ in range(args.boxes_per_image):
            h = float(torch.empty(1).uniform_(0.2, 0.8, generator=generator)) * height
            w = h / 2.5
            x1 = float(torch.rand(1, generator=generator)) * (width - w)
            y1 = float(torch.rand(1, generator=generator)) * (height - h)
            boxes.append([x1, y1, x1 + w, y1 + h])
        embeddings = F.normalize(torch.randn(len(boxes), dim, generator=generator), dim=1)
        inputs.append({
            "image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8,
                                   generator=generator),
            "height": height, "width": width, "image_id": f"{i}.jpg", "file_name": f"{i}.jpg",
            "instances": {"boxes": torch.tensor(boxes), "pids": torch.arange(len(boxes)),
                          "embeddings": embeddings}})
    return inputs


def _time(fn, repeats, sync):
    fn()  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def _gflops(module, inputs):
    flops = FlopCountAnalysis(module, inputs)
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return flops.total() / 1e9


def parse_args(argv=None):
    """The config arguments (default: the paper's R50 config) and the measurement's sizes."""
    parser = default_argument_parser(__doc__, train=False, distributed=False)
    parser.set_defaults(config_file=DEFAULT_CONFIG)
    parser.add_argument("--scale", type=float, default=1.0, help="size factor on images and crops")
    parser.add_argument("--batch", type=int, default=2, help="images per step (paper: 8 per GPU)")
    parser.add_argument("--boxes-per-image", type=int, default=5, help="CUHK-SYSU train: 4.9")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps, after one warm-up")
    return parser.parse_args(argv)


def measure(args) -> None:
    """Time both steps, count both FLOPs, print the JSON line."""
    cfg = setup_cfg(args)
    device = cfg.MODEL.DEVICE
    model = build_model(cfg).train()
    dim = cfg.MODEL.PSDIFF.EMB_DIM
    teacher = ReIDNetwork.from_config(cfg).to(device).eval()
    teacher.requires_grad_(False)
    height, width = round(800 * args.scale), round(1333 * args.scale)
    full_crop = tuple(cfg.TEACHER.INPUT_SIZE)
    crop = tuple(round(side * args.scale) for side in full_crop)
    inputs = _batch(args, height, width, dim, torch.Generator().manual_seed(0))
    images = torch.stack([x["image"] for x in inputs]).float().to(device)
    rois = torch.cat([torch.cat([torch.full((args.boxes_per_image, 1), float(i)),
                                 x["instances"]["boxes"]], dim=1) for i, x in enumerate(inputs)])
    rois = rois.to(device)

    def psdiff_step():
        losses = model(inputs)
        sum(v for k, v in losses.items() if k.startswith("loss")).backward()

    @torch.no_grad()
    def teacher_step():
        teacher(roi_align(images, rois, crop, aligned=True))

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    t_psdiff = _time(psdiff_step, args.repeats, sync)
    t_teacher = _time(teacher_step, args.repeats, sync)
    with torch.no_grad():
        backbone = _gflops(model.backbone.eval(), torch.zeros(1, 3, 800, 1344, device=device))
        per_image = _gflops(teacher, torch.zeros(args.boxes_per_image, 3, *full_crop,
                                                 device=device))
    print(json.dumps({
        "device": device, "threads": torch.get_num_threads(), "config": args.config_file,
        "image_size": [height, width], "crop_size": list(crop), "batch": args.batch,
        "boxes_per_image": args.boxes_per_image, "psdiff_step_s": round(t_psdiff, 3),
        "teacher_forward_s": round(t_teacher, 3), "teacher_share": round(t_teacher / t_psdiff, 4),
        "full_size_forward_gflops_per_image": {"psdiff_backbone": round(backbone, 1),
                                               "teacher_on_gt_crops": round(per_image, 1)},
    }))


def main(argv=None) -> int:
    """Exit status 0, or 2 after one `error: ...` line on bad input (e.g. a missing config)."""
    args = parse_args(argv)
    setup_logger(console_level=logging.WARNING)  # the printed JSON line is the output
    return exit_status(measure, args)


if __name__ == "__main__":
    sys.exit(main())
