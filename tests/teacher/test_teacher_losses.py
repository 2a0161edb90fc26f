"""Teacher losses against per-sample loops written straight from the formulas."""

import math

import torch
import torch.nn.functional as F

from psdiff.teacher.losses import (
    HHCL,
    batch_hard_triplet_loss,
    centroid_contrast_loss,
    hard_instance_loss,
)


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_centroid_loss_with_queue_matches_formula():
    f, c, q, tau = _unit(5, 8), _unit(3, 8, seed=1), _unit(4, 8, seed=2), 0.05
    y = torch.tensor([0, 2, 1, 1, 0])
    naive = 0.0
    for i in range(5):
        num = math.exp(float(f[i] @ c[y[i]]) / tau)
        den = sum(math.exp(float(f[i] @ ck) / tau) for ck in c) + \
            sum(math.exp(float(f[i] @ qk) / tau) for qk in q)
        naive += -math.log(num / den)
    assert abs(float(centroid_contrast_loss(f, y, c, q, tau)) - naive / 5) < 1e-4


def test_hard_instance_loss_matches_formula():
    f, z, tau = _unit(6, 8), _unit(4, 3, 8, seed=3), 0.1
    y = torch.tensor([0, 1, 2, 3, 3, 1])
    naive = 0.0
    for i in range(6):
        p = min(float(f[i] @ zj) for zj in z[y[i]])  # hardest positive slot
        negs = [max(float(f[i] @ zj) for zj in z[k]) for k in range(4) if k != y[i]]
        den = math.exp(p / tau) + sum(math.exp(n / tau) for n in negs)
        naive += -math.log(math.exp(p / tau) / den)
    assert abs(float(hard_instance_loss(f, y, z, tau)) - naive / 6) < 1e-4


def test_triplet_matches_loops():
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    total = 0.0
    for a in range(6):
        dp = max(float((x[a] - x[b]).norm()) for b in range(6) if y[b] == y[a])
        dn = min(float((x[a] - x[b]).norm()) for b in range(6) if y[b] != y[a])
        total += max(dp - dn + 0.3, 0.0)
    assert abs(float(batch_hard_triplet_loss(x, y, 0.3)) - total / 6) < 1e-4


def test_hhcl_reads_memory_before_update_and_weights_terms():
    crit = HHCL(3, 8, temperature=0.05, hard_weight=0.3, momentum=0.1, num_instances=2)
    crit.initialize(_unit(6, 8, seed=5), torch.tensor([0, 1, 2, 0, 1, 2]),
                    generator=torch.Generator().manual_seed(0))
    centroids, instances = crit.memory.centroids.clone(), crit.memory.instances.clone()
    f = _unit(4, 8, seed=6).requires_grad_()
    y = torch.tensor([0, 0, 2, 1])
    losses = crit({"embedding": f}, y)
    expected_c = 0.3 * centroid_contrast_loss(f, y, centroids, f[:0], 0.05)
    assert torch.isclose(losses["loss_centroid"], expected_c)
    assert torch.isclose(losses["loss_instance"], 0.7 * hard_instance_loss(f, y, instances, 0.05))
    assert not torch.equal(crit.memory.centroids, centroids)  # updated after the losses
    sum(losses.values()).backward()  # the in-place memory update must not break autograd
    assert f.grad is not None and torch.isfinite(f.grad).all()
