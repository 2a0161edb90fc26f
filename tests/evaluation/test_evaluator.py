"""The evaluator end to end on generated CUHK-SYSU and PRW trees, with an oracle model:
known metrics, the predictions file, tools/evaluate.py, and 1 vs 2 ranks; with a tiny PSDiff:
one backbone pass per gallery batch, the same predictions as two passes."""

import dataclasses
import json
import os

import cv2
import numpy as np
import pytest
import torch
from eval_oracle import OracleModel, evaluate_and_dump, make_cfg, oracle_for
from tiny_config import TINY_OVERRIDES
from tools_loader import load_tool

from psdiff.data import get_search_split
from psdiff.data.synthetic import write_cuhk_sysu, write_prw
from psdiff.engine import launch
from psdiff.evaluation import (
    PersonSearchEvaluator,
    Predictions,
    build_evaluator,
    build_loaders,
    evaluate,
    inference_on_dataset,
)
from psdiff.modeling import build_model
from psdiff.utils.errors import PsdiffError

evaluate_tool = load_tool("evaluate")
plot_results = load_tool("plot_results")

CUHK, PRW = "synthetic_cuhk_sysu_test", "synthetic_prw_test"
SIZES = ("TEST.GALLERY_SIZES", [6, 10, -1], "TEST.GALLERY_SIZE", 6)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Tiny synthetic CUHK-SYSU (gallery sizes 6 and 10) and PRW trees."""
    root = tmp_path_factory.mktemp("datasets")
    write_cuhk_sysu(str(root / "synthetic" / "CUHK-SYSU"), num_train_images=4,
                    num_test_images=14, num_train_ids=2, num_test_ids=6, image_size=(48, 64),
                    gallery_sizes=(6, 10), seed=1)
    write_prw(str(root / "synthetic" / "PRW"), num_train_frames=4, num_test_frames=14,
              num_train_ids=2, num_test_ids=4, camera_sizes=((48, 64), (48, 64), (40, 50)),
              seed=2)
    return str(root)


@pytest.mark.parametrize("dataset", [CUHK, PRW])
def test_perfect_oracle_scores_one(root, tmp_path, dataset):
    cfg = make_cfg(root, str(tmp_path), *SIZES)
    metrics = evaluate(cfg, oracle_for(cfg, dataset, 0.0, 0.0), dataset)
    # every person detected exactly, every false positive scored below them, every query
    # person's embedding equal to its occurrences' and orthogonal to everyone else's: all 1.
    # (Not det_labeled/AP: there, detections of unlabeled people are false positives.)
    expected = ["det/AP", "det/recall", "det_labeled/recall", "search/mAP", "search/top1"]
    if dataset == CUHK:
        expected += [f"search@{n}/{m}" for n in (6, 10, "all") for m in ("mAP", "top1", "top10")]
    assert {k: metrics[k] for k in expected} == {k: pytest.approx(1.0) for k in expected}
    assert metrics["search/queries_without_gt"] == 0
    written = Predictions.load(str(tmp_path / "inference" / dataset / "predictions.npz"))
    assert written.meta["dataset"] == dataset
    assert json.loads((tmp_path / "inference" / dataset / "metrics.json").read_text())[
        "metrics"] == metrics


def test_noisy_oracle_recomputed_from_file_and_on_two_ranks(root, tmp_path, capsys):
    # noisy boxes and embeddings: metrics strictly between 0 and 1, so agreement is not trivial
    opts = (*SIZES, "TEST.DET_THRESH_SEARCH", 0.5)
    cfg = make_cfg(root, str(tmp_path / "one"), *opts)
    one_rank = evaluate(cfg, oracle_for(cfg, CUHK, 3.0, 0.9), CUHK)
    assert 0 < one_rank["search@10/mAP"] < 1 and 0 < one_rank["det/AP"] < 1

    path = str(tmp_path / "one" / "inference" / CUHK / "predictions.npz")
    assert evaluate_tool.main(["--predictions", path, "--dataset", CUHK,
                               "DATASETS.ROOT", root]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == one_rank
    # an override changes the protocol: CWS scales similarities by the detection score
    evaluate_tool.main(["--predictions", path, "--dataset", CUHK, "TEST.CWS", "True"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) != one_rank

    # the search-result picture of query 0 from the same file: k tiles of the ranking
    picture = str(tmp_path / "query0.png")
    assert plot_results.main(["search-result", "--predictions", path, "--dataset", CUHK,
                              "--top-k", "3", "--out", picture, "DATASETS.ROOT", root]) == 0
    hits = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(hits) == 3 and hits[0]["similarity"] >= hits[1]["similarity"]
    assert cv2.imread(picture).shape[0] == 256
    # several queries in one call: a picture and a JSON line each, the first as above
    pattern = str(tmp_path / "query{query}_of_two.png")
    assert plot_results.main(["search-result", "--predictions", path, "--dataset", CUHK,
                              "--query", "0", "1", "--top-k", "3", "--out", pattern,
                              "DATASETS.ROOT", root]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-2:]
    assert json.loads(lines[0]) == hits and json.loads(lines[1]) != hits
    assert all(os.path.isfile(pattern.format(query=q)) for q in (0, 1))
    assert plot_results.main(["search-result", "--predictions", path, "--dataset", CUHK,
                              "--query", "0", "1", "--out", picture]) == 2
    assert "put {query} in it" in capsys.readouterr().err
    assert plot_results.main(["search-result", "--predictions", path, "--dataset", CUHK,
                              "--query", "0", "999", "--out", pattern,
                              "DATASETS.ROOT", root]) == 2
    assert "--query 999" in capsys.readouterr().err

    result_file = str(tmp_path / "two.json")
    launch(evaluate_and_dump, 2, backend="gloo", args=(
        root, str(tmp_path / "two"), CUHK, 3.0, 0.9, result_file, opts))
    with open(result_file) as f:
        assert json.load(f) == one_rank
    two = Predictions.load(str(tmp_path / "two" / "inference" / CUHK / "predictions.npz"))
    one = Predictions.load(path)
    np.testing.assert_array_equal(two.gallery_names, one.gallery_names)
    np.testing.assert_array_equal(two.query_embeddings, one.query_embeddings)
    np.testing.assert_array_equal(two.gallery_embeddings, one.gallery_embeddings)


def test_evaluate_tool_rejects_a_mismatched_file(root, tmp_path, capsys):
    cfg = make_cfg(root, str(tmp_path), *SIZES)
    evaluate(cfg, oracle_for(cfg, PRW, 0.0, 0.0), PRW)
    path = str(tmp_path / "inference" / PRW / "predictions.npz")
    capsys.readouterr()
    assert evaluate_tool.main(["--predictions", path, "--dataset", CUHK,
                               "DATASETS.ROOT", root]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and len(error.splitlines()) == 1
    # both datasets are named: the one the file was made on and the one asked for
    assert error.startswith(f"error: the predictions of '{PRW}' hold ")
    assert f"queries, dataset '{CUHK}' has " in error
    assert evaluate_tool.main(["--predictions", str(tmp_path / "nope.npz"),
                               "--dataset", CUHK]) == 2
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(path, "rb").read()[:500])
    capsys.readouterr()
    assert evaluate_tool.main(["--predictions", str(truncated), "--dataset", PRW]) == 2
    assert "not an intact .npz" in capsys.readouterr().err


def _with_value(source, target, name, row, value):
    """A copy of a predictions file whose array `name` holds `value` in row `row`."""
    with np.load(source) as data:
        arrays = {k: data[k] for k in data.files}
    arrays[name] = arrays[name].copy()
    arrays[name][row] = value
    np.savez(target, **arrays)
    return str(target)


@pytest.mark.parametrize("name, row, value", [
    ("gallery_scores", 5, np.nan),
    ("gallery_embeddings", 7, np.inf),
    ("gallery_boxes", 0, np.nan),
    ("query_embeddings", 2, np.nan),
])
def test_evaluate_tool_refuses_non_finite_values(root, tmp_path, capsys, name, row, value):
    cfg = make_cfg(root, str(tmp_path), *SIZES)
    evaluate(cfg, oracle_for(cfg, CUHK, 3.0, 0.9), CUHK)
    source = tmp_path / "inference" / CUHK / "predictions.npz"
    path = _with_value(source, tmp_path / "bad.npz", name, row, value)
    predictions = Predictions.load(str(source))
    if name.startswith("gallery"):  # the image owning the row, found by hand
        image = [i for i in range(len(predictions.gallery_names))
                 if predictions.gallery_offsets[i] <= row < predictions.gallery_offsets[i + 1]][0]
        owner = f"a detection of gallery image {predictions.gallery_names[image]}"
    else:
        owner = f"query {row}, image {predictions.query_names[row]}"
    capsys.readouterr()
    assert evaluate_tool.main(["--predictions", path, "--dataset", CUHK]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: {path}: {name} row {row} ({owner}) holds {value}; boxes, "
                            "scores and embeddings must be finite numbers (did the model "
                            "diverge?)\n")
    assert captured.out == ""


class _DivergedOracle(OracleModel):
    """The oracle, but the scores of its second batch are NaN (as a diverged model's)."""

    def forward(self, batch):
        outputs = super().forward(batch)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 2:
            outputs[0]["scores"][:] = float("nan")
        return outputs


def test_evaluator_refuses_non_finite_outputs_before_writing(root, tmp_path):
    cfg = make_cfg(root, str(tmp_path), *SIZES)
    split = get_search_split(CUHK, root, cfg.TEST.GALLERY_SIZE)
    with pytest.raises(PsdiffError) as error:
        evaluate(cfg, _DivergedOracle(split.gallery, split.queries), CUHK)
    assert str(error.value).startswith(f"{CUHK} predictions: gallery_scores row ")
    assert "holds nan" in str(error.value)
    assert not (tmp_path / "inference" / CUHK / "predictions.npz").exists()
    assert not (tmp_path / "inference" / CUHK / "metrics.json").exists()


def test_metrics_json_is_standard_json_even_for_a_nan_metric(tmp_path):
    gallery = [{"image_id": "g.jpg", "annotations": []}]
    queries = [{"image_id": "q.jpg", "bbox": [0, 0, 4, 8]}]
    evaluator = PersonSearchEvaluator("toy", gallery, queries, output_dir=str(tmp_path),
                                      metric_fn=lambda p: {"search/mAP": float("nan"), "n": 1.0})
    evaluator.process([{"image_id": "g.jpg"}], [{"boxes": np.zeros((1, 4)), "scores": [0.5],
                                                 "embeddings": np.ones((1, 8))}])
    evaluator.process_queries([0], np.ones((1, 8)))
    evaluator.evaluate()

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    written = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert written["metrics"] == {"search/mAP": None, "n": 1.0}


def test_a_split_without_queries_still_gives_predictions():
    gallery = [{"image_id": "g.jpg", "annotations": []}]
    evaluator = PersonSearchEvaluator("toy", gallery, [], metric_fn=lambda p: {})
    evaluator.process([{"image_id": "g.jpg"}], [{"boxes": np.zeros((2, 4)), "scores": [0.5, 0.4],
                                                 "embeddings": np.ones((2, 8))}])
    predictions = evaluator.predictions()
    assert predictions.gallery_embeddings.shape == (2, 8)
    assert predictions.query_embeddings.shape == (0, 8)


def test_eval_use_gt_replaces_detections_with_ground_truth(root, tmp_path):
    # the oracle's detector is noisy (boxes off by ~6 px), but EVAL_USE_GT embeds the ground-truth
    # boxes through the query path instead, scored 1: detection and search become perfect.
    cfg = make_cfg(root, str(tmp_path), *SIZES, "TEST.SAVE_PREDICTIONS", False)
    model = oracle_for(cfg, CUHK, 6.0, 0.0)
    noisy = evaluate(cfg, model, CUHK)
    assert not (tmp_path / "inference" / CUHK / "predictions.npz").exists()
    assert (tmp_path / "inference" / CUHK / "metrics.json").exists()
    cfg.merge_from_list(["TEST.EVAL_USE_GT", True, "TEST.SAVE_PREDICTIONS", True])
    exact = evaluate(cfg, model, CUHK)
    assert noisy["det/AP"] < 0.9
    assert exact["det/AP"] == exact["search/mAP"] == exact["search@all/mAP"] == 1.0
    scores = Predictions.load(str(tmp_path / "inference" / CUHK / "predictions.npz"))
    assert np.all(scores.gallery_scores == 1.0)


def test_query_images_outside_the_gallery_get_their_own_pass():
    gallery = [{"image_id": "g.jpg", "annotations": [{"bbox": [0, 0, 10, 20], "pid": 3}]}]
    queries = [{"image_id": "q.jpg", "file_name": "q.jpg", "height": 30, "width": 30,
                "bbox": [2, 2, 12, 22], "pid": 3},
               {"image_id": "g.jpg", "file_name": "g.jpg", "height": 30, "width": 30,
                "bbox": [0, 0, 10, 20], "pid": 3}]
    model = OracleModel(gallery, queries)
    seen = []
    evaluator = PersonSearchEvaluator("toy", gallery, queries, metric_fn=lambda p: {
        "seen": seen.append(p) or 1.0})
    outside = [[d] for d in evaluator.query_images() if d["image_id"] != "g.jpg"]
    inference_on_dataset(model, [[{"image_id": "g.jpg"}]], outside, evaluator)
    assert evaluator.evaluate() == {"seen": 1.0}
    predictions = seen[0]
    assert list(predictions.query_names) == ["q.jpg", "g.jpg"]
    # both queries are pid 3, embedded as its one-hot vector, like the gallery person
    np.testing.assert_allclose(predictions.query_embeddings[:, 3], [1.0, 1.0])
    np.testing.assert_allclose(predictions.gallery_embeddings[0, 3], 1.0)


@pytest.mark.parametrize("dataset", [CUHK, PRW])
def test_real_model_through_the_evaluator(root, tmp_path, capsys, dataset):
    # a tiny random PSDiff: the contract between model, loader and evaluator, end to end. The
    # model's config names CUHK-SYSU for training; evaluating it on PRW (Table III's
    # cross-dataset setting) is only a matter of the dataset name: PRW's protocol applies.
    cfg = make_cfg(root, str(tmp_path), *SIZES, "DATASETS.TRAIN", ("synthetic_cuhk_sysu_train",),
                   "DATASETS.TEST", (dataset,), "MODEL.RESNETS.DEPTH", 18,
                   "MODEL.RESNETS.NORM", "BN", "MODEL.FPN.OUT_CHANNELS", 32,
                   "MODEL.PSDIFF.HIDDEN_DIM", 32, "MODEL.PSDIFF.EMB_DIM", 16,
                   "MODEL.PSDIFF.NHEADS", 4, "MODEL.PSDIFF.DIM_FEEDFORWARD", 64,
                   "MODEL.PSDIFF.DIM_DYNAMIC", 8, "MODEL.PSDIFF.NUM_PROPOSALS_TEST", 8,
                   "MODEL.PSDIFF.SAMPLE_STEPS", 1, "TEST.SCORE_THRESH", 0.0)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.sampler = dataclasses.replace(model.sampler, kind="DPM_SOLVER_PP", steps=2)
    metrics = evaluate(cfg, model, dataset)
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if "queries_without_gt" not in k)
    assert any(k.startswith("search@") for k in metrics) == (dataset == CUHK)
    path = str(tmp_path / "inference" / dataset / "predictions.npz")
    predictions = Predictions.load(path)
    # the meta names the sampler that ran, the model's, not the config's (DDIM, 1 step)
    assert (predictions.meta["sampler"], predictions.meta["steps"]) == ("DPM_SOLVER_PP", 2)
    assert predictions.gallery_embeddings.shape[1] == predictions.query_embeddings.shape[1] == 16
    np.testing.assert_allclose(np.linalg.norm(predictions.query_embeddings, axis=1), 1, atol=1e-5)
    capsys.readouterr()
    assert evaluate_tool.main(["--predictions", path, "--dataset", dataset,
                               "DATASETS.ROOT", root]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == metrics


def _tiny_psdiff_run(cfg, dataset: str, reuse_features: bool) -> tuple:
    """The tiny PSDiff (seed 0) through the evaluator on `dataset`: its predictions, the calls
    of its backbone and the gallery batches."""
    torch.manual_seed(0)
    model = build_model(cfg)
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    evaluator = build_evaluator(cfg, dataset)
    gallery_loader, query_loader = build_loaders(cfg, evaluator)
    inference_on_dataset(model, gallery_loader, query_loader, evaluator,
                         reuse_features=reuse_features)
    return evaluator.predictions(), len(calls), len(gallery_loader)


def _arrays(predictions: Predictions) -> dict:
    """Every array of a Predictions, by field name."""
    return {f.name: getattr(predictions, f.name) for f in dataclasses.fields(predictions)
            if f.name != "meta"}


@pytest.mark.parametrize("dataset", [CUHK, PRW])
def test_queries_from_the_gallery_pass_equal_a_second_backbone_pass(root, tmp_path, dataset):
    # every query image is a gallery image: its queries are embedded from the features of its
    # detection pass, with the noise of the two-pass path (keys by image id and query chunk)
    cfg = make_cfg(root, str(tmp_path), *SIZES, *TINY_OVERRIDES)
    reused = _arrays(_tiny_psdiff_run(cfg, dataset, reuse_features=True)[0])
    two_pass = _arrays(_tiny_psdiff_run(cfg, dataset, reuse_features=False)[0])
    assert len(reused["query_embeddings"]) > 1 and len(reused["gallery_scores"]) > 10
    for name, array in reused.items():
        assert np.array_equal(array, two_pass[name]), name


def test_one_backbone_call_per_gallery_batch(root, tmp_path):
    cfg = make_cfg(root, str(tmp_path), *SIZES, *TINY_OVERRIDES)
    _, reused_calls, batches = _tiny_psdiff_run(cfg, CUHK, reuse_features=True)
    _, two_pass_calls, _ = _tiny_psdiff_run(cfg, CUHK, reuse_features=False)
    split = get_search_split(CUHK, root, cfg.TEST.GALLERY_SIZE)
    query_images = {q["image_id"] for q in split.queries}
    size = cfg.TEST.IMS_PER_BATCH
    holding = sum(any(r["image_id"] in query_images for r in split.gallery[i: i + size])
                  for i in range(0, len(split.gallery), size))
    assert 0 < holding <= batches == reused_calls  # no query image lies outside the gallery
    assert two_pass_calls == batches + holding


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_evaluation_is_repeatable_for_a_sampler_seed(root, tmp_path):
    # on a GPU the sampler draws its noise there, from generators seeded by
    # (TEST.SAMPLER_SEED, image id / query chunk): two evaluations give the same predictions
    cfg = make_cfg(root, str(tmp_path), *SIZES, *TINY_OVERRIDES, "MODEL.DEVICE", "cuda")
    first, again = (_arrays(_tiny_psdiff_run(cfg, CUHK, reuse_features=True)[0])
                    for _ in range(2))
    for name, array in first.items():
        assert np.array_equal(array, again[name]), name
    cfg.merge_from_list(["TEST.SAMPLER_SEED", 1])
    reseeded = _arrays(_tiny_psdiff_run(cfg, CUHK, reuse_features=True)[0])
    assert not np.array_equal(reseeded["query_embeddings"], first["query_embeddings"])
