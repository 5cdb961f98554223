"""What both benchmarks share: each measurement runs in a fresh child process, so its peak memory
is its own (ru_maxrss only ever grows within a process) and nothing warm leaks between variants."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """Peak resident memory of this process or its largest child (DataLoader/pool workers), MiB."""
    kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return kib / 1024


def run_child(script, args: list[str], result_json: Path, timeout: float | None = None) -> dict | None:
    """Run `python script args...` (which writes `result_json`) and return that JSON;
    None if it ran past `timeout` seconds (the child is killed)."""
    try:
        subprocess.run([sys.executable, str(script), *map(str, args)], check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(Path(result_json).read_text())
