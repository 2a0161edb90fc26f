"""PSDiff end to end on a tiny ResNet-18 config: training step, one-batch fit, Algorithm 2,
query embeddings, the synthetic CUHK-SYSU files through the real loaders, analyze_model.py.

Most tests feed small generated scenes (colored "persons" on dark noise) as model input dicts
in the mapper's format; one runs generated dataset files through loader and mapper.
"""

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from model_inputs import PERSONS, scene
from tiny_config import EMB_DIM, TINY_OVERRIDES, tiny_cfg
from tools_loader import load_tool
from torchvision.ops import box_iou

from psdiff.data import DatasetMapper, build_test_loader, build_train_loader
from psdiff.data.datasets import load_cuhk_sysu
from psdiff.data.synthetic import write_cuhk_sysu
from psdiff.modeling import build_model
from psdiff.modeling.attention import MultiHeadAttention
from psdiff.modeling.meta_arch import output_size
from psdiff.modeling.postprocess import rescale_boxes
from psdiff.utils.errors import PsdiffError


def tiny_model(*overrides):
    torch.manual_seed(0)
    return build_model(tiny_cfg(*overrides))




def test_forward_backward_with_zero_and_three_persons():
    model = tiny_model().train()
    batch = [scene("empty.jpg", [], seed=1), scene("three.jpg", PERSONS, size=(100, 128))]
    losses = model(batch)
    weighted = {k: v for k, v in losses.items() if k.startswith("loss_")}
    assert set(weighted) == {"loss_cls", "loss_l1", "loss_giou", "loss_reid"}
    assert all(torch.isfinite(v) for v in weighted.values())
    sum(weighted.values()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all(p.grad is not None for n, p in trainable if n.startswith("cdl."))
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in trainable if n.startswith("backbone."))


def test_training_on_one_batch_drives_the_loss_down():
    model = tiny_model().train()
    batch = [scene("a.jpg", PERSONS), scene("b.jpg", PERSONS[:1], seed=2)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def total_loss():
        losses = model(batch)
        return sum(v for k, v in losses.items() if k.startswith("loss_"))

    def loss_on_fixed_noise():  # the same t and noise draws before and after training
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(123)
            return total_loss().item()

    first = loss_on_fixed_noise()
    for _ in range(80):
        total = total_loss()
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # SOLVER.CLIP_GRADIENTS
        optimizer.step()
    last = loss_on_fixed_noise()
    assert last < 0.5 * first, (first, last)


def test_missing_teacher_embeddings_is_a_clear_error():
    model = tiny_model().train()
    batch = [scene("p.jpg", PERSONS)]
    del batch[0]["instances"]["embeddings"]
    with pytest.raises(PsdiffError, match="TEACHER.CACHE"):
        model(batch)
    wrong = [scene("p.jpg", PERSONS)]
    wrong[0]["instances"]["embeddings"] = torch.zeros(3, EMB_DIM + 1)
    with pytest.raises(PsdiffError, match="EMB_DIM"):
        model(wrong)


def eval_inputs(*images):
    return [{k: v for k, v in x.items() if k != "instances"} for x in images]


def test_eval_output_contract_in_original_pixels():
    model = tiny_model("TEST.DETECTIONS_PER_IMAGE", 10).eval()
    image = scene("big.jpg", PERSONS, original_scale=2.5)
    (out,) = model(eval_inputs(image))
    boxes, scores, embs = out["boxes"], out["scores"], out["embeddings"]
    assert 0 < len(boxes) <= 10 and embs.shape == (len(boxes), EMB_DIM)
    assert torch.all(boxes[:, 0::2] >= 0) and torch.all(boxes[:, 0::2] <= image["width"])
    assert torch.all(boxes[:, 1::2] >= 0) and torch.all(boxes[:, 1::2] <= image["height"])
    assert torch.all(boxes[:, 2:] > boxes[:, :2])
    assert torch.all(scores[:-1] >= scores[1:])
    torch.testing.assert_close(embs.norm(dim=-1), torch.ones(len(embs)))
    iou = box_iou(boxes, boxes) - torch.eye(len(boxes))
    assert iou.max() <= 0.5  # NMS at MODEL.PSDIFF.NMS_THRESH
    # the same pixels with a 2.5x smaller original: the same detections, 2.5x smaller
    (small,) = model(eval_inputs(scene("big.jpg", PERSONS)))
    torch.testing.assert_close(small["boxes"] * 2.5, boxes)
    torch.testing.assert_close(small["embeddings"], embs)


def test_score_threshold_keeps_exactly_the_higher_scores():
    image = eval_inputs(scene("x.jpg", PERSONS))
    (everything,) = tiny_model("MODEL.PSDIFF.USE_NMS", False).eval()(image)
    thresh = everything["scores"].median().item()
    model = tiny_model("MODEL.PSDIFF.USE_NMS", False, "TEST.SCORE_THRESH", thresh).eval()
    (kept,) = model(image)
    expected = everything["scores"] >= thresh
    assert 0 < len(kept["scores"]) == int(expected.sum()) < len(everything["scores"])
    torch.testing.assert_close(kept["boxes"], everything["boxes"][expected])


def test_evaluation_is_repeatable_for_a_seed_and_changes_with_it():
    model = tiny_model().eval()
    image, other = scene("a.jpg", PERSONS), scene("b.jpg", PERSONS[:2], seed=3)
    first = model(eval_inputs(image))[0]
    again = model(eval_inputs(image))[0]
    in_batch = model(eval_inputs(other, image))[1]  # same size: batch composition is irrelevant
    for key in ("boxes", "scores", "embeddings"):
        assert torch.equal(first[key], again[key])
        torch.testing.assert_close(first[key], in_batch[key], rtol=1e-4, atol=1e-4)
    model.sampler = dataclasses.replace(model.sampler, seed=1)
    reseeded = model(eval_inputs(image))[0]
    assert reseeded["boxes"].shape != first["boxes"].shape or not torch.allclose(
        reseeded["boxes"], first["boxes"])


@pytest.mark.parametrize("sampler", ["DDIM", "DPM_SOLVER", "DPM_SOLVER_PP"])
def test_box_renewal_acts_only_between_steps(sampler):
    image = eval_inputs(scene("r.jpg", PERSONS))
    results = {}
    for steps in (1, 2):
        for renewal in (True, False):
            model = tiny_model("MODEL.PSDIFF.SAMPLER", sampler, "MODEL.PSDIFF.SAMPLE_STEPS", steps,
                               "MODEL.PSDIFF.BOX_RENEWAL", renewal,
                               "MODEL.PSDIFF.RENEWAL_THRESH", 1.1).eval()  # renew every row
            results[steps, renewal] = model(image)[0]["boxes"]
    assert torch.equal(results[1, True], results[1, False])  # nothing to renew after one step
    assert not torch.equal(results[2, True], results[2, False])


def test_ensemble_pools_every_step():
    image = eval_inputs(scene("e.jpg", PERSONS))
    plain = tiny_model("MODEL.PSDIFF.USE_NMS", False, "TEST.DETECTIONS_PER_IMAGE", 1000).eval()
    pooled = tiny_model("MODEL.PSDIFF.USE_NMS", False, "TEST.DETECTIONS_PER_IMAGE", 1000,
                        "MODEL.PSDIFF.ENSEMBLE_STEPS", True).eval()
    assert len(pooled(image)[0]["boxes"]) > len(plain(image)[0]["boxes"])


@pytest.mark.parametrize("mode", ["denoise", "alone"])
def test_query_embeddings_in_original_pixels(mode):
    model = tiny_model("MODEL.PSDIFF.QUERY_MODE", mode).eval()
    small = eval_inputs(scene("q.jpg", PERSONS))
    big = eval_inputs(scene("q.jpg", PERSONS, original_scale=2.0))  # same pixels, larger original
    query = torch.tensor(PERSONS[:2], dtype=torch.float32)
    (emb_small,) = model.embed_queries(small, [query])
    (emb_big,) = model.embed_queries(big, [query * 2.0])
    assert emb_small.shape == (2, EMB_DIM)
    torch.testing.assert_close(emb_small.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(emb_small, emb_big)
    (shifted,) = model.embed_queries(small, [query + 15.0])
    assert not torch.allclose(shifted, emb_small)


@pytest.mark.parametrize("mode", ["denoise", "alone"])
def test_a_query_is_embedded_at_its_own_box(mode):
    # a query box is known: every CDL pass keeps it as its prediction, so the linear read-out
    # of stripes at predicted boxes reads exactly the query box, as reference methods embed it
    model = tiny_model("MODEL.PSDIFF.QUERY_MODE", mode, "MODEL.PSDIFF.NUM_PASSES", 2,
                       "MODEL.PSDIFF.CASCADED", False, "MODEL.PSDIFF.EMB_PARTS", 7,
                       "MODEL.PSDIFF.EMB_PARTS_BOXES", "predicted",
                       "MODEL.PSDIFF.EMB_PARTS_IN_FEATURE", "res2",
                       "MODEL.PSDIFF.EMB_FROM_COLLAB", False).eval()
    image = eval_inputs(scene("q.jpg", PERSONS))
    query = torch.tensor(PERSONS[:2], dtype=torch.float32)
    (embedding,) = model.embed_queries(image, [query])
    features, sizes, _ = model.extract_features(image)
    roi = model.cdl.parts_pooler(features[-1:], rescale_boxes(query, output_size(image[0]),
                                                              sizes[0])[None])
    read_out = model.cdl.emb_head(model.cdl.stripes(roi))
    torch.testing.assert_close(embedding, model.embeddings_from_prediction(read_out))


def test_inference_with_queries_equals_its_two_calls():
    # one backbone pass for both, the same numbers as `model(inputs)` then `embed_queries`;
    # the second image holds no query
    model = tiny_model().eval()
    inputs = eval_inputs(scene("a.jpg", PERSONS), scene("b.jpg", PERSONS[:2], seed=3))
    boxes = [torch.tensor(PERSONS[:2], dtype=torch.float32), torch.zeros(0, 4)]
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    outputs, embeddings = model.inference_with_queries(inputs, boxes)
    assert len(calls) == 1
    for output, expected in zip(outputs, model(inputs)):
        for key in ("boxes", "scores", "embeddings"):
            assert torch.equal(output[key], expected[key]), key
    for embedding, expected in zip(embeddings, model.embed_queries(inputs, boxes)):
        assert torch.equal(embedding, expected)
    assert [len(e) for e in embeddings] == [2, 0]


def test_build_errors_are_one_line():
    with pytest.raises(PsdiffError, match="META_ARCHITECTURE"):
        build_model(tiny_cfg("MODEL.META_ARCHITECTURE", "Nope"))
    with pytest.raises(PsdiffError, match="QUERY_MODE"):
        build_model(tiny_cfg("MODEL.PSDIFF.QUERY_MODE", "guess"))
    with pytest.raises(PsdiffError, match="SAMPLER"):
        build_model(tiny_cfg("MODEL.PSDIFF.SAMPLER", "EULER"))
    with pytest.raises(PsdiffError, match="EMB_PARTS_IN_FEATURE = 'res6'"):
        build_model(tiny_cfg("MODEL.PSDIFF.EMB_PARTS", 7, "MODEL.PSDIFF.EMB_PARTS_IN_FEATURE",
                             "res6"))


def test_stripes_of_a_trunk_stage_train_that_stage_not_the_fpn():
    # detached embedding head, stripes at the predicted boxes on res2: the ReID loss reaches the
    # backbone only through the stripes, so it trains layer1 (res2) and leaves the FPN alone
    model = tiny_model("MODEL.BACKBONE.FREEZE_AT", 0, "MODEL.PSDIFF.EMB_PARTS", 7,
                       "MODEL.PSDIFF.EMB_PARTS_BOXES", "predicted", "MODEL.PSDIFF.CASCADED", False,
                       "MODEL.PSDIFF.EMB_DETACH", True,
                       "MODEL.PSDIFF.EMB_PARTS_IN_FEATURE", "res2").train()
    losses = model([scene("three.jpg", PERSONS, size=(100, 128))])
    losses["loss_reid"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads["backbone.trunk.layer1.0.conv1.weight"].abs().sum() > 0
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items()
               if n.startswith("backbone.fpn."))


def record_cdl_embedding_inputs(model):
    """The noisy embeddings e_t (emb_signal) of every later CDL call of `model`, in a list."""
    seen = []
    model.cdl.register_forward_pre_hook(lambda module, args: seen.append(args[2].clone()))
    return seen


@pytest.mark.parametrize("emb_diffusion", [True, False])
def test_regression_without_embedding_diffusion_feeds_no_embedding(emb_diffusion):
    # Table VI's "KD" baseline: e0 is regressed, no noisy embedding enters the CDL, neither in
    # training nor at any sampling step (renewal of every row and DPM-Solver history included)
    # nor for queries; with embedding diffusion (the default) every call gets a noisy e_t
    model = tiny_model("MODEL.PSDIFF.EMB_DIFFUSION", emb_diffusion, "MODEL.PSDIFF.SAMPLER",
                       "DPM_SOLVER", "MODEL.PSDIFF.RENEWAL_THRESH", 1.1).train()
    seen = record_cdl_embedding_inputs(model)
    losses = model([scene("k.jpg", PERSONS)])
    assert torch.isfinite(losses["loss_reid"]) and losses["loss_reid"] > 0
    image = eval_inputs(scene("k.jpg", PERSONS))
    model.eval()(image)
    model.embed_queries(image, [torch.tensor(PERSONS[:1], dtype=torch.float32)])
    assert len(seen) == 1 + 2 + 2  # one training call, then two sampling steps twice
    assert all(e.shape[-1] == EMB_DIM for e in seen)
    assert [bool(torch.all(e == 0)) for e in seen] == [not emb_diffusion] * 5


def test_synthetic_cuhk_sysu_through_loaders_and_model(tmp_path):
    # real paths: generated CUHK-SYSU files -> loader -> mapper -> model, teacher targets e0
    # attached to the dataset dicts as the teacher cache does (one vector per identity)
    root = str(tmp_path / "CUHK-SYSU")
    write_cuhk_sysu(root, num_train_images=4, num_test_images=6, num_train_ids=2, num_test_ids=3,
                    image_size=(72, 96), gallery_sizes=(5,), seed=1)
    rng = np.random.default_rng(0)
    train = load_cuhk_sysu(root, "train")
    for record in train:
        for person in record["annotations"]:
            person["embedding"] = rng.standard_normal(EMB_DIM).astype(np.float32)
            person["embedding_flip"] = rng.standard_normal(EMB_DIM).astype(np.float32)
    cfg = tiny_cfg("INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 128,
                   "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 128,
                   "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = next(iter(build_train_loader(cfg, train)))
    losses = model(batch)
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    assert all(torch.isfinite(v) for v in losses.values())

    model.eval()
    gallery = load_cuhk_sysu(root, "gallery")
    for inputs in itertools.islice(build_test_loader(cfg, gallery), 2):
        for x, out in zip(inputs, model(inputs)):
            assert x["image"].shape[1:] != (x["height"], x["width"])  # resized by the mapper
            assert torch.all(out["boxes"][:, 2] <= x["width"])
            assert torch.all(out["boxes"][:, 3] <= x["height"])
    query = load_cuhk_sysu(root, "query", gallery_size=5)[0]
    image = DatasetMapper.from_config(cfg, is_train=False)(query)
    (emb,) = model.embed_queries([image], [torch.tensor([query["bbox"]])])
    assert emb.shape == (1, EMB_DIM)


def test_attention_flops_counted_as_by_hand():
    # fvcore has no rule for scaled_dot_product_attention; the tool adds one
    attention = MultiHeadAttention(16, 4)
    query, context = torch.randn(3, 2, 16), torch.randn(3, 9, 16)
    analysis = FlopCountAnalysis(attention, (query, context))
    sdpa_flop_jit = load_tool("analyze_model").sdpa_flop_jit
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False)
    projections = 3 * 2 * 16 * 16 * 2 + 3 * 9 * 16 * 16 * 2  # q, out on 2 tokens; k, v on 9
    matmuls = 3 * 4 * 2 * 9 * (4 + 4)  # per image and head: q k^T and weights v, head width 4
    assert analysis.total() == projections + matmuls


def test_analyze_model_tool_reports_parameters_and_flops(capsys):
    tool = load_tool("analyze_model")
    tool.main(tool.parse_args(["--steps", "1", "3", "--size", "64", "64", *TINY_OVERRIDES,
                               "MODEL.DEVICE", "cpu"]))
    lines = capsys.readouterr().out.splitlines()
    total = next(line for line in lines if line.startswith("total")).split()[-1]
    assert int(total.replace(",", "")) == sum(p.numel() for p in tiny_model().parameters())
    flops = [float(line.split()[2][:-1]) for line in lines if line.startswith("steps ")]
    assert len(flops) == 2 and flops[1] > flops[0] > 0  # each step adds one CDL call


def test_detectron2_minimal_inputs_need_no_image_id():
    # Detectron2's model input is {"image", "height", "width"}; "image_id" is optional: the
    # noise then comes from (TEST.SAMPLER_SEED, position in the call), and height / width
    # default to the image's own size
    model = tiny_model().eval()
    image = scene("x.jpg", PERSONS)["image"]
    minimal = [{"image": image, "height": 192, "width": 256}, {"image": image}]
    first, bare = model(minimal)
    again = model(minimal)[0]
    assert torch.equal(first["boxes"], again["boxes"]) and len(first["boxes"]) > 0
    assert torch.all(first["boxes"][:, 2] <= 256) and torch.all(bare["boxes"][:, 2] <= 128)
    assert first["boxes"][:, 2].max() > 128  # rescaled to the given 256-wide original
    # two positions, two noise draws: the same pixels give other proposals
    halved = first["boxes"] / 2
    assert halved.shape != bare["boxes"].shape or not torch.allclose(halved, bare["boxes"])
    query = torch.tensor(PERSONS[:1], dtype=torch.float32)
    (embedding,) = model.embed_queries(minimal[1:], [query])
    assert embedding.shape == (1, EMB_DIM)
