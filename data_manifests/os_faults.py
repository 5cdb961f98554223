"""Faults from the machine, not from the input: disk full, no permission, read-only folder,
Ctrl-C / SIGTERM. One place turns them into a short message and a distinct exit code for every
command (cli.py runs each command through `fault_message`), instead of a long traceback.

Code that knows what a fault leaves behind says so with `error.add_note(...)` (e.g. extraction:
"2 of 4 batches kept in X.partial; the same command resumes") and may set `error.bytes_needed`.
"""
from __future__ import annotations

import contextlib
import errno
import re
import shutil
import signal
import threading
from pathlib import Path

EXIT_NO_SPACE = 3
EXIT_NO_ACCESS = 4
EXIT_SIGNAL_BASE = 128  # shell convention: 130 after SIGINT (Ctrl-C), 143 after SIGTERM


class Interrupted(KeyboardInterrupt):
    """A SIGTERM (or SIGINT) turned into an exception, so `finally` blocks and temp-file cleanup run."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_raise():
    """While the block runs (main thread only), SIGTERM raises Interrupted like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _errno(error: OSError) -> int | None:
    """errno of an OSError; h5py often leaves it unset and writes 'errno = 28' into the message."""
    if error.errno:
        return error.errno
    found = re.search(r"errno = (\d+)", " ".join(map(str, error.args)))  # not str(): a set filename hides it
    return int(found.group(1)) if found else None


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _free_bytes(path: str) -> tuple[str, int] | None:
    """(existing folder, its free bytes) for the folder that holds `path`."""
    folder = Path(path).resolve().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return str(folder), shutil.disk_usage(folder).free
    except OSError:
        return None


def fault_message(error: BaseException) -> tuple[int, str] | None:
    """(exit code, message) for a machine fault; None for anything else (the caller re-raises)."""
    notes = list(getattr(error, "__notes__", []))
    if isinstance(error, KeyboardInterrupt):
        signum = getattr(error, "signum", signal.SIGINT)
        kept = notes or ["every output is written whole or not at all: nothing half-written was left; "
                         "run the same command again"]
        return EXIT_SIGNAL_BASE + signum, "\n".join([f"interrupted ({signal.Signals(signum).name})."] + kept)
    if not isinstance(error, OSError):
        return None
    code = _errno(error)
    path = error.filename or "the output"
    if code in (errno.ENOSPC, errno.EDQUOT):
        lines = [f"error: no space left on the device while writing {path}."]
        free = _free_bytes(path) if error.filename else None
        need = getattr(error, "bytes_needed", None)
        if free and need:
            lines.append(f"needed: about {_mb(need)} more; free on {free[0]}: {_mb(free[1])}.")
        elif free:
            lines.append(f"free on {free[0]}: {_mb(free[1])}.")
        lines += notes or ["nothing half-written was left; the same command starts again."]
        lines.append("free some space (or write elsewhere), then run it.")
        return EXIT_NO_SPACE, "\n".join(lines)
    if code in (errno.EACCES, errno.EPERM):
        return EXIT_NO_ACCESS, (f"error: permission denied on {path}: choose a folder you can write "
                                "(--out / --cache-dir) or fix its permissions.")
    if code == errno.EROFS:
        return EXIT_NO_ACCESS, (f"error: {path} is on a read-only file system: choose a writable folder "
                                "(--out / --cache-dir).")
    return None
