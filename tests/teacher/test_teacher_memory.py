"""HybridMemory: initialization, hard/mean centroid updates, instance slots, queue, DDP equality."""

import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from psdiff.teacher.memory import HybridMemory


def _unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_initialize_means_and_instances():
    feats, labels = _unit(12, 8, 0), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1])
    mem = HybridMemory(3, 8, num_instances=5, queue_size=4)
    mem.initialize(feats, labels, unlabeled=_unit(6, 8, 1),
                   generator=torch.Generator().manual_seed(0))
    for y in range(3):
        expected = F.normalize(feats[labels == y].mean(0), dim=0)
        assert torch.allclose(mem.centroids[y], expected, atol=1e-6)
        members = feats[labels == y]
        for slot in mem.instances[y]:  # every slot holds one of the class's own features
            assert torch.isclose(members @ slot, torch.ones(len(members))).any()
    # queue: the last 4 of 6 unlabeled features, FIFO from slot 0
    assert int(mem.queue_len) == 4 and torch.allclose(mem.queue, _unit(6, 8, 1)[2:])


def test_hard_centroid_update_by_hand():
    mem = HybridMemory(2, 3, num_instances=2, momentum=0.25, centroid_update="hard")
    mem.centroids.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    a = F.normalize(torch.tensor([0.9, 0.1, 0.0]), dim=0)  # close to c0
    b = F.normalize(torch.tensor([0.1, 0.0, 0.9]), dim=0)  # far from c0: the hardest
    c = torch.tensor([0.0, 0.0, 1.0])
    mem.update(torch.stack([a, b, c]), torch.tensor([0, 0, 1]))
    expected = F.normalize(0.25 * torch.tensor([1.0, 0, 0]) + 0.75 * b, dim=0)
    assert torch.allclose(mem.centroids[0], expected)
    assert torch.allclose(mem.centroids[1], F.normalize(torch.tensor([0, 0.25, 0.75]), dim=0))
    # instance slots 0..n-1 overwritten in batch order
    assert torch.allclose(mem.instances[0], torch.stack([a, b]))
    assert torch.allclose(mem.instances[1, 0], c) and mem.instances[1, 1].abs().sum() == 0


def test_mean_centroid_update_and_queue_wraps():
    mem = HybridMemory(1, 2, num_instances=1, momentum=0.5, centroid_update="mean", queue_size=3)
    mem.centroids.copy_(torch.tensor([[1.0, 0.0]]))
    x = torch.tensor([[0.0, 1.0], [0.6, 0.8]])
    unl = torch.tensor([[1.0, 0], [0, 1.0], [-1.0, 0], [0, -1.0]])
    mem.update(x, torch.tensor([0, 0]), unlabeled=unl)
    expected = F.normalize(0.5 * torch.tensor([1.0, 0]) + 0.5 * x.mean(0), dim=0)
    assert torch.allclose(mem.centroids[0], expected)
    # 4 rows into 3 slots: the first row is dropped, slot 0 gets row 1
    assert torch.allclose(mem.queue, unl[1:])
    assert int(mem.queue_ptr) == 0 and int(mem.queue_len) == 3
    mem.update(x[:1], torch.tensor([0]), unlabeled=torch.tensor([[0.6, 0.8]]))
    assert torch.allclose(mem.queue[0], torch.tensor([0.6, 0.8])) and int(mem.queue_ptr) == 1


def _steps():
    """Three global batches of 8 labeled + 4 unlabeled features; rank r gets the r-th half."""
    return [(_unit(8, 16, s), torch.tensor([0, 1, 2, 3, 2, 3, 4, 5]) if s % 2 else
             torch.tensor([5, 4, 3, 3, 0, 1, 1, 2]), _unit(4, 16, 100 + s)) for s in range(3)]


def _fresh_memory():
    mem = HybridMemory(6, 16, num_instances=2, momentum=0.1, centroid_update="hard", queue_size=5)
    mem.initialize(_unit(12, 16, 7), torch.arange(12) % 6, _unit(3, 16, 8),
                   torch.Generator().manual_seed(0))
    return mem


def _worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    torch.set_num_threads(1)
    mem = _fresh_memory()
    for feats, labels, unl in _steps():
        half, uhalf = len(feats) // world, len(unl) // world
        mem.update(feats[rank * half:(rank + 1) * half], labels[rank * half:(rank + 1) * half],
                   unl[rank * uhalf:(rank + 1) * uhalf])
    torch.save(mem.state_dict(), os.path.join(out_dir, f"rank{rank}.pth"))
    dist.destroy_process_group()


def test_update_identical_on_one_and_two_gloo_ranks():
    single = _fresh_memory()
    for feats, labels, unl in _steps():
        single.update(feats, labels, unl)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(2, port, out_dir), nprocs=2, join=True)
        states = [torch.load(os.path.join(out_dir, f"rank{r}.pth")) for r in range(2)]
    for name, value in single.state_dict().items():
        for state in states:
            assert torch.equal(state[name], value), name
