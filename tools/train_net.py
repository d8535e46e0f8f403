#!/usr/bin/env python
"""Train or evaluate a detector described by a LazyConfig file (Detectron2 style).

Examples:
    python tools/train_net.py --config-file configs/mini_lvis/atss_efl_R18.py
    python tools/train_net.py --config-file mini_lvis/atss_efl_R18.py   # relative to configs/
    python tools/train_net.py --config-file configs/<row>.py --num-gpus 8
    python tools/train_net.py --config-file configs/<row>.py --eval-only train.init_checkpoint=...
    python tools/train_net.py --config-file ... --num-machines 2 --machine-rank 0 \\
        --dist-url tcp://<host>:<port>
Trailing ``key=value`` pairs override config values (unknown keys are an error; ``+key=v`` adds),
arguments of a node's callable included: ``dataloader.train.loader=detectron2`` (Detectron2's
training loader and RFS sampler), ``dataloader.evaluator.scorer=detectron2`` (its LVIS scoring).
The whole config is checked before any process starts (exit status 2 with every problem listed);
a run that fails (diverged, no usable evaluation, unreadable checkpoint) exits with status 1.
"""

# efl_d2 first: its warning filters then cover detectron2's imports (it registers datasets, models)
import efl_d2  # noqa: F401, I001
import sys

from detectron2.engine import launch
from efl_d2.checkpoint import CheckpointMismatchError, CheckpointReadError
from efl_d2.data import DatasetFileError
from efl_d2.engine import RunFailed, main, parse_args, preflight
from efl_d2.engine.preflight import ConfigCheckError


def invoke_main() -> int:
    args = parse_args(epilog=__doc__)
    try:
        preflight(args)
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ConfigCheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RunFailed, CheckpointReadError, CheckpointMismatchError, DatasetFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a worker process failed: its traceback is above
        if type(e).__name__ != "ProcessRaisedException":
            raise
        last = str(e).strip().splitlines()[-1]
        print(f"error: a training process failed: {last}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(invoke_main())
