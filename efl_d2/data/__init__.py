"""Data: mini-LVIS (synthetic LVIS v1-format data), LVIS helpers on top of detectron2's loaders,
the official EFL code's OpenCV keep-aspect-ratio resize."""

from .build import RobustDatasetMapper, build_rfs_train_loader
from .datasets import (
    MINI_LVIS_SPLITS,
    check_dataset_names,
    class_frequencies,
    datasets_root,
    ensure_mini_lvis,
    get_lvis_dataset_dicts,
    lvis_json_metadata,
    register_mini_lvis,
)
from .lvis_compat import patch_lvis_for_numpy2
from .transforms import OpenCVResizeShortestEdge, OpenCVResizeTransform

__all__ = [
    "MINI_LVIS_SPLITS",
    "OpenCVResizeShortestEdge",
    "OpenCVResizeTransform",
    "RobustDatasetMapper",
    "build_rfs_train_loader",
    "check_dataset_names",
    "class_frequencies",
    "datasets_root",
    "ensure_mini_lvis",
    "get_lvis_dataset_dicts",
    "lvis_json_metadata",
    "patch_lvis_for_numpy2",
    "register_mini_lvis",
]
