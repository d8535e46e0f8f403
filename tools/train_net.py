#!/usr/bin/env python
"""Train or evaluate a detector described by a LazyConfig file (Detectron2 style).

Examples:
    python tools/train_net.py --config-file configs/mini_lvis/atss_efl_R18.py
    python tools/train_net.py --config-file configs/<row>.py --num-gpus 8
    python tools/train_net.py --config-file configs/<row>.py --eval-only train.init_checkpoint=...
    python tools/train_net.py --config-file ... --num-machines 2 --machine-rank 0 \
        --dist-url tcp://<host>:<port>
Trailing ``key=value`` pairs override config values (unknown keys are an error; ``+key=v`` adds).
"""

# efl_d2 first: its warning filters then cover detectron2's imports (it registers datasets, models)
import efl_d2  # noqa: F401, I001
from detectron2.engine import default_argument_parser, launch
from efl_d2.engine import main


def invoke_main() -> None:
    args = default_argument_parser(epilog=__doc__).parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
