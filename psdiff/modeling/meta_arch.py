"""PSDiff (Fig. 2): feature extractor, dual noise generator, one reused CDL.

Training (Algorithm 1): GT boxes and teacher embeddings e0 are duplicated to N_train rows,
noised at one t per image (Eq. 10), denoised by the CDL (Eq. 12) and scored by the set loss
(Eq. 13-14). Inference (Algorithm 2) is run by the model's `sampler` (sampling.py: N_test
Gaussian boxes and embeddings denoised in SAMPLE_STEPS steps, seeded per image) and turned into
outputs by its `postprocessor` (postprocess.py). Both are plain immutable objects built from the
config; to evaluate with other steps or another sampler, give the model a new one:
`model.sampler = dataclasses.replace(model.sampler, steps=1)`.

With NUM_PASSES > 1 every step applies the one CDL again to its own output (boxes and
embeddings; shared weights, as DiffusionDet's cascade but with one layer), and training
supervises every pass (deep supervision).
"""

import torch
from torch import nn
from torchvision.ops import box_convert

from psdiff.utils.errors import PsdiffError

from . import diffusion
from .backbone import build_backbone
from .build import META_ARCH_REGISTRY
from .cdl import CollaborativeDenoisingLayer
from .losses import SetCriterion
from .postprocess import DetectionPostprocessor, rescale_boxes
from .sampling import DiffusionSampler, noise_key
from .sampling_graphs import SamplingGraphs


def output_size(x):
    """(h, w) the outputs of input `x` are given in: Detectron2's optional "height" / "width"
    (the original image), else the size of the image the model was given."""
    return x.get("height", x["image"].shape[-2]), x.get("width", x["image"].shape[-1])


@META_ARCH_REGISTRY.register()
class PSDiff(nn.Module):
    """Person search as dual denoising of boxes and ReID embeddings (Section IV)."""

    def __init__(
        self,
        *,
        backbone,
        cdl,
        criterion,
        sampler,
        postprocessor,
        in_features=("p2", "p3", "p4", "p5"),
        parts_feature="",
        pixel_mean,
        pixel_std,
        size_divisibility=32,
        num_proposals_train=300,
        num_timesteps=1000,
        snr_box=2.0,
        snr_emb=3.0,
        emb_norm="l2_sqrt_dim",
        gt_padding="repeat",
        emb_diffusion=True,
        num_passes=1,
    ):
        """The parts, then plain arguments, one per config key (see `from_config`).

        sampler: a DiffusionSampler (Algorithm 2); postprocessor: a DetectionPostprocessor.
        """
        super().__init__()
        self.backbone = backbone
        self.cdl = cdl
        self.criterion = criterion
        self.sampler = sampler
        self.sampling_graphs = SamplingGraphs()  # the sampler's CUDA graphs (TEST.CUDA_GRAPH)
        self.postprocessor = postprocessor
        self.in_features = list(in_features)  # FPN maps the CDL pools from, finest first
        self.parts_feature = parts_feature  # the trunk map the embedding stripes read, or ""
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        alphas_cumprod = diffusion.cosine_alphas_cumprod(num_timesteps)
        self.register_buffer("alphas_cumprod", alphas_cumprod, False)
        self.size_divisibility = size_divisibility
        self.num_proposals_train = num_proposals_train
        self.num_timesteps = num_timesteps
        self.snr_box, self.snr_emb, self.emb_norm = snr_box, snr_emb, emb_norm
        self.gt_padding = gt_padding
        self.emb_diffusion = emb_diffusion
        if num_passes < 1:
            raise PsdiffError(f"MODEL.PSDIFF.NUM_PASSES must be >= 1, got {num_passes}")
        self.num_passes = num_passes
        sampler.step_rule(alphas_cumprod, num_timesteps)  # SAMPLER, SAMPLE_STEPS: fail at build

    @classmethod
    def from_config(cls, cfg):
        """Backbone, CDL, criterion, sampler and postprocessor from the config; every other
        argument is a key."""
        backbone = build_backbone(cfg)
        names = list(backbone.out_features)  # e.g. p2..p5, finest first
        strides = [backbone.strides[name] for name in names]
        p = cfg.MODEL.PSDIFF
        parts_feature = p.EMB_PARTS_IN_FEATURE
        stage_channels = getattr(backbone, "stage_channels", {})
        if parts_feature and parts_feature not in stage_channels:
            raise PsdiffError(f"MODEL.PSDIFF.EMB_PARTS_IN_FEATURE = '{parts_feature}' is not a "
                              f"stage the trunk returns: {sorted(stage_channels)}")
        parts_source = (stage_channels[parts_feature], backbone.strides[parts_feature]) \
            if parts_feature else None
        cdl = CollaborativeDenoisingLayer.from_config(cfg, backbone.out_channels, strides,
                                                      parts_source)
        return cls(
            backbone=backbone,
            cdl=cdl,
            criterion=SetCriterion.from_config(cfg),
            sampler=DiffusionSampler.from_config(cfg),
            postprocessor=DetectionPostprocessor.from_config(cfg),
            in_features=names,
            parts_feature=parts_feature,
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD,
            size_divisibility=p.SIZE_DIVISIBILITY,
            num_proposals_train=p.NUM_PROPOSALS_TRAIN,
            num_timesteps=p.NUM_TIMESTEPS,
            snr_box=p.SNR_BOX,
            snr_emb=p.SNR_EMB,
            emb_norm=p.EMB_NORM,
            gt_padding=p.GT_PADDING,
            emb_diffusion=p.EMB_DIFFUSION,
            num_passes=p.NUM_PASSES,
        )

    @property
    def device(self):
        return self.pixel_mean.device

    @property
    def emb_dim(self):
        """D, the width of the ReID embeddings (MODEL.PSDIFF.EMB_DIM)."""
        return self.cdl.emb_dim

    # --- shared pieces -------------------------------------------------------------------------

    def preprocess_image(self, batched_inputs):
        """Normalizes BGR uint8 images and pads them to a multiple of SIZE_DIVISIBILITY.

        Returns the batch [B, 3, H, W] and the unpadded (h, w) of each image.
        """
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]
        sizes = [tuple(image.shape[-2:]) for image in images]
        div = self.size_divisibility
        height = -(-max(h for h, _ in sizes) // div) * div
        width = -(-max(w for _, w in sizes) // div) * div
        batch = images[0].new_zeros(len(images), 3, height, width)
        for i, image in enumerate(images):
            batch[i, :, : image.shape[1], : image.shape[2]] = image
        return batch, sizes

    def extract_features(self, batched_inputs):
        """Condition c of Eq. 9: the maps the CDL reads (FPN maps finest first, see
        `CollaborativeDenoisingLayer.condition`), the unpadded sizes and their (w,h,w,h)."""
        images, sizes = self.preprocess_image(batched_inputs)
        features = self.backbone(images)
        features = self.cdl.condition([features[name] for name in self.in_features],
                                      features.get(self.parts_feature))
        whwh = torch.tensor([[w, h, w, h] for h, w in sizes], device=self.device).float()
        return features, sizes, whwh

    def signal_to_abs_boxes(self, x, whwh):
        """Box signal [B, N, 4] -> xyxy input pixels (clamped to the image as DiffusionDet)."""
        cxcywh = diffusion.signal_to_boxes(x, self.snr_box)
        return box_convert(cxcywh, "cxcywh", "xyxy") * whwh[:, None, :]

    def abs_boxes_to_signal(self, boxes, whwh):
        """xyxy input pixels [B, N, 4] -> box signal s1 (2b - 1) of Eq. 10."""
        return diffusion.boxes_to_signal(box_convert(boxes / whwh[:, None, :], "xyxy", "cxcywh"),
                                         self.snr_box)

    def clean_signals(self, boxes, embeddings):
        """x0 of Eq. 10: boxes (cxcywh in [0, 1]) -> s1 (2b - 1), embeddings -> s2 Norm(e)."""
        return (diffusion.boxes_to_signal(boxes, self.snr_box),
                diffusion.embeddings_to_signal(embeddings, self.snr_emb, self.emb_norm))

    def forward(self, batched_inputs):
        """Training: dict of losses. Eval: one {"boxes", "scores", "embeddings"} per image."""
        if self.training:
            return self.forward_train(batched_inputs)
        return self.inference(batched_inputs)

    # --- training (Algorithm 1) ---------------------------------------------------------------

    def prepare_targets(self, batched_inputs, whwh, t=None):
        """Loss targets and the dual noisy inputs (b_t, e_t, t) of Eq. 10 for each image.

        t: the diffusion step of every image, or None (training) for one random step each.
        """
        targets, noisy_boxes, noisy_embs, steps = [], [], [], []
        for x, size in zip(batched_inputs, whwh):
            instances = x.get("instances")
            if instances is None:
                raise PsdiffError(f"training input {x.get('image_id', '?')} has no 'instances'")
            gt_boxes = instances["boxes"].to(self.device).float()
            gt_embs = self.teacher_embeddings(x, len(gt_boxes))
            gt_cxcywh = box_convert(gt_boxes / size, "xyxy", "cxcywh")
            boxes0, index = diffusion.pad_ground_truth(
                gt_cxcywh, self.num_proposals_train, self.gt_padding
            )
            embs0 = diffusion.gather_padded(gt_embs, index, diffusion.random_embeddings)
            step = (torch.randint(0, self.num_timesteps, (1,), device=self.device) if t is None
                    else torch.full((1,), t, device=self.device))
            box_signal, emb_signal = self.clean_signals(boxes0, embs0)
            noisy_boxes.append(diffusion.q_sample(
                box_signal, step, self.alphas_cumprod, torch.randn_like(box_signal)))
            if self.emb_diffusion:
                noisy_embs.append(diffusion.q_sample(
                    emb_signal, step, self.alphas_cumprod, torch.randn_like(emb_signal)))
            else:  # Table VI: regress e0 without an embedding input
                noisy_embs.append(embs0.new_zeros(embs0.shape))
            steps.append(step)
            targets.append({
                "boxes": gt_boxes,
                "image_size": size,
                "embeddings": diffusion.embeddings_to_signal(gt_embs, 1.0, self.emb_norm),
            })
        return targets, torch.stack(noisy_boxes), torch.stack(noisy_embs), torch.cat(steps)

    def teacher_embeddings(self, x, num_gt):
        """The teacher targets e0 (Eq. 11) of one training input, [M, D], checked."""
        dim = self.emb_dim
        embs = x["instances"].get("embeddings")
        if embs is None:
            if num_gt == 0:
                return torch.zeros(0, dim, device=self.device)
            raise PsdiffError(
                f"training input {x.get('image_id', '?')} has no teacher embeddings e0 "
                "(instances['embeddings']): set TEACHER.CACHE to the targets built by "
                "tools/build_targets.py from a trained ReID teacher (TEACHER.WEIGHTS)"
            )
        embs = torch.as_tensor(embs, device=self.device).float()
        if embs.shape != (num_gt, dim):
            raise PsdiffError(
                f"training input {x.get('image_id', '?')}: teacher embeddings have shape "
                f"{tuple(embs.shape)}, expected ({num_gt}, {dim}) (MODEL.PSDIFF.EMB_DIM)"
            )
        return embs

    def embedding_signal(self, out):
        """The x0 estimate of the embedding signal from a CDL output: s2 * e_hat0, clamped."""
        return (out["pred_embeddings"] * self.snr_emb).clamp(-self.snr_emb, self.snr_emb)

    def denoise(self, features, boxes, emb_signal, t, num_known=0):
        """The CDL (Eq. 12) applied NUM_PASSES times; each pass reads the previous one's boxes,
        embeddings and object features (as DiffusionDet's stages) at the same t. The first
        `num_known` boxes of each image are known (queries): every pass keeps them. Returns
        every pass's output; the last one is the step's."""
        outputs, carried = [], None
        for _ in range(self.num_passes):
            out = self.cdl(features, boxes, emb_signal, t, carried, num_known)
            outputs.append(out)
            boxes, carried = out["pred_boxes"], out["object_features"]
            if self.emb_diffusion:
                emb_signal = self.embedding_signal(out)
        return outputs

    def forward_train(self, batched_inputs):
        features, _, whwh = self.extract_features(batched_inputs)
        targets, box_signal, emb_signal, t = self.prepare_targets(batched_inputs, whwh)
        outputs = self.denoise(features, self.signal_to_abs_boxes(box_signal, whwh), emb_signal, t)
        # Eq. 14 in Norm space, values in [-1, 1] as Eq. 10 rescales them (docs/design-notes.md)
        losses = self.criterion(outputs[-1], targets)
        for i, out in enumerate(outputs[:-1]):  # deep supervision of the earlier passes
            losses.update({f"{k}_{i}": v for k, v in self.criterion(out, targets).items()})
        return losses

    # --- inference (Algorithm 2) --------------------------------------------------------------

    def embeddings_from_prediction(self, pred_embeddings):
        """e_hat0 (Norm space) -> unit-L2 embeddings, through the signal space of Eq. 10."""
        signal = pred_embeddings.float() * self.snr_emb
        return diffusion.signal_to_embeddings(signal, self.snr_emb, self.emb_norm)

    @torch.no_grad()
    def inference(self, batched_inputs):
        """Algorithm 2 (`self.sampler`) on a batch; the kept steps of each image pooled and
        turned into outputs in original image pixels by `self.postprocessor`."""
        return self.detections(batched_inputs, self.extract_features(batched_inputs))

    @torch.no_grad()
    def embed_queries(self, images, boxes):
        """The L2-normalized embedding of each given box (query persons), [k, D] per image.

        The query box is a known box b, held fixed through an Algorithm-2 run while its
        embedding is denoised (QUERY_MODE; see `DiffusionSampler.embed_queries`).
        `boxes` are xyxy in ORIGINAL image pixels.
        """
        return self.query_embeddings(images, boxes, self.extract_features(images))

    @torch.no_grad()
    def inference_with_queries(self, batched_inputs, boxes):
        """`inference(batched_inputs)` and `embed_queries(batched_inputs, boxes)` from one
        backbone pass, as (outputs, query embeddings): how the evaluator runs gallery images
        that hold queries. Equal to the two calls, as each draws its noise by its own keys."""
        condition = self.extract_features(batched_inputs)
        return (self.detections(batched_inputs, condition),
                self.query_embeddings(batched_inputs, boxes, condition))

    def detections(self, batched_inputs, condition):
        """`inference` given the batch's `extract_features` output (`condition`)."""
        features, sizes, whwh = condition
        kept = self.sampler.detect(self, features, whwh, batched_inputs)
        results = []
        for b, x in enumerate(batched_inputs):
            boxes = torch.cat([out["pred_boxes"][b] for out in kept])
            scores = torch.cat([out["pred_logits"][b, :, 0].sigmoid() for out in kept])
            embs = torch.cat([self.embeddings_from_prediction(out["pred_embeddings"][b])
                              for out in kept])
            results.append(self.postprocessor(boxes, scores, embs, sizes[b], output_size(x)))
        return results

    def query_embeddings(self, images, boxes, condition):
        """`embed_queries` given the images' `extract_features` output (`condition`)."""
        features, sizes, whwh = condition
        results = []
        for b, (x, query_boxes) in enumerate(zip(images, boxes)):
            query_boxes = torch.as_tensor(query_boxes, dtype=torch.float32, device=self.device)
            query_boxes = rescale_boxes(query_boxes.reshape(-1, 4), output_size(x), sizes[b])
            image_features = [f[b: b + 1] for f in features]
            results.append(self.sampler.embed_queries(self, image_features, whwh[b: b + 1],
                                                      noise_key(x, b), query_boxes))
        return results
