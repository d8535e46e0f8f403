"""numpy >= 1.24 compatibility for the LVIS API.

``lvis==0.5.3`` (the only release on PyPI) calls ``np.float`` in ``LVISEval.accumulate``; numpy
removed that alias in 1.24, so every LVIS evaluation crashes on numpy 2 with
``AttributeError: module 'numpy' has no attribute 'float'``. The fix is merged upstream but
unreleased. Instead of re-adding the alias to numpy for the whole process, we give ``lvis.eval`` its
own view of numpy that has it. This works whether or not ``lvis`` was imported before.
"""

import types

import numpy as np

__all__ = ["patch_lvis_for_numpy2"]


class _NumpyWithLegacyAliases(types.ModuleType):
    """numpy, plus the scalar aliases that numpy 1.24 removed (``np.float`` etc.)."""

    float = float
    int = int
    bool = bool
    object = object

    def __getattr__(self, name):
        return getattr(np, name)


def patch_lvis_for_numpy2() -> bool:
    """Make ``lvis.eval`` work on numpy >= 1.24. Idempotent; returns True if a patch is active."""
    if hasattr(np, "float"):  # old numpy: nothing to do
        return False
    import lvis.eval

    if not isinstance(lvis.eval.np, _NumpyWithLegacyAliases):
        lvis.eval.np = _NumpyWithLegacyAliases("numpy")
    return True
