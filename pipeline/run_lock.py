"""A lock file that dies with the process that took it: one writer per cache or run directory.

Why a POSIX record lock (fcntl.lockf) and not flock: a flock belongs to the open file, which a
forked DataLoader worker inherits, so a worker orphaned by `kill -9` kept a dead extraction's
lock and refused the resume. A record lock belongs to the process: fork does not pass it on,
and the kernel drops it when the holder exits, however it exits. The file holds the holder's
pid; a file left by a holder that is gone (killed) is taken over with a one-line notice.
Helper processes (DataLoader workers, train's process pool) start with `die_with_parent`.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import sys
from pathlib import Path

from data_manifests.storage import remove_leftovers


def die_with_parent(parent_pid: int, *_worker_id) -> None:
    """Initializer of a helper process: the kernel kills it when the main process dies, even by
    kill -9, so no orphan is left working (Linux prctl; elsewhere torch's watchdog ends a
    DataLoader worker, a pool worker lives on)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the main process died before prctl took effect
        os._exit(1)


class Locked(BlockingIOError):
    """Another live process is writing the same output (an OSError without errno: commands report
    it as bad input, exit code 2)."""


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 64).decode(errors="replace").strip()


def _open_locked(lock_path: Path) -> tuple[int, bool]:
    """(fd of the file now at `lock_path`, whether this process got the lock on it)."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EAGAIN):
                return fd, False
            os.close(fd)
            raise
        try:  # the holder we raced with may have removed the file: lock the one now on disk
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                return fd, True
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def exclusive(lock_path, what: str, log=print, folders=()):
    """Hold `lock_path` while the block runs; raise Locked naming `what` and the holder's pid.
    Taking over from a killed holder also removes its temp files in `folders`."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd, mine = _open_locked(lock_path)
    if not mine:
        holder = _holder(fd)
        os.close(fd)
        raise Locked(f"{what} is being written by another process (pid {holder or '?'}, lock {lock_path}); "
                     "wait for it to finish, or write elsewhere")
    try:
        stale = _holder(fd)
        if stale and stale != str(os.getpid()):
            log(f"note: taking over {lock_path}: its holder (pid {stale}) is gone")
            for folder in folders:
                if stale.isdigit() and Path(folder).is_dir():
                    remove_leftovers(folder, int(stale))
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # still ours: a clean exit (error or not) leaves no file
        os.close(fd)
