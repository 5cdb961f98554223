"""`--shard i/n`: which slice of a run this process does (`extract`, `segment`), torch-free."""
from __future__ import annotations

import os

from data_manifests.errors import UserError


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n); None -> RANK/WORLD_SIZE under torchrun, else (0, 1)."""
    if text is None:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise UserError(f"--shard {text!r}: need 0 <= i < n")
    return i, n
