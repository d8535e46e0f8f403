"""Preemption: on SIGTERM or SIGUSR1, finish the iteration, checkpoint it, exit "resume me".

Cluster schedulers send SIGTERM before they kill a job (SLURM at the time limit or on
preemption, Kubernetes on eviction), and SLURM can send SIGUSR1 ahead of time
(``#SBATCH --signal=USR1@120``). Dying on it would lose everything since the last periodic
checkpoint (up to an hour of 16 GPUs with LVIS's 5,000-iteration period). Instead:

- every training process notes the signal (:func:`install_handlers`); the launching process of a
  multi-process run passes it on to its training processes, which a container runtime does not;
  data-loader workers ignore it unless it comes from their own process (:func:`ignore_signals`),
  which does the stopping;
- after each iteration the processes agree whether any of them got it (one all-reduce of a flag),
  so that all stop after the same iteration; rank 0 then writes that iteration's checkpoint
  (atomically, as every checkpoint) and the run ends with :class:`Preempted`;
- ``tools/train_net.py`` exits with :data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL``: "temporary
  failure, run me again"), and ``--resume`` continues bit-exactly from the checkpoint.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = [
    "EXIT_PREEMPTED",
    "PREEMPTION_SIGNALS",
    "Preempted",
    "PreemptionHook",
    "ignore_signals",
    "install_handlers",
]

logger = logging.getLogger("efl_d2")

#: exit status of a preempted run (sysexits.h EX_TEMPFAIL): resume it with ``--resume``
EXIT_PREEMPTED = 75
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: str | None = None  # name of the preemption signal this process got, if any


class Preempted(BaseException):  # not an Exception: the trainer must not log it as a crash
    """The run stopped on a preemption signal after checkpointing ``iteration``."""

    def __init__(self, signal_name: str, iteration: int) -> None:
        super().__init__(f"{signal_name} received: stopped after iteration {iteration}")
        self.signal_name = signal_name
        self.iteration = iteration


def install_handlers(*, forward_to_children: bool = False) -> None:
    """Note SIGTERM / SIGUSR1 instead of dying on them (main thread only); the launching process
    of a multi-process run also passes them on to its children (the training processes)."""

    def note(signum, frame):
        global _received
        _received = signal.Signals(signum).name
        if forward_to_children:
            for child in multiprocessing.active_children():
                try:
                    os.kill(child.pid, signum)
                except ProcessLookupError:
                    pass

    for s in PREEMPTION_SIGNALS:
        signal.signal(s, note)


def ignore_signals(*_args) -> None:
    """A data-loader worker's ``worker_init_fn``: ignore the preemption signals that a scheduler
    sends to every process of the job (dying under a running step would fail it), but still end
    on a SIGTERM from the parent, which is how the loader (and Python's exit) stops its workers.

    The signals are blocked and read by a thread with ``sigwaitinfo``, which tells who sent them.
    They must be blocked in every thread of the worker, those that start before this function too:
    the loader forks its workers with them blocked (``efl_d2._atomic.preemption_signals_held``).
    """
    for s in PREEMPTION_SIGNALS:  # not the training process's handlers, inherited by a fork
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, PREEMPTION_SIGNALS)
    threading.Thread(target=_end_on_sigterm_from_parent, daemon=True).start()


def _end_on_sigterm_from_parent() -> None:
    parent = os.getppid()
    while True:
        info = signal.sigwaitinfo(PREEMPTION_SIGNALS)
        if info.si_signo == signal.SIGTERM and info.si_pid == parent:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
            signal.raise_signal(signal.SIGTERM)  # the default end, as without this policy


def _on_any_rank(flag: bool) -> bool:
    if comm.get_world_size() == 1:
        return flag
    device = (
        torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    )
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class PreemptionHook(HookBase):
    """Stops training after the iteration during which a preemption signal arrived (on any
    process), with a checkpoint of it. Register it last: the iteration's metrics and periodic
    checkpoint are written first."""

    def __init__(self, checkpointer) -> None:
        self.checkpointer = checkpointer

    def before_train(self) -> None:
        install_handlers()

    def after_step(self) -> None:
        if not _on_any_rank(_received is not None):
            return
        iteration = self.trainer.iter
        if comm.is_main_process():
            self.checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
        comm.synchronize()  # every process leaves after the checkpoint exists
        name = _received or "a preemption signal (on another process)"
        logger.warning(f"{name}: stopping after iteration {iteration}, checkpointed for --resume.")
        raise Preempted(name, iteration)
