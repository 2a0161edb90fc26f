"""The person-search evaluator (reset / process / evaluate) and the driver that runs the model.

One pass of the model over the test images gives everything: each gallery image's detections
and, for the queries located in that image, their embeddings, from one backbone pass
(`model.inference_with_queries(batch, query boxes)`; a model with only `model(batch)` and
`model.embed_queries(batch, query boxes)` gets both calls); query images outside the gallery get
a second, small pass. Each rank handles its shard of the images; `evaluate()` gathers the
outputs on rank 0, writes `OUTPUT_DIR/inference/<dataset>/predictions.npz` (predictions.py) and
computes every metric from that file (metrics.py), so `tools/evaluate.py --predictions`
reproduces them without the model.

Cross-dataset evaluation (Table III) is config alone: the protocol follows the dataset being
evaluated (`DATASETS.TEST`), whatever the model was trained on.
"""

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from psdiff.data import build_test_loader, get_search_split, resolve_root
from psdiff.modeling import inference_model
from psdiff.utils import comm
from psdiff.utils.amp import inference_autocast
from psdiff.utils.io import json_safe

from .metrics import metrics_from_cfg
from .predictions import Predictions

logger = logging.getLogger(__name__)


def _numpy(value) -> np.ndarray:
    """A float32 numpy copy of a tensor or array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


class PersonSearchEvaluator:
    """Collects gallery detections and query embeddings of one test split; computes the metrics.

    Detectron2's DatasetEvaluator shape: `reset()`, `process(inputs, outputs)` for gallery
    images, `process_queries(indices, embeddings)` for queries, `evaluate()` -> flat metrics dict
    on rank 0 (`{}` elsewhere). `metric_fn(predictions)` turns the gathered predictions into the
    dict (see `build_evaluator`); `output_dir` receives predictions.npz and metrics.json.
    """

    def __init__(self, dataset_name: str, gallery: list, queries: list,
                 metric_fn: Callable[[Predictions], dict], output_dir: Optional[str] = None,
                 save_predictions: bool = True, meta: Optional[dict] = None):
        self.dataset_name = dataset_name
        self.gallery = gallery
        self.queries = queries
        self.metric_fn = metric_fn
        self.output_dir = output_dir
        self.save_predictions = save_predictions
        self.meta = dict(meta or {}, dataset=dataset_name)
        self._queries_of_image = defaultdict(list)  # image_id -> query indices located in it
        for i, query in enumerate(queries):
            self._queries_of_image[query["image_id"]].append(i)
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._gallery_outputs = {}
        self._query_embeddings = {}

    def queries_in(self, image_id: str) -> tuple:
        """(query indices, their boxes [k,4] in original pixels) of the queries in this image."""
        indices = self._queries_of_image.get(image_id, [])
        boxes = np.asarray([self.queries[i]["bbox"] for i in indices], np.float32).reshape(-1, 4)
        return indices, boxes

    def query_images(self) -> list:
        """One image dict per distinct query image (for the loader), in query order."""
        images = {}
        for query in self.queries:
            images.setdefault(query["image_id"], {k: query[k] for k in (
                "file_name", "image_id", "height", "width")})
        return list(images.values())

    def process(self, inputs: list, outputs: list) -> None:
        """Store the model's outputs `{"boxes", "scores", "embeddings"}` of gallery images."""
        for x, output in zip(inputs, outputs):
            self._gallery_outputs[x["image_id"]] = {k: _numpy(output[k]) for k in (
                "boxes", "scores", "embeddings")}

    def process_queries(self, indices: list, embeddings) -> None:
        """Store the embeddings [k, D] of queries `indices`."""
        for i, embedding in zip(indices, _numpy(embeddings)):
            self._query_embeddings[i] = embedding

    def _gathered(self) -> Optional[tuple]:
        """Every rank's outputs merged on rank 0 (None on other ranks)."""
        parts = comm.gather((self._gallery_outputs, self._query_embeddings), dst=0)
        if not comm.is_main_process():
            return None
        gallery_outputs, query_embeddings = {}, {}
        for gallery_part, query_part in parts:
            gallery_outputs.update(gallery_part)
            query_embeddings.update(query_part)
        return gallery_outputs, query_embeddings

    def predictions(self) -> Optional[Predictions]:
        """The gathered outputs as a `Predictions` in dataset order (rank 0; None elsewhere)."""
        gathered = self._gathered()
        return None if gathered is None else self._predictions(*gathered)

    def _predictions(self, gallery_outputs: dict, query_embeddings: dict) -> Predictions:
        """The merged outputs in dataset order; every image and query must have one."""
        missing = [r["image_id"] for r in self.gallery if r["image_id"] not in gallery_outputs]
        missing_queries = [i for i in range(len(self.queries)) if i not in query_embeddings]
        if missing or missing_queries:
            raise RuntimeError(f"{self.dataset_name}: no output for {len(missing)} gallery images "
                               f"(e.g. {missing[:3]}) and {len(missing_queries)} queries")
        dim = _embedding_dim(query_embeddings, gallery_outputs)
        return Predictions.from_outputs(
            [r["image_id"] for r in self.gallery],
            [gallery_outputs[r["image_id"]] for r in self.gallery],
            [q["image_id"] for q in self.queries],
            [q["bbox"] for q in self.queries],
            np.asarray([query_embeddings[i] for i in range(len(self.queries))],
                       np.float32).reshape(-1, dim),
            self.meta,
        )

    def evaluate(self) -> dict:
        """Gather, save predictions.npz, compute and save the metrics; `{}` on ranks > 0. An
        error on rank 0 is raised on every rank (none waits for rank 0 at a barrier)."""
        gathered = self._gathered()  # a collective: every rank takes part
        metrics = comm.run_on_main(lambda: self._score(self._predictions(*gathered)))
        return metrics if comm.is_main_process() else {}

    def _score(self, predictions: Predictions) -> dict:
        """Rank 0's part of `evaluate`: non-finite outputs are refused before anything is
        written (see `Predictions.check`)."""
        predictions.check(f"{self.dataset_name} predictions")
        if self.output_dir and self.save_predictions:
            path = os.path.join(self.output_dir, "predictions.npz")
            predictions.save(path)
            logger.info("Saved predictions to %s", path)
        metrics = self.metric_fn(predictions)
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            meta = {k: v for k, v in self.meta.items() if k != "config"}
            record = {"dataset": self.dataset_name, "metrics": metrics, "meta": meta}
            with open(os.path.join(self.output_dir, "metrics.json"), "w") as f:
                json.dump(json_safe(record), f, indent=1, sort_keys=True, allow_nan=False)
        logger.info("%s: %s", self.dataset_name, json.dumps(metrics, sort_keys=True))
        return metrics


def _embedding_dim(query_embeddings: dict, gallery_outputs: dict) -> int:
    """D, from a query embedding or, in a split without queries, a gallery output."""
    for embedding in query_embeddings.values():
        return np.asarray(embedding).shape[-1]
    for output in gallery_outputs.values():
        return np.asarray(output["embeddings"]).shape[-1]
    return 0


def _gt_outputs(model, batch: list, gallery_by_id: dict) -> list:
    """EVAL_USE_GT: every ground-truth box as a detection scored 1, embedded like a query."""
    boxes = [torch.as_tensor(np.asarray([a["bbox"] for a in gallery_by_id[x["image_id"]][
        "annotations"]], np.float32).reshape(-1, 4)) for x in batch]
    embeddings = model.embed_queries(batch, boxes)
    return [{"boxes": b, "scores": torch.ones(len(b)), "embeddings": e}
            for b, e in zip(boxes, embeddings)]


def _located_queries(evaluator: PersonSearchEvaluator, batch: list) -> tuple:
    """The queries in each image of `batch`: (their indices, their boxes as tensors), per image."""
    located = [evaluator.queries_in(x["image_id"]) for x in batch]
    return [indices for indices, _ in located], [torch.as_tensor(boxes) for _, boxes in located]


def _model_outputs(model, batch: list, query_boxes: list, detect: bool,
                   reuse_features: bool) -> tuple:
    """(detections if `detect`, embeddings of `query_boxes` if it holds any), None otherwise.

    A batch that wants both runs the backbone once through `model.inference_with_queries`
    when `reuse_features` and the model has one; else (models with only Detectron2's
    `model(batch)` and `embed_queries`) each is its own pass.
    """
    embed = any(len(boxes) for boxes in query_boxes)
    if detect and embed and reuse_features and hasattr(model, "inference_with_queries"):
        return model.inference_with_queries(batch, query_boxes)
    return (model(batch) if detect else None,
            model.embed_queries(batch, query_boxes) if embed else None)


@torch.no_grad()
def inference_on_dataset(model, gallery_loader, query_loader, evaluator: PersonSearchEvaluator,
                         use_gt_boxes: bool = False, reuse_features: bool = True) -> dict:
    """Run `model` over this rank's gallery images, then over the query images outside the
    gallery, feeding `evaluator` (reset first). A progress bar on rank 0.

    The queries of a gallery image are embedded from the backbone features of its detection
    pass; `reuse_features` False runs the backbone again for them (the model's two public
    calls), as a model without `inference_with_queries` does. Returns, per pass ("gallery",
    "query images"), this rank's (images, seconds), also logged as images/s.
    """
    evaluator.reset()
    gallery_by_id = {r["image_id"]: r for r in evaluator.gallery}
    was_training = model.training
    model.eval()
    passes = {}
    try:
        for name, loader in (("gallery", gallery_loader), ("query images", query_loader)):
            detect = name == "gallery" and not use_gt_boxes
            images, start = 0, time.perf_counter()
            for batch in tqdm(loader, desc=f"{evaluator.dataset_name} {name}",
                              disable=not comm.is_main_process()):
                indices, boxes = _located_queries(evaluator, batch)
                outputs, embeddings = _model_outputs(model, batch, boxes, detect, reuse_features)
                if name == "gallery":
                    evaluator.process(batch, outputs if detect else
                                      _gt_outputs(model, batch, gallery_by_id))
                for image_indices, image_embeddings in zip(indices, embeddings or ()):
                    evaluator.process_queries(image_indices, image_embeddings)
                images += len(batch)
            passes[name] = (images, time.perf_counter() - start)
    finally:
        model.train(was_training)
    logger.info("Inference on %s: %s", evaluator.dataset_name, ", ".join(
        f"{name} {n} images in {s:.1f} s ({n / s:.2f} images/s)"
        for name, (n, s) in passes.items() if n))
    return passes


def _meta(cfg, dataset_name: str, sampler=None) -> dict:
    """What produced the predictions: the dataset, the sampler settings (of the model's
    `sampler` when given: it may have been swapped after building) and the whole config."""
    p = cfg.MODEL.PSDIFF
    kind, steps, seed = ((sampler.kind, sampler.steps, sampler.seed) if sampler is not None else
                         (p.SAMPLER, p.SAMPLE_STEPS, cfg.TEST.SAMPLER_SEED))
    return {
        "dataset": dataset_name,
        "sampler": kind,
        "steps": steps,
        "seed": seed,
        "weights": cfg.MODEL.WEIGHTS,
        "eval_use_gt": cfg.TEST.EVAL_USE_GT,
        "world_size": comm.get_world_size(),
        "config": cfg.dump(),
    }


def build_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None, sampler=None):
    """The evaluator of a `DATASETS.TEST` name, with its split loaded and the protocol settings
    of `cfg.TEST`; outputs go to `output_dir` (default `OUTPUT_DIR/inference/<dataset_name>`).
    `sampler`: the model's DiffusionSampler, recorded in the predictions' meta."""
    root = resolve_root(cfg.DATASETS.ROOT)
    split = get_search_split(dataset_name, root, cfg.TEST.GALLERY_SIZE)
    if output_dir is None:
        output_dir = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    return PersonSearchEvaluator(
        dataset_name, split.gallery, split.queries,
        metric_fn=lambda predictions: metrics_from_cfg(cfg, predictions, split),
        output_dir=output_dir, save_predictions=cfg.TEST.SAVE_PREDICTIONS,
        meta=_meta(cfg, dataset_name, sampler),
    )


def build_loaders(cfg, evaluator: PersonSearchEvaluator) -> tuple:
    """The test loaders of `evaluator`'s gallery and of its query images outside the gallery
    (an empty list when every query image is a gallery image, as in CUHK-SYSU and PRW)."""
    gallery_ids = {r["image_id"] for r in evaluator.gallery}
    outside = [d for d in evaluator.query_images() if d["image_id"] not in gallery_ids]
    return (build_test_loader(cfg, evaluator.gallery),
            build_test_loader(cfg, outside) if outside else [])


def evaluate(cfg, model, dataset_name: str) -> dict:
    """Run `model` on a test split and return its flat metrics dict on rank 0 (`{}` elsewhere).

    Used by the training loop's periodic evaluation and by `--eval-only`; under autocast with
    TEST.AMP.ENABLED, on `inference_model` (TEST.FUSE_BN).
    """
    evaluator = build_evaluator(cfg, dataset_name, sampler=getattr(model, "sampler", None))
    with inference_autocast(cfg):
        inference_on_dataset(inference_model(cfg, model), *build_loaders(cfg, evaluator),
                             evaluator, use_gt_boxes=cfg.TEST.EVAL_USE_GT)
    return evaluator.evaluate()
