"""Algorithm 2's sampling loop replayed from CUDA graphs (TEST.CUDA_GRAPH).

Sampling at small batch is launch-bound on a GPU: every step calls the CDL (NUM_PASSES times),
each a few dozen small kernels. The sampler draws all of a run's noise before the loop
(`DiffusionSampler.draw_noise`), so the loop is a fixed computation of the FPN features, the
image sizes, the noise and the fixed query boxes. It is captured once per sampler and input
shapes; a call copies its inputs into the graph's own, replays it and returns copies of its
outputs, so every call still gets its own fresh noise. The pooler pools at a fixed shape while
a graph is captured (pooler.py). Outputs equal the eager loop's (tests/modeling/
test_sampling_graphs.py, on a GPU).
"""

from collections import OrderedDict

import torch


def _tensors(tree):
    """The tensors of nested lists, tuples and dicts (dicts in key order), flattened."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for key in sorted(tree) for t in _tensors(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in _tensors(item)]
    return []


def _clone(tree):
    """`tree` with every tensor cloned (outputs outlive the next replay)."""
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return {key: _clone(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_clone(item) for item in tree)
    return tree


class SamplingGraphs:
    """A model's captured sampling loops, one per (sampler, weights, input shapes and dtypes,
    autocast), the least recently used dropped beyond `capacity` (each holds its own memory)."""

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self.graphs = OrderedDict()  # key -> (graph, static inputs, static outputs)

    def __deepcopy__(self, memo):
        """A copied model (e.g. `inference_model`) captures its own graphs: these read the
        original's weights."""
        return SamplingGraphs(self.capacity)

    def __len__(self):
        return len(self.graphs)

    def run(self, loop, model, features, whwh, noise, rules, fixed_boxes=None):
        """`loop(model, features, whwh, noise, rules, fixed_boxes)` (a `DiffusionSampler.loop`),
        replayed from the graph of these shapes, captured on first use (the step `rules` only
        then: their arithmetic is in the graph)."""
        inputs = (features, whwh, noise, rules, fixed_boxes)
        autocast = torch.is_autocast_enabled("cuda")
        key = (loop.__self__, autocast, torch.get_autocast_dtype("cuda") if autocast else None,
               tuple(p.data_ptr() for p in model.parameters()),
               tuple((tuple(t.shape), t.dtype) for t in _tensors(inputs)), fixed_boxes is None)
        if key not in self.graphs:
            self.graphs[key] = self.capture(loop, model, inputs)
            while len(self.graphs) > self.capacity:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        graph, static_inputs, static_outputs = self.graphs[key]
        for static, value in zip(_tensors(static_inputs), _tensors(inputs)):
            static.copy_(value)
        graph.replay()
        return _clone(static_outputs)

    @staticmethod
    def capture(loop, model, inputs):
        """(graph, static inputs, static outputs) of `loop` on copies of `inputs`, after two
        warm-up runs on a side stream (which also compile any Triton kernel), as
        torch.cuda.graphs asks. Autocast's weight cache is off while capturing: a cached cast
        made inside the graph would be freed after it."""
        static_inputs = _clone(inputs)

        def call():
            autocast = torch.is_autocast_enabled("cuda")
            dtype = torch.get_autocast_dtype("cuda")
            with torch.autocast("cuda", dtype=dtype, enabled=autocast, cache_enabled=False):
                return loop(model, *static_inputs)

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                call()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_outputs = call()
        return graph, static_inputs, static_outputs
