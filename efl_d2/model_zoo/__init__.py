"""efl_d2's model zoo, in the style of ``detectron2.model_zoo``.

- :func:`get_config_file`, :func:`get_config`, :func:`get`, :func:`get_checkpoint_url`: configs of
  the repository's ``configs/`` tree by relative path, and the catalog of released weights.
- :class:`LazyPredictor`: run a LazyConfig model on single images (test-time resize and channel
  order from the config).

- :func:`small_resnet_fpn`, :func:`small_faster_rcnn`: a detector config shrunk to a small ResNet
  FPN (CPU configs, tests).
- :data:`PAPER_ROWS`: every (table, row) of the paper's LVIS experiments (Tables 1-6) with its
  config and the paper's AP, AP_r, AP_c, AP_f; :data:`OPENIMAGES_ROWS`: Table 7 with AP and
  AP1-AP5 (``configs/README.md`` shows the same tables).
"""

from . import model_zoo
from .model_zoo import *  # its __all__: configs, weights, build_model
from .paper_rows import OPENIMAGES_ROWS, PAPER_ROWS, OpenImagesRow, PaperRow
from .predictor import LazyPredictor, instances_to_records, metadata_from_config
from .small_models import small_faster_rcnn, small_resnet_fpn

__all__ = [
    "OPENIMAGES_ROWS",
    "PAPER_ROWS",
    "LazyPredictor",
    "OpenImagesRow",
    "PaperRow",
    "instances_to_records",
    "metadata_from_config",
    "small_faster_rcnn",
    "small_resnet_fpn",
]
__all__ += model_zoo.__all__
