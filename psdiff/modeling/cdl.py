"""The Collaborative Denoising Layer (CDL, Section IV-B3, Eq. 12, Figs. 2-3).

(b_hat0, e_hat0) = f(b_t, e_t, c, t): one layer, reused at every sampling step.
1. F_d = RoIAlign(c, b_t): [N, S*S, C] detection features.
   F_r = LayerNorm(Linear(e_t) + time(t)): [N, C] ReID features of the noisy embeddings.
2. Collaborative interaction (Fig. 3), each part switchable for Table IV(b):
   - SA: self-attention among the N boxes of an image (Sparse R-CNN's relation among
     proposals), run at each of the S*S bins, so F_d keeps its spatial tokens, or over one
     pooled vector per box as Sparse R-CNN (MODEL.PSDIFF.SA_TOKENS "box");
   - DC: dynamic convolution of F_d with kernels generated from F_r (dynamic_conv.py);
   - CA: cross-attention, F_r the query, the box's S*S tokens of F_d the keys and values.
   F_c = [F_d pooled (+ DC), F_r (+ CA)]: [N, 2C], then an FFN and the time scale-shift.
3. Prediction (Table IV(c)): cascaded: F_c -> e_hat0, then F_o = e_hat0 -> detection head;
   parallel: both heads read F_c. The detection head predicts one person logit and box deltas
   applied to b_t (DiffusionDet's decoding). With MODEL.PSDIFF.EMB_PARTS = k > 0 the embedding
   head also reads k horizontal stripes of F_d (part pooling: where in the box a color sits),
   pooled at the input boxes b_t, or with MODEL.PSDIFF.EMB_PARTS_BOXES "predicted" (parallel
   heads only) at the boxes this layer predicts: the embedding then describes the person the
   output box holds, not the region the noisy input box happened to cover. There, with
   MODEL.PSDIFF.EMB_NECK_CONVS, the stripes read ReID maps of their own: a few 3x3 convs on
   each FPN map (`condition`, once per image), so detection and ReID stop pulling one map.
   With MODEL.PSDIFF.EMB_PARTS_IN_FEATURE (e.g. "res2") the stripes read one shallow trunk map
   instead of the box's FPN level: its small receptive field sees the person, not the scene.
   MODEL.PSDIFF.EMB_DETACH stops the embedding loss at F_c, so it cannot bend the shared
   features away from detection; it still trains the backbone through the stripes.
   MODEL.PSDIFF.EMB_PARTS_COLUMNS splits each stripe into cells, left to right. With
   MODEL.PSDIFF.EMB_FROM_COLLAB False the head is one Linear of the stripes alone: e_hat0 is then
   a function of the image at the box, and e_t reaches it only through the boxes F_c predicts.
"""

import math

import torch
from torch import nn

from psdiff.utils.errors import PsdiffError

from .attention import MultiHeadAttention
from .dynamic_conv import DynamicConv
from .pooler import MultiLevelRoIAlign
from .time_embedding import TimeEmbedding

SA_TOKENS = ("bins", "box")  # MODEL.PSDIFF.SA_TOKENS choices
EMB_PARTS_BOXES = ("input", "predicted")  # MODEL.PSDIFF.EMB_PARTS_BOXES choices

# DiffusionDet's box coding: deltas are divided by these weights; dw, dh are clamped so that
# exp() cannot overflow (log(100000 / 16), Detectron2's value).
BOX_DELTA_WEIGHTS = (2.0, 2.0, 1.0, 1.0)
BOX_DELTA_CLAMP = math.log(100000.0 / 16)


def apply_deltas(deltas, boxes):
    """Decodes [K, 4] (dx, dy, dw, dh) relative to [K, 4] xyxy boxes into xyxy boxes."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = BOX_DELTA_WEIGHTS
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = (deltas[:, 2] / ww).clamp(max=BOX_DELTA_CLAMP)
    dh = (deltas[:, 3] / wh).clamp(max=BOX_DELTA_CLAMP)
    cx, cy = dx * widths + ctr_x, dy * heights + ctr_y
    w, h = dw.exp() * widths, dh.exp() * heights
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def tower(in_dim, dim, num_layers):
    """`num_layers` x [Linear (no bias), LayerNorm, ReLU], DiffusionDet's cls / reg towers."""
    layers = []
    for i in range(num_layers):
        layers += [nn.Linear(in_dim if i == 0 else dim, dim, bias=False), nn.LayerNorm(dim)]
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class CollaborativeDenoisingLayer(nn.Module):
    """Predicts (box logits, boxes, embeddings) from noisy boxes and embeddings (Eq. 12)."""

    def __init__(
        self,
        *,
        in_channels,
        strides,
        hidden_dim=256,
        emb_dim=256,
        num_heads=8,
        dim_feedforward=1024,
        dim_dynamic=64,
        num_dynamic=2,
        kernel_rank=16,
        pooler_resolution=7,
        pooler_sampling_ratio=2,
        dropout=0.0,
        prior_prob=0.01,
        num_cls_layers=1,
        num_reg_layers=3,
        use_sa=True,
        use_dc=True,
        use_ca=True,
        cascaded=True,
        sa_tokens="box",
        dc_pooling="weighted_sum",
        emb_parts=0,
        emb_parts_columns=1,
        emb_parts_boxes="input",
        emb_neck_convs=0,
        emb_parts_source=None,
        emb_detach=False,
        emb_from_collab=True,
        fused_kernels=False,
    ):
        """`in_channels`: FPN width; `strides`: FPN strides finest first; `emb_parts_source`:
        (channels, stride) of the trunk map the stripes read, or None for the FPN levels. See
        `from_config`."""
        super().__init__()
        if in_channels != hidden_dim:
            raise PsdiffError(
                f"MODEL.PSDIFF.HIDDEN_DIM ({hidden_dim}) must equal the FPN width "
                f"MODEL.FPN.OUT_CHANNELS ({in_channels}): F_d has the FPN's channels"
            )
        if hidden_dim % num_heads:
            raise PsdiffError(
                f"MODEL.PSDIFF.HIDDEN_DIM ({hidden_dim}) is not divisible by "
                f"MODEL.PSDIFF.NHEADS ({num_heads})"
            )
        if sa_tokens not in SA_TOKENS:
            raise PsdiffError(f"MODEL.PSDIFF.SA_TOKENS = '{sa_tokens}' is not one of {SA_TOKENS}")
        if not 0 <= emb_parts <= pooler_resolution:
            raise PsdiffError(f"MODEL.PSDIFF.EMB_PARTS = {emb_parts} must be in "
                              f"[0, POOLER_RESOLUTION = {pooler_resolution}]")
        if not 1 <= emb_parts_columns <= pooler_resolution:
            raise PsdiffError(f"MODEL.PSDIFF.EMB_PARTS_COLUMNS = {emb_parts_columns} must be in "
                              f"[1, POOLER_RESOLUTION = {pooler_resolution}]")
        self.use_sa, self.use_dc, self.use_ca, self.cascaded = use_sa, use_dc, use_ca, cascaded
        self.sa_tokens = sa_tokens
        self.emb_dim = emb_dim
        self.pooler = MultiLevelRoIAlign(strides, pooler_resolution, pooler_sampling_ratio)
        self.time_embedding = TimeEmbedding(hidden_dim)
        self.reid_proj = nn.Linear(emb_dim, hidden_dim)
        self.reid_norm = nn.LayerNorm(hidden_dim)
        if use_sa:
            self.self_attn = MultiHeadAttention(hidden_dim, num_heads, dropout)
            self.self_attn_norm = nn.LayerNorm(hidden_dim)
        if use_dc:
            self.dynamic_conv = DynamicConv(
                hidden_dim, dim_dynamic, num_dynamic, kernel_rank, pooler_resolution, dc_pooling,
                fused_kernels,
            )
            self.dynamic_conv_norm = nn.LayerNorm(hidden_dim)
        if use_ca:
            self.cross_attn = MultiHeadAttention(hidden_dim, num_heads, dropout)
            self.cross_attn_norm = nn.LayerNorm(hidden_dim)
        collab_dim = 2 * hidden_dim  # F_c (N, 2C)
        self.ffn = nn.Sequential(
            nn.Linear(collab_dim, dim_feedforward),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, collab_dim),
        )
        self.ffn_norm = nn.LayerNorm(collab_dim)
        self.time_scale_shift = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, 2 * collab_dim))
        self.emb_parts = emb_parts
        if emb_parts_boxes not in EMB_PARTS_BOXES:
            raise PsdiffError(f"MODEL.PSDIFF.EMB_PARTS_BOXES = '{emb_parts_boxes}' is not one of "
                              f"{EMB_PARTS_BOXES}")
        if emb_parts_boxes == "predicted" and cascaded:
            raise PsdiffError("MODEL.PSDIFF.EMB_PARTS_BOXES 'predicted' needs CASCADED False: "
                              "cascaded boxes are predicted from the embedding")
        if emb_parts_boxes == "predicted" and not emb_parts:
            raise PsdiffError("MODEL.PSDIFF.EMB_PARTS_BOXES 'predicted' needs EMB_PARTS > 0: "
                              "it says where the stripes are pooled")
        self.stripes_at_prediction = emb_parts_boxes == "predicted"
        if emb_neck_convs and not self.stripes_at_prediction:
            raise PsdiffError("MODEL.PSDIFF.EMB_NECK_CONVS > 0 needs EMB_PARTS_BOXES 'predicted': "
                              "the neck's maps are read by the stripes pooled there")
        self.emb_neck = nn.Sequential(*[
            layer for _ in range(emb_neck_convs)
            for layer in (nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1), nn.ReLU())
        ]) if emb_neck_convs else None
        if emb_parts_source and emb_neck_convs:
            raise PsdiffError("MODEL.PSDIFF.EMB_PARTS_IN_FEATURE and EMB_NECK_CONVS both give the "
                              "stripes their maps; set one")
        if emb_parts_source and not emb_parts:
            raise PsdiffError("MODEL.PSDIFF.EMB_PARTS_IN_FEATURE needs EMB_PARTS > 0: it names "
                              "the map the stripes read")
        parts_channels, parts_stride = emb_parts_source or (hidden_dim, None)
        self.parts_from_trunk = emb_parts_source is not None
        self.parts_pooler = self.pooler  # the stripes' maps: the FPN levels, or the trunk's
        if parts_stride:
            self.parts_pooler = MultiLevelRoIAlign([parts_stride], pooler_resolution,
                                                   pooler_sampling_ratio)
        self.emb_detach = emb_detach
        if not emb_from_collab and not emb_parts:
            raise PsdiffError("MODEL.PSDIFF.EMB_FROM_COLLAB False needs EMB_PARTS > 0: the "
                              "embedding head then reads the stripes alone")
        if not emb_from_collab and cascaded:
            raise PsdiffError("MODEL.PSDIFF.EMB_FROM_COLLAB False needs CASCADED False: cascaded "
                              "detection reads e_hat0, which would no longer read F_c")
        self.emb_from_collab = emb_from_collab
        self.emb_parts_grid = (emb_parts, emb_parts_columns)
        stripes_dim = emb_parts * emb_parts_columns * parts_channels
        if not emb_from_collab:  # a linear read-out of the stripes
            self.emb_head = nn.Linear(stripes_dim, emb_dim)
        else:
            if emb_parts:
                self.parts_proj = tower(stripes_dim, hidden_dim, 1)
            emb_in = collab_dim + (hidden_dim if emb_parts else 0)
            self.emb_head = nn.Sequential(*tower(emb_in, hidden_dim, 1),
                                          nn.Linear(hidden_dim, emb_dim))
        obj_dim = emb_dim if cascaded else collab_dim  # F_o = e_hat0 (cascaded) or F_c
        self.cls_tower = tower(obj_dim, hidden_dim, num_cls_layers)
        self.reg_tower = tower(obj_dim, hidden_dim, num_reg_layers)
        self.class_logits = nn.Linear(hidden_dim if num_cls_layers else obj_dim, 1)
        self.bbox_deltas = nn.Linear(hidden_dim if num_reg_layers else obj_dim, 4)
        self._reset_parameters(prior_prob)

    def _reset_parameters(self, prior_prob):
        """Xavier init of every Linear (paper Sec. V-A3); focal prior on the person logit."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
        nn.init.constant_(self.class_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    @classmethod
    def from_config(cls, cfg, in_channels, strides, emb_parts_source=None):
        """Builds the CDL from `MODEL.PSDIFF.*` for a feature extractor of the given shape;
        `emb_parts_source`: (channels, stride) of MODEL.PSDIFF.EMB_PARTS_IN_FEATURE's map."""
        p = cfg.MODEL.PSDIFF
        return cls(
            in_channels=in_channels,
            strides=strides,
            hidden_dim=p.HIDDEN_DIM,
            emb_dim=p.EMB_DIM,
            num_heads=p.NHEADS,
            dim_feedforward=p.DIM_FEEDFORWARD,
            dim_dynamic=p.DIM_DYNAMIC,
            num_dynamic=p.NUM_DYNAMIC,
            kernel_rank=p.KERNEL_RANK,
            pooler_resolution=p.POOLER_RESOLUTION,
            pooler_sampling_ratio=p.POOLER_SAMPLING_RATIO,
            dropout=p.DROPOUT,
            prior_prob=p.PRIOR_PROB,
            num_cls_layers=p.NUM_CLS,
            num_reg_layers=p.NUM_REG,
            use_sa=p.USE_SA,
            use_dc=p.USE_DC,
            use_ca=p.USE_CA,
            cascaded=p.CASCADED,
            sa_tokens=p.SA_TOKENS,
            dc_pooling=p.DC_POOLING,
            emb_parts=p.EMB_PARTS,
            emb_parts_columns=p.EMB_PARTS_COLUMNS,
            emb_parts_boxes=p.EMB_PARTS_BOXES,
            emb_neck_convs=p.EMB_NECK_CONVS,
            emb_parts_source=emb_parts_source,
            emb_detach=p.EMB_DETACH,
            emb_from_collab=p.EMB_FROM_COLLAB,
            fused_kernels=p.FUSED_KERNELS,
        )

    def interact(self, det, reid, carried=None):
        """Collaborative interaction (Fig. 3): F_d [B, N, L, C], F_r [B, N, C] -> F_c [B*N, 2C].

        `carried` [B, N, C]: the previous pass's object features, added to the pooled F_d.
        """
        batch, num_boxes, bins, channels = det.shape
        if self.use_sa and self.sa_tokens == "bins":
            # attention among the N boxes of each image, at each bin separately; the tokens are
            # copied once into contiguous memory, where q, k and v read them without a copy each
            tokens = det.transpose(1, 2).reshape(batch * bins, num_boxes, channels).contiguous()
            tokens = self.self_attn_norm(tokens + self.self_attn(tokens, tokens))
            det = tokens.reshape(batch, bins, num_boxes, channels).transpose(1, 2)
        det_vector = det.mean(dim=2)
        if carried is not None:
            det_vector = det_vector + carried
        if self.use_sa and self.sa_tokens == "box":
            # attention among the N boxes of each image, one pooled vector per box
            det_vector = self.self_attn_norm(det_vector + self.self_attn(det_vector, det_vector))
        det = det.reshape(batch * num_boxes, bins, channels)
        det_vector = det_vector.reshape(batch * num_boxes, channels)
        reid = reid.reshape(batch * num_boxes, channels)
        if self.use_dc:
            det_vector = self.dynamic_conv_norm(det_vector + self.dynamic_conv(det, reid))
        if self.use_ca:
            attended = self.cross_attn(reid[:, None, :], det)[:, 0]
            reid = self.cross_attn_norm(reid + attended)
        return torch.cat([det_vector, reid], dim=-1)

    def condition(self, features, parts_map=None):
        """The maps the CDL reads, from the FPN maps (finest first): those maps, then the maps
        the stripes read: EMB_PARTS_IN_FEATURE's trunk map `parts_map`, or with EMB_NECK_CONVS
        the ReID neck's map of each level, computed once per image, not per call."""
        if self.parts_from_trunk:
            return features + [parts_map]
        if self.emb_neck is None:
            return features
        return features + [self.emb_neck(f) for f in features]

    def stripes(self, roi):
        """RoI features [K, C, S, S] -> [K, C*parts*columns]: the mean of each cell of each
        horizontal stripe."""
        return nn.functional.adaptive_avg_pool2d(roi, self.emb_parts_grid).flatten(1)

    def detect(self, obj, boxes, num_known=0):
        """Person logits [B*N, 1] and boxes [B*N, 4] from F_o (Fig. 2), deltas applied to b_t.
        The first `num_known` boxes of each image are known (query boxes) and kept as given,
        as reference methods embed a query at its own box."""
        logits = self.class_logits(self.cls_tower(obj))
        pred_boxes = apply_deltas(self.bbox_deltas(self.reg_tower(obj)), boxes.reshape(-1, 4))
        if num_known:
            pred_boxes = torch.cat([boxes[:, :num_known],
                                    pred_boxes.reshape(boxes.shape)[:, num_known:]], dim=1)
        return logits, pred_boxes.reshape(-1, 4)

    def embed(self, collab, roi):
        """e_hat0 [B*N, D] from F_c and, with EMB_PARTS, the stripes of the RoI features; with
        EMB_FROM_COLLAB False, from the stripes alone."""
        if not self.emb_from_collab:
            return self.emb_head(self.stripes(roi))
        emb_in = collab.detach() if self.emb_detach else collab
        if self.emb_parts:
            emb_in = torch.cat([emb_in, self.parts_proj(self.stripes(roi))], dim=-1)
        return self.emb_head(emb_in)

    def forward(self, features, boxes, emb_signal, t, carried=None, num_known=0):
        """One denoising step.

        features: `condition`'s maps (FPN maps finest first, [B, C, H_l, W_l], then the
        stripes' trunk map or ReID neck maps, if any); boxes: [B, N, 4] noisy boxes b_t,
        xyxy input pixels; emb_signal: [B, N, D] noisy embeddings e_t (signal space);
        t: [B] integer steps, or [B, N], one per row (rows renewal restarted from noise);
        carried: [B, N, C] object features of a previous pass, or None; num_known: how many
        leading boxes per image are known and kept (`detect`).
        Returns {"pred_logits": [B, N, 1], "pred_boxes": [B, N, 4] xyxy input pixels,
        "pred_embeddings": [B, N, D] e_hat0 in Norm space (signal / s2), "object_features":
        [B, N, C] the detection half of F_c after the FFN, for a next pass}.
        """
        batch, num_boxes = boxes.shape[:2]
        boxes = boxes.detach()
        levels = len(self.pooler.strides)
        features, emb_features = features[:levels], features[levels:] or features[:levels]
        roi = self.pooler(features, boxes)  # [B*N, C, S, S]
        bins = roi.shape[2] * roi.shape[3]
        det = roi.flatten(2).transpose(1, 2).reshape(batch, num_boxes, bins, roi.shape[1])
        time = self.time_embedding(t.reshape(-1)).reshape(*t.shape, -1)  # [B(, N), C]
        scale_shift = self.time_scale_shift(time)  # [B(, N), 4C]
        if t.dim() == 1:  # one t per image, shared by its rows
            time, scale_shift = time[:, None], scale_shift[:, None]
        reid = self.reid_norm(self.reid_proj(emb_signal) + time)
        collab = self.interact(det, reid, carried)
        collab = self.ffn_norm(collab + self.ffn(collab))
        channels = det.shape[-1]
        objects = collab[:, :channels].reshape(batch, num_boxes, channels)
        scale, shift = scale_shift.expand(batch, num_boxes, -1).reshape(
            batch * num_boxes, scale_shift.shape[-1]).chunk(2, -1)
        collab = collab * (scale + 1) + shift
        if self.stripes_at_prediction:  # parallel heads: the boxes first, then what they hold
            logits, pred_boxes = self.detect(collab, boxes, num_known)
            roi = self.parts_pooler(emb_features, pred_boxes.detach().reshape(batch, num_boxes, 4))
        elif self.parts_from_trunk:
            roi = self.parts_pooler(emb_features, boxes)
        embeddings = self.embed(collab, roi)
        if not self.stripes_at_prediction:
            logits, pred_boxes = self.detect(embeddings if self.cascaded else collab, boxes,
                                             num_known)
        return {
            "pred_logits": logits.reshape(batch, num_boxes, 1),
            "pred_boxes": pred_boxes.reshape(batch, num_boxes, 4),
            "pred_embeddings": embeddings.reshape(batch, num_boxes, embeddings.shape[-1]),
            "object_features": objects,
        }
