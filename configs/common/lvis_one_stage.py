# What the LVIS protocol fixes in every one-stage detector (paper Sec. 4.1), for LVIS v1 and for
# mini-LVIS alike: the class count, a classification prior of 0.001 (for ~1000 sigmoid classes;
# detectron2's RetinaNet uses 0.01), no score threshold before NMS and the top 300 boxes per image
# (LVIS AP is computed over up to 300 detections per image); frozen stem + res2.
def lvis_one_stage(model, num_classes=1203):
    model.num_classes = num_classes
    model.head.prior_prob = 0.001
    model.test_score_thresh = 0.0
    model.max_detections_per_image = 300
    model.backbone.bottom_up.freeze_at = 2
    return model
