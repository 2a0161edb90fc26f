"""The CPU recipe's flow runs on any small CUHK-SYSU-format tree, not only the bundled benchmark:
configs/teacher/hhcl_r18_synthetic.yaml -> tools/build_targets.py -> configs/synthetic/
psdiff_r18_synthetic_cuhk.yaml, each with DATASETS.ROOT / TRAIN / TEST pointed at the tree, and
the detector's trunk started from the teacher's (MODEL.BACKBONE.INIT_FROM_TEACHER).

Only the schedule, batch and image sizes are shrunk; every model and loss switch of the recipe
is the one `make demo` trains.
"""

import torch
from tools_loader import load_tool

from psdiff.data.synthetic import write_cuhk_sysu
from psdiff.evaluation import Predictions

TEACHER_CONFIG = "configs/teacher/hhcl_r18_synthetic.yaml"
RECIPE = "configs/synthetic/psdiff_r18_synthetic_cuhk.yaml"


def test_teacher_targets_and_recipe_train_on_another_cuhk_tree(tmp_path):
    # another tree: its own identities and image size, under the real dataset names
    write_cuhk_sysu(str(tmp_path / "CUHK-SYSU"), num_train_images=8, num_test_images=6,
                    num_train_ids=4, num_test_ids=3, image_size=(96, 136), gallery_sizes=(5,),
                    seed=7)
    data = ["DATASETS.ROOT", str(tmp_path), "DATASETS.TRAIN", "('cuhk_sysu_train',)",
            "DATASETS.TEST", "('cuhk_sysu_test',)", "MODEL.DEVICE", "cpu"]
    teacher_dir = tmp_path / "teacher"
    weights, cache = str(teacher_dir / "model_final.pth"), str(teacher_dir / "e0.npz")
    teacher = ["OUTPUT_DIR", str(teacher_dir), "TEACHER.P", "2", "TEACHER.K", "2",
               "TEACHER.HARD_K", "2", "TEACHER.NUM_UNLABELED", "2", "TEACHER.QUEUE_SIZE", "8",
               "TEACHER.GALLERY_SIZE", "5", "SOLVER.IMS_PER_BATCH", "6", "SOLVER.MAX_ITER", "2",
               "SOLVER.STEPS", "()", "TEST.EVAL_PERIOD", "0"]
    assert load_tool("train_teacher").run(["--config-file", TEACHER_CONFIG, *data, *teacher]) == 0
    assert load_tool("build_targets").run([
        "--config-file", TEACHER_CONFIG, *data, *teacher, "TEACHER.WEIGHTS", weights,
        "TEACHER.CACHE", cache]) == 0

    run_dir = tmp_path / "psdiff"
    assert load_tool("train_net").run([
        "--config-file", RECIPE, *data, "OUTPUT_DIR", str(run_dir), "TEACHER.WEIGHTS", weights,
        "TEACHER.CACHE", cache, "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "0", "INPUT.MIN_SIZE_TRAIN", "(96,)",
        "INPUT.MAX_SIZE_TRAIN", "136", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "136",
        "MODEL.PSDIFF.SAMPLE_STEPS", "1", "TEST.GALLERY_SIZES", "[5]", "TEST.GALLERY_SIZE", "5",
        "DATALOADER.NUM_WORKERS", "0"]) == 0

    predictions = Predictions.load(
        str(run_dir / "inference" / "cuhk_sysu_test" / "predictions.npz"))
    assert predictions.query_embeddings.shape == (3, 256)
    # the trunk started from the teacher's: two steps later a layer4 filter bank is still nearly
    # the teacher's (an independent random start would be near-orthogonal to it)
    teacher_state = torch.load(weights, map_location="cpu", weights_only=False)["model"]
    student_state = torch.load(run_dir / "model_final.pth", map_location="cpu",
                               weights_only=False)["model"]
    start = teacher_state["network.body.7.1.conv2.weight"]
    trained = student_state["backbone.trunk.layer4.1.conv2.weight"]
    assert torch.nn.functional.cosine_similarity(start.flatten(), trained.flatten(), 0) > 0.9
