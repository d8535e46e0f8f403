"""Strict comparison of a checkpoint's state dict with a model's, and the message that lists it."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CheckpointMismatchError",
    "check_state_dict",
    "compare_state_dicts",
    "format_mismatch",
]

# Model state that never comes from a checkpoint.
_ALWAYS_IGNORED_MISSING = ("pixel_mean", "pixel_std")


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not match the model; the message lists them."""


def _shape(t) -> tuple:
    return tuple(getattr(t, "shape", ()))


def compare_state_dicts(
    model_state: dict,
    ckpt_state: dict,
    *,
    ignore_missing: Iterable[str] = (),
    scope: str | None = None,
) -> dict:
    """Keys that differ between a model's state dict and a checkpoint's.

    Args:
        model_state, ckpt_state: ``{name: tensor}``.
        ignore_missing: model keys (exact names or suffixes starting with ".") not required from
            the checkpoint; BN ``num_batches_tracked`` and ``pixel_mean``/``pixel_std`` always are.
        scope: if set, only model keys starting with it are required (e.g. the ResNet of a
            detector loaded from ImageNet weights).

    Returns:
        ``{"missing": [...], "unexpected": [...], "shapes": [(key, ckpt shape, model shape)]}``.
    """
    ignore = tuple(ignore_missing)

    def ignored(k: str) -> bool:
        return (
            k.endswith("num_batches_tracked")
            or k in _ALWAYS_IGNORED_MISSING
            or "anchor_generator.cell_anchors" in k
            or any(k == i or (i.startswith(".") and k.endswith(i)) for i in ignore)
        )

    missing = [
        k
        for k in model_state
        if k not in ckpt_state and not ignored(k) and (scope is None or k.startswith(scope))
    ]
    unexpected = [
        k for k in ckpt_state if k not in model_state and not k.endswith("num_batches_tracked")
    ]
    shapes = [
        (k, _shape(v), _shape(model_state[k]))
        for k, v in ckpt_state.items()
        if k in model_state and _shape(v) != _shape(model_state[k])
    ]
    return {"missing": missing, "unexpected": unexpected, "shapes": shapes}


def _class_count_hint(model_state: dict, shapes: list) -> str:
    for key, ckpt_shape, model_shape in shapes:
        if key.endswith("cls_score.weight") and ckpt_shape and model_shape:
            box_key = key[: -len("cls_score.weight")] + "bbox_pred.weight"
            box = model_state.get(box_key)
            anchors = box.shape[0] // 4 if box is not None and box.shape[0] % 4 == 0 else 1
            return (
                f"The checkpoint's classifier has {ckpt_shape[0]} outputs = {anchors} anchors x "
                f"{ckpt_shape[0] / anchors:g} classes, the model's {model_shape[0]} = {anchors} x "
                f"{model_shape[0] // anchors}: set model.num_classes (and the loss's num_classes) "
                f"to {ckpt_shape[0] / anchors:g} to use this checkpoint, or use a checkpoint "
                "trained on the model's dataset."
            )
        if key.endswith("cls_loss.pos_neg"):
            return (
                f"The checkpoint's EFL statistics cover {ckpt_shape[0]} classes, the model's loss "
                f"{model_shape[0]}: set model.num_classes to match."
            )
    return ""


def format_mismatch(source: str, report: dict, model_state: dict, limit: int = 20) -> str:
    """A readable multi-line description of :func:`compare_state_dicts`'s report."""

    def listing(items):
        items = list(items)
        lines = [f"    {x}" for x in items[:limit]]
        if len(items) > limit:
            lines.append(f"    ... and {len(items) - limit} more")
        return lines

    n = sum(len(v) for v in report.values())
    lines = [f"{source} does not match the model ({n} problems):"]
    if report["shapes"]:
        lines.append("  shape mismatch (checkpoint vs model):")
        lines += listing(f"{k}: {list(a)} vs {list(b)}" for k, a, b in report["shapes"])
    if report["missing"]:
        lines.append("  missing in the checkpoint:")
        lines += listing(report["missing"])
    if report["unexpected"]:
        lines.append("  in the checkpoint but not in the model:")
        lines += listing(report["unexpected"])
    hint = _class_count_hint(model_state, report["shapes"])
    if hint:
        lines.append("Hint: " + hint)
    return "\n".join(lines)


def check_state_dict(
    model_state: dict, ckpt_state: dict, source: str, *, ignore_missing=(), scope=None
) -> None:
    """Raise :class:`CheckpointMismatchError` (naming ``source``) unless the two state dicts
    match, as :func:`compare_state_dicts` compares them."""
    report = compare_state_dicts(
        model_state, ckpt_state, ignore_missing=ignore_missing, scope=scope
    )
    if any(report.values()):
        raise CheckpointMismatchError(format_mismatch(source, report, model_state))
