"""Every config key of psdiff with its default, Detectron2's key names, the paper's values.

The defaults are the paper's settings (Section V-A3: CUHK-SYSU, ResNet-50-FPN). Each key has a
one-line comment; keys the paper ablates name the table they come from.
"""

from .config import CfgNode as CN

_C = CN()

_C.VERSION = 2  # config format version (Detectron2 uses 2)
_C.SEED = 40244023  # global seed; negative = draw a random seed and log it
_C.OUTPUT_DIR = "./output"  # logs, config.yaml, metrics.json, checkpoints, predictions
_C.CUDNN_BENCHMARK = False  # cudnn autotuning: faster for fixed shapes, not bit-reproducible

# ---------------------------------------------------------------------------------------------
# MODEL
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "PSDiff"  # name in META_ARCH_REGISTRY
_C.MODEL.DEVICE = "cuda"  # "cuda" or "cpu"
_C.MODEL.WEIGHTS = ""  # checkpoint whose model weights initialize the model ("" = none)
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]  # BGR pixel mean (images are read as BGR)
_C.MODEL.PIXEL_STD = [57.375, 57.120, 58.395]  # BGR pixel std

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"  # name in BACKBONE_REGISTRY (or swin)
_C.MODEL.BACKBONE.FREEZE_AT = 2  # 0 = train all, 1 = freeze stem, 2 = stem + res2 (Detectron2)
_C.MODEL.BACKBONE.PRETRAINED = ""  # torchvision://<WeightsEnum>.<NAME> or a .pth; "" = random
_C.MODEL.BACKBONE.INIT_FROM_TEACHER = False  # True: the trunk starts from TEACHER.WEIGHTS' trunk

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50  # 18, 34, 50 or 101
_C.MODEL.RESNETS.NORM = "FrozenBN"  # "FrozenBN" or "BN"
_C.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # stages fed to the FPN

_C.MODEL.SWIN = CN()
_C.MODEL.SWIN.SIZE = "B"  # "T", "S" or "B" (paper: Swin-B)
_C.MODEL.SWIN.OUT_FEATURES = [0, 1, 2, 3]  # stages fed to the FPN
_C.MODEL.SWIN.DROP_PATH = 0.3  # stochastic depth rate (Swin-B detection recipe; torchvision: 0.5)

_C.MODEL.FPN = CN()
_C.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]  # trunk outputs the FPN reads
_C.MODEL.FPN.OUT_CHANNELS = 256  # FPN width C

# PSDiff (Section IV). Paper values; the ablated ones name their table.
_C.MODEL.PSDIFF = CN()
_C.MODEL.PSDIFF.NUM_PROPOSALS_TRAIN = 300  # N_train noisy boxes per image (Sec. V-A3)
_C.MODEL.PSDIFF.NUM_PROPOSALS_TEST = 300  # N_test random boxes per image at inference
_C.MODEL.PSDIFF.EMB_DIM = 256  # ReID embedding dimension D (teacher and model)
_C.MODEL.PSDIFF.HIDDEN_DIM = 256  # CDL feature width C
_C.MODEL.PSDIFF.NHEADS = 8  # attention heads in self- and cross-attention
_C.MODEL.PSDIFF.DIM_FEEDFORWARD = 1024  # FFN hidden width in the CDL
_C.MODEL.PSDIFF.DIM_DYNAMIC = 64  # bottleneck width of the dynamic convolution
_C.MODEL.PSDIFF.NUM_DYNAMIC = 2  # dynamic layers in the dynamic convolution
_C.MODEL.PSDIFF.KERNEL_RANK = 16  # basis kernels mixed per box by the dynamic conv (31M budget)
_C.MODEL.PSDIFF.NUM_CLS = 1  # layers in the person-score tower (DiffusionDet: 1)
_C.MODEL.PSDIFF.NUM_REG = 3  # layers in the box-regression tower (DiffusionDet: 3)
_C.MODEL.PSDIFF.DROPOUT = 0.0  # dropout in the CDL
_C.MODEL.PSDIFF.POOLER_RESOLUTION = 7  # RoIAlign output size S (F_d is N x S*S x C)
_C.MODEL.PSDIFF.POOLER_SAMPLING_RATIO = 2  # RoIAlign sampling ratio
_C.MODEL.PSDIFF.PRIOR_PROB = 0.01  # focal-loss prior for the class-logit bias init
_C.MODEL.PSDIFF.SIZE_DIVISIBILITY = 32  # pad batched images to a multiple of this
_C.MODEL.PSDIFF.USE_SA = True  # self-attention over detection features F_d (Table IV b)
_C.MODEL.PSDIFF.USE_DC = True  # dynamic conv with kernels from ReID features F_r (Table IV b)
_C.MODEL.PSDIFF.USE_CA = True  # cross-attention, F_r queries F_d (Table IV b)
_C.MODEL.PSDIFF.CASCADED = True  # True: F_c -> e0 -> boxes (cascaded); False: parallel (IV c)
_C.MODEL.PSDIFF.NUM_PASSES = 1  # CDL applications per step (shared weights); each one supervised
_C.MODEL.PSDIFF.SA_TOKENS = "box"  # self-attention over one "box" vector (Sparse R-CNN) or "bins"
_C.MODEL.PSDIFF.DC_POOLING = "weighted_sum"  # dynamic-conv output over bins: or "flatten" (Linear)
_C.MODEL.PSDIFF.EMB_PARTS = 0  # horizontal RoI stripes read by the embedding head; 0 = none
_C.MODEL.PSDIFF.EMB_PARTS_COLUMNS = 1  # each stripe split into this many cells, left to right
_C.MODEL.PSDIFF.EMB_PARTS_BOXES = "input"  # stripes pooled at the "input" b_t or "predicted" boxes
_C.MODEL.PSDIFF.EMB_NECK_CONVS = 0  # 3x3 conv + ReLU layers giving the predicted-box stripes
# ReID maps of their own, shared over FPN levels; 0 = the stripes read the detector's FPN maps
_C.MODEL.PSDIFF.EMB_PARTS_IN_FEATURE = ""  # trunk stage ("res2".."res5") the stripes read
# instead of the box's FPN level; "" = the FPN level (docs/learning.md, "Stripes of the trunk's")
_C.MODEL.PSDIFF.EMB_DETACH = False  # embedding head reads F_c without passing its gradient back
_C.MODEL.PSDIFF.EMB_FROM_COLLAB = True  # embedding head reads F_c (Eq. 12); False: one Linear
# of the stripes alone (docs/learning.md, "A linear read-out of the stripes")
# Dual noise generator (Eq. 10)
_C.MODEL.PSDIFF.NUM_TIMESTEPS = 1000  # T, diffusion steps of the cosine schedule
_C.MODEL.PSDIFF.SNR_BOX = 2.0  # s1, box signal scale (Table IV a)
_C.MODEL.PSDIFF.SNR_EMB = 3.0  # s2, embedding signal scale (Table IV a)
_C.MODEL.PSDIFF.EMB_NORM = "l2_sqrt_dim"  # Norm(e0) of Eq. 10 (see diffusion.py for choices)
_C.MODEL.PSDIFF.GT_PADDING = "repeat"  # how GTs fill N_train slots (see diffusion.py)
_C.MODEL.PSDIFF.EMB_DIFFUSION = True  # False: regress e0 without embedding noise (Table VI)
# Loss (Eq. 13-14)
_C.MODEL.PSDIFF.CLASS_WEIGHT = 2.0  # lambda_cls, focal loss weight
_C.MODEL.PSDIFF.L1_WEIGHT = 5.0  # lambda_L1
_C.MODEL.PSDIFF.GIOU_WEIGHT = 2.0  # lambda_giou
_C.MODEL.PSDIFF.REID_WEIGHT = 5.0  # lambda_reid, L2 embedding loss weight (Eq. 14)
_C.MODEL.PSDIFF.REID_LOSS = "l2"  # "l2": Eq. 14 in Norm space; "cosine": 1 - cos(e0, e0_hat)
_C.MODEL.PSDIFF.RELATION_WEIGHT = 0.0  # weight of the relational distillation loss; 0 = off
_C.MODEL.PSDIFF.RELATION_TEMPERATURE = 0.1  # its softmax temperature (student and teacher)
_C.MODEL.PSDIFF.FOCAL_ALPHA = 0.25  # focal loss alpha
_C.MODEL.PSDIFF.FOCAL_GAMMA = 2.0  # focal loss gamma
_C.MODEL.PSDIFF.MATCHER = "hungarian"  # "hungarian" (one-to-one, paper), "dynamic_k" or "iou"
_C.MODEL.PSDIFF.MATCH_K = 1  # predictions matched per GT; 1 = one-to-one Hungarian (paper)
_C.MODEL.PSDIFF.MATCH_IOU_THRESH = 0.5  # "iou" matcher: IoU at which a box is a person's
_C.MODEL.PSDIFF.MATCH_REID_COST = 0.0  # weight of ||e0 - e0_hat|| in the matching cost; 0 = off
# Inference (Algorithm 2, Table V)
_C.MODEL.PSDIFF.SAMPLER = "DDIM"  # "DDIM", "DPM_SOLVER" or "DPM_SOLVER_PP" (Table V)
_C.MODEL.PSDIFF.SAMPLE_STEPS = 8  # sampling steps (Table I, Fig. 6: 1, 2, 4, 8)
_C.MODEL.PSDIFF.DDIM_ETA = 1.0  # DDIM eta (DiffusionDet uses 1.0)
_C.MODEL.PSDIFF.BOX_RENEWAL = True  # replace low-score boxes with fresh noise between steps
_C.MODEL.PSDIFF.RENEWAL_THRESH = 0.5  # score under which a box is renewed
_C.MODEL.PSDIFF.RENEWAL_DUPLICATE_IOU = 0.0  # > 0: also renew boxes overlapping a better one
_C.MODEL.PSDIFF.RENEWAL_RESTART = "step"  # renewed rows restart at the next "step" or from "noise"
_C.MODEL.PSDIFF.USE_NMS = True  # NMS on the final detections
_C.MODEL.PSDIFF.NMS_THRESH = 0.5  # NMS IoU threshold
_C.MODEL.PSDIFF.ENSEMBLE_STEPS = False  # pool every step before NMS (off: Algorithm 2 = last)
_C.MODEL.PSDIFF.QUERY_MODE = "denoise"  # "denoise": fixed box among N_test proposals; "alone"
_C.MODEL.PSDIFF.FUSED_KERNELS = False  # Triton dynamic-conv chain at inference on CUDA

# ---------------------------------------------------------------------------------------------
# ReID TEACHER (Eq. 11; psdiff/teacher). Keys are added below this line by the teacher module.
# ---------------------------------------------------------------------------------------------
_C.TEACHER = CN()
_C.TEACHER.CACHE = ""  # e0 target cache (tools/build_targets.py) used when training PSDiff
_C.TEACHER.WEIGHTS = ""  # trained teacher checkpoint: builds the cache, checks it when loaded
_C.TEACHER.LOSS = "HHCL"  # "HHCL" (supervised HHCL, paper) or "SREID" (ID + triplet, Table VI)
_C.TEACHER.BACKBONE = CN()
_C.TEACHER.BACKBONE.DEPTH = 50  # ResNet trunk depth: 18, 34 or 50 (HHCL: 50)
_C.TEACHER.BACKBONE.PRETRAINED = ""  # as MODEL.BACKBONE.PRETRAINED (HHCL: ResNet-50 ImageNet)
_C.TEACHER.BACKBONE.LAST_STRIDE = 1  # stride of the last stage (HHCL: 1, 256x128 -> 16x8 map)
_C.TEACHER.POOLING = "avg"  # "avg" or "gem" global pooling (HHCL README ResNet-50 runs: avg)
_C.TEACHER.INPUT_SIZE = (256, 128)  # crop height, width fed to the teacher (HHCL: 256x128)
_C.TEACHER.MEMORY_MOMENTUM = 0.1  # m in new = m*old + (1-m)*x for centroids (HHCL: 0.1)
_C.TEACHER.TEMPERATURE = 0.05  # tau of the contrastive softmaxes (HHCL: 0.05)
_C.TEACHER.HARD_WEIGHT = 0.5  # lambda in L = lambda*L_centroid + (1-lambda)*L_instance (HHCL)
_C.TEACHER.CENTROID_UPDATE = "hard"  # centroid moves to the class's "hard"est sample or "mean"
_C.TEACHER.HARD_K = 4  # instance-memory slots per identity, mined for hardest pos/neg (= K)
_C.TEACHER.MEMORY_REFRESH_PERIOD = 200  # iters between memory re-inits (HHCL: 1 epoch); 0 = once
_C.TEACHER.P = 16  # identities per global batch (P x K sampler)
_C.TEACHER.K = 4  # crops per identity in a batch (CUHK-SYSU has few crops per identity)
_C.TEACHER.USE_UNLABELED = True  # unlabeled crops as extra negatives (OIM-style queue, as CCR)
_C.TEACHER.NUM_UNLABELED = 16  # unlabeled crops per global batch (only enqueued, never positives)
_C.TEACHER.QUEUE_SIZE = 5000  # unlabeled feature queue length (OIM: 5000 CUHK-SYSU, 500 PRW)
_C.TEACHER.SREID_LABEL_SMOOTH = 0.1  # S-ReID: label smoothing of the ID cross-entropy
_C.TEACHER.SREID_TRIPLET_MARGIN = 0.3  # S-ReID: batch-hard triplet margin on pre-BN features
_C.TEACHER.RANDOM_ERASING = 0.5  # probability of random erasing on training crops (HHCL: 0.5)
_C.TEACHER.PAD = 10  # pad-then-random-crop augmentation in pixels (HHCL: 10)
_C.TEACHER.GALLERY_SIZE = 100  # CUHK-SYSU gallery size of the teacher's GT-box search eval

# ---------------------------------------------------------------------------------------------
# INPUT
# ---------------------------------------------------------------------------------------------
_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (800,)  # shortest-edge sizes to choose from in training
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"  # "choice" (one of the sizes) or "range"
_C.INPUT.MAX_SIZE_TRAIN = 1333  # longest-edge cap in training (paper: 1333x800)
_C.INPUT.MIN_SIZE_TEST = 800  # shortest edge at test time
_C.INPUT.MAX_SIZE_TEST = 1333  # longest-edge cap at test time
_C.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal" or "none"
_C.INPUT.FORMAT = "BGR"  # channel order of the model input (OpenCV reads BGR)

# ---------------------------------------------------------------------------------------------
# DATASETS
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()
_C.DATASETS.ROOT = ""  # folder holding CUHK-SYSU/ and PRW/; "" = $PSDIFF_DATASETS or ./datasets
_C.DATASETS.TRAIN = ("cuhk_sysu_train",)  # catalog names to train on
_C.DATASETS.TEST = ("cuhk_sysu_test",)  # catalog names to evaluate on (cross-dataset: Table III)

# ---------------------------------------------------------------------------------------------
# DATALOADER
# ---------------------------------------------------------------------------------------------
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4  # loader worker processes per rank
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch landscape and portrait images separately
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False  # keep images without persons (they still train)

# ---------------------------------------------------------------------------------------------
# SOLVER (Section V-A3)
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "ADAMW"  # "ADAMW", "ADAM" (coupled decay: the HHCL teacher) or "SGD"
_C.SOLVER.BASE_LR = 2.5e-5  # learning rate for IMS_PER_BATCH images
_C.SOLVER.WEIGHT_DECAY = 1e-4  # weight decay of every parameter
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.BETAS = (0.9, 0.999)  # AdamW betas
_C.SOLVER.BACKBONE_MULTIPLIER = 1.0  # lr multiplier for backbone parameters
_C.SOLVER.MAX_ITER = 90000  # training iterations
_C.SOLVER.STEPS = (70000, 84000)  # iterations where the lr is multiplied by GAMMA
_C.SOLVER.GAMMA = 0.1  # lr decay factor
_C.SOLVER.WARMUP_ITERS = 1000  # linear warm-up iterations
_C.SOLVER.WARMUP_FACTOR = 0.01  # lr factor at iteration 0 of the warm-up
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" or "constant"
_C.SOLVER.IMS_PER_BATCH = 32  # images per iteration over all ranks
_C.SOLVER.REFERENCE_WORLD_SIZE = 0  # >0: rescale batch, lr and schedule to the actual world size
_C.SOLVER.CHECKPOINT_PERIOD = 5000  # iterations between checkpoints
_C.SOLVER.LOG_PERIOD = 20  # iterations between console / metrics lines

_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = True  # clip gradients (DiffusionDet: full-model norm 1.0)
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"  # "full_model", "norm" or "value"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0  # max norm (or max abs value for "value")
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0  # p of the p-norm

_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False  # automatic mixed precision on CUDA
_C.SOLVER.AMP.DTYPE = "bfloat16"  # "bfloat16" or "float16" (float16 uses a grad scaler)

# ---------------------------------------------------------------------------------------------
# TEST (evaluation protocol, docs/datasets-and-evaluation.md §3)
# ---------------------------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 0  # iterations between evaluations; 0 = only after training
_C.TEST.IMS_PER_BATCH = 1  # gallery images per inference batch per rank
_C.TEST.SCORE_THRESH = 0.5  # the model drops detections scoring below this
_C.TEST.DETECTIONS_PER_IMAGE = 300  # at most this many detections per image after NMS
_C.TEST.SAMPLER_SEED = 0  # seed of the sampler's noise, so an evaluation is repeatable
_C.TEST.GALLERY_SIZE = 100  # CUHK-SYSU headline gallery size (search/* metrics)
_C.TEST.GALLERY_SIZES = [50, 100, 500, 1000, 2000, 4000, -1]  # CUHK sizes (-1 = whole pool)
_C.TEST.DET_THRESH_SEARCH = 0.5  # gallery detections with score >= this enter the ranking
_C.TEST.DET_THRESH_DETECTION = 0.01  # score threshold of the detection AP / recall
_C.TEST.IGNORE_CAM_ID = True  # PRW: gallery includes the query's camera (papers' setting)
_C.TEST.CWS = False  # confidence-weighted similarity: cosine x detection score
_C.TEST.EVAL_USE_GT = False  # use ground-truth boxes as detections (upper bound)
_C.TEST.SAVE_PREDICTIONS = True  # write predictions.npz so metrics can be recomputed offline
_C.TEST.FUSE_BN = True  # infer with batch norms folded into their convs (same outputs, faster)
_C.TEST.CUDA_GRAPH = False  # CUDA: replay the sampling loop from a captured graph (same outputs)

_C.TEST.AMP = CN()
_C.TEST.AMP.ENABLED = False  # inference under autocast (evaluation, predictor, benchmark)
_C.TEST.AMP.DTYPE = "bfloat16"  # "bfloat16" or "float16", as SOLVER.AMP.DTYPE
