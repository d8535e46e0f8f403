"""efl_d2: Equalized Focal Loss + ATSS for dense long-tailed object detection on Detectron2.

Importing the package registers what it adds to detectron2: the mini-LVIS datasets and (through
``efl_d2.modeling``) the ATSS meta-architecture. It also makes the LVIS API work on numpy 2 and
silences the few third-party deprecation warnings its imports and models trigger
(``efl_d2._warnings``); import it before detectron2 for that to cover detectron2's imports.
"""

import os

from ._warnings import ignore_third_party_deprecations

#: set in the scoring processes of efl_d2.evaluation, which need numpy and lvis-api only: they
#: skip the registrations below and with them the import of torch and detectron2 (~0.8 GiB, ~4 s)
NUMPY_ONLY_ENV = "EFL_D2_NUMPY_ONLY"

ignore_third_party_deprecations()  # before the imports below, which import detectron2

if os.environ.get(NUMPY_ONLY_ENV) != "1":
    from . import losses, modeling  # noqa: F401  (modeling registers ATSS in META_ARCH_REGISTRY)
    from .data import (
        patch_lvis_for_numpy2,
        register_mini_lvis,
        register_openimages,
        wrap_builtin_lvis_loaders,
    )

    patch_lvis_for_numpy2()
    register_mini_lvis()
    register_openimages()
    wrap_builtin_lvis_loaders()
