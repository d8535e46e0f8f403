"""One writer per output folder: the lock that ``tools/train_net.py`` holds for the whole run.

Two runs started with the same ``train.output_dir`` (``./output`` by default, so this happens by
accident) would interleave ``metrics.json`` and ``log.txt`` and overwrite each other's checkpoints,
both exiting 0. The launching process takes an exclusive lock on ``<output_dir>/.efl_d2.lock``
before anything is written there; a second run is refused at once, naming the holder. It is a
POSIX record lock (``lockf``): it belongs to the process, is not inherited by the processes it
forks (data-loader workers), works on NFS, and the kernel drops it when the process ends, however
it ends, so a lock file left by a killed run blocks nothing (the file stays, unlocked; its content
is only the last holder's description).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time

__all__ = ["LOCK_FILE", "OutputDirInUse", "OutputDirLock"]

LOCK_FILE = ".efl_d2.lock"


class OutputDirInUse(RuntimeError):
    """Another live process holds the output folder's lock."""


class OutputDirLock:
    """Exclusive lock on an output folder, held from :meth:`acquire` to :meth:`release` (or the
    end of the process)."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> OutputDirLock:
        os.makedirs(self.output_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputDirInUse(
                f"train.output_dir={self.output_dir!r} is in use by another run ({holder}). "
                "Wait for it to finish, or give this run its own folder: "
                "train.output_dir=<another folder>."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_this_process()).encode() + b"\n", 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _this_process() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 65536, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
    except (ValueError, KeyError, OSError):  # written by a run that is just starting
        return "a process that is starting"
