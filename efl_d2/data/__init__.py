"""Data: mini-LVIS (synthetic LVIS v1-format data), LVIS helpers on top of detectron2's loaders
(the official EFL code's OpenCV resize is :mod:`efl_d2.official.transforms`)."""

from .build import (
    ClassBalancedBatchPlan,
    IndexedBatchPlan,
    ResumableTrainLoader,
    RobustDatasetMapper,
    build_class_balanced_train_loader,
    build_rfs_train_loader,
)
from .datasets import (
    LVIS_V1_TRAIN_ANNOTATED_IMAGES,
    MINI_LVIS_SPLITS,
    DatasetFileError,
    category_image_frequencies,
    category_instance_counts,
    check_dataset_names,
    class_frequencies,
    datasets_root,
    ensure_mini_lvis,
    get_lvis_dataset_dicts,
    lvis_json_metadata,
    read_json,
    register_mini_lvis,
    wrap_builtin_lvis_loaders,
)
from .lvis_compat import patch_lvis_for_numpy2
from .openimages import (
    OpenImagesDatasetMapper,
    openimages_dataset_dicts,
    register_openimages,
)

# as detectron2.data: every public name imported above
__all__ = [k for k in globals() if not k.startswith("_")]
