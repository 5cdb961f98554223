"""Faults a real run meets: kill -9, SIGTERM, Ctrl-C, disk full, damaged batch and cache
files, two trains into one run directory, a train killed while writing.

Each extraction case runs the real CLI in a child process with the default options (one DataLoader
worker) on a handful of real RAVDESS files (generated clips where the corpus is absent), stops it
at a chosen point from outside, then runs the same command: the resumed cache must equal an
uninterrupted run's (vectors and fingerprint) and no process of the stopped run may be left.
The child is held at the fault point by a small launcher that wraps one internal function.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from data_manifests import prepare, write_manifest
from data_manifests.os_faults import EXIT_NO_ACCESS, EXIT_NO_SPACE, fault_message
from pipeline.cache import load_cache
from pipeline.extract import extract
from test_extract import make_corpus, run_cli

REPO = Path(__file__).resolve().parents[1]
RAVDESS = REPO.parent / "shared/corpora/ravdess"
MARK = "FAULT-POINT"

# How long a case waits for an event (the fault point reached, the run gone) before calling the run hung:
# a safety net far above any delay of a loaded machine, never a timing the test relies on.
PATIENCE = 900

# The launcher: run cli.py's app, but pause (print MARK, then stay until signalled) or fail with ENOSPC
# at one point. The pause has no end of its own, so a slow test can never let the run pass the point.
LAUNCHER = r"""
import errno, os, sys, time
point, n = sys.argv[1], int(sys.argv[2])
sys.argv = ["cli.py"] + sys.argv[3:]
import pipeline.extract as ex
import pipeline.resume_store as store
import data_manifests.storage as storage

def pause():
    print("FAULT-POINT", flush=True)
    while True:
        time.sleep(3600)

def after_batches(act):
    save, count = store.BatchStore.save, [0]
    def wrapped(*a, **k):
        save(*a, **k)
        count[0] += 1
        if count[0] == n:
            act()
    store.BatchStore.save = wrapped

def in_final_write(act):
    write = ex.write_cache
    def wrapped(path, table, attrs, shape, blocks, **k):
        def some_blocks():
            for i, block in enumerate(blocks):
                if i == n:
                    act()
                yield block
        return write(path, table, attrs, shape, some_blocks(), **k)
    ex.write_cache = wrapped

class FullDisk:  # a file that takes the first n bytes written through `open` in resume_store.py, then ENOSPC
    budget = n
    def __init__(self, *a, **k):
        self.f = open(*a, **k)
    def write(self, data):
        room = max(FullDisk.budget, 0)
        FullDisk.budget -= len(data)
        if len(data) > room:
            self.f.write(data[:room])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(data)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()

def no_space():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

def before_rename(name):
    replace = storage.os.replace
    def wrapped(src, dst):
        if os.path.basename(dst) == name:
            pause()
        return replace(src, dst)
    storage.os.replace = wrapped

if point == "batches":
    after_batches(pause)
elif point == "final":
    in_final_write(pause)
elif point == "disk-batches":
    store.open = FullDisk
elif point == "disk-final":
    in_final_write(no_space)
elif point == "results":
    before_rename("results.json")
from cli import app
app(prog_name="cli.py")
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(manifest CSV, audio root): 6 real RAVDESS files (2 actors), or generated clips without the corpus."""
    root = tmp_path_factory.mktemp("corpus")
    if not RAVDESS.is_dir():
        return make_corpus(root, 6, seed=13, lengths=(2.0, 3.5)), root
    for actor in ("Actor_01", "Actor_02"):
        (root / actor).mkdir()
        for src in sorted((RAVDESS / actor).iterdir())[:3]:
            shutil.copy(src, root / actor / src.name)
    return write_manifest(prepare("ravdess", root), root / "manifest.csv"), root


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The cache of an uninterrupted run (same options as `command`)."""
    csv, root = corpus
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    extract(pd.read_csv(csv, keep_default_na=False), root, out, model="tiny.en", window="trim", batch_size=2,
            progress=False, log=lambda *_: None)
    return load_cache(out)


def command(corpus, out: Path) -> list[str]:
    """The extract command of every case: the defaults, except a small fast encoder, trim and 2 per batch."""
    csv, root = corpus
    return ["extract", "--manifest", str(csv), "--root", str(root), "--model", "tiny.en", "--window", "trim",
            "--batch-size", "2", "--out", str(out)]


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_leftovers():
    """Whatever a failed case leaves running (its process group) is killed at teardown."""
    yield
    for proc in STARTED:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    STARTED.clear()


def start(point: str, n: int, args: list[str], logs: Path) -> subprocess.Popen:
    """The CLI in its own process group (as a shell runs it), held or failing at `point`."""
    STARTED.append(subprocess.Popen([sys.executable, "-c", LAUNCHER, point, str(n), *map(str, args)], cwd=REPO,
                            stdout=open(logs / "stdout", "w"), stderr=open(logs / "stderr", "w"),
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)}))
    return STARTED[-1]


def wait_for_mark(proc: subprocess.Popen, logs: Path) -> None:
    """Until the run prints MARK (it holds there) or exits (a failure, with its stderr)."""
    deadline = time.time() + PATIENCE
    while MARK not in (logs / "stdout").read_text():
        assert proc.poll() is None, (logs / "stderr").read_text()[-3000:]
        assert time.time() < deadline, f"the run did not reach the fault point in {PATIENCE} s: hung?"
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_all_gone(pids: list[int]) -> None:
    """Until every pid has exited (at once when they have; PATIENCE only catches a process that never does)."""
    deadline = time.time() + PATIENCE
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), f"left behind: {[p for p in pids if alive(p)]}"


def assert_same_cache(out: Path, reference) -> None:
    got = load_cache(out)
    assert np.array_equal(got.features, reference.features)
    assert got.fingerprint == reference.fingerprint
    assert got.table["utt_id"].tolist() == reference.table["utt_id"].tolist()
    assert not Path(str(out) + ".partial").exists() and not Path(str(out) + ".lock").exists()


def resume(corpus, out: Path, reference) -> str:
    """The same command again, in-process: exit 0 and the reference cache."""
    result = run_cli(*command(corpus, out), check_rc=0)
    assert_same_cache(out, reference)
    return result.output


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals, /proc and prctl: Linux")


@pytest.mark.parametrize("point", ["batches", "final"])
def test_kill_9_then_the_same_command_gives_the_uninterrupted_cache(corpus, reference, tmp_path, point):
    """kill -9 while encoding (worker running) or inside the final HDF5 write: nothing survives the
    main process, its lock does not block the resume, and the resumed cache is identical."""
    out = tmp_path / "c.h5"
    proc = start(point, 1, command(corpus, out), tmp_path)
    wait_for_mark(proc, tmp_path)
    workers = children(proc.pid)
    if point == "batches":
        assert workers, "the default options run one DataLoader worker"
    proc.send_signal(signal.SIGKILL)  # the main process only, as `kill -9 PID` does
    proc.wait()
    assert_all_gone(workers)
    assert not out.exists()
    if point == "final":  # kill -9 skips atomic_path's cleanup: the half-written cache is a hidden temp file
        assert list(tmp_path.glob(f".c.h5.*-{proc.pid}-*.tmp"))
    output = resume(corpus, out, reference)
    assert f"note: taking over {out}.lock: its holder (pid {proc.pid}) is gone" in output
    assert not list(tmp_path.glob(f".*-{proc.pid}-*.tmp")), "the killed run's temp files are removed"
    kept = 1 if point == "batches" else 3
    assert f"resuming: {kept} of 3 batches already done" in output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_say_what_was_kept_then_resume(corpus, reference, tmp_path, signum):
    out = tmp_path / "c.h5"
    proc = start("batches", 2, command(corpus, out), tmp_path)
    wait_for_mark(proc, tmp_path)
    workers = children(proc.pid)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C reaches the whole foreground group, workers included
    else:
        proc.send_signal(signum)
    assert proc.wait(timeout=PATIENCE) == 128 + signum
    assert_all_gone(workers)
    err = (tmp_path / "stderr").read_text()
    assert f"interrupted ({signal.Signals(signum).name})." in err and "Traceback" not in err
    assert f"kept: 2 of 3 finished batches in {out}.partial; the same command resumes from there." in err
    assert "resuming: 2 of 3 batches already done" in resume(corpus, out, reference)


@pytest.mark.parametrize("point", ["disk-batches", "disk-final"])
def test_disk_full_names_the_path_and_the_space_then_resumes(corpus, reference, tmp_path, point):
    """ENOSPC in the middle of a batch file (the first 12 kB fit: one batch) or of the final write."""
    out = tmp_path / "c.h5"
    proc = start(point, 12_000 if point == "disk-batches" else 1, command(corpus, out), tmp_path)
    assert proc.wait(timeout=PATIENCE) == EXIT_NO_SPACE
    err = (tmp_path / "stderr").read_text()
    assert "Traceback" not in err, err[-2000:]
    written = f"{out}.partial" if point == "disk-batches" else str(out)
    assert f"error: no space left on the device while writing {written}." in err
    assert "needed: about " in err and f"free on {tmp_path}: " in err
    kept = 1 if point == "disk-batches" else 3
    assert f"kept: {kept} of 3 finished batches in {out}.partial; the same command resumes from there." in err
    assert not list(tmp_path.glob(".*.tmp")) and not list(Path(f"{out}.partial").glob(".*.tmp"))
    assert f"resuming: {kept} of 3 batches already done" in resume(corpus, out, reference)


def test_damaged_batch_files_are_encoded_again_not_merged(corpus, reference, tmp_path):
    out = tmp_path / "c.h5"
    proc = start("batches", 2, command(corpus, out), tmp_path)
    wait_for_mark(proc, tmp_path)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert_all_gone(workers)
    first, second = sorted(Path(f"{out}.partial").glob("batch-*.npz"))
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])  # truncated (a copy cut short)
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the stored vectors
    second.write_bytes(bytes(data))
    output = resume(corpus, out, reference)
    for damaged in (first, second):
        assert f"warning: {damaged} is damaged (checksum mismatch): encoding that batch again" in output


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_damaged_finished_cache_is_named_with_what_to_do(reference, tmp_path, damage):
    path = tmp_path / "copy.h5"
    shutil.copy(reference.path, path)
    if damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size * 2 // 3)
    else:
        with h5py.File(path, "r") as f:
            offset = f["embeddings"].id.get_chunk_info(0).byte_offset
        with open(path, "r+b") as f:
            f.seek(offset + 1001)
            byte = f.read(1)
            f.seek(offset + 1001)
            f.write(bytes([byte[0] ^ 0x40]))
    for args in (["info", path], ["train", "--cache", path, "--out", tmp_path / "run"]):
        result = run_cli(*args, check_rc=2)
        assert f"cache {path} is damaged" in result.output and "re-extract" in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_two_trains_into_one_folder_and_a_train_killed_while_writing(tmp_path, synthetic_cache):
    """The second train into a busy --out is refused; a train killed (kill -9) just before
    results.json is in place leaves no results.json; the next run takes over and writes it whole."""
    cache = synthetic_cache(tmp_path / "syn.h5", n_classes=3, n_speakers=4, per_class=6, n_folds=2, dim=8)
    out = tmp_path / "run"
    args = ["train", "--cache", cache, "--method", "supervised", "--seeds", "0", "--out", out]
    first = start("results", 0, args, tmp_path)
    wait_for_mark(first, tmp_path)
    second = run_cli(*args, check_rc=2)
    assert f"run directory {out} is being written by another process (pid {first.pid}" in second.output
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / "results.json").exists() and list(out.glob(f".results.json.*-{first.pid}-*.tmp"))
    third = run_cli(*args, check_rc=0)
    assert f"note: taking over {out}.lock: its holder (pid {first.pid}) is gone" in third.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"supervised"} and not Path(f"{out}.lock").exists()
    assert not list(out.glob(".*.tmp")), "the killed train's temp files are removed"


def test_os_faults_messages_and_exit_codes(tmp_path):
    """Disk full from h5py (errno only in the text), permission denied, read-only folder, others."""
    h5_error = OSError("Unable to synchronously create file (unable to open file: name = 'x.h5', "
                       "errno = 28, error message = 'No space left on device')")
    h5_error.filename = str(tmp_path / "x.h5")
    code, text = fault_message(h5_error)
    assert code == EXIT_NO_SPACE and f"writing {tmp_path / 'x.h5'}" in text and f"free on {tmp_path}" in text
    code, text = fault_message(PermissionError(errno.EACCES, "Permission denied", "/data/out.h5"))
    assert code == EXIT_NO_ACCESS and "permission denied on /data/out.h5" in text
    code, text = fault_message(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/c.h5"))
    assert code == EXIT_NO_ACCESS and "/mnt/ro/c.h5 is on a read-only file system" in text
    assert fault_message(FileNotFoundError(errno.ENOENT, "No such file", "a.h5")) is None
    assert fault_message(ValueError("bad input")) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_unwritable_output_folder_is_named(corpus, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = run_cli(*command(corpus, folder / "c.h5"), check_rc=EXIT_NO_ACCESS)
    finally:
        folder.chmod(0o755)
    assert f"permission denied on {folder}" in result.output
