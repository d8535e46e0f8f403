"""The study's variants, modes and plan: what is trained, with which seeds and schedule."""

from __future__ import annotations

from dataclasses import dataclass, field

METRICS = ("AP", "APr", "APc", "APf")


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    config: str  # file under configs/
    overrides: tuple[str, ...] = ()
    same_as: str | None = None  # reported from another variant's runs instead of being trained
    scale: float | None = None  # EFL's s, for the sweep


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("focal", "Baseline† (focal loss)", "focal.py", scale=0.0),
        Variant("efl", "EFL (s=8)", "efl.py", scale=8.0),
        Variant("efl_wf", "EFL, weighting factor only", "efl_wf.py"),
        Variant("efl_ff", "EFL, focusing factor only", "efl_ff.py"),
        Variant("eqlv2", "EQLv2&Focal", "eqlv2.py"),
        Variant("efl_s0", "EFL s=0 (= focal)", "focal.py", same_as="focal", scale=0.0),
        Variant("efl_s2", "EFL s=2", "efl.py", ("model.cls_loss.scale=2.0",), scale=2.0),
        Variant("efl_s4", "EFL s=4", "efl.py", ("model.cls_loss.scale=4.0",), scale=4.0),
        Variant("efl_s8", "EFL s=8 (= efl)", "efl.py", same_as="efl", scale=8.0),
        Variant("efl_s12", "EFL s=12", "efl.py", ("model.cls_loss.scale=12.0",), scale=12.0),
    ]
}
SWEEP = ("efl_s0", "efl_s2", "efl_s4", "efl_s8", "efl_s12")


@dataclass(frozen=True)
class Mode:
    variants: tuple[str, ...]
    seeds: int
    max_iter: int
    image_size: int  # test short edge; training samples {size - 32, size, size + 32}


MODES = {
    "quick": Mode(
        variants=("focal", "efl", "efl_wf", "efl_ff", "eqlv2", *SWEEP),
        seeds=1,
        max_iter=200,
        image_size=192,
    ),
    "full": Mode(variants=("focal", "efl"), seeds=6, max_iter=900, image_size=256),
}


@dataclass
class Plan:
    mode: str
    variants: list[str]  # as requested (aliases included)
    seeds: list[int]
    max_iter: int
    image_size: int
    extra_opts: list[str] = field(default_factory=list)

    def trained_variants(self) -> list[str]:
        out = []
        for v in self.variants:
            base = VARIANTS[v].same_as or v
            if base not in out:
                out.append(base)
        return out


def schedule_overrides(max_iter: int, image_size: int) -> list[str]:
    """The study's schedule length and input size as config overrides.

    The configs' learning-rate schedule is given in fractions of training (fvcore's multi-step
    scheduler is scale-invariant; warm-up is ``warmup_length`` = 1/6 of training, 10x decays at 2/3
    and 0.9), so only ``train.max_iter`` changes.
    """
    s = image_size
    train_sizes = ",".join(map(str, [max(32, s - 32), s, s + 32]))
    return [
        f"train.max_iter={max_iter}",
        "train.checkpointer.period=1000000000",  # only model_final.pth
        f"train.log_period={max(1, min(20, max_iter // 10))}",
        f"dataloader.train.mapper.augmentations.0.short_edge_length=[{train_sizes}]",
        f"dataloader.train.mapper.augmentations.0.max_size={int(s * 1.5)}",
        f"dataloader.test.mapper.augmentations.0.short_edge_length={s}",
        f"dataloader.test.mapper.augmentations.0.max_size={int(s * 1.5)}",
    ]
