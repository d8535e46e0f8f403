"""``tools/train_net.py --eval-protocol``: switch a config to LVIS AP-fixed or AP-pool."""

__all__ = ["DATASET_TOPK_INFERENCE", "set_eval_protocol"]

#: the inference settings ``--eval-protocol fixed|pooled`` gives a one-stage detector: the 10 best
#: anchors of every class and level before NMS, up to 10,000 boxes per image, so that every class
#: has its best detections over the dataset among those the evaluator keeps (10,000 per class)
DATASET_TOPK_INFERENCE = {"test_topk_per_class": 10, "max_detections_per_image": 10000}


def set_eval_protocol(cfg, protocol: str) -> None:
    """Switch ``cfg`` to the evaluation protocol "standard", "fixed" (AP-fixed) or "pooled"
    (AP-pool): the evaluator's ``protocol`` and, for the last two, the model's
    :data:`DATASET_TOPK_INFERENCE`. "standard" changes nothing."""
    if protocol == "standard":
        return
    ev = cfg.dataloader.get("evaluator")
    if ev is None or "protocol" not in ev:
        raise ValueError(
            f"--eval-protocol {protocol} needs efl_d2.evaluation.LVISEvaluator as "
            "dataloader.evaluator (the config's has no 'protocol')."
        )
    if "test_topk_per_class" not in cfg.model:
        raise ValueError(
            f"--eval-protocol {protocol}: the model has no test_topk_per_class (the one-stage "
            "detectors ATSS, PAA, PluggableRetinaNet and PluggableFCOS have)."
        )
    ev.protocol = protocol
    for key, value in DATASET_TOPK_INFERENCE.items():
        cfg.model[key] = value
