# Training options shared by every config: detectron2's common/train.py plus the keys that
# tools/train_net.py adds (seed, global-norm gradient clipping, AMP precision).
from detectron2.model_zoo import get_config

train = get_config("common/train.py").train
train.update(
    output_dir="./output",
    seed=0,  # per-process seed = seed + rank (detectron2's default_setup); < 0: random
    clip_grad=0.0,  # max global L2 norm of the gradients; 0 disables (paper's STS rows: 35)
    cudnn_benchmark=False,
    eval_period=0,  # 0: evaluate only at the end of training
    vis_images=3,  # test images drawn with predictions | ground truth at the end (0: none)
    # decoupled training's second stage: the modules re-initialised and retrained, the rest frozen
    # (e.g. ["roi_heads.box_predictor.cls_score"]; efl_d2/engine/decoupled.py)
    retrain_only=[],
)
train.amp.precision = "float16"  # or "bfloat16"; used when train.amp.enabled
