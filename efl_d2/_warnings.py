"""Targeted filters for the third-party deprecation warnings that every efl_d2 command triggers.

Each filter names the message, the category and the module that warns, so any other warning
(efl_d2's own included) still shows. They are installed when ``efl_d2`` is imported.
"""

import warnings

# (message regex, category, module regex of the warning's location)
THIRD_PARTY_DEPRECATIONS = (
    # detectron2 decorates functions with torch.jit.script_if_tracing at import time
    (r"`torch\.jit\.script` is deprecated", FutureWarning, r"torch\.jit"),
    # detectron2.model_zoo imports pkg_resources (LazyConfig files load common configs through it)
    (r"pkg_resources is deprecated as an API", UserWarning, r"detectron2(\.|$)"),
    # detectron2's anchor generator calls torch.meshgrid without indexing= (it means "ij")
    (r"torch\.meshgrid: in an upcoming release", UserWarning, r"torch\.functional"),
)


def ignore_third_party_deprecations() -> None:
    """Install the filters of :data:`THIRD_PARTY_DEPRECATIONS` (idempotent: ``filterwarnings``
    replaces an identical filter)."""
    for message, category, module in THIRD_PARTY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
