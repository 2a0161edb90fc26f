"""TEST.CUDA_GRAPH: the sampling loop replayed from CUDA graphs gives the eager loop's outputs,
with fresh noise at every call (on a GPU; skipped without one)."""

import dataclasses

import pytest
import torch
from model_inputs import PERSONS, scene
from tiny_config import tiny_cfg

from psdiff.modeling import build_model
from psdiff.utils.errors import PsdiffError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_graph_key_on_a_cpu_model_names_the_key():
    with pytest.raises(PsdiffError, match="TEST.CUDA_GRAPH needs a CUDA MODEL.DEVICE"):
        build_model(tiny_cfg("TEST.CUDA_GRAPH", "True"))


def gpu_model(**sampler):
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.DEVICE", "cuda", "MODEL.PSDIFF.SAMPLE_STEPS", "4"))
    model.sampler = dataclasses.replace(model.sampler, **sampler)
    return model.eval()


def images(*ids, size=(96, 128)):
    return [{k: v for k, v in scene(i, PERSONS, size=size).items() if k != "instances"}
            for i in ids]


def replayed(model, inputs, queries):
    """Detections and query embeddings with the sampler switched to its CUDA graphs."""
    eager_sampler = model.sampler
    model.sampler = dataclasses.replace(eager_sampler, cuda_graph=True)
    try:
        return model(inputs), model.embed_queries(inputs, queries)
    finally:
        model.sampler = eager_sampler


@cuda
@pytest.mark.parametrize("kind", ["DDIM", "DPM_SOLVER_PP"])
def test_replayed_sampling_equals_the_eager_loop(kind, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = gpu_model(kind=kind, renewal_thresh=0.5)
    inputs = images("a.jpg", "b.jpg")
    queries = [torch.tensor(PERSONS[:2], dtype=torch.float32)] * 2
    with torch.no_grad():
        eager = model(inputs), model.embed_queries(inputs, queries)
        for _ in range(2):  # the capture, then a replay
            detections, embeddings = replayed(model, inputs, queries)
            for got, want in zip(detections, eager[0]):
                for key in ("boxes", "scores", "embeddings"):
                    torch.testing.assert_close(got[key], want[key], atol=1e-4, rtol=1e-4)
            for got, want in zip(embeddings, eager[1]):
                torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert len(model.sampling_graphs) == 2  # one graph for the gallery, one for the queries


@cuda
def test_each_replay_draws_its_own_noise_and_shapes_get_their_own_graph():
    model = gpu_model()
    with torch.no_grad():
        first, _ = replayed(model, images("a.jpg"), [])
        other, _ = replayed(model, images("b.jpg"), [])
        again, _ = replayed(model, images("a.jpg"), [])
        assert len(model.sampling_graphs) == 1
        assert not torch.equal(first[0]["boxes"], other[0]["boxes"])  # other image id, noise
        assert torch.equal(first[0]["boxes"], again[0]["boxes"])  # same id, same noise
        replayed(model, images("c.jpg", size=(128, 160)), [])
    assert len(model.sampling_graphs) == 2
