"""A search-result picture: the query, then its top-k gallery hits with boxes and scores.

The ranking is the protocol's own (`ranking.iter_ranked` on the thresholded detections), so the
picture shows exactly what top-k counted: each hit is boxed green when it is the query person's
positive detection, red otherwise, with its rank, similarity and detection score.
"""

import cv2
import numpy as np

from psdiff.utils.errors import PsdiffError

from .metrics import align_gallery, search_rows
from .predictions import Predictions
from .ranking import iter_ranked
from .search import query_gallery_fn

GREEN, RED, BLUE = (0, 200, 0), (0, 0, 230), (230, 120, 0)  # BGR


def top_hits(predictions: Predictions, protocol: str, gallery: list, queries: list,
             query_index: int, k: int = 5, det_thresh: float = 0.5, cws: bool = False,
             ignore_cam_id: bool = True) -> list[dict]:
    """The k best gallery detections of one query, best first:
    `{"image_id", "box", "similarity", "score", "correct"}`."""
    if not 0 <= query_index < len(queries):
        raise PsdiffError(f"query index {query_index} is outside 0..{len(queries) - 1}")
    rows = search_rows(align_gallery(predictions, gallery), det_thresh, cws)
    galleries = query_gallery_fn(protocol, gallery, queries, ignore_cam_id)
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
    x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
    cv2.rectangle(tile, (x1, y1), (x2, y2), color, 2)
    for i, line in enumerate(lines):
        origin = (4, 16 + 16 * i)
        cv2.putText(tile, line, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
        cv2.putText(tile, line, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return tile


def _read(path: str) -> np.ndarray:
    """A BGR image from disk, or one PsdiffError line."""
    image = cv2.imread(path)
    if image is None:
        raise PsdiffError(f"cannot read image {path}")
    return image


def draw_search_result(query: dict, hits: list[dict], gallery: list,
                       height: int = 256) -> np.ndarray:
    """One BGR picture: the query image (blue box) followed by the hits, left to right."""
    files = {r["image_id"]: r["file_name"] for r in gallery}
    tiles = [_tile(_read(query["file_name"]), query["bbox"], BLUE, ["query"], height)]
    for rank, hit in enumerate(hits, 1):
        lines = [f"#{rank} sim {hit['similarity']:.2f}", f"det {hit['score']:.2f}"]
        color = GREEN if hit["correct"] else RED
        tiles.append(_tile(_read(files[hit["image_id"]]), hit["box"], color, lines, height))
    gap = np.full((height, 6, 3), 255, np.uint8)
    return np.concatenate([part for t in tiles for part in (t, gap)][:-1], axis=1)
