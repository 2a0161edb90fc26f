#!/usr/bin/env python
"""Speed benchmarks of psdiff, one subcommand each (`python tools/benchmark.py SUBCOMMAND -h`).

    eval   every metric of the CUHK-SYSU protocol on generated predictions of the real size
           (6,978 gallery images, 2,900 queries, gallery 100, up to 300 detections per image)

A subcommand is a function `add_<name>(subparsers)` that registers its parser and sets
`func` to the function that runs it; add new ones to `SUBCOMMANDS`.
"""

import argparse
import json
import logging
import sys
import time

import numpy as np

from psdiff.evaluation.metrics import compute_metrics
from psdiff.evaluation.predictions import Predictions
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


SUBCOMMANDS = (add_eval,)


def main(argv=None) -> int:
    """Run one subcommand and print its result as one JSON line; 2 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    args = parser.parse_args(argv)
    setup_logger()
    return exit_status(lambda: print(json.dumps(args.func(args))))


if __name__ == "__main__":
    sys.exit(main())
