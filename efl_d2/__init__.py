"""efl_d2: Equalized Focal Loss + ATSS for dense long-tailed object detection on Detectron2.

Importing the package registers what it adds to detectron2: the mini-LVIS datasets and (through
``efl_d2.modeling``) the ATSS meta-architecture. It also makes the LVIS API work on numpy 2.
"""

from . import losses, modeling  # noqa: F401  (modeling registers ATSS in META_ARCH_REGISTRY)
from .data import patch_lvis_for_numpy2, register_mini_lvis, wrap_builtin_lvis_loaders

patch_lvis_for_numpy2()
register_mini_lvis()
wrap_builtin_lvis_loaders()
