# Test-time settings of every one-stage row (paper Sec. 4.1): no score threshold before NMS and the
# top 300 boxes per image; 1203 classes; classification prior 0.001; frozen stem + res2.
def lvis_one_stage(model):
    model.num_classes = 1203
    model.head.prior_prob = 0.001
    model.test_score_thresh = 0.0
    model.max_detections_per_image = 300
    model.backbone.bottom_up.freeze_at = 2
    return model
