"""Algorithm 2 as an object: how PSDiff samples at inference, apart from the network.

`DiffusionSampler` holds every inference-only choice (the fast sampler and its steps, DDIM eta,
box renewal, step ensembling, the seed rule, the query mode and N_test) and runs Algorithm 2's
loop, calling back into the model for the network (`denoise`) and the signal spaces of Eq. 10.
Per diffused quantity it uses the step rules of diffusion.py (`diffusion.build_sampler`).
It is immutable: to sample differently at evaluation time, give the model another one, e.g.
`model.sampler = dataclasses.replace(model.sampler, steps=1)`.

The noise of each image comes from a generator seeded by (TEST.SAMPLER_SEED, `noise_key`), so
evaluation noise does not depend on batch composition, rank or RNG history (DiffusionDet #45,
#112). The generators live on the model's device: on a GPU the noise is drawn there (other
numbers than the CPU's, as reproducible), on the CPU the numbers are those of a CPU generator.
"""

import hashlib
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from psdiff.utils.errors import PsdiffError

from . import diffusion

QUERY_MODES = ("denoise", "alone")  # MODEL.PSDIFF.QUERY_MODE choices (see `embed_queries`)
RESTARTS = ("step", "noise")  # MODEL.PSDIFF.RENEWAL_RESTART choices (see `renew`)


def image_generator(seed, key, device):
    """A torch.Generator on `device` seeded from `seed` and an image's key (stable across
    processes); the noise is drawn where the model runs, not copied there."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return generator


def noise_key(x, position):
    """What seeds an input's sampler noise: its "image_id", else its position in the call."""
    return x["image_id"] if "image_id" in x else f"position {position}"


@dataclass(frozen=True)
class DiffusionSampler:
    """Algorithm 2: N_test Gaussian boxes and embeddings denoised in `steps` sampler steps,
    low-score rows renewed between steps (DiffusionDet's box renewal)."""

    kind: str = "DDIM"  # MODEL.PSDIFF.SAMPLER: the step rule (Table V)
    steps: int = 8  # MODEL.PSDIFF.SAMPLE_STEPS: network calls per image
    eta: float = 1.0  # MODEL.PSDIFF.DDIM_ETA
    box_renewal: bool = True  # MODEL.PSDIFF.BOX_RENEWAL
    renewal_thresh: float = 0.5  # MODEL.PSDIFF.RENEWAL_THRESH: rows scoring <= this restart
    duplicate_iou: float = 0.0  # MODEL.PSDIFF.RENEWAL_DUPLICATE_IOU: > 0 restarts duplicates too
    restart: str = "step"  # MODEL.PSDIFF.RENEWAL_RESTART: renewed rows restart at "step" or "noise"
    ensemble_steps: bool = False  # MODEL.PSDIFF.ENSEMBLE_STEPS: keep every step, not the last
    seed: int = 0  # TEST.SAMPLER_SEED
    query_mode: str = "denoise"  # MODEL.PSDIFF.QUERY_MODE
    num_proposals: int = 300  # MODEL.PSDIFF.NUM_PROPOSALS_TEST: N_test
    cuda_graph: bool = False  # TEST.CUDA_GRAPH: replay the loop from a CUDA graph

    def __post_init__(self):
        if self.query_mode not in QUERY_MODES:
            raise PsdiffError(
                f"MODEL.PSDIFF.QUERY_MODE = '{self.query_mode}' is not one of {QUERY_MODES}"
            )
        if self.restart not in RESTARTS:
            raise PsdiffError(
                f"MODEL.PSDIFF.RENEWAL_RESTART = '{self.restart}' is not one of {RESTARTS}"
            )

    @classmethod
    def from_config(cls, cfg):
        p = cfg.MODEL.PSDIFF
        if cfg.TEST.CUDA_GRAPH and not str(cfg.MODEL.DEVICE).startswith("cuda"):
            raise PsdiffError(f"TEST.CUDA_GRAPH needs a CUDA MODEL.DEVICE, not "
                              f"'{cfg.MODEL.DEVICE}'")
        return cls(
            kind=p.SAMPLER,
            steps=p.SAMPLE_STEPS,
            eta=p.DDIM_ETA,
            box_renewal=p.BOX_RENEWAL,
            renewal_thresh=p.RENEWAL_THRESH,
            duplicate_iou=p.RENEWAL_DUPLICATE_IOU,
            restart=p.RENEWAL_RESTART,
            ensemble_steps=p.ENSEMBLE_STEPS,
            seed=cfg.TEST.SAMPLER_SEED,
            query_mode=p.QUERY_MODE,
            num_proposals=p.NUM_PROPOSALS_TEST,
            cuda_graph=cfg.TEST.CUDA_GRAPH,
        )

    def step_rule(self, alphas_cumprod, num_timesteps):
        """The per-quantity step rule of diffusion.py for this kind and number of steps
        (raises PsdiffError for an unknown kind or steps outside [1, num_timesteps])."""
        return diffusion.build_sampler(self.kind, alphas_cumprod, self.steps, num_timesteps,
                                       self.eta)

    # --- the two uses ------------------------------------------------------------------------

    def detect(self, model, features, whwh, inputs):
        """Gallery: Algorithm 2 from N_test proposals per image, each image's noise seeded by
        its `noise_key`. Returns the kept CDL outputs (see `sample`)."""
        generators = [image_generator(self.seed, noise_key(x, b), model.device)
                      for b, x in enumerate(inputs)]
        return self.sample(model, features, whwh, generators, self.num_proposals)

    def embed_queries(self, model, features, whwh, key, boxes):
        """Queries: the unit-L2 embeddings [k, D] (e_hat0 of the last step) of the known boxes
        [k, 4] (input pixels) of one image (features and whwh of batch size 1; `key` is its
        `noise_key`).

        With "denoise" each box takes the place of a first proposal of an ordinary Algorithm-2
        run (N_test proposals, the gallery's sampler and seed rule), held fixed at every step
        and every CDL pass (its own prediction, so stripes read at predicted boxes read the
        query box) and never renewed, while its embedding is denoised from Gaussian noise; so
        queries and gallery detections are embedded by the same process, and the CDL's
        self-attention sees a full set of proposals as in training. "alone" runs the same loop
        with the query boxes as the only proposals (cheaper). Boxes go in chunks of N_test.
        """
        chunk = max(self.num_proposals, 1)
        embs = []
        for start in range(0, len(boxes), chunk):
            fixed = boxes[start: start + chunk]
            num = self.num_proposals if self.query_mode == "denoise" else len(fixed)
            generator = image_generator(self.seed, f"query:{key}:{start}", model.device)
            out = self.sample(model, features, whwh, [generator], num, fixed[None])
            e_hat = out[-1]["pred_embeddings"][0, : len(fixed)]
            embs.append(model.embeddings_from_prediction(e_hat))
        return torch.cat(embs) if embs else torch.zeros(0, model.emb_dim, device=model.device)

    # --- Algorithm 2 -------------------------------------------------------------------------

    def sample(self, model, features, whwh, generators, num_proposals, fixed_boxes=None):
        """Denoises `num_proposals` Gaussian boxes and embeddings per image (Algorithm 2).

        `fixed_boxes` [B, k, 4] (input pixels), if given, replace the first k boxes at every
        step. Returns a list with one CDL output dict per step kept: the last step, or every
        step with `ensemble_steps`. All noise is drawn first (`draw_noise`), so the loop itself
        is deterministic and, with `cuda_graph`, replayed from a CUDA graph.
        """
        noise = self.draw_noise(model, generators, num_proposals)
        rules = [self.step_rule(model.alphas_cumprod, model.num_timesteps)
                 for _ in range(2)]  # one for boxes, one for embeddings
        if self.cuda_graph:
            return model.sampling_graphs.run(self.loop, model, features, whwh, noise, rules,
                                             fixed_boxes)
        return self.loop(model, features, whwh, noise, rules, fixed_boxes)

    def draw_noise(self, model, generators, num_proposals):
        """Every random draw of one run, each image's from its own generator in the order the
        loop uses them, stacked over images: "boxes" [B, N, 4] and "embeddings" [B, N, D] (x_T);
        per step but the last, [B, S-1, N, *]: "step_*", the DDIM noise z, and with box renewal
        "renew_*", the placeholders of renewed rows and the noise that takes them to t."""
        shapes = {"boxes": (num_proposals, 4), "embeddings": (num_proposals, model.emb_dim)}
        per_image = [self.draw_image_noise(g, shapes) for g in generators]
        return {key: torch.stack([draws[key] for draws in per_image]) for key in per_image[0]}

    def draw_image_noise(self, generator, shapes):
        """`draw_noise` for one image."""
        def randn(name):
            return torch.randn(shapes[name], generator=generator, device=generator.device)

        draws = {name: randn(name) for name in shapes}
        steps = []
        for _ in range(self.steps - 1):
            step = {f"step_{name}": randn(name) for name in shapes}
            if self.box_renewal:
                step["renew_boxes"] = diffusion.random_boxes(shapes["boxes"], generator).float()
                step["renew_embeddings"] = diffusion.random_embeddings(shapes["embeddings"],
                                                                       generator).float()
                step.update({f"renew_{name}_noise": randn(name) for name in shapes})
            steps.append(step)
        draws.update({key: torch.stack([step[key] for step in steps])
                      for key in (steps[0] if steps else ())})
        return draws

    def loop(self, model, features, whwh, noise, rules, fixed_boxes=None):
        """Algorithm 2's loop on drawn `noise` (`draw_noise`) with the step `rules` of boxes and
        embeddings (built outside: they copy the schedule to the host): no random draw, no copy
        between host and device, no shape that depends on the data, so a CUDA graph can
        capture it. Returns what `sample` does."""
        box_x, emb_x = noise["boxes"], noise["embeddings"]
        batch, num_proposals = box_x.shape[:2]
        if not model.emb_diffusion:
            emb_x = torch.zeros_like(emb_x)
        num_fixed = 0 if fixed_boxes is None else fixed_boxes.shape[1]
        protected = torch.zeros(batch, num_proposals, dtype=torch.bool, device=model.device)
        protected[:, :num_fixed] = True
        kept = []
        timesteps = rules[0].timesteps
        restarted = torch.zeros_like(protected)  # rows renewal just restarted from noise
        for i, t in enumerate(timesteps):
            boxes = model.signal_to_abs_boxes(box_x, whwh)
            if num_fixed:
                boxes = torch.cat([fixed_boxes, boxes[:, num_fixed:]], dim=1)
            t_rows = torch.full((batch,), t, device=model.device)
            if self.restart == "noise" and i > 0:  # each row its own t: restarted ones T - 1
                t_rows = torch.where(restarted, timesteps[0], t_rows[:, None])
            out = model.denoise(features, boxes, emb_x, t_rows, num_fixed)[-1]
            if self.ensemble_steps or i == len(timesteps) - 1:
                kept.append(out)
            if i == len(timesteps) - 1:
                return kept  # Algorithm 2: the last step returns b_hat0, e_hat0
            box_x = self.step(rules[0], i, restarted, box_x,
                              model.abs_boxes_to_signal(out["pred_boxes"], whwh),
                              noise["step_boxes"][:, i])
            if model.emb_diffusion:
                emb_x = self.step(rules[1], i, restarted, emb_x, model.embedding_signal(out),
                                  noise["step_embeddings"][:, i])
            if self.box_renewal:
                fresh = {key: value[:, i] for key, value in noise.items()
                         if key.startswith("renew_")}
                box_x, emb_x, restarted = self.renew(model, out, box_x, emb_x, rules, fresh,
                                                     protected, rules[0].next_timesteps[i])

    def step(self, rule, i, restarted, x_t, x0_pred, noise):
        """x at the next step from x_t and the network's x̂0 by the step `rule`; rows that
        entered this step restarted from noise (`restarted`, RENEWAL_RESTART "noise") step from
        T - 1 (`Sampler.restart_step`). Dense: a CUDA graph can hold it."""
        x = rule.step(i, x_t, x0_pred, noise)
        if self.restart != "noise" or i == 0:
            return x
        return torch.where(restarted[..., None], rule.restart_step(i, x_t, x0_pred, noise), x)

    def fresh(self, model, draws, t):
        """Rows restarting at step t: placeholder boxes and embeddings (the training padding's
        random boxes and directions, `draws` of `draw_noise` for this step) noised to t by
        Eq. 10, so they look like training rows."""
        box_x0, emb_x0 = model.clean_signals(draws["renew_boxes"], draws["renew_embeddings"])
        return (diffusion.q_sample(box_x0, t, model.alphas_cumprod, draws["renew_boxes_noise"]),
                diffusion.q_sample(emb_x0, t, model.alphas_cumprod,
                                   draws["renew_embeddings_noise"]))

    def renew(self, model, out, box_x, emb_x, rules, draws, protected, t):
        """DiffusionDet's box renewal: rows scoring <= `renewal_thresh` restart, and with
        `duplicate_iou` > 0 so do duplicates (`duplicates`). Returns the new box and embedding
        signals and the mask of restarted rows.

        DiffusionDet restarts them from pure noise but denoises them as rows at the next step's
        t. Here, with `restart` "step", they restart as Eq. 10's x_t of a placeholder (`fresh`)
        at that t, which at low t is mostly signal, as in training; with "noise" they restart
        from pure noise at t = T - 1 and the network is told so (each row its own t), so they
        search the whole image as the first step's rows do while the kept rows refine.
        Boxes and embeddings share the mask; `protected` rows (fixed query boxes) never renew.
        """
        scores = out["pred_logits"][..., 0].sigmoid()
        renew = scores <= self.renewal_thresh
        if self.duplicate_iou > 0:
            renew |= duplicates(out["pred_boxes"], scores, self.duplicate_iou)
        renew &= ~protected
        if self.restart == "noise":
            t = rules[0].timesteps[0]
        fresh_boxes, fresh_embs = self.fresh(model, draws, t)
        box_x = torch.where(renew[..., None], fresh_boxes, box_x)
        if model.emb_diffusion:
            emb_x = torch.where(renew[..., None], fresh_embs, emb_x)
        for rule in rules:
            rule.reset_rows(renew)
        return box_x, emb_x, renew


def duplicates(boxes, scores, iou_thresh):
    """[B, N] bool: rows whose xyxy box overlaps a higher-scoring row's (ties: the earlier row
    ranks higher) above `iou_thresh`. Training with GT_PADDING random_fill shows each person
    once among random placeholders; restarting the duplicates keeps one row per person and
    frees the rest to search, where left alone later steps crowd onto the persons already
    found. Dense (no data-dependent shape), so a CUDA graph can hold it."""
    num = boxes.shape[1]
    iou = torch.stack([box_iou(b, b) for b in boxes])
    order = torch.arange(num, device=boxes.device)
    above, tied = scores[:, None, :] > scores[:, :, None], scores[:, None, :] == scores[:, :, None]
    higher = above | (tied & (order[None, :] < order[:, None]))  # [b, i, j]: j ranks above i
    return ((iou > iou_thresh) & higher).any(-1)
