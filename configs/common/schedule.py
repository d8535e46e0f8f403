# Learning-rate multipliers. "2x" = 180k iterations at 16 images per iteration, steps at 120k and
# 160k, linear warm-up over 1000 iterations from 0.001 (the paper's Table 5 "STS" rows use 6000).
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler


def multistep_with_warmup(max_iter, steps, warmup_iters=1000, warmup_factor=0.001):
    """Step decay by 10x at each of ``steps`` with a linear warm-up, as a LazyConfig node.

    The node is a function of the fraction of training (detectron2's ``LRMultiplier`` calls it at
    ``iteration / train.max_iter``): ``steps`` and ``warmup_iters`` are in units of ``max_iter``
    and keep their fractions when ``train.max_iter`` is overridden.
    """
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[0.1**i for i in range(len(steps) + 1)], milestones=[*steps, max_iter]
        ),
        warmup_length=warmup_iters / max_iter,
        warmup_method="linear",
        warmup_factor=warmup_factor,
    )


lr_multiplier_2x = multistep_with_warmup(180000, [120000, 160000])
# "1x" (90k iterations, steps at 60k and 80k): the decoupled methods' second stage (Table 2).
lr_multiplier_1x = multistep_with_warmup(90000, [60000, 80000])
