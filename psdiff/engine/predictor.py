"""Search one's own images with a trained model: query image + box -> ranked gallery hits.

Detectron2's `DefaultPredictor` for person search: `SearchPredictor(cfg)` builds the model,
loads `MODEL.WEIGHTS`, and takes BGR images as numpy arrays, resized as the test mapper does
(`INPUT.MIN_SIZE_TEST` / `INPUT.MAX_SIZE_TEST` / `INPUT.FORMAT`). Each image's sampler noise is
seeded by its file name (without folder), as in evaluation, so results are repeatable.
TEST.AMP runs the model under autocast, as in evaluation.
Ranking follows the evaluation protocol: gallery detections scoring >= det_thresh, cosine
similarity to the query, times the detection score with CWS. An unreadable gallery image is
skipped with a warning naming it; only a gallery without any readable image is an error.
"""

import glob
import itertools
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from psdiff.data.mapper import DatasetMapper
from psdiff.utils.amp import inference_autocast
from psdiff.utils.errors import PsdiffError
from psdiff.utils.image import read_image

from .checkpoint import Checkpointer

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_gallery(spec: str) -> list[str]:
    """The image files of a folder (by extension) or of a glob pattern, sorted."""
    if os.path.isdir(spec):
        paths = [os.path.join(spec, name) for name in os.listdir(spec)
                 if name.lower().endswith(IMAGE_EXTENSIONS)]
    else:
        paths = glob.glob(spec)
    paths = sorted(p for p in paths if os.path.isfile(p))
    if not paths:
        raise PsdiffError(f"gallery {spec} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def check_box(box, image_shape, name: str = "query box") -> list[float]:
    """`box` as 4 floats x1 y1 x2 y2, checked to be non-empty and inside an image (h, w, ...)."""
    box = [float(v) for v in box]
    height, width = image_shape[:2]
    if len(box) != 4:
        raise PsdiffError(f"{name} needs 4 values x1 y1 x2 y2, got {box}")
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise PsdiffError(f"{name} {box} is not a non-empty box inside the {width}x{height} "
                          "image (width x height; need 0 <= x1 < x2 <= width, 0 <= y1 < y2 <= "
                          "height)")
    return box


@dataclass
class SearchResult:
    """What `SearchPredictor.search` found.

    `images`: one dict per gallery image, in order: file_name, height, width, boxes [K, 4],
    scores [K], similarities [K] (cosine, x score with CWS) and ranked [K] (score >=
    det_thresh). `hits`: the top-k ranked detections, best first: rank (1-based), file_name,
    box, score, similarity, image_index, detection_index. `skipped`: the gallery paths that
    could not be read.
    """

    query_embedding: np.ndarray
    images: list
    hits: list
    det_thresh: float
    cws: bool
    skipped: list = field(default_factory=list)


class SearchPredictor:
    """A trained PSDiff in eval mode, for queries and galleries of one's own images."""

    def __init__(self, cfg):
        """Build the model on `MODEL.DEVICE` and load `MODEL.WEIGHTS` (required)."""
        from psdiff.modeling import build_model, inference_model

        if not cfg.MODEL.WEIGHTS:
            raise PsdiffError("MODEL.WEIGHTS is empty: give the trained checkpoint, e.g. "
                              "MODEL.WEIGHTS output/run/model_final.pth")
        self.cfg = cfg.clone()
        model = build_model(cfg).eval()  # on MODEL.DEVICE, checked there
        Checkpointer(model).load(cfg.MODEL.WEIGHTS, checkpointables=[])
        self.model = inference_model(cfg, model)
        self.mapper = DatasetMapper.from_config(cfg, is_train=False)
        self.batch_size = max(1, cfg.TEST.IMS_PER_BATCH)

    def model_input(self, image_bgr: np.ndarray, image_id: str) -> dict:
        """One model input dict, resized by the test-time DatasetMapper."""
        image = image_bgr[:, :, ::-1] if self.mapper.image_format == "RGB" else image_bgr
        tensor, _, _ = self.mapper.map_image(image)
        height, width = image_bgr.shape[:2]
        return {"image": tensor, "image_id": image_id, "height": height, "width": width}

    def embed_query(self, image_bgr: np.ndarray, box, image_id: str = "query.jpg") -> np.ndarray:
        """The L2-normalized embedding [D] of the person in `box` (xyxy, image pixels)."""
        box = check_box(box, image_bgr.shape)
        inputs = [self.model_input(image_bgr, image_id)]
        with inference_autocast(self.cfg):
            embedding = self.model.embed_queries(inputs, [torch.tensor([box])])[0][0]
        return embedding.cpu().numpy()

    def detect_batch(self, images_bgr: list, image_ids: list) -> list[dict]:
        """Detections of several images in one model call: numpy boxes [K, 4] (image
        pixels), scores [K], embeddings [K, D] (L2-normalized) per image."""
        inputs = [self.model_input(image, i) for image, i in zip(images_bgr, image_ids)]
        with torch.no_grad(), inference_autocast(self.cfg):
            outputs = self.model(inputs)
        return [{k: v.cpu().numpy() for k, v in out.items()} for out in outputs]

    def detect(self, image_bgr: np.ndarray, image_id: str = "image.jpg") -> dict:
        """Detections of one image (see `detect_batch`)."""
        return self.detect_batch([image_bgr], [image_id])[0]

    def search(self, query_image, box, gallery_paths: list, top_k: int = 10,
               det_thresh: float = None, cws: bool = None) -> SearchResult:
        """Rank every gallery detection against the query person (a path or BGR array + box).

        `det_thresh` / `cws` default to TEST.DET_THRESH_SEARCH / TEST.CWS. Gallery images are
        read and detected TEST.IMS_PER_BATCH at a time, with a progress bar; unreadable ones
        are skipped (`SearchResult.skipped`), and none readable is a PsdiffError.
        """
        det_thresh = self.cfg.TEST.DET_THRESH_SEARCH if det_thresh is None else det_thresh
        cws = self.cfg.TEST.CWS if cws is None else cws
        if top_k < 1:
            raise PsdiffError(f"top-k must be at least 1, got {top_k}")
        if not gallery_paths:
            raise PsdiffError("the gallery is empty: give at least one gallery image")
        query_id = "query.jpg"
        if isinstance(query_image, str):
            query_id, query_image = os.path.basename(query_image), read_image(query_image)
        query = self.embed_query(query_image, box, query_id)
        images, skipped = [], []
        bar = tqdm(gallery_paths, desc="gallery", unit="img", disable=None)
        readable = _read_skipping(bar, skipped)
        while batch := list(itertools.islice(readable, self.batch_size)):
            paths, pictures = zip(*batch)
            outputs = self.detect_batch(pictures, [os.path.basename(p) for p in paths])
            for path, picture, out in zip(paths, pictures, outputs):
                similarities = out["embeddings"] @ query
                if cws:  # confidence-weighted similarity: cosine x detection score
                    similarities = similarities * out["scores"]
                images.append({
                    "file_name": path, "height": picture.shape[0], "width": picture.shape[1],
                    "boxes": out["boxes"], "scores": out["scores"],
                    "similarities": similarities,
                    "ranked": out["scores"] >= np.float32(det_thresh),
                })
        if not images:
            raise PsdiffError(f"none of the {len(skipped)} gallery images is readable, "
                              f"e.g. {skipped[0]}")
        return SearchResult(query, images, rank_detections(images, top_k), det_thresh, cws,
                            skipped)


def _read_skipping(paths, skipped: list):
    """(path, BGR image) of each readable path; an unreadable one is logged and appended to
    `skipped` (a photo folder often holds a broken or half-copied file)."""
    for path in paths:
        try:
            yield path, read_image(path)
        except PsdiffError as e:
            logger.warning(f"skipped gallery image: {e}")
            skipped.append(path)


def rank_detections(images: list, top_k: int) -> list[dict]:
    """The `top_k` ranked detections of all images by similarity, best first (ties keep
    gallery order)."""
    pairs = [(i, j) for i, image in enumerate(images) for j in np.flatnonzero(image["ranked"])]
    sims = np.array([images[i]["similarities"][j] for i, j in pairs], dtype=np.float64)
    order = np.argsort(-sims, kind="stable")[:top_k]
    hits = []
    for rank, position in enumerate(order, 1):
        i, j = pairs[position]
        hits.append({
            "rank": rank,
            "file_name": images[i]["file_name"],
            "box": [float(v) for v in images[i]["boxes"][j]],
            "score": float(images[i]["scores"][j]),
            "similarity": float(sims[position]),
            "image_index": i,
            "detection_index": int(j),
        })
    return hits
