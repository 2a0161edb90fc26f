"""The sampler is chosen at evaluation time: giving a model another DiffusionSampler is the
same as building it with those config keys (same weights), and other steps sample otherwise."""

import dataclasses

import torch
from model_inputs import PERSONS, scene
from tiny_config import tiny_cfg

from psdiff.modeling import build_model
from psdiff.modeling.sampling import DiffusionSampler, duplicates


def test_sampler_from_config_reads_every_inference_key():
    cfg = tiny_cfg("MODEL.PSDIFF.SAMPLER", "DPM_SOLVER", "MODEL.PSDIFF.SAMPLE_STEPS", 3,
                   "MODEL.PSDIFF.DDIM_ETA", 0.5, "MODEL.PSDIFF.BOX_RENEWAL", False,
                   "MODEL.PSDIFF.RENEWAL_THRESH", 0.3, "MODEL.PSDIFF.RENEWAL_DUPLICATE_IOU", 0.6,
                   "MODEL.PSDIFF.RENEWAL_RESTART", "noise", "MODEL.PSDIFF.ENSEMBLE_STEPS", True,
                   "TEST.SAMPLER_SEED", 7, "MODEL.PSDIFF.QUERY_MODE", "alone",
                   "MODEL.PSDIFF.NUM_PROPOSALS_TEST", 5)
    assert DiffusionSampler.from_config(cfg) == DiffusionSampler(
        kind="DPM_SOLVER", steps=3, eta=0.5, box_renewal=False, renewal_thresh=0.3,
        duplicate_iou=0.6, restart="noise", ensemble_steps=True, seed=7, query_mode="alone",
        num_proposals=5)


def build(*overrides, weights=None):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(*overrides))
    if weights is not None:
        model.load_state_dict(weights)
    return model.eval()


def test_steps_and_kind_chosen_at_evaluation_time_equal_a_model_built_with_them():
    inputs = [{k: v for k, v in scene("s.jpg", PERSONS).items() if k != "instances"}]
    query = [torch.tensor(PERSONS[:2], dtype=torch.float32)]
    model = build()  # the tiny config samples 2 steps with DDIM
    weights = model.state_dict()
    detections, queries = {}, {}
    for steps, kind in ((1, "DDIM"), (3, "DDIM"), (3, "DPM_SOLVER_PP")):
        model.sampler = dataclasses.replace(model.sampler, steps=steps, kind=kind)
        detections[steps, kind] = model(inputs)[0]
        queries[steps, kind] = model.embed_queries(inputs, query)[0]
        built = build("MODEL.PSDIFF.SAMPLE_STEPS", steps, "MODEL.PSDIFF.SAMPLER", kind,
                      weights=weights)
        expected = built(inputs)[0]
        for key in ("boxes", "scores", "embeddings"):
            assert torch.equal(detections[steps, kind][key], expected[key]), (steps, kind, key)
        assert torch.equal(queries[steps, kind], built.embed_queries(inputs, query)[0])
    assert not torch.equal(detections[1, "DDIM"]["boxes"], detections[3, "DDIM"]["boxes"])
    assert not torch.equal(queries[1, "DDIM"], queries[3, "DDIM"])
    # the untrained model scores every proposal under RENEWAL_THRESH, so all of them restart
    # between steps whatever the step rule; the fixed query rows never do
    assert not torch.equal(queries[3, "DDIM"], queries[3, "DPM_SOLVER_PP"])


def test_duplicates_are_the_lower_scoring_rows_of_overlapping_pairs():
    # rows 0 and 1 overlap at IoU 9/11 (row 1 scores higher), row 3 repeats row 0 at its
    # score (the earlier row ranks higher on a tie), row 2 overlaps nothing; second image: the
    # same boxes with the scores reversed
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10]],
                         dtype=torch.float32).expand(2, 4, 4)
    scores = torch.tensor([[0.5, 0.9, 0.2, 0.5], [0.9, 0.5, 0.2, 0.1]])
    assert duplicates(boxes, scores, 0.5).tolist() == [[True, False, False, True],
                                                       [False, True, False, True]]
    # IoU 9/11 = 0.82 is not above 0.85: only the exact repeat is a duplicate there
    assert duplicates(boxes, scores, 0.85).tolist() == [[False, False, False, True],
                                                        [False, False, False, True]]


def denoise_calls(model, inputs, queries=None, **sampler):
    """(boxes, t) of each call the model's sampler, replaced by `sampler`'s fields, makes to
    the CDL for `inputs` (one image): detection, or with `queries` (boxes) their embedding."""
    model.sampler = dataclasses.replace(model.sampler, **sampler)
    features, _, whwh = model.extract_features(inputs)
    calls = []

    def recording(features, boxes, emb_signal, t, *args):
        calls.append((boxes, t))
        return type(model).denoise(model, features, boxes, emb_signal, t, *args)

    model.denoise = recording
    try:
        with torch.no_grad():
            if queries is None:
                model.sampler.detect(model, features, whwh, inputs)
            else:
                model.sampler.embed_queries(model, features, whwh, "q", queries)
    finally:
        del model.denoise
    return calls


def second_step_boxes(model, inputs, duplicate_iou):
    """The boxes the model's sampler feeds the CDL at its second step, with `duplicate_iou`."""
    return denoise_calls(model, inputs, duplicate_iou=duplicate_iou)[1][0]


def test_duplicate_renewal_restarts_more_rows():
    # the same model and noise: with duplicates renewed, rows restart that would not, so the
    # second step's input boxes differ
    inputs = [{k: v for k, v in scene("s.jpg", PERSONS).items() if k != "instances"}]
    model = build("MODEL.PSDIFF.RENEWAL_THRESH", 0.0,  # no row scores <= 0: only duplicates
                  "MODEL.PSDIFF.NUM_PROPOSALS_TEST", 200)  # enough random boxes to overlap
    assert not torch.equal(second_step_boxes(model, inputs, 0.0),
                           second_step_boxes(model, inputs, 0.5))


def test_rows_restarted_from_noise_carry_t_max_and_the_rest_the_steps_t():
    inputs = [{k: v for k, v in scene("s.jpg", PERSONS).items() if k != "instances"}]
    queries = torch.tensor(PERSONS[:2], dtype=torch.float32)
    model = build("MODEL.PSDIFF.SAMPLE_STEPS", 3, "MODEL.PSDIFF.NUM_PROPOSALS_TEST", 6,
                  "MODEL.PSDIFF.RENEWAL_THRESH", 1.1)  # every row but the queries' renews
    step = denoise_calls(model, inputs, queries, restart="step")
    noise = denoise_calls(model, inputs, queries, restart="noise")
    assert [t.tolist() for _, t in step] == [[999], [665], [332]]  # one t per image
    assert noise[0][1].tolist() == [999]
    for (_, t), t_step in zip(noise[1:], (665, 332)):  # the 2 fixed query rows keep the step's
        assert t.tolist() == [[t_step] * 2 + [999] * 4]
    # restarted from noise, their boxes are pure noise: other than the placeholders at t
    assert not torch.allclose(noise[1][0][0, 2:], step[1][0][0, 2:])
    torch.testing.assert_close(noise[1][0][0, :2], queries)
