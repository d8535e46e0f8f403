# What the LVIS protocol fixes in a two-stage detector, as Detectron2's LVIS configs: the class
# count, a test score threshold of 1e-4 and the top 300 boxes per image (LVIS AP is computed over
# up to 300 detections per image); frozen stem + res2.
def lvis_two_stage(model, num_classes=1203):
    model.roi_heads.num_classes = num_classes
    model.roi_heads.box_predictor.test_score_thresh = 0.0001
    model.roi_heads.box_predictor.test_topk_per_image = 300
    model.backbone.bottom_up.freeze_at = 2
    return model
