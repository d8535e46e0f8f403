"""The official EFL code's conventions (ModelTC United-Perception 0.1.0, the release that trained
the official weights), in one place: what efl_d2 needs to compute what that code computes.

- :mod:`.config_edits`: :func:`official_architecture` / :func:`official_inference` (and their
  ``use_*`` forms on a whole LazyConfig) switch an ATSS config to the official P6/P7, input
  normalisation and test pipeline; ``configs/official/`` and ``model_zoo.get_config(...,
  trained=True)`` apply them.
- :mod:`.detector`: :class:`OfficialATSS`, ATSS with the official input division, clipping, NMS
  and result boxes; :mod:`.boxes`: that inclusive-pixel box arithmetic.
- :mod:`.architecture`: :class:`OfficialLastLevelP6P7` and the official pixel statistics.
- :mod:`.transforms`: :class:`OpenCVResizeShortestEdge`, the official resize (training and test).
- :mod:`.conversion`: the official checkpoint files -> efl_d2 names
  (``tools/convert_official_to_d2.py``); :mod:`.target_model`: converted weights against a model
  (:func:`adapt_to_model`, :func:`check_official_architecture`). ``EFLCheckpointer`` uses both.

Conventions and what still differs: ``docs/official_conventions.md``; the checkpoint format:
``docs/official_checkpoint_format.md``.
"""

from .architecture import (
    OFFICIAL_PIXEL_MEAN,
    OFFICIAL_PIXEL_STD,
    OfficialLastLevelP6P7,
    build_fpn_with_official_top_block,
)
from .boxes import clip_inclusive_, official_nms, rescale_inclusive
from .config_edits import (
    official_architecture,
    official_inference,
    use_official_architecture,
    use_official_inference,
)
from .conversion import (
    OFFICIAL_EFL_R50_URL,
    convert_official_to_d2,
    is_official_state_dict,
    official_key_to_d2,
    unwrap_official_checkpoint,
)
from .detector import OfficialATSS
from .target_model import adapt_to_model, check_official_architecture
from .transforms import OpenCVResizeShortestEdge, OpenCVResizeTransform, opencv_resized_shape

__all__ = [
    "OFFICIAL_EFL_R50_URL",
    "OFFICIAL_PIXEL_MEAN",
    "OFFICIAL_PIXEL_STD",
    "OfficialATSS",
    "OfficialLastLevelP6P7",
    "OpenCVResizeShortestEdge",
    "OpenCVResizeTransform",
    "adapt_to_model",
    "build_fpn_with_official_top_block",
    "check_official_architecture",
    "clip_inclusive_",
    "convert_official_to_d2",
    "is_official_state_dict",
    "official_architecture",
    "official_inference",
    "official_key_to_d2",
    "official_nms",
    "opencv_resized_shape",
    "rescale_inclusive",
    "unwrap_official_checkpoint",
    "use_official_architecture",
    "use_official_inference",
]
