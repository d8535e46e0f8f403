"""Atomic file writes (standard library only, so light modules can use it too)."""

import contextlib
import os
import signal
from collections.abc import Callable

__all__ = ["TMP_MARK", "atomic_write", "atomic_write_text", "preemption_signals_held"]

#: infix of the temporary file next to the target: ``<path>.tmp-<pid>``
TMP_MARK = ".tmp-"


def atomic_write(path: str, write: Callable, mode: str = "wb") -> None:
    """Write ``path`` so that it is either absent / its old content, or complete.

    ``write(f)`` writes into a temporary file next to ``path`` (same file system), which is flushed,
    fsync'ed and renamed over ``path``. A crash at any point leaves at most a ``<path>.tmp-<pid>``
    file behind, never a partial file under the final name. SIGTERM and SIGUSR1 (a scheduler's
    "stop soon", :mod:`efl_d2.engine.preemption`) are held back until the write is done: a signal
    handler running in the middle of ``torch.save`` can cut a write short and fail it.
    """
    with preemption_signals_held():
        _write_and_rename(path, write, mode)


@contextlib.contextmanager
def preemption_signals_held():
    """Block SIGTERM and SIGUSR1 in the calling thread (threads and processes it starts inherit
    the mask); they are delivered when the block ends."""
    held = {signal.SIGTERM, signal.SIGUSR1}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _write_and_rename(path: str, write: Callable, mode: str) -> None:
    tmp = f"{path}{TMP_MARK}{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:  # make the rename itself durable
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str, text: str) -> None:
    """:func:`atomic_write` of ``text`` as UTF-8 (whatever the locale's encoding)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
