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
a second run on an output folder in use is refused (exit 2); ``--resume`` refuses a config that
changes what training computes unless ``--allow-config-change``. A run that fails (diverged, no
usable evaluation, unreadable checkpoint, a training process that died) exits with status 1; on
SIGTERM / SIGUSR1 it checkpoints the current iteration and exits with status 75: resume it.
"""

# efl_d2 first: its warning filters then cover detectron2's imports (it registers datasets, models)
import efl_d2  # noqa: F401, I001
import os
import shlex
import sys
from pathlib import Path

from detectron2.engine import launch
from efl_d2.checkpoint import CheckpointMismatchError, CheckpointReadError
from efl_d2.data import DatasetFileError
from efl_d2.engine import RunFailed, main, parse_args, preflight, record_resumed_config
from efl_d2.engine.preemption import EXIT_PREEMPTED, install_handlers
from efl_d2.engine.preflight import ConfigCheckError
from efl_d2.engine.run_lock import OutputDirInUse, OutputDirLock
from torch.multiprocessing import ProcessExitedException, ProcessRaisedException


def resume_command() -> str:
    """This command line with ``--resume`` (what continues the run)."""
    argv = [a for a in sys.argv[1:] if a != "--resume"]
    return shlex.join([sys.executable, sys.argv[0], *argv, "--resume"])


def preempted_message(output_dir: str) -> str:
    last = Path(output_dir, "last_checkpoint")
    saved = last.read_text().strip() if last.is_file() else "no checkpoint"
    return (
        f"preempted: stopped on a preemption signal (SIGTERM or SIGUSR1) after writing "
        f"{os.path.join(output_dir, saved)}. Exit status {EXIT_PREEMPTED} means 'resume me': "
        f"{resume_command()}"
    )


def invoke_main() -> int:
    args = parse_args(epilog=__doc__)
    try:
        cfg, point = preflight(args)
    except ConfigCheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lock = OutputDirLock(cfg.train.output_dir)
    try:
        if args.machine_rank == 0:  # one writer per output folder (shared by all machines)
            lock.acquire()
        record_resumed_config(cfg, args, point, keep_file=args.machine_rank == 0)
        install_handlers(forward_to_children=args.num_gpus > 1)
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except OutputDirInUse as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # one process: main's "preempted" exit
        if e.code != EXIT_PREEMPTED:
            raise
        print(f"error: {preempted_message(cfg.train.output_dir)}", file=sys.stderr)
        return EXIT_PREEMPTED
    except (RunFailed, CheckpointReadError, CheckpointMismatchError, DatasetFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ProcessExitedException as e:  # a training process died or was preempted
        if e.exit_code == EXIT_PREEMPTED:
            print(f"error: {preempted_message(cfg.train.output_dir)}", file=sys.stderr)
            return EXIT_PREEMPTED
        how = f"was killed by {e.signal_name}" if e.signal_name else f"exited with {e.exit_code}"
        print(
            f"error: training process {e.error_index} {how}; the others were stopped. The "
            f"checkpoints so far are in {cfg.train.output_dir}; continue with: {resume_command()}",
            file=sys.stderr,
        )
        return 1
    except ProcessRaisedException as e:  # its traceback is above
        last = str(e).strip().splitlines()[-1]
        print(
            f"error: training process {e.error_index} failed: {last}. Fix the cause, then "
            f"continue from the last checkpoint with: {resume_command()}",
            file=sys.stderr,
        )
        return 1
    finally:
        lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(invoke_main())
