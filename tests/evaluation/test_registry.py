"""A new person-search dataset is one registration: the catalog reads it and the evaluation
scores it through its SearchProtocol, with no change to psdiff/data or psdiff/evaluation."""

import numpy as np
import pytest

from psdiff.config import get_cfg
from psdiff.data import QueryGallery, SearchProtocol, catalog, get_search_split, register_dataset
from psdiff.evaluation import Predictions, metrics_from_cfg

BOXES = {"a.jpg": [0, 0, 10, 20], "b.jpg": [5, 5, 15, 25], "c.jpg": [20, 0, 30, 20]}
PIDS = {"a.jpg": 1, "b.jpg": 1, "c.jpg": 2}


class EveryOtherImage(SearchProtocol):
    """A toy format: three one-person images; a query's gallery is every other image."""

    name = "toy"

    def load(self, folder, split, gallery_size):
        images = [{"file_name": f"{folder}/{n}", "image_id": n, "height": 40, "width": 40,
                   "annotations": [{"bbox": BOXES[n], "pid": PIDS[n]}]} for n in sorted(BOXES)]
        if split == "query":
            return [dict(images[0], bbox=BOXES["a.jpg"], pid=1)]
        return images

    def query_galleries(self, gallery, queries, ignore_cam_id=True):
        def query_gallery(i):
            others = [k for k, r in enumerate(gallery) if r["image_id"] != queries[i]["image_id"]]
            boxes = [r["annotations"][0]["bbox"] if r["annotations"][0]["pid"] == queries[i]["pid"]
                     else [np.nan] * 4 for r in (gallery[k] for k in others)]
            return QueryGallery(np.asarray(others), np.asarray(boxes, np.float64))

        return query_gallery


@pytest.fixture
def private_catalog(monkeypatch):
    """Registrations made by a test stay in that test."""
    monkeypatch.setattr(catalog, "_CATALOG", dict(catalog._CATALOG))
    monkeypatch.setattr(catalog, "_PROTOCOLS", dict(catalog._PROTOCOLS))


def test_a_registered_dataset_is_loaded_and_scored_by_its_protocol(private_catalog, tmp_path):
    register_dataset("toy", "Toy", EveryOtherImage())
    split = get_search_split("toy_test", str(tmp_path))
    assert split.protocol == "toy" and len(split.gallery) == 3 and len(split.queries) == 1
    # b.jpg holds the query person, c.jpg someone else: a perfect embedding ranks b first
    outputs = [{"boxes": np.asarray([BOXES[r["image_id"]]], np.float32),
                "scores": np.ones(1, np.float32),
                "embeddings": np.asarray([[1, 0] if PIDS[r["image_id"]] == 1 else [0, 1]],
                                         np.float32)} for r in split.gallery]
    predictions = Predictions.from_outputs([r["image_id"] for r in split.gallery], outputs,
                                           ["a.jpg"], [BOXES["a.jpg"]], [[1, 0]])
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.ROOT", str(tmp_path)])
    metrics = metrics_from_cfg(cfg, predictions, split)
    assert metrics["search/mAP"] == 1.0 and metrics["search/top1"] == 1.0
    assert metrics["det/recall"] == 1.0
    assert not any(key.startswith("search@") for key in metrics)  # no gallery sizes here


def test_a_name_is_registered_once(private_catalog):
    with pytest.raises(ValueError, match="'prw_train' is already registered"):
        register_dataset("prw", "PRW2", catalog.get_protocol("prw"))
    with pytest.raises(ValueError, match="another search protocol"):
        register_dataset("other", "Other", type("Impostor", (SearchProtocol,), {"name": "prw"})())
