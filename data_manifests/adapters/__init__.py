"""One module per corpus; each exposes `prepare(root, **options) -> DataFrame` (a validated manifest)."""
from __future__ import annotations

from . import ravdess

ADAPTERS = {
    "ravdess": ravdess,
}
