"""Set criterion (Eq. 13-14) against hand computation, empty images and rank normalization."""

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from psdiff.config import get_cfg
from psdiff.modeling.losses import SetCriterion, num_gt_per_rank, relation_loss
from psdiff.modeling.matcher import HungarianMatcher
from psdiff.utils.errors import PsdiffError

WEIGHTS = {"cls": 2.0, "l1": 5.0, "giou": 2.0, "reid": 5.0}
SIZE = torch.tensor([100.0, 50.0, 100.0, 50.0])


def naive_focal(logit, label, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-logit))
    if label:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


def one_image_case():
    """Three predictions; prediction 1 sits near the only person, so it is the match."""
    outputs = {
        "pred_logits": torch.tensor([[[-2.0], [1.0], [0.5]]], requires_grad=True),
        "pred_boxes": torch.tensor([[[0.0, 0.0, 5.0, 5.0], [12.0, 10.0, 30.0, 40.0],
                                     [60.0, 5.0, 90.0, 20.0]]], requires_grad=True),
        "pred_embeddings": torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]], requires_grad=True),
    }
    target = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]), "image_size": SIZE,
              "embeddings": torch.tensor([[0.0, 1.0]])}
    return outputs, target


def test_hand_computed_terms():
    outputs, target = one_image_case()
    losses = SetCriterion(HungarianMatcher(), WEIGHTS)(outputs, [target])
    cls = naive_focal(-2.0, 0) + naive_focal(1.0, 1) + naive_focal(0.5, 0)
    l1 = 2 / 100 + 0 + 0 + 10 / 50  # |12-10|/w + |40-30|/h
    # pred [12,10,30,40] vs gt [10,10,30,30]: inter 18x20, union 540+400-360, hull 20x30
    giou = 360 / 580 - (600 - 580) / 600
    reid = math.sqrt(0.6**2 + 0.2**2)  # Eq. 14: the L2 norm, not squared
    expect = {"cls": cls, "l1": l1, "giou": 1 - giou, "reid": reid}
    for name, value in expect.items():
        assert losses[f"raw_{name}"].item() == pytest.approx(value, rel=1e-5)
        assert losses[f"loss_{name}"].item() == pytest.approx(WEIGHTS[name] * value, rel=1e-5)
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    assert outputs["pred_embeddings"].grad[0, 1].abs().sum() > 0
    assert outputs["pred_embeddings"].grad[0, 0].abs().sum() == 0  # unmatched: no reid gradient


def test_all_images_without_persons_still_train():
    outputs, target = one_image_case()
    empty = {"boxes": torch.zeros(0, 4), "image_size": SIZE, "embeddings": torch.zeros(0, 2)}
    losses = SetCriterion(HungarianMatcher(), WEIGHTS)(outputs, [empty])
    cls = naive_focal(-2.0, 0) + naive_focal(1.0, 0) + naive_focal(0.5, 0)  # normalizer clamps to 1
    assert losses["raw_cls"].item() == pytest.approx(cls, rel=1e-5)
    for name in ("l1", "giou", "reid"):
        assert losses[f"loss_{name}"].item() == 0.0
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    for tensor in outputs.values():
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    assert outputs["pred_logits"].grad.abs().sum() > 0


def test_normalized_by_total_ground_truths():
    """Two images with 1 and 2 persons: each term is the per-image sums over 3 GTs."""
    g = torch.Generator().manual_seed(0)
    outputs = {"pred_logits": torch.randn(2, 4, 1, generator=g),
               "pred_boxes": torch.tensor([[10.0, 5.0, 40.0, 45.0]]).repeat(2, 4, 1)
               + torch.rand(2, 4, 4, generator=g) * 8,
               "pred_embeddings": torch.randn(2, 4, 2, generator=g)}
    targets = [{"boxes": torch.tensor([[12.0, 6.0, 41.0, 40.0]]), "image_size": SIZE,
                "embeddings": torch.randn(1, 2, generator=g)},
               {"boxes": torch.tensor([[9.0, 4.0, 45.0, 44.0], [14.0, 2.0, 38.0, 49.0]]),
                "image_size": SIZE, "embeddings": torch.randn(2, 2, generator=g)}]
    criterion = SetCriterion(HungarianMatcher(), WEIGHTS)
    both = criterion(outputs, targets)
    singles = [criterion({k: v[i:i + 1] for k, v in outputs.items()}, [targets[i]])
               for i in range(2)]
    for name in ("cls", "l1", "giou", "reid"):
        expect = (singles[0][f"raw_{name}"] * 1 + singles[1][f"raw_{name}"] * 2) / 3
        torch.testing.assert_close(both[f"raw_{name}"], expect)


def test_from_config_reads_weights():
    cfg = get_cfg()
    cfg.MODEL.PSDIFF.REID_WEIGHT = 7.0
    criterion = SetCriterion.from_config(cfg)
    assert criterion.weights == {"cls": 2.0, "l1": 5.0, "giou": 2.0, "reid": 7.0, "relation": 0.0}
    assert isinstance(criterion.matcher, HungarianMatcher)
    with pytest.raises(PsdiffError, match=r"^loss weights lack reid \(MODEL.PSDIFF.REID_WEIGHT\)$"):
        SetCriterion(HungarianMatcher(), {"cls": 2.0, "l1": 5.0, "giou": 2.0})


def _count_worker(rank, tmp, counts):
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=2)
    count = num_gt_per_rank([{"boxes": torch.zeros(counts[rank], 4)}], "cpu").item()
    with open(os.path.join(tmp, f"rank{rank}"), "w") as f:
        f.write(str(count))
    dist.destroy_process_group()


def test_normalizer_is_averaged_over_ranks():
    """Ranks holding 3 and 0 persons both divide by (3 + 0) / 2 (DDP then averages gradients)."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_count_worker, args=(tmp, [3, 0]), nprocs=2, start_method="spawn")
        results = [float(open(os.path.join(tmp, f"rank{r}")).read()) for r in range(2)]
    assert results == [1.5, 1.5]
    assert num_gt_per_rank([{"boxes": torch.zeros(0, 4)}], "cpu").item() == 1.0


def test_relation_loss_rewards_ranking_the_batch_as_the_teacher_does():
    # three persons with orthogonal teacher embeddings; the loss is lowest when each prediction
    # points at its own e0, and does not care how long the prediction is
    teacher = torch.eye(3) * 2.0
    right = relation_loss(teacher * 5.0, teacher, teacher, 0.1)
    wrong = relation_loss(teacher.roll(1, 0), teacher, teacher, 0.1)
    assert right < wrong
    torch.testing.assert_close(right, relation_loss(teacher, teacher, teacher, 0.1))
    # its minimum is the entropy of the teacher's own distribution over the batch
    q = (torch.eye(3) / 0.1).softmax(-1)
    torch.testing.assert_close(right, -(q * q.log()).sum())


def test_cosine_reid_loss_and_relation_term_from_config():
    cfg = get_cfg()
    cfg.MODEL.PSDIFF.REID_LOSS = "cosine"
    cfg.MODEL.PSDIFF.RELATION_WEIGHT = 0.5
    criterion = SetCriterion.from_config(cfg)
    outputs, target = one_image_case()
    losses = criterion(outputs, [target])
    # the match (prediction 1) has embedding (0.6, 0.8) against e0 (0, 1): 1 - cos = 0.2
    assert losses["raw_reid"].item() == pytest.approx(0.2)
    assert losses["loss_relation"] == 0.5 * losses["raw_relation"]
    cfg.MODEL.PSDIFF.REID_LOSS = "l3"
    with pytest.raises(PsdiffError, match="REID_LOSS = 'l3'"):
        SetCriterion.from_config(cfg)
