"""Checkpoint loading beyond detectron2's formats: torchvision ResNet ImageNet weights and the
official EFL release, through one ``DetectionCheckpointer`` subclass.

- :class:`EFLCheckpointer`: use it wherever ``DetectionCheckpointer`` is used; it recognises the
  file's format by content, so ``train.init_checkpoint=`` may point at any supported file.
- :func:`convert_torchvision_to_d2` (``tools/convert_torchvision_to_d2.py``) and
  :func:`convert_official_to_d2` (``tools/convert_official_to_d2.py``) convert files once.
- :mod:`.official` converts the official files; :mod:`.official_target` adapts converted weights
  to a model and :func:`check_official_architecture` lists what in the model differs from the
  official computation; the official architecture itself (:func:`use_official_architecture`,
  :func:`use_official_inference`) lives in :mod:`efl_d2.modeling.official`.
"""

from ..modeling.official import (  # the official architecture, re-exported for the checkpoint API
    OfficialLastLevelP6P7,
    build_fpn_with_official_top_block,
    use_official_architecture,
    use_official_inference,
)
from .checkpointer import (
    CheckpointMismatchError,
    CheckpointReadError,
    EFLCheckpointer,
    atomic_write,
    compare_state_dicts,
    load_checkpoint_file,
    read_loss_statistics,
)
from .official import (
    OFFICIAL_EFL_R50_URL,
    convert_official_to_d2,
    is_official_state_dict,
    official_key_to_d2,
    unwrap_official_checkpoint,
)
from .official_target import adapt_to_model, check_official_architecture
from .torchvision import (
    TORCHVISION_PIXEL_MEAN,
    TORCHVISION_PIXEL_STD,
    convert_torchvision_to_d2,
    is_torchvision_resnet_state_dict,
    torchvision_key_to_d2,
)

__all__ = [
    "OFFICIAL_EFL_R50_URL",
    "TORCHVISION_PIXEL_MEAN",
    "TORCHVISION_PIXEL_STD",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "EFLCheckpointer",
    "OfficialLastLevelP6P7",
    "adapt_to_model",
    "atomic_write",
    "build_fpn_with_official_top_block",
    "check_official_architecture",
    "compare_state_dicts",
    "convert_official_to_d2",
    "convert_torchvision_to_d2",
    "is_official_state_dict",
    "is_torchvision_resnet_state_dict",
    "load_checkpoint_file",
    "official_key_to_d2",
    "read_loss_statistics",
    "torchvision_key_to_d2",
    "unwrap_official_checkpoint",
    "use_official_architecture",
    "use_official_inference",
]
