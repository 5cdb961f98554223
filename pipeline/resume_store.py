"""The resume store of one extraction: `<cache>.partial/` holds the batch plan and each finished batch.

The plan (plan.json, with the run's identity) fixes the batches, so a resumed run encodes exactly
the batches an uninterrupted one would.  Each finished batch is one .npz written atomically and
named `batch-<b>.<sha256 of its bytes, 16 hex>.npz`: `kill -9` loses at most the batch in flight,
and a truncated or damaged file (checksum mismatch) is deleted and encoded again, never merged.
A batch file is a few MB of float16 vectors, written once per batch (a few per second at
thousands of utterances per second), while the device computes the next batch.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np

from data_manifests.storage import atomic_path, write_text_atomic
from pipeline.cache import CacheMismatch, mismatches


class BatchStore:
    """The finished batches of one run, in `folder` (`<cache>.partial`)."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def start(self, identity: dict, plan: list, overwrite: bool) -> list:
        """Create the folder, or reuse a stored run of the same identity; returns the plan to follow
        (the stored one on resume). CacheMismatch when an unfinished run of another setup is there."""
        plan_file = self.folder / "plan.json"
        if self.folder.exists() and plan_file.exists() and not overwrite:
            stored = json.loads(plan_file.read_text())
            problems = mismatches(stored["identity"], identity)
            if problems:
                raise CacheMismatch(f"{self.folder} holds an unfinished extraction with another setup ("
                                    + "; ".join(problems) + "): re-run it as it was, or pass --overwrite")
            return stored["plan"]
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        write_text_atomic(plan_file, json.dumps({"identity": identity, "plan": plan}))
        return plan

    def save(self, b: int, rows, ok_rows, embeddings: np.ndarray, frames, errors: dict, durations: dict) -> None:
        """Batch `b` (manifest rows `rows`; `embeddings` [len(ok_rows), L+1, D] and `frames` of the
        encoded `ok_rows`, `errors` row -> reason of the others) as one checksummed file."""
        position = {int(r): i for i, r in enumerate(ok_rows)}
        ok = np.asarray([int(r) in position for r in rows], bool)
        take = np.asarray([position[int(r)] for r in rows if int(r) in position], np.int64)
        num_frames = np.zeros(len(rows), np.int32)
        num_frames[ok] = np.asarray(frames, np.int64)[take] if len(take) else 0
        d = {"rows": np.asarray(rows, np.int64), "ok": ok,
             "error": np.asarray([errors.get(int(r), "") for r in rows], dtype=str),
             "duration": np.asarray([durations.get(int(r), 0.0) for r in rows], np.float32),
             "num_frames": num_frames}
        if len(take):
            d["embeddings"] = np.asarray(embeddings)[take].astype(np.float16)
        buffer = io.BytesIO()
        np.savez(buffer, **d)
        data = buffer.getvalue()
        with atomic_path(self.folder / f"batch-{b:06d}.{hashlib.sha256(data).hexdigest()[:16]}.npz") as tmp, \
                open(tmp, "wb") as handle:
            handle.write(data)

    def done(self, log=print) -> dict[int, Path]:
        """Finished batches by number. A kill during a write leaves only a hidden temp file (ignored);
        a batch whose bytes do not match the checksum in its name is deleted with a warning."""
        found = {}
        for p in sorted(self.folder.glob("batch-*.npz")):
            name = p.name.split(".")
            if len(name) == 3 and hashlib.sha256(p.read_bytes()).hexdigest()[:16] == name[1]:
                found[int(name[0][len("batch-"):])] = p
            else:
                log(f"warning: {p} is damaged (checksum mismatch): encoding that batch again")
                p.unlink()
        return found

    @staticmethod
    def load(path: Path) -> dict:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def note_resume(self, error: BaseException, plan, writing: Path, row_bytes: float) -> None:
        """Tell the user (through os_faults) what an interrupted or failed run kept, how to resume,
        and, for OS errors, which path and how much space the rest of the run needs."""
        done = self.done(log=lambda *_: None) if self.folder.exists() else {}
        error.add_note(f"kept: {len(done)} of {len(plan)} finished batches in {self.folder}; "
                       "the same command resumes from there.")
        if isinstance(error, OSError):
            rows_left = sum(len(rows) for b, rows in enumerate(plan) if b not in done)
            rows_all = sum(len(rows) for rows in plan)
            error.bytes_needed = (rows_left + rows_all) * row_bytes  # the batches stay until the cache is written
            if error.filename is None:
                error.filename = str(writing)

    def remove(self) -> None:
        shutil.rmtree(self.folder)
