"""The Collaborative Denoising Layer and its parts, on random FPN maps (no backbone needed).

Each part is checked against an independent naive computation; the Table IV switches are
checked by what the module contains and by how boxes influence each other.
"""

import math

import pytest
import torch
from torch import nn
from torchvision.ops import roi_align

from psdiff.modeling.attention import MultiHeadAttention
from psdiff.modeling.cdl import CollaborativeDenoisingLayer, apply_deltas
from psdiff.modeling.dynamic_conv import DynamicConv
from psdiff.modeling.pooler import MultiLevelRoIAlign, assign_levels
from psdiff.modeling.time_embedding import sinusoidal_embedding
from psdiff.utils.errors import PsdiffError

STRIDES = (4, 8, 16, 32)
TINY = dict(hidden_dim=32, emb_dim=16, num_heads=4, dim_feedforward=64, dim_dynamic=8,
            kernel_rank=4, pooler_resolution=7)


def tiny_cdl(**overrides):
    torch.manual_seed(0)
    return CollaborativeDenoisingLayer(in_channels=32, strides=STRIDES, **{**TINY, **overrides})


def random_inputs(batch=2, num_boxes=5, size=64, emb_dim=16):
    generator = torch.Generator().manual_seed(1)
    features = [torch.randn(batch, 32, size // s, size // s, generator=generator) for s in STRIDES]
    xy = torch.rand(batch, num_boxes, 2, generator=generator) * size * 0.6
    wh = torch.rand(batch, num_boxes, 2, generator=generator) * size * 0.4 + 4
    boxes = torch.cat([xy, xy + wh], dim=-1)
    embs = torch.randn(batch, num_boxes, emb_dim, generator=generator)
    return features, boxes, embs, torch.tensor([5, 900])[:batch]


def test_levels_follow_fpn_equation():
    boxes = torch.tensor([[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 448, 448],
                          [0, 0, 10, 10], [0, 0, 2000, 2000], [5, 5, 5, 30.0]])
    # floor(4 + log2(sqrt(area)/224)) clamped to [2, 5], minus the lowest level 2
    assert assign_levels(boxes, 2, 5).tolist() == [2, 1, 3, 0, 3, 0]


def test_pooler_reads_each_box_from_its_level():
    features, boxes, _, _ = random_inputs()
    pooled = MultiLevelRoIAlign(STRIDES, 7, 2)(features, boxes)
    assert pooled.shape == (10, 32, 7, 7)
    flat = boxes.reshape(-1, 4)
    for row, box in enumerate(flat):
        level = int(assign_levels(box[None], 2, 5))
        image = row // 5
        expected = roi_align(features[level][image: image + 1], [box[None]], 7,
                             1.0 / STRIDES[level], 2, aligned=True)
        torch.testing.assert_close(pooled[row], expected[0])


def test_pooling_at_a_fixed_shape_equals_pooling_by_level():
    """What a CUDA graph captures (TEST.CUDA_GRAPH) gives each box the same features."""
    features, boxes, _, _ = random_inputs()
    large = torch.tensor([[0.0, 0.0, side, side] for side in (150, 300, 500, 60, 200)])
    boxes = torch.cat([boxes, large.expand(2, 5, 4)], dim=1)
    pooler = MultiLevelRoIAlign(STRIDES, 7, 2)
    flat = boxes.reshape(-1, 4)
    rois = torch.cat([torch.arange(2).repeat_interleave(10)[:, None].float(), flat], dim=1)
    levels = assign_levels(flat, 2, 5)
    assert levels.unique().tolist() == [0, 1, 2, 3]  # the boxes span every level
    assert torch.equal(pooler.pool_every_level(features, rois, levels), pooler(features, boxes))


def test_apply_deltas_by_hand():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # w 20, h 40, centre (20, 40)
    torch.testing.assert_close(apply_deltas(torch.zeros(1, 4), boxes), boxes)
    # dx = 2 -> 2/2 * w = +20 in x; dh = ln 2 -> height doubles around the centre
    moved = apply_deltas(torch.tensor([[2.0, 0.0, 0.0, math.log(2.0)]]), boxes)
    torch.testing.assert_close(moved, torch.tensor([[30.0, 0.0, 50.0, 80.0]]))


def test_sinusoidal_embedding_matches_formula():
    t = torch.tensor([0, 7, 999])
    emb = sinusoidal_embedding(t, 8)
    freqs = [10000 ** (-i / 3) for i in range(4)]
    for row, step in enumerate(t.tolist()):
        expected = [math.sin(step * f) for f in freqs] + [math.cos(step * f) for f in freqs]
        torch.testing.assert_close(emb[row], torch.tensor(expected), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("length", [1, 2])
def test_attention_matches_torch_multihead_attention(length, grad):
    """Outputs and gradients; one query token leaves the context unprojected."""
    torch.manual_seed(0)
    ours = MultiHeadAttention(16, 4)
    reference = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        nn.init.normal_(ours.k_proj.bias, std=3.0)  # a large q . b_k, which must cancel
        reference.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight,
                                                  ours.v_proj.weight]))
        reference.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias,
                                                ours.v_proj.bias]))
        reference.out_proj.load_state_dict(ours.out_proj.state_dict())
    projected = []
    ours.k_proj.register_forward_hook(lambda *_: projected.append(True))
    query = torch.randn(3, length, 16, requires_grad=grad)
    context = torch.randn(3, 9, 16, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        out, expected = ours(query, context), reference(query, context, context)[0]
    torch.testing.assert_close(out, expected)
    assert bool(projected) == (length > 1)
    if grad:
        upstream = torch.randn_like(out)
        ours_grads = torch.autograd.grad(out, [query, context, ours.k_proj.weight,
                                               ours.k_proj.bias, ours.v_proj.weight], upstream)
        reference_grads = torch.autograd.grad(
            expected, [query, context, reference.in_proj_weight, reference.in_proj_bias],
            upstream)
        for got, want in zip(ours_grads[:2], reference_grads[:2]):
            torch.testing.assert_close(got, want)
        torch.testing.assert_close(ours_grads[2], reference_grads[2][16:32])
        torch.testing.assert_close(ours_grads[3], reference_grads[3][16:32], atol=1e-5, rtol=0)
        torch.testing.assert_close(ours_grads[4], reference_grads[2][32:48])


def test_dynamic_conv_matches_per_box_loop():
    torch.manual_seed(0)
    conv = DynamicConv(dim=12, dim_dynamic=5, num_dynamic=2, kernel_rank=3, pooler_resolution=2)
    nn.init.normal_(conv.spatial_weights)
    det, reid = torch.randn(4, 4, 12), torch.randn(4, 12)
    out = conv(det, reid)
    for k in range(4):
        params = conv.kernel_generator(conv.kernel_basis(reid[k]))
        w1, w2 = params[: 60].reshape(12, 5), params[60:].reshape(5, 12)
        x = torch.relu(conv.norms[0](det[k] @ w1))
        x = torch.relu(conv.norms[1](x @ w2))
        pooled = sum(conv.spatial_weights[s] * x[s] for s in range(4))
        expected = torch.relu(conv.out_norm(conv.out_layer(pooled)))
        torch.testing.assert_close(out[k], expected)


def test_forward_backward_shapes_and_gradients():
    cdl = tiny_cdl()
    features, boxes, embs, t = random_inputs()
    out = cdl(features, boxes, embs, t)
    assert out["pred_logits"].shape == (2, 5, 1)
    assert out["pred_boxes"].shape == (2, 5, 4)
    assert out["pred_embeddings"].shape == (2, 5, 16)
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is not None for p in cdl.parameters())
    # focal prior: the initial person probability is PRIOR_PROB
    assert cdl.class_logits.bias.sigmoid().item() == pytest.approx(0.01)


def test_boxes_interact_only_through_self_attention():
    features, boxes, embs, t = random_inputs()
    moved = boxes.clone()
    moved[:, 4] += 6.0  # move the last box of each image
    for use_sa in (True, False):
        cdl = tiny_cdl(use_sa=use_sa).eval()
        with torch.no_grad():
            before = cdl(features, boxes, embs, t)["pred_embeddings"][:, :4]
            after = cdl(features, moved, embs, t)["pred_embeddings"][:, :4]
        assert torch.allclose(before, after, atol=1e-6) == (not use_sa)


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("switch,part", [("use_sa", "self_attn"), ("use_dc", "dynamic_conv"),
                                         ("use_ca", "cross_attn")])
def test_table4b_switches_remove_their_module(switch, part):
    full, ablated = tiny_cdl(), tiny_cdl(**{switch: False})
    assert hasattr(full, part) and not hasattr(ablated, part)
    removed = count(getattr(full, part)) + count(getattr(full, part + "_norm"))
    assert count(full) - count(ablated) == removed
    features, boxes, embs, t = random_inputs()
    assert ablated(features, boxes, embs, t)["pred_boxes"].shape == (2, 5, 4)


def test_cascaded_detection_reads_predicted_embeddings():
    features, boxes, embs, t = random_inputs()
    cascaded, parallel = tiny_cdl(cascaded=True).eval(), tiny_cdl(cascaded=False).eval()
    assert cascaded.cls_tower[0].in_features == 16  # F_o = e_hat0 (D)
    assert parallel.cls_tower[0].in_features == 64  # F_c (2C)
    with torch.no_grad():
        out = cascaded(features, boxes, embs, t)
        # the detection head fed with e_hat0 alone reproduces the logits and boxes
        e_hat = out["pred_embeddings"].reshape(-1, 16)
        logits = cascaded.class_logits(cascaded.cls_tower(e_hat))
        deltas = cascaded.bbox_deltas(cascaded.reg_tower(e_hat))
    torch.testing.assert_close(out["pred_logits"].reshape(-1, 1), logits)
    torch.testing.assert_close(out["pred_boxes"].reshape(-1, 4),
                               apply_deltas(deltas, boxes.reshape(-1, 4)))


def test_no_persons_and_bad_widths():
    cdl = tiny_cdl()
    features, _, _, t = random_inputs()
    out = cdl(features, torch.zeros(2, 0, 4), torch.zeros(2, 0, 16), t)
    assert out["pred_boxes"].shape == (2, 0, 4)
    with pytest.raises(PsdiffError, match="NHEADS"):
        tiny_cdl(num_heads=5)
    with pytest.raises(PsdiffError, match="OUT_CHANNELS"):
        CollaborativeDenoisingLayer(in_channels=64, strides=STRIDES, **TINY)
    with pytest.raises(PsdiffError, match=r"^MODEL.PSDIFF.NUM_DYNAMIC must be >= 2 .*got 1$"):
        DynamicConv(dim=12, dim_dynamic=5, num_dynamic=1, kernel_rank=3, pooler_resolution=2)
    with pytest.raises(PsdiffError, match=r"HIDDEN_DIM \(16\) is not divisible by .*NHEADS \(5\)"):
        MultiHeadAttention(16, 5)


def test_paper_width_cdl_fits_the_parameter_budget():
    # Table II: 31M in all; ResNet-50 (23.5M) + FPN (3.3M) leave about 4M for the CDL
    cdl = CollaborativeDenoisingLayer(in_channels=256, strides=STRIDES)
    assert 2.5e6 < count(cdl) < 4.0e6



def test_box_level_self_attention_pools_before_attending():
    # SA_TOKENS "box": boxes still interact through self-attention (and only through it), and
    # a box's output no longer depends on where inside the box its RoI features lie
    features, boxes, embs, t = random_inputs()
    moved = boxes.clone()
    moved[:, 4] += 6.0
    cdl = tiny_cdl(sa_tokens="box", use_dc=False, use_ca=False).eval()
    with torch.no_grad():
        before = cdl(features, boxes, embs, t)["pred_logits"][:, :4]
        after = cdl(features, moved, embs, t)["pred_logits"][:, :4]
    assert not torch.allclose(before, after, atol=1e-6)
    with pytest.raises(PsdiffError, match="SA_TOKENS = 'pixels'"):
        tiny_cdl(sa_tokens="pixels")


def test_flatten_pooling_knows_where_each_bin_lies():
    # the weighted sum starts as the mean (blind to bin order); flatten + Linear is not
    torch.manual_seed(0)
    det, reid = torch.randn(3, 4, 12), torch.randn(3, 12)
    flipped = det.flip(1)
    mean = DynamicConv(12, 5, 2, 3, pooler_resolution=2)
    flat = DynamicConv(12, 5, 2, 3, pooler_resolution=2, pooling="flatten")
    torch.testing.assert_close(mean(det, reid), mean(flipped, reid))
    assert not torch.allclose(flat(det, reid), flat(flipped, reid))
    assert flat.out_layer.in_features == 4 * 12
    with pytest.raises(PsdiffError, match="DC_POOLING = 'max'"):
        DynamicConv(12, 5, 2, 3, pooler_resolution=2, pooling="max")


def test_part_pooling_tells_top_from_bottom():
    # EMB_PARTS: two boxes with the same colors, swapped between top and bottom halves, get
    # the same embedding from the mean-pooled head and different ones with stripes
    features, boxes, embs, t = random_inputs(batch=1, num_boxes=2)
    level = [torch.zeros_like(f) for f in features]
    for f in level:
        h = f.shape[2]
        f[0, :16, : h // 2], f[0, 16:, h // 2:] = 1.0, 1.0  # channel groups on top / bottom
    upside_down = [f.flip(2) for f in level]
    box = torch.tensor([[[0.0, 0.0, 64.0, 64.0]]])
    outputs = {}
    for parts in (0, 2):
        cdl = tiny_cdl(emb_parts=parts, use_sa=False, use_dc=False, use_ca=False).eval()
        with torch.no_grad():
            outputs[parts] = [cdl(f, box, embs[:, :1], t[:1])["pred_embeddings"]
                              for f in (level, upside_down)]
    torch.testing.assert_close(*outputs[0])
    assert not torch.allclose(*outputs[2])
    with pytest.raises(PsdiffError, match="EMB_PARTS = 9"):
        tiny_cdl(emb_parts=9)


def test_stripe_columns_tell_left_from_right():
    # EMB_PARTS_COLUMNS: a box with colors swapped between its left and right halves gets the
    # same stripes with one column and different ones with two
    left = torch.zeros(1, 4, 7, 8)
    left[:, :2, :, :4], left[:, 2:, :, 4:] = 1.0, 1.0
    right = left.flip(3)
    stripes = {}
    for columns in (1, 2):
        cdl = tiny_cdl(emb_parts=7, emb_parts_columns=columns)
        stripes[columns] = [cdl.stripes(roi) for roi in (left, right)]
        assert stripes[columns][0].shape == (1, 4 * 7 * columns)
    torch.testing.assert_close(*stripes[1])
    assert not torch.allclose(*stripes[2])
    with pytest.raises(PsdiffError, match="EMB_PARTS_COLUMNS = 0"):
        tiny_cdl(emb_parts=7, emb_parts_columns=0)


def test_linear_read_out_of_the_stripes_ignores_the_noisy_embeddings():
    # EMB_FROM_COLLAB False: e_hat0 is one Linear of the stripes at the input boxes, so other
    # noisy embeddings e_t move the detections (through F_r) but never the embeddings
    cdl = tiny_cdl(emb_parts=7, emb_parts_columns=2, emb_from_collab=False, cascaded=False).eval()
    features, boxes, embs, t = random_inputs()
    with torch.no_grad():
        plain = cdl(features, boxes, embs, t)
        other = cdl(features, boxes, embs + 1.0, t)
        roi = cdl.pooler(features, boxes)
        by_hand = cdl.emb_head(cdl.stripes(roi)).reshape(plain["pred_embeddings"].shape)
    assert not torch.allclose(other["pred_logits"], plain["pred_logits"])
    torch.testing.assert_close(other["pred_embeddings"], plain["pred_embeddings"])
    torch.testing.assert_close(plain["pred_embeddings"], by_hand)
    assert isinstance(cdl.emb_head, nn.Linear) and cdl.emb_head.in_features == 32 * 7 * 2
    with pytest.raises(PsdiffError, match="EMB_FROM_COLLAB False needs EMB_PARTS > 0"):
        tiny_cdl(emb_parts=0, emb_from_collab=False, cascaded=False)
    with pytest.raises(PsdiffError, match="EMB_FROM_COLLAB False needs CASCADED False"):
        tiny_cdl(emb_parts=7, emb_from_collab=False)


def test_carried_object_features_reach_the_next_pass():
    features, boxes, embs, t = random_inputs()
    cdl = tiny_cdl().eval()
    with torch.no_grad():
        first = cdl(features, boxes, embs, t)
        assert first["object_features"].shape == (2, 5, 32)
        plain = cdl(features, boxes, embs, t)["pred_logits"]
        carried = cdl(features, boxes, embs, t, first["object_features"])["pred_logits"]
    assert not torch.allclose(plain, carried)


def test_detached_embedding_head_leaves_the_shared_features_to_detection():
    # EMB_DETACH: a loss on the embeddings alone reaches the embedding head and, through the
    # part stripes, the RoI features, but not the FFN that builds F_c for both heads
    features, boxes, embs, t = random_inputs()
    features = [f.requires_grad_() for f in features]
    for detach in (False, True):
        for f in features:
            f.grad = None
        cdl = tiny_cdl(emb_parts=2, emb_detach=detach)
        cdl(features, boxes, embs, t)["pred_embeddings"].sum().backward()
        assert (cdl.ffn[0].weight.grad is None) == detach
        assert cdl.parts_proj[0].weight.grad is not None
        assert any(f.grad is not None and f.grad.abs().sum() > 0 for f in features)


@pytest.mark.parametrize("where", ["input", "predicted"])
def test_stripes_are_pooled_where_emb_parts_boxes_says(where):
    # every box is predicted 8 pixels to the right of its input (zero deltas weights, dx bias);
    # a patch added to the features only where the predicted boxes reach beyond the input boxes
    # changes the embeddings when the stripes read the predicted boxes, and only then
    cdl = tiny_cdl(emb_parts=7, emb_parts_boxes=where, cascaded=False, use_sa=False).eval()
    nn.init.zeros_(cdl.bbox_deltas.weight)
    with torch.no_grad():
        cdl.bbox_deltas.bias.copy_(torch.tensor([2.0, 0.0, 0.0, 0.0]))  # dx = 2 / 2 widths
    features = [torch.zeros(1, 32, 64 // s, 64 // s) for s in STRIDES]
    boxes = torch.tensor([[[4.0, 4.0, 12.0, 40.0]]])  # predicted: x 12..20
    patched = [f.clone() for f in features]
    patched[0][..., 1:10, 4] = 3.0  # stride-4 cells x 16..20, y 4..40: inside the predicted box,
    # beyond the bilinear reach of the input box's samples (x <= 12)
    embs, t = torch.randn(1, 1, 16), torch.tensor([500])
    with torch.no_grad():
        plain = cdl(features, boxes, embs, t)
        moved = cdl(patched, boxes, embs, t)
    torch.testing.assert_close(plain["pred_boxes"], torch.tensor([[[12.0, 4.0, 20.0, 40.0]]]))
    changed = not torch.allclose(plain["pred_embeddings"], moved["pred_embeddings"], atol=1e-6)
    assert changed == (where == "predicted")
    with pytest.raises(PsdiffError, match="EMB_PARTS_BOXES 'predicted' needs CASCADED False"):
        tiny_cdl(emb_parts=7, emb_parts_boxes="predicted", cascaded=True)
    with pytest.raises(PsdiffError, match="needs EMB_PARTS > 0"):
        tiny_cdl(emb_parts=0, emb_parts_boxes="predicted", cascaded=False)


def test_emb_neck_maps_feed_the_stripes_and_nothing_else():
    # with EMB_NECK_CONVS the stripes read the neck's maps: changing the neck changes the
    # embeddings, never the detections, and changing the FPN maps the neck did not see changes
    # the detections
    cdl = tiny_cdl(emb_parts=7, emb_parts_boxes="predicted", cascaded=False,
                   emb_neck_convs=2).eval()
    features, boxes, embs, t = random_inputs()
    maps = cdl.condition(features)
    assert len(maps) == 2 * len(features) and maps[:len(features)] == features
    with torch.no_grad():
        plain = cdl(maps, boxes, embs, t)
        nn.init.normal_(cdl.emb_neck[-2].weight)  # the last conv
        other_neck = cdl(cdl.condition(features), boxes, embs, t)
        other_fpn = cdl([f + 1 for f in features] + maps[len(features):], boxes, embs, t)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(other_neck[key], plain[key])
    assert not torch.allclose(other_neck["pred_embeddings"], plain["pred_embeddings"])
    assert not torch.allclose(other_fpn["pred_boxes"], plain["pred_boxes"])
    with pytest.raises(PsdiffError, match="EMB_NECK_CONVS > 0 needs EMB_PARTS_BOXES 'predicted'"):
        tiny_cdl(emb_parts=7, emb_parts_boxes="input", emb_neck_convs=1)


@pytest.mark.parametrize("where", ["input", "predicted"])
def test_stripes_read_the_trunk_map_inside_the_box_and_nothing_else(where):
    # with EMB_PARTS_IN_FEATURE the stripes read one trunk map (here 8 channels at stride 4):
    # a patch inside every box changes the embeddings and never the detections; one outside
    # every box changes nothing; the FPN maps still drive detection
    cdl = tiny_cdl(emb_parts=7, emb_parts_boxes=where, cascaded=False,
                   emb_parts_source=(8, 4)).eval()
    features, _, embs, t = random_inputs(batch=1, num_boxes=2)
    boxes = torch.tensor([[[4.0, 4.0, 20.0, 36.0], [8.0, 8.0, 24.0, 40.0]]])
    nn.init.zeros_(cdl.bbox_deltas.weight)  # predicted boxes = input boxes
    nn.init.zeros_(cdl.bbox_deltas.bias)
    trunk_map = torch.randn(1, 8, 16, 16, generator=torch.Generator().manual_seed(2))
    inside, outside = trunk_map.clone(), trunk_map.clone()
    inside[..., 4:8, 3:5] += 3.0  # cells y 16..32, x 12..20: in both boxes
    outside[..., 12:, 10:] += 3.0  # y >= 48, x >= 40: in neither
    maps = cdl.condition(features, trunk_map)
    assert len(maps) == len(features) + 1 and maps[-1] is trunk_map
    with torch.no_grad():
        plain = cdl(maps, boxes, embs, t)
        moved_in = cdl(features + [inside], boxes, embs, t)
        moved_out = cdl(features + [outside], boxes, embs, t)
        other_fpn = cdl([f + 1 for f in features] + [trunk_map], boxes, embs, t)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(moved_in[key], plain[key])
    assert not torch.allclose(moved_in["pred_embeddings"], plain["pred_embeddings"], atol=1e-4)
    torch.testing.assert_close(moved_out["pred_embeddings"], plain["pred_embeddings"])
    assert not torch.allclose(other_fpn["pred_logits"], plain["pred_logits"])
    assert cdl.parts_proj[0].in_features == 7 * 8
    with pytest.raises(PsdiffError, match="EMB_PARTS_IN_FEATURE and EMB_NECK_CONVS"):
        tiny_cdl(emb_parts=7, emb_parts_boxes="predicted", cascaded=False, emb_neck_convs=1,
                 emb_parts_source=(8, 4))
    with pytest.raises(PsdiffError, match="EMB_PARTS_IN_FEATURE needs EMB_PARTS > 0"):
        tiny_cdl(emb_parts=0, emb_parts_source=(8, 4))


def test_one_t_per_row_is_the_images_t_where_rows_share_it_and_acts_per_row():
    cdl = tiny_cdl().eval()
    features, boxes, embs, t = random_inputs()
    rows = t[:, None].expand(2, 5).clone()
    with torch.no_grad():
        shared = cdl(features, boxes, embs, t)
        per_row = cdl(features, boxes, embs, rows)
        rows[:, 0] = 999  # only the first row of each image restarted from noise
        mixed = cdl(features, boxes, embs, rows)
    for key in ("pred_logits", "pred_boxes", "pred_embeddings"):
        torch.testing.assert_close(per_row[key], shared[key])
    assert not torch.allclose(mixed["pred_boxes"][:, 0], shared["pred_boxes"][:, 0])
    # the other rows see row 0 only through self-attention, so they change only a little
    assert not torch.equal(mixed["pred_boxes"][:, 1:], shared["pred_boxes"][:, 1:])
