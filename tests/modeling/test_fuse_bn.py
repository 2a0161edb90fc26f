"""TEST.FUSE_BN: inference runs a copy whose batch norms are folded into their convs; its outputs
are the model's up to float32 rounding (1e-4 here), and the model itself still trains as it did."""

import copy

import torch
from model_inputs import PERSONS, scene
from tiny_config import tiny_cfg

from psdiff.modeling import build_model, inference_model
from psdiff.modeling.backbone.frozen_bn import FOLDABLE_NORMS, fold_batchnorm


def norms(model):
    return [m for m in model.modules() if isinstance(m, FOLDABLE_NORMS)]


def tiny_model_with_random_norms():
    """The tiny model (frozen BN in the stem and res2, trainable BN after) with random batch
    norm statistics and affine terms, so that a wrong fold changes the outputs."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    with torch.no_grad():
        for norm in norms(model):
            norm.running_mean.normal_(0, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.5)
    return model


def test_folded_copy_gives_the_models_boxes_scores_and_embeddings():
    model = tiny_model_with_random_norms().eval()
    fused = inference_model(tiny_cfg(), model)
    assert not norms(fused)
    assert len(norms(model)) == 20  # stem, 8 blocks x 2, 3 downsamples: all still there
    image = {k: v for k, v in scene("a.jpg", PERSONS).items() if k != "instances"}
    (expected,), (actual,) = model([image]), fused([image])
    assert len(expected["boxes"]) > 0
    for key in ("boxes", "scores", "embeddings"):
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-4)


def test_without_fuse_bn_inference_runs_the_model_itself():
    model = tiny_model_with_random_norms().eval()
    assert inference_model(tiny_cfg("TEST.FUSE_BN", False), model) is model


def test_training_mode_is_untouched():
    """A model in training mode folds nothing, and after a folded copy was taken, gradients
    reach the same parameters with the same values as in an untouched twin."""
    model = tiny_model_with_random_norms().train()
    twin = copy.deepcopy(model)
    inference_model(tiny_cfg(), model)
    fold_batchnorm(model)
    assert [type(m) for m in model.modules()] == [type(m) for m in twin.modules()]
    batch = [scene("three.jpg", PERSONS)]
    for m in (model, twin):
        torch.manual_seed(1)
        sum(v for k, v in m(batch).items() if k.startswith("loss_")).backward()
    reached = []
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad)
            reached.append(name)
    assert "backbone.trunk.layer3.0.bn1.weight" in reached  # trainable BN still learns
    assert "backbone.trunk.layer1.0.conv1.weight" not in reached  # res2 stays frozen
