#!/usr/bin/env python
"""Search one's own images: a query person (image + box) against a folder of gallery images.

    tools/demo.py --config-file output/run/config.yaml --query-image q.jpg \\
        --query-box 120 40 210 330 --gallery photos/ --top-k 10 --output-dir output/search \\
        MODEL.WEIGHTS output/run/model_final.pth MODEL.DEVICE cpu
    tools/demo.py ... MODEL.WEIGHTS w.pth TEST.DET_THRESH_SEARCH 0.3 TEST.CWS True

The gallery is a folder (its image files) or a quoted glob ("photos/*.jpg"). Detections scoring
at least TEST.DET_THRESH_SEARCH are ranked by cosine similarity to the query person (times the
detection score with TEST.CWS). Writes to the output folder `ranking.json` (the top-k hits),
`summary.jpg` (the query and its hits) and `detections/<index>_<name>.jpg` (each gallery image
with all its detections, colored by similarity, blue to red; gray: not ranked), and prints the
top-k table. An unreadable gallery image is skipped with a warning and counted in the summary.
Bad input (a missing or unreadable query image, a box outside the image, a gallery without a
readable image, no MODEL.WEIGHTS) prints one line `error: ...` and exits with status 2.
"""

import json
import logging
import os
import sys

from psdiff.engine import default_argument_parser, setup_cfg
from psdiff.engine.predictor import SearchPredictor, check_box, list_gallery
from psdiff.evaluation.visualize import draw_detections, draw_search_result, similarity_color
from psdiff.utils.errors import exit_status
from psdiff.utils.image import read_image, write_image
from psdiff.utils.logger import setup_logger

GRAY = (160, 160, 160)  # BGR: detections below TEST.DET_THRESH_SEARCH (not ranked)


def parse_args(argv=None):
    """The config arguments (the run's config.yaml, MODEL.WEIGHTS, ...) and the search's own."""
    parser = default_argument_parser(__doc__, train=False, distributed=False)
    parser.add_argument("--query-image", required=True, help="image showing the query person")
    parser.add_argument("--query-box", required=True, nargs=4, type=float,
                        metavar=("X1", "Y1", "X2", "Y2"), help="the person's box, in pixels")
    parser.add_argument("--gallery", required=True, help="folder of images, or a glob pattern")
    parser.add_argument("--top-k", type=int, default=10, help="hits to keep and show")
    parser.add_argument("--output-dir", default="output/search", help="folder for the results")
    return parser.parse_args(argv)


def table(result) -> str:
    """The top-k hits as a text table."""
    lines = [f"{'rank':>4}  {'similarity':>10}  {'score':>5}  {'box (x1 y1 x2 y2)':<23}  image"]
    for hit in result.hits:
        box = " ".join(f"{v:.0f}" for v in hit["box"])
        lines.append(f"{hit['rank']:>4}  {hit['similarity']:>10.4f}  {hit['score']:>5.2f}  "
                     f"{box:<23}  {hit['file_name']}")
    return "\n".join(lines)


def write_outputs(result, query_path: str, query_box: list, output: str) -> None:
    """ranking.json, summary.jpg and one detections picture per gallery image."""
    os.makedirs(os.path.join(output, "detections"), exist_ok=True)
    ranking = {
        "query": {"file_name": query_path, "box": query_box},
        "det_thresh": result.det_thresh,
        "cws": result.cws,
        "hits": [{k: hit[k] for k in ("rank", "file_name", "box", "score", "similarity")}
                 for hit in result.hits],
    }
    with open(os.path.join(output, "ranking.json"), "w") as f:
        json.dump(ranking, f, indent=2)
    hits = [dict(hit, image_id=hit["file_name"], correct=None) for hit in result.hits]
    gallery = [{"image_id": image["file_name"], "file_name": image["file_name"]}
               for image in result.images]
    query = {"file_name": query_path, "bbox": query_box}
    write_image(os.path.join(output, "summary.jpg"), draw_search_result(query, hits, gallery))
    ranks = {(hit["image_index"], hit["detection_index"]): hit["rank"] for hit in result.hits}
    width = len(str(len(result.images)))
    for i, image in enumerate(result.images):
        order = image["similarities"].argsort(kind="stable")  # the most similar on top
        colors, labels = [], []
        for j in order:
            sim = image["similarities"][j]
            colors.append(similarity_color(sim) if image["ranked"][j] else GRAY)
            rank = f"#{ranks[i, j]} " if (i, j) in ranks else ""
            labels.append(f"{rank}{sim:.2f}")
        picture = draw_detections(read_image(image["file_name"]), image["boxes"][order],
                                  colors, labels)
        stem = os.path.splitext(os.path.basename(image["file_name"]))[0]
        write_image(os.path.join(output, "detections", f"{i:0{width}d}_{stem}.jpg"), picture)


def main(argv=None) -> int:
    """Run the search and write its results; exit status 2 on bad input."""
    args = parse_args(argv)
    setup_logger(console_level=logging.WARNING)  # the printed table is the output
    return exit_status(search, args)


def search(args) -> None:
    """Embed the query, search the gallery, write the outputs, print the top-k table."""
    cfg = setup_cfg(args)
    gallery = list_gallery(args.gallery)
    box = check_box(args.query_box, read_image(args.query_image).shape)
    predictor = SearchPredictor(cfg)
    result = predictor.search(args.query_image, box, gallery, args.top_k)
    write_outputs(result, args.query_image, box, args.output_dir)
    print(table(result))
    skipped = f" ({len(result.skipped)} unreadable, skipped)" if result.skipped else ""
    print(f"{len(result.hits)} hits of {sum(int(i['ranked'].sum()) for i in result.images)} "
          f"detections in {len(result.images)} images{skipped}; results in {args.output_dir}")


if __name__ == "__main__":
    sys.exit(main())
