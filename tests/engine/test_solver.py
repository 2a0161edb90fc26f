"""Optimizer groups, gradient clipping and the lr schedule against hand computation."""

import pytest
import torch
from engine_toys import ToyModel, toy_cfg

from psdiff.solver import (
    WarmupMultiStepLR,
    build_gradient_clipper,
    build_lr_scheduler,
    build_optimizer,
    get_default_optimizer_params,
)
from psdiff.utils.errors import PsdiffError


def _lrs_of(scheduler, optimizer, n):
    lrs = []
    for _ in range(n):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


def test_linear_warmup_then_steps_by_hand(tmp_path):
    cfg = toy_cfg(tmp_path, SOLVER__BASE_LR=1.0, SOLVER__WARMUP_ITERS=4, SOLVER__WARMUP_FACTOR=0.2,
                  SOLVER__STEPS="(6, 8)", SOLVER__GAMMA=0.5, SOLVER__BACKBONE_MULTIPLIER=0.1)
    optimizer = build_optimizer(cfg, ToyModel())
    scheduler = build_lr_scheduler(cfg, optimizer)
    # warm-up factor 0.2 (1 - t/4) + t/4 for t < 4, then 1, x0.5 from 6, x0.25 from 8
    expected = [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    lrs = _lrs_of(scheduler, optimizer, 10)
    by_name = {g["name"]: i for i, g in enumerate(optimizer.param_groups)}
    assert [lr[by_name["others"]] for lr in lrs] == pytest.approx(expected)
    assert [lr[by_name["backbone"]] for lr in lrs] == pytest.approx([0.1 * e for e in expected])


def test_constant_warmup_and_state_round_trip():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=2.0)
    scheduler = WarmupMultiStepLR(optimizer, steps=[3], gamma=0.1, warmup_iters=2,
                                  warmup_factor=0.5, warmup_method="constant")
    lrs = [lr[0] for lr in _lrs_of(scheduler, optimizer, 5)]
    assert lrs == pytest.approx([1.0, 1.0, 2.0, 0.2, 0.2])
    state = scheduler.state_dict()
    other_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    other = WarmupMultiStepLR(other_optimizer, steps=[3], gamma=0.1, warmup_iters=2,
                              warmup_factor=0.5, warmup_method="constant")
    other.load_state_dict(state)
    other.step()
    scheduler.step()
    assert other.get_last_lr() == scheduler.get_last_lr()


def test_param_groups_skip_frozen_and_shared_parameters():
    model = ToyModel()
    model.backbone[0].bias.requires_grad_(False)
    model.tied = model.head  # the same parameters reachable twice
    groups = {g["name"]: g for g in get_default_optimizer_params(model, 0.1, 0.01, 0.5)}
    assert [p.shape for p in groups["backbone"]["params"]] == [torch.Size([16, 6])]
    assert len(groups["others"]["params"]) == 2
    assert groups["backbone"]["lr"] == pytest.approx(0.05) and groups["others"]["lr"] == 0.1
    assert groups["backbone"]["weight_decay"] == groups["others"]["weight_decay"] == 0.01


def _grads(values):
    params = [torch.nn.Parameter(torch.zeros(len(v))) for v in values]
    for p, v in zip(params, values):
        p.grad = torch.tensor(v)
    return params


@pytest.mark.parametrize("clip_type, expected", [
    # all gradients together: norm of (3, 4, 12) is 13, scaled to 6.5 -> factor 0.5
    ("full_model", [[1.5, 2.0], [6.0]]),
    # each gradient alone: (3, 4) has norm 5 -> (1.2, 1.6) at 2; (12) -> 2
    ("norm", [[1.2, 1.6], [2.0]]),
])
def test_gradient_clipping_by_hand(tmp_path, clip_type, expected):
    value = {"full_model": 6.5, "norm": 2.0}[clip_type]
    cfg = toy_cfg(tmp_path, SOLVER__CLIP_GRADIENTS__CLIP_TYPE=clip_type,
                  SOLVER__CLIP_GRADIENTS__CLIP_VALUE=value)
    params = _grads([[3.0, 4.0], [12.0]])
    build_gradient_clipper(cfg)(params)
    for p, e in zip(params, expected):
        assert p.grad.tolist() == pytest.approx(e)


def test_value_clipping_caps_each_entry(tmp_path):
    cfg = toy_cfg(tmp_path, SOLVER__CLIP_GRADIENTS__CLIP_TYPE="value",
                  SOLVER__CLIP_GRADIENTS__CLIP_VALUE=3.5)
    params = _grads([[3.0, -4.0], [12.0]])
    build_gradient_clipper(cfg)(params)
    assert [p.grad.tolist() for p in params] == [[3.0, -3.5], [3.5]]


def test_bad_solver_settings_name_the_key(tmp_path):
    with pytest.raises(PsdiffError, match="SOLVER.OPTIMIZER 'LAMB'"):
        build_optimizer(toy_cfg(tmp_path, SOLVER__OPTIMIZER="LAMB"), ToyModel())
    with pytest.raises(PsdiffError, match="CLIP_TYPE 'max'"):
        build_gradient_clipper(toy_cfg(tmp_path, SOLVER__CLIP_GRADIENTS__CLIP_TYPE="max"))
    optimizer = build_optimizer(toy_cfg(tmp_path), ToyModel())
    with pytest.raises(PsdiffError, match="WARMUP_METHOD 'cosine'"):
        build_lr_scheduler(toy_cfg(tmp_path, SOLVER__WARMUP_METHOD="cosine"), optimizer)
    sgd_cfg = toy_cfg(tmp_path, SOLVER__OPTIMIZER="SGD", SOLVER__MOMENTUM=0.8)
    sgd = build_optimizer(sgd_cfg, ToyModel())
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8


def test_adam_couples_weight_decay_as_hhcl(tmp_path):
    cfg = toy_cfg(tmp_path, SOLVER__OPTIMIZER="ADAM", SOLVER__WEIGHT_DECAY=0.5,
                  SOLVER__BASE_LR=0.1)
    model = ToyModel()
    param = next(p for p in model.parameters() if p.requires_grad)
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer) is torch.optim.Adam
    # coupled decay: the decay enters the gradient, so a zero gradient still moves the weight
    # by the group's lr * sign(wd * w) on Adam's first step (AdamW: by lr * wd * w)
    before = param.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    moved = before - param.detach()
    nonzero = before != 0
    lr = next(g["lr"] for g in optimizer.param_groups if any(p is param for p in g["params"]))
    expected = lr * torch.sign(before[nonzero])
    torch.testing.assert_close(moved[nonzero], expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["ADAMW", "ADAM", "SGD"])
def test_fused_optimizers_update_as_the_per_tensor_loop(tmp_path, name):
    cfg = toy_cfg(tmp_path, SOLVER__OPTIMIZER=name, SOLVER__WEIGHT_DECAY=0.01,
                  SOLVER__MOMENTUM=0.9, SOLVER__BASE_LR=0.05)
    fused_model, loop_model = ToyModel(), ToyModel()
    loop_model.load_state_dict(fused_model.state_dict())
    fused = build_optimizer(cfg, fused_model)
    assert all(group["fused"] for group in fused.param_groups)
    # the same groups and settings, stepped by torch's reference loop over the tensors
    loop_params = dict(zip(fused_model.parameters(), loop_model.parameters()))
    loop = type(fused)([{**{k: v for k, v in g.items() if k not in ("fused", "foreach")},
                         "params": [loop_params[p] for p in g["params"]]}
                        for g in fused.param_groups], fused=False, foreach=False)
    start = [p.detach().clone() for p in loop_params]
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in loop_params.items():
            p.grad = torch.randn(p.shape, generator=generator)
            q.grad = p.grad.clone()
        fused.step()
        loop.step()
    for p, q in loop_params.items():
        torch.testing.assert_close(p, q)
    assert any(not torch.equal(p, before) for p, before in zip(loop_params, start))
