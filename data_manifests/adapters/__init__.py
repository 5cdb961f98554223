"""One module per corpus; each exposes `prepare(root, **options) -> DataFrame` (a validated manifest)."""
from __future__ import annotations

from . import cafe, casia, cremad, csv_table, emodb, folders, iemocap, m3ed, meld, ravdess, savee, tess

ADAPTERS = {
    "ravdess": ravdess, "cremad": cremad, "emodb": emodb, "tess": tess, "savee": savee, "casia": casia,
    "cafe": cafe, "iemocap": iemocap, "meld": meld, "m3ed": m3ed, "folders": folders, "csv": csv_table,
}
