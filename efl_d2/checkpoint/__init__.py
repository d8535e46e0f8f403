"""Checkpoint loading beyond detectron2's formats: torchvision ResNet ImageNet weights and the
official EFL release, through one ``DetectionCheckpointer`` subclass.

- :class:`EFLCheckpointer`: use it wherever ``DetectionCheckpointer`` is used; it recognises the
  file's format by content, so ``train.init_checkpoint=`` may point at any supported file.
- :func:`check_checkpoint_file`: what the tools run on a weights path before any other work
  (missing, a directory, unreadable, not a checkpoint: one line saying what to do).
- :func:`convert_torchvision_to_d2` (``tools/convert_torchvision_to_d2.py``) converts torchvision
  files once; the official release's conversion, and the official architecture it needs, are
  :mod:`efl_d2.official` (``tools/convert_official_to_d2.py``).
"""

from .._atomic import atomic_write
from .checkpointer import EFLCheckpointer
from .formats import (
    CheckpointReadError,
    check_checkpoint_file,
    load_checkpoint_file,
    read_loss_statistics,
)
from .state_diff import CheckpointMismatchError, compare_state_dicts
from .torchvision import (
    TORCHVISION_PIXEL_MEAN,
    TORCHVISION_PIXEL_STD,
    convert_torchvision_to_d2,
    is_torchvision_resnet_state_dict,
    torchvision_key_to_d2,
)

__all__ = [
    "TORCHVISION_PIXEL_MEAN",
    "TORCHVISION_PIXEL_STD",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "EFLCheckpointer",
    "atomic_write",
    "check_checkpoint_file",
    "compare_state_dicts",
    "convert_torchvision_to_d2",
    "is_torchvision_resnet_state_dict",
    "load_checkpoint_file",
    "read_loss_statistics",
    "torchvision_key_to_d2",
]
