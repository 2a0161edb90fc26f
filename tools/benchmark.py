#!/usr/bin/env python
"""Speed benchmarks of psdiff, one subcommand each (`python tools/benchmark.py SUBCOMMAND -h`).

    eval   every metric of the CUHK-SYSU protocol on generated predictions of the real size
           (6,978 gallery images, 2,900 queries, gallery 100, up to 300 detections per image)
    model  inference latency of a config at several sampling steps, its backbone alone and,
           with --baseline, torchvision's Faster R-CNN R50-FPN, interleaved in one run
    train  training iteration time and peak memory at a batch size
    inference  gallery and query images/s of the evaluator's pass over a test split (the
           real loaders and driver), with the query features reused and with two passes,
           and with --query-modes, per way of embedding the queries
    roi_align  RoIAlign forward + backward: torchvision's kernel against the pooler's gather
           (psdiff/modeling/roi_align_gather.py), interleaved, at one map and box count

`model`, `train` and `inference` use random weights (MODEL.BACKBONE.PRETRAINED ""), take config
keys at the end (`MODEL.DEVICE cpu`, `TEST.AMP.ENABLED True`, `DATASETS.ROOT ...`), print a
Markdown table and append it to docs/benchmarks.md (--record) with the device, torch version,
git commit and command.

A subcommand is a function `add_<name>(subparsers)` that registers its parser and sets
`func` to the function that runs it; add new ones to `SUBCOMMANDS`.
"""

import argparse
import dataclasses
import itertools
import json
import logging
import os
import shlex
import statistics
import sys
import time

import numpy as np
import torch

from psdiff.config import get_cfg
from psdiff.evaluation import build_evaluator, build_loaders, inference_on_dataset
from psdiff.evaluation.metrics import compute_metrics
from psdiff.evaluation.predictions import Predictions
from psdiff.modeling.sampling import QUERY_MODES
from psdiff.utils import benchmark as bench
from psdiff.utils.amp import inference_autocast
from psdiff.utils.errors import PsdiffError, exit_status
from psdiff.utils.logger import setup_logger

logger = logging.getLogger("psdiff.benchmark")


def generate_cuhk_like(num_images: int, num_queries: int, gallery_size: int,
                       dets_per_image: int, dim: int, seed: int = 0):
    """In-memory CUHK-SYSU-shaped inputs: gallery dicts, queries (gallery_ids/gallery_boxes) and
    predictions with `dets_per_image` detections per image, scores uniform in [0, 1).
    `gallery_size` -1 lists every image but the query's, as the whole-pool protocol does."""
    rng = np.random.default_rng(seed)
    names = [f"s{i}.jpg" for i in range(num_images)]
    gallery, person_boxes = [], []
    for name in names:
        xy = rng.uniform(0, 600, size=(int(rng.integers(1, 9)), 2)).round()
        wh = rng.uniform(20, 200, size=xy.shape).round()
        boxes = np.concatenate([xy, xy + wh], axis=1)
        person_boxes.append(boxes)
        gallery.append({"image_id": name, "height": 900, "width": 900, "annotations": [
            {"bbox": b.tolist(), "pid": int(rng.integers(-1, 2))} for b in boxes]})
    # detections: jittered copies of the people, then random boxes, up to dets_per_image
    boxes = rng.uniform(0, 700, size=(num_images, dets_per_image, 4)).astype(np.float32)
    boxes[..., 2:] = boxes[..., :2] + rng.uniform(10, 200, size=(num_images, dets_per_image, 2))
    for i, people in enumerate(person_boxes):
        people = people[:dets_per_image]
        boxes[i, :len(people)] = people + rng.normal(0, 4, size=people.shape)
    embeddings = rng.standard_normal((num_images * dets_per_image, dim), dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    outputs = [{"boxes": boxes[i], "scores": rng.random(dets_per_image, dtype=np.float32),
                "embeddings": embeddings[i * dets_per_image:(i + 1) * dets_per_image]}
               for i in range(num_images)]

    if not (gallery_size == -1 or 1 <= gallery_size < num_images):
        raise PsdiffError(f"--gallery-size {gallery_size}: use 1..{num_images - 1}, or -1 (all)")
    gallery_size = num_images - 1 if gallery_size == -1 else gallery_size
    queries = []
    for q in range(num_queries):
        listed = rng.choice(num_images, size=gallery_size + 1, replace=False)
        num_pos = int(rng.integers(1, 4))  # the query person appears in 1-3 gallery images
        gt = np.full((gallery_size, 4), np.nan, np.float32)
        gt[:num_pos] = [person_boxes[i][0] for i in listed[1:num_pos + 1]]
        queries.append({"image_id": names[listed[0]], "bbox": person_boxes[listed[0]][0].tolist(),
                        "pid": q + 1, "gallery_ids": [names[i] for i in listed[1:]],
                        "gallery_boxes": gt})
    query_embeddings = rng.standard_normal((num_queries, dim), dtype=np.float32)
    query_embeddings /= np.linalg.norm(query_embeddings, axis=1, keepdims=True)
    predictions = Predictions.from_outputs(names, outputs, [q["image_id"] for q in queries],
                                           [q["bbox"] for q in queries], query_embeddings)
    return gallery, queries, predictions


def run_eval(args) -> dict:
    """Time `compute_metrics` (detection + CUHK-SYSU search) on generated inputs."""
    start = time.perf_counter()
    gallery, queries, predictions = generate_cuhk_like(
        args.images, args.queries, args.gallery_size, args.dets, args.dim, args.seed)
    logger.info("generated %d detections in %.1f s", len(predictions.gallery_scores),
                time.perf_counter() - start)
    start = time.perf_counter()
    metrics = compute_metrics(predictions, "cuhk_sysu", gallery, queries,
                              gallery_sizes=(args.gallery_size,), gallery_size=args.gallery_size)
    seconds = time.perf_counter() - start
    return {"benchmark": "eval", "seconds": round(seconds, 2), "images": args.images,
            "queries": args.queries, "gallery_size": args.gallery_size,
            "dets_per_image": args.dets, "dim": args.dim, "search/mAP": metrics["search/mAP"]}


def add_eval(subparsers) -> None:
    """Register `eval`: the evaluation protocol's speed at full CUHK-SYSU size."""
    parser = subparsers.add_parser("eval", help="time every metric of the CUHK-SYSU protocol")
    parser.add_argument("--images", type=int, default=6978, help="gallery images (CUHK pool)")
    parser.add_argument("--queries", type=int, default=2900, help="queries")
    parser.add_argument("--gallery-size", type=int, default=100,
                        help="images per query gallery (-1: every image but the query's)")
    parser.add_argument("--dets", type=int, default=300, help="detections per gallery image")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    parser.set_defaults(func=run_eval)


DOCS_BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "docs/benchmarks.md")


def load_cfg(args, *overrides):
    """The config of `--config-file`, random backbone weights, `--device`, `overrides`, then the
    command's own KEY VALUE pairs (the last word), frozen."""
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    device = ["MODEL.DEVICE", args.device] if args.device else []
    cfg.merge_from_list(["MODEL.BACKBONE.PRETRAINED", "", *device, *overrides, *args.opts])
    cfg.freeze()
    return cfg


def build_seeded(cfg):
    """The model of `cfg` with the same random weights at every call (seed 0)."""
    from psdiff.modeling import build_model

    torch.manual_seed(0)
    return build_model(cfg)


def build_for_inference(cfg):
    """`build_seeded`'s model as evaluation runs it: eval mode, `inference_model` (TEST.FUSE_BN)."""
    from psdiff.modeling import inference_model

    return inference_model(cfg, build_seeded(cfg).eval())


def random_image(height: int, width: int, device) -> torch.Tensor:
    """A uint8 BGR image [3, H, W] of uniform noise, the same at every call."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, height, width), generator=generator,
                         dtype=torch.uint8).to(device)


def faster_rcnn(height: int, width: int, device):
    """torchvision's Faster R-CNN R50-FPN, random weights (offline), resizing nothing at H x W."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=height,
                                    max_size=max(height, width))
    return model.eval().to(device)


def cdl_call(model, inputs):
    """One CDL call on N_test boxes drawn as at the first sampling step (pure noise)."""
    with torch.no_grad():
        features, _, whwh = model.extract_features(inputs)
    num, dim = model.sampler.num_proposals, model.cdl.emb_dim
    generator = torch.Generator().manual_seed(0)
    boxes = model.signal_to_abs_boxes(
        torch.randn(1, num, 4, generator=generator).to(model.device), whwh)
    embeddings = torch.randn(1, num, dim, generator=generator).to(model.device)
    t = torch.full((1,), model.num_timesteps - 1, device=model.device)
    return lambda: model.cdl(features, boxes, embeddings, t)


BASELINE = "Faster R-CNN R50-FPN"


def step_name(steps: int) -> str:
    return f"PSDiff {steps} step{'s' * (steps > 1)}"


def at_least(least: int):
    """An argparse type: an int no smaller than `least`."""
    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}")
        return value
    return parse


def latency_rows(times: dict, reference: str = None) -> list:
    """Table rows: name, median ms (min-max), FPS and, with a `reference` name, the ratio."""
    rows = []
    for name, seconds in times.items():
        ms = bench.median_ms(seconds)
        row = [name, f"{ms:.1f} ({1000 * min(seconds):.0f}-{1000 * max(seconds):.0f})",
               f"{1000 / ms:.2f}"]
        if reference:
            row.append(f"{ms / bench.median_ms(times[reference]):.2f}")
        rows.append(row)
    return rows


def step_ratios(ms_by_steps: dict, baseline_ms: float = None) -> dict:
    """Each step count's latency over the baseline's, and one extra step over step 1's latency
    from the 1-step and largest-step latencies: (t_n - t_1) / (n - 1) / t_1."""
    ratios = {}
    if baseline_ms:
        ratios.update({f"step-{s} / Faster R-CNN": ms / baseline_ms
                       for s, ms in ms_by_steps.items()})
    most = max(ms_by_steps)
    if 1 in ms_by_steps and most > 1:
        t1 = ms_by_steps[1]
        ratios["one extra step / step-1"] = (ms_by_steps[most] - t1) / (most - 1) / t1
    return ratios


def no_grad_under_amp(cfg, fn):
    """`fn` called under no_grad and TEST.AMP's autocast, as evaluation runs the model."""
    def call():
        with torch.no_grad(), inference_autocast(cfg):
            return fn()
    return call


def model_calls(args, cfg, models: dict, inputs: list) -> dict:
    """name -> call of one inference: the backbone alone (with the input normalization), PSDiff
    at each steps value and, with --baseline, Faster R-CNN."""
    first = next(iter(models.values()))
    calls = {f"backbone ({cfg.MODEL.BACKBONE.NAME})": lambda: first.extract_features(inputs)}
    for steps, model in models.items():
        calls[step_name(steps)] = lambda model=model: model.inference(inputs)
    if args.baseline:
        height, width = args.size
        frcnn = faster_rcnn(height, width, first.device)
        rgb = [inputs[0]["image"].flip(0).float() / 255]
        calls[BASELINE] = lambda: frcnn(rgb)
    return {name: no_grad_under_amp(cfg, fn) for name, fn in calls.items()}


def profile_cdl(args, cfg, model, inputs: list) -> str:
    """Where one CDL call's time goes, by part and by op, as two Markdown tables."""
    cdl = no_grad_under_amp(cfg, cdl_call(model, inputs))
    cdl()  # warm-up
    head = f"One CDL call, {cfg.MODEL.PSDIFF.NUM_PROPOSALS_TEST} boxes, mean of {args.repeats}"
    return "\n".join([
        f"{head} calls, by part:", "", bench.module_table(cdl, model.cdl, model.device,
                                                         args.repeats), "",
        f"{head} calls, self time by op (torch.profiler, top 10):", "",
        bench.profile_table(cdl, model.device, args.repeats)])


def profile_backbone(args, cfg, model, inputs: list) -> str:
    """Where one backbone call's time goes (with the input normalization), by op, as a Markdown
    table: step 1 is mostly the backbone."""
    backbone = no_grad_under_amp(cfg, lambda: model.extract_features(inputs))
    backbone()  # warm-up
    return "\n".join([
        f"One backbone call ({cfg.MODEL.BACKBONE.NAME}, TEST.FUSE_BN {cfg.TEST.FUSE_BN}), mean "
        f"of {args.repeats} calls, self time by op (torch.profiler, top 10):", "",
        bench.profile_table(backbone, model.device, args.repeats)])


def run_model(args) -> dict:
    """Inference latency at each --steps, the backbone alone and the optional baseline; with
    --profile, where one backbone call's and one CDL call's time goes."""
    height, width = args.size
    steps = sorted(set(args.steps))
    cfgs = {s: load_cfg(args, "MODEL.PSDIFF.SAMPLE_STEPS", str(s)) for s in steps}
    cfg = cfgs[steps[0]]
    models = {s: build_for_inference(c) for s, c in cfgs.items()}
    device = models[steps[0]].device
    image = random_image(height, width, device)
    inputs = [{"image": image, "height": height, "width": width, "image_id": "benchmark"}]
    calls = model_calls(args, cfg, models, inputs)
    times = bench.time_interleaved(calls, device, args.repeats, args.warmup)

    ms = {name: bench.median_ms(t) for name, t in times.items()}
    ratios = step_ratios({s: ms[step_name(s)] for s in steps}, ms.get(BASELINE))
    amp = f"autocast {cfg.TEST.AMP.DTYPE}" if cfg.TEST.AMP.ENABLED else "fp32"
    num = cfg.MODEL.PSDIFF.NUM_PROPOSALS_TEST
    reference = BASELINE if args.baseline else None
    body = [f"Inference at {height}x{width} (H x W), batch 1, {amp}, N_test {num}, median of "
            f"{args.repeats} interleaved runs after {args.warmup} warm-up:", "",
            bench.markdown_table(["what", "ms median (min-max)", "FPS"]
                                 + ([f"/ {BASELINE}"] if reference else []),
                                 latency_rows(times, reference))]
    if ratios:
        body += ["", bench.markdown_table(["ratio", "value"], [
            [name, f"{100 * v:.1f} %" if "extra" in name else f"{v:.2f}"]
            for name, v in ratios.items()])]
    if args.profile:
        model = models[steps[0]]
        body += ["", profile_backbone(args, cfg, model, inputs), "",
                 profile_cdl(args, cfg, model, inputs)]
    text = "\n".join(body)
    print(text)
    if args.record:
        bench.record(args.record, f"model: {args.config_file or 'defaults'}, {device}",
                     args.command_line, device, text)
    return {"benchmark": "model", "device": str(device), "size": [height, width],
            "latency_ms": {name: round(v, 2) for name, v in ms.items()},
            "ratios": {name: round(v, 4) for name, v in ratios.items()}}


def person_batch(batch: int, height: int, width: int, emb_dim: int, device) -> list:
    """`batch` training inputs: noise images, each with 4 persons and teacher embeddings."""
    generator = torch.Generator().manual_seed(0)
    inputs = []
    for i in range(batch):
        corner = torch.rand(4, 2, generator=generator) * torch.tensor([width, height]) * 0.7
        size = (0.1 + 0.2 * torch.rand(4, 2, generator=generator)) * torch.tensor([width, height])
        embeddings = torch.nn.functional.normalize(torch.randn(4, emb_dim, generator=generator),
                                                   dim=-1)
        inputs.append({"image": random_image(height, width, device), "image_id": f"train{i}",
                       "instances": {"boxes": torch.cat([corner, corner + size], dim=1),
                                     "embeddings": embeddings}})
    return inputs


def run_train(args) -> dict:
    """Iteration time and peak memory of the training step (AMP when SOLVER.AMP.ENABLED)."""
    from psdiff.engine import AMPTrainer, SimpleTrainer
    from psdiff.solver import build_gradient_clipper, build_optimizer
    from psdiff.utils.amp import amp_dtype
    from psdiff.utils.events import EventStorage

    height, width = args.size
    cfg = load_cfg(args)
    model = build_seeded(cfg)
    device = model.device
    data = itertools.repeat(person_batch(args.batch, height, width, cfg.MODEL.PSDIFF.EMB_DIM,
                                         device))
    optimizer = build_optimizer(cfg, model)
    clip = build_gradient_clipper(cfg)
    amp = cfg.SOLVER.AMP.ENABLED
    trainer = (AMPTrainer(model, data, optimizer, clip, amp_dtype(cfg.SOLVER.AMP, "SOLVER.AMP"))
               if amp else SimpleTrainer(model, data, optimizer, clip))
    bench.reset_peak_memory(device)
    with EventStorage(0):
        times = bench.time_interleaved({"step": trainer.run_step}, device, args.repeats,
                                       args.warmup)["step"]
    peak = bench.peak_memory_bytes(device)
    ms = bench.median_ms(times)
    memory = "CUDA max allocated" if device.type == "cuda" else "CPU max RSS"
    text = bench.markdown_table(
        ["batch", "H x W", "AMP", "ms per iteration (min-max)", "images/s", f"{memory} GiB"],
        [[args.batch, f"{height}x{width}", cfg.SOLVER.AMP.DTYPE if amp else "off",
          f"{ms:.0f} ({1000 * min(times):.0f}-{1000 * max(times):.0f})",
          f"{1000 * args.batch / ms:.2f}", f"{peak / 2**30:.2f}"]])
    print(text)
    if args.record:
        bench.record(args.record, f"train: {args.config_file or 'defaults'}, {device}",
                     args.command_line, device, f"Training step, median of {args.repeats} after "
                     f"{args.warmup} warm-up:\n\n{text}")
    return {"benchmark": "train", "device": str(device), "batch": args.batch,
            "ms_per_iter": round(ms, 1), "peak_memory_gib": round(peak / 2**30, 3)}


PATHS = {"reused": True, "two-pass": False}  # --paths -> inference_on_dataset's reuse_features


def variants(args, sampler) -> list:
    """(label, --paths entry, query mode) of each timed variant: every path with every
    --query-modes entry (default: the config's mode, then the label is the path alone)."""
    modes = args.query_modes or [sampler.query_mode]
    return [(path if not args.query_modes else f"{path}, {mode}", path, mode)
            for path in args.paths for mode in modes]


def time_paths(args, cfg, model, evaluator, loaders) -> dict:
    """label -> pass ("gallery", "query images") -> its seconds in each timed round; the
    variants (`variants`) interleaved, one evaluator run of each per round, after --warmup
    untimed rounds."""
    runs = variants(args, model.sampler)
    samplers = {mode: dataclasses.replace(model.sampler, query_mode=mode) for _, _, mode in runs}
    seconds = {label: {} for label, _, _ in runs}
    for round_index in range(args.warmup + args.repeats):
        timed = round_index >= args.warmup
        for label, path, mode in runs:
            logger.info("round %d/%d%s: %s", round_index + 1, args.warmup + args.repeats,
                        "" if timed else " (warm-up)", label)
            model.sampler = samplers[mode]
            with inference_autocast(cfg):
                passes = inference_on_dataset(model, *loaders, evaluator,
                                              reuse_features=PATHS[path])
            for name, (_, pass_seconds) in passes.items():
                if timed:
                    seconds[label].setdefault(name, []).append(pass_seconds)
    return seconds


def images_per_s(images: int, seconds: list):
    """`images` over the median of `seconds`; None for a pass without images."""
    return images / statistics.median(seconds) if images else None


def throughput_rows(rate: dict, seconds: dict) -> list:
    """Table rows: variant, gallery and query images/s ("-" for a pass without images) and the
    seconds of both passes, median (min-max)."""
    rows = []
    for label, by_pass in rate.items():
        total = [g + q for g, q in zip(seconds[label]["gallery"], seconds[label]["query images"])]
        rows.append([label] + ["-" if v is None else f"{v:.2f}" for v in by_pass.values()]
                    + [f"{statistics.median(total):.2f} ({min(total):.2f}-{max(total):.2f})"])
    return rows


def run_inference(args) -> dict:
    """Gallery and query images/s of the evaluator's pass over a test split, per --paths and
    --query-modes."""
    cfg = load_cfg(args)
    dataset = args.dataset or next(iter(cfg.DATASETS.TEST), None)
    if not dataset:
        raise PsdiffError("benchmark inference: give --dataset or a DATASETS.TEST name")
    model = build_for_inference(cfg)
    evaluator = build_evaluator(cfg, dataset)
    loaders = build_loaders(cfg, evaluator)
    gallery_ids = {r["image_id"] for r in evaluator.gallery}
    query_ids = {q["image_id"] for q in evaluator.queries}
    images = {"gallery": len(evaluator.gallery), "query images": len(query_ids - gallery_ids)}
    seconds = time_paths(args, cfg, model, evaluator, loaders)
    rate = {label: {name: images_per_s(images[name], times[name]) for name in images}
            for label, times in seconds.items()}
    amp = f"autocast {cfg.TEST.AMP.DTYPE}" if cfg.TEST.AMP.ENABLED else "fp32"
    body = [f"Evaluator inference on {dataset}: {images['gallery']} gallery images "
            f"({len(query_ids & gallery_ids)} hold the {len(evaluator.queries)} queries), "
            f"{images['query images']} query images outside the gallery; batch "
            f"{cfg.TEST.IMS_PER_BATCH}, test size {cfg.INPUT.MIN_SIZE_TEST} "
            f"(max {cfg.INPUT.MAX_SIZE_TEST}), {amp}, N_test "
            f"{cfg.MODEL.PSDIFF.NUM_PROPOSALS_TEST}, {cfg.MODEL.PSDIFF.SAMPLE_STEPS} steps; "
            f"median of {args.repeats} rounds after {args.warmup} warm-up, paths interleaved "
            "(reused: the queries embedded from the gallery pass's features; two-pass: the "
            "backbone run again for them; denoise / alone: MODEL.PSDIFF.QUERY_MODE):", "",
            bench.markdown_table(["variant", "gallery images/s", "query images/s",
                                  "s per evaluation (min-max)"], throughput_rows(rate, seconds))]
    text = "\n".join(body)
    print(text)
    device = model.device
    if args.record:
        bench.record(args.record, f"inference: {args.config_file or 'defaults'}, {dataset}, "
                     f"{device}", args.command_line, device, text)
    return {"benchmark": "inference", "device": str(device), "dataset": dataset,
            "images": images, "images_per_s": {
                label: {name: None if v is None else round(v, 3) for name, v in by_pass.items()}
                for label, by_pass in rate.items()}}


def add_common(parser, repeats: int, warmup: int = 1) -> None:
    """Arguments of `model`, `train` and `inference`: the config, repeats and where to record."""
    parser.add_argument("--config-file", default="", metavar="FILE")
    parser.add_argument("--device", default="", help="cpu, cuda, ...: MODEL.DEVICE (default: "
                        "the config's)")
    parser.add_argument("--repeats", type=at_least(1), default=repeats,
                        help="timed runs (median)")
    parser.add_argument("--warmup", type=at_least(0), default=warmup, help="untimed runs before")
    parser.add_argument("--record", default=DOCS_BENCHMARKS, metavar="FILE",
                        help="Markdown file the table is appended to; '' = print only")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")


def add_size(parser) -> None:
    """The input size of `model` and `train` (random images)."""
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1333], metavar=("H", "W"),
                        help="input height and width (default 800 1333)")


def add_model(subparsers) -> None:
    """Register `model`: inference latency and FPS of a config, optionally against FRCNN."""
    parser = subparsers.add_parser("model", help="inference latency at several sampling steps")
    parser.add_argument("--steps", type=at_least(1), nargs="+", default=[1, 2, 4, 8],
                        help="sampling steps to time (MODEL.PSDIFF.SAMPLE_STEPS)")
    parser.add_argument("--baseline", action="store_true",
                        help="also time torchvision's Faster R-CNN R50-FPN, and print ratios")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one backbone and one CDL call (time by op, top 10)")
    add_size(parser)
    add_common(parser, repeats=5)
    parser.set_defaults(func=run_model)


def add_train(subparsers) -> None:
    """Register `train`: iteration time and peak memory at a batch size."""
    parser = subparsers.add_parser("train", help="training iteration time and peak memory")
    parser.add_argument("--batch", type=at_least(1), default=8, help="images per iteration")
    add_size(parser)
    add_common(parser, repeats=3)
    parser.set_defaults(func=run_train)


def add_inference(subparsers) -> None:
    """Register `inference`: gallery and query images/s of the evaluator over a test split."""
    parser = subparsers.add_parser(
        "inference", help="gallery and query images/s of the evaluator over a test split")
    parser.add_argument("--dataset", default="", metavar="NAME",
                        help="test split (default: the config's first DATASETS.TEST)")
    parser.add_argument("--paths", nargs="+", choices=tuple(PATHS), default=list(PATHS),
                        help="reused: queries from the gallery pass's features (what evaluation "
                        "does); two-pass: the backbone again for them (before)")
    parser.add_argument("--query-modes", nargs="+", choices=QUERY_MODES, default=[],
                        help="MODEL.PSDIFF.QUERY_MODE of each timed variant, with every path "
                        "(default: the config's)")
    add_common(parser, repeats=1, warmup=0)
    parser.set_defaults(func=run_inference)


def run_roi_align(args) -> dict:
    """RoIAlign forward + backward (--forward-only: forward without autograd, as at inference)
    of --boxes random boxes on a random --size map, by torchvision's kernel and by
    `roi_align_gather`, interleaved; the gather's speed-up."""
    from torchvision.ops import roi_align

    from psdiff.modeling.roi_align_gather import roi_align_gather

    device = torch.device(args.device)
    height, width = args.size
    generator = torch.Generator().manual_seed(0)
    feature = torch.randn(args.images, args.channels, height, width, generator=generator)
    scale = 1.0 / args.stride
    corner = torch.rand(args.boxes, 2, generator=generator) * torch.tensor([width, height]) * 0.8
    extent = (0.1 + 0.3 * torch.rand(args.boxes, 2, generator=generator)) * torch.tensor(
        [width, height])
    image = torch.randint(0, args.images, (args.boxes, 1), generator=generator).float()
    rois = torch.cat([image, torch.cat([corner, corner + extent], dim=1) / scale], dim=1)
    feature, rois = feature.to(device).requires_grad_(True), rois.to(device)
    upstream = torch.randn(args.boxes, args.channels, 7, 7, generator=generator).to(device)

    def forward_backward(pool):
        def call():
            if args.forward_only:
                with torch.no_grad():
                    pool()
                return
            pool().backward(upstream)
            feature.grad = None
        return call

    calls = {"torchvision roi_align": forward_backward(
                 lambda: roi_align(feature, rois, 7, scale, 2, aligned=True)),
             "roi_align_gather": forward_backward(
                 lambda: roi_align_gather(feature, rois, 7, scale, 2))}
    times = bench.time_interleaved(calls, device, args.repeats, args.warmup)
    ms = {name: bench.median_ms(t) for name, t in times.items()}
    speedup = ms["torchvision roi_align"] / ms["roi_align_gather"]
    timed = "forward" if args.forward_only else "forward + backward"
    text = "\n".join([
        f"RoIAlign 7x7, sampling ratio 2, {timed} of {args.boxes} boxes on a "
        f"{args.images} x {args.channels} x {height} x {width} map (stride {args.stride}), median "
        f"of {args.repeats} interleaved runs after {args.warmup} warm-up; "
        f"{torch.get_num_threads()} threads:", "",
        bench.markdown_table(["what", "ms median (min-max)", "/ roi_align_gather"],
                             [row[:2] + [f"{ms[row[0]] / ms['roi_align_gather']:.2f}"]
                              for row in latency_rows(times)])])
    print(text)
    if args.record:
        bench.record(args.record, f"roi_align, {device}", args.command_line, device, text)
    return {"benchmark": "roi_align", "device": str(device),
            "ms": {name: round(v, 2) for name, v in ms.items()}, "speedup": round(speedup, 3)}


def add_roi_align(subparsers) -> None:
    """Register `roi_align`: torchvision's RoIAlign against the gather, forward + backward."""
    parser = subparsers.add_parser("roi_align", help="RoIAlign forward + backward: torchvision's "
                                   "kernel against the pooler's gather")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=at_least(1), default=4, help="images in the batch")
    parser.add_argument("--channels", type=at_least(1), default=128, help="map channels")
    parser.add_argument("--size", type=int, nargs=2, default=[60, 80], metavar=("H", "W"),
                        help="map height and width (default: p2 of a 240x320 image)")
    parser.add_argument("--stride", type=at_least(1), default=4, help="map stride")
    parser.add_argument("--boxes", type=at_least(1), default=400, help="boxes over the batch")
    parser.add_argument("--forward-only", action="store_true",
                        help="time the forward alone, without autograd (inference)")
    parser.add_argument("--repeats", type=at_least(1), default=10, help="timed runs (median)")
    parser.add_argument("--warmup", type=at_least(0), default=2, help="untimed runs before")
    parser.add_argument("--record", default=DOCS_BENCHMARKS, metavar="FILE",
                        help="Markdown file the table is appended to; '' = print only")
    parser.set_defaults(func=run_roi_align)


SUBCOMMANDS = (add_eval, add_model, add_train, add_inference, add_roi_align)


def main(argv=None) -> int:
    """Run one subcommand and print its result as one JSON line; 2 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["python", "tools/benchmark.py", *argv])
    setup_logger()
    return exit_status(lambda: print(json.dumps(args.func(args))))


if __name__ == "__main__":
    sys.exit(main())
