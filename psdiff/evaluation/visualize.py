"""A search-result picture: the query, then its top-k gallery hits with boxes and scores.

The ranking is the protocol's own (`ranking.iter_ranked` on the thresholded detections), so the
picture shows exactly what top-k counted: each hit is boxed green when it is the query person's
positive detection, red otherwise (orange when unknown: one's own images, tools/demo.py), with
its rank, similarity and detection score. `draw_detections` draws all boxes of one image.
"""

import cv2
import numpy as np

from psdiff.data import get_protocol
from psdiff.utils.errors import PsdiffError
from psdiff.utils.image import read_image

from .metrics import align_gallery, search_rows
from .predictions import Predictions
from .ranking import iter_ranked

GREEN, RED, BLUE, ORANGE = (0, 200, 0), (0, 0, 230), (230, 120, 0), (0, 160, 255)  # BGR


def top_hits(predictions: Predictions, protocol: str, gallery: list, queries: list,
             query_index: int, k: int = 5, det_thresh: float = 0.5, cws: bool = False,
             ignore_cam_id: bool = True) -> list[dict]:
    """The k best gallery detections of one query, best first:
    `{"image_id", "box", "similarity", "score", "correct"}`."""
    if not 0 <= query_index < len(queries):
        raise PsdiffError(f"query index {query_index} is outside 0..{len(queries) - 1}")
    rows = search_rows(align_gallery(predictions, gallery), det_thresh, cws)
    galleries = get_protocol(protocol).query_galleries(gallery, queries, ignore_cam_id)
    _, ranked = next(iter_ranked(rows, predictions.query_embeddings, galleries, [query_index]))
    hits = []
    for position in ranked.top_rows(k):
        slot = int(np.searchsorted(ranked.starts, position, side="right")) - 1
        image = int(ranked.images[slot])
        row = rows.offsets[image] + position - ranked.starts[slot]
        hits.append({"image_id": gallery[image]["image_id"], "box": rows.boxes[row].tolist(),
                     "similarity": float(ranked.scores[position]),
                     "score": float(rows.scores[row]),
                     "correct": bool(position in ranked.positives)})
    return hits


def _tile(image: np.ndarray, box, color, lines: list[str], height: int) -> np.ndarray:
    """The image scaled to `height` with the box drawn and text lines on top."""
    scale = height / image.shape[0]
    tile = cv2.resize(image, (max(1, round(image.shape[1] * scale)), height))
    tile = draw_detections(tile, [[v * scale for v in box]], [color])
    for i, line in enumerate(lines):
        _text(tile, line, (4, 16 + 16 * i))
    return tile


def _text(image: np.ndarray, line: str, origin: tuple, color=(255, 255, 255)) -> None:
    """A text line with a black outline, readable on any background."""
    cv2.putText(image, line, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
    cv2.putText(image, line, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1)


def similarity_color(similarity: float) -> tuple:
    """The BGR color of a similarity on OpenCV's JET map: blue at <= 0 to red at >= 1."""
    value = np.full((1, 1), round(255 * min(max(float(similarity), 0.0), 1.0)), np.uint8)
    return tuple(int(c) for c in cv2.applyColorMap(value, cv2.COLORMAP_JET)[0, 0])


def draw_detections(image: np.ndarray, boxes, colors: list, labels: list = None) -> np.ndarray:
    """A copy of the BGR image with each box (xyxy pixels) and, when given, its label above it,
    drawn in the given order (so later boxes lie on top). The one box-drawing function of the
    search pictures, tools/demo.py and tools/visualize_data.py."""
    image = image.copy()
    for k, (box, color) in enumerate(zip(boxes, colors)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(image, (x1, y1), (x2, y2), color, 2)
        if labels is not None:
            _text(image, labels[k], (x1, max(y1 - 4, 12)), color)
    return image


def draw_search_result(query: dict, hits: list[dict], gallery: list,
                       height: int = 256) -> np.ndarray:
    """One BGR picture: the query image (blue box) followed by the hits, left to right; a
    hit's `correct` may be None (no ground truth)."""
    files = {r["image_id"]: r["file_name"] for r in gallery}
    tiles = [_tile(read_image(query["file_name"]), query["bbox"], BLUE, ["query"], height)]
    for rank, hit in enumerate(hits, 1):
        lines = [f"#{rank} sim {hit['similarity']:.2f}", f"det {hit['score']:.2f}"]
        color = ORANGE if hit.get("correct") is None else GREEN if hit["correct"] else RED
        tiles.append(_tile(read_image(files[hit["image_id"]]), hit["box"], color, lines, height))
    gap = np.full((height, 6, 3), 255, np.uint8)
    return np.concatenate([part for t in tiles for part in (t, gap)][:-1], axis=1)
