"""Teacher training on the synthetic benchmark: it retrieves better than the same network
untrained; the command line trains, checkpoints and evaluates; S-ReID learns one batch."""

import json
import os

import torch
from teacher_helpers import CONFIG, tiny_cfg
from tools_loader import load_tool

from psdiff.teacher.crops import collate_crops
from psdiff.teacher.model import TeacherModel
from psdiff.teacher.trainer import TeacherTrainer, build_crop_dataset
from psdiff.utils.env import seed_all_rng


def test_brief_hhcl_training_beats_the_untrained_network(teacher_datasets_root, tmp_path):
    cfg = tiny_cfg(teacher_datasets_root, tmp_path, "SEED", "0", "SOLVER.MAX_ITER", "80",
                   "SOLVER.BASE_LR", "0.001", "SOLVER.STEPS", "(1000,)",
                   "SOLVER.CHECKPOINT_PERIOD", "0", "TEST.EVAL_PERIOD", "0",
                   "TEACHER.MEMORY_REFRESH_PERIOD", "20")
    seed_all_rng(cfg.SEED)
    trainer = TeacherTrainer(cfg)
    untrained = TeacherTrainer.test(cfg, trainer.model)
    trained = trainer.train()  # the final evaluation of the EvalHook
    assert untrained["teacher/num_queries"] == trained["teacher/num_queries"] == 20
    # seeds 0, 1, 2 gave gains of 0.19, 0.16 and 0.09 mAP (0.31 -> 0.50 for seed 0)
    assert trained["teacher/mAP"] > untrained["teacher/mAP"] + 0.05, (untrained, trained)


def test_command_line_trains_checkpoints_and_evaluates(teacher_datasets_root, tmp_path):
    tool = load_tool("train_teacher")
    common = ["DATASETS.ROOT", teacher_datasets_root, "MODEL.PSDIFF.EMB_DIM", "32",
              "TEACHER.GALLERY_SIZE", "20", "TEACHER.QUEUE_SIZE", "50"]
    train_dir = str(tmp_path / "train")
    assert tool.run(["--config-file", CONFIG, *common, "OUTPUT_DIR", train_dir,
                     "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "0",
                     "TEST.EVAL_PERIOD", "0"]) == 0
    lines = [json.loads(line) for line in open(os.path.join(train_dir, "metrics.json"))]
    final_map = [line for line in lines if "teacher/mAP" in line][-1]["teacher/mAP"]
    weights = os.path.join(train_dir, "model_final.pth")
    eval_dir = str(tmp_path / "eval")
    assert tool.run(["--config-file", CONFIG, "--eval-only", *common, "OUTPUT_DIR", eval_dir,
                     "TEACHER.WEIGHTS", weights]) == 0
    with open(os.path.join(eval_dir, "eval_results.json")) as f:
        assert abs(json.load(f)["teacher/mAP"] - final_map) < 1e-6  # same weights, same metric


def test_sreid_loss_falls_on_one_batch(teacher_datasets_root, tmp_path):
    cfg = tiny_cfg(teacher_datasets_root, tmp_path, "TEACHER.LOSS", "SREID")
    crops = build_crop_dataset(cfg, train=False)
    labeled = [i for i in range(len(crops)) if crops.labels[i] >= 0][:24]
    batch = collate_crops([crops[i] for i in labeled])
    torch.manual_seed(0)
    model = TeacherModel.from_config(cfg, crops.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(8):
        losses = model(batch)
        total = sum(losses.values())
        first = float(total.detach()) if first is None else first
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert set(losses) == {"loss_id", "loss_triplet"}
    assert float(total.detach()) < 0.7 * first
