"""`predict --timeline OUT.png`: a long recording's emotions over time, readable without the CSV.

One panel per segmented file: each segment is a stacked bar of the class probabilities over its
span (the colours in the legend; silence between segments stays blank), and a strip above it in
the colour of the predicted label. The time axis is in seconds, or minutes past two minutes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainer.plots import _save

STRIP = (1.04, 0.12)  # the predicted-label strip above each panel: bottom, height (probability units)


def write_timeline(table: pd.DataFrame, classes: list[str], out, files=None) -> Path | None:
    """The figure of the `files` (default: the table's attrs["segmented"]) to `out`; None when there
    is none to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    files = list(table.attrs.get("segmented", []) if files is None else files)
    if not files:
        return None
    colours = dict(zip(classes, plt.get_cmap("tab10" if len(classes) <= 10 else "tab20").colors))
    longest = float(table.loc[table["file"].isin(files), "end"].max())
    minutes = longest > 120
    scale = 60.0 if minutes else 1.0
    fig, axes = plt.subplots(len(files), 1, figsize=(12, 1.9 * len(files) + 1.0), squeeze=False)
    for ax, name in zip(axes[:, 0], files):
        rows = table[table["file"] == name]
        left, width = rows["start"].to_numpy() / scale, (rows["end"] - rows["start"]).to_numpy() / scale
        bottom = np.zeros(len(rows))
        for c in classes:
            p = rows[c].to_numpy(float)
            ax.bar(left, p, width, bottom, align="edge", color=colours[c], linewidth=0)
            bottom += p
        ax.bar(left, STRIP[1], width, STRIP[0], align="edge", color=[colours[c] for c in rows["label"]], linewidth=0)
        ax.set_xlim(0, longest / scale)
        ax.set_ylim(0, sum(STRIP))
        ax.set_yticks([0, 0.5, 1.0], ["0", "0.5", "1"])
        ax.set_ylabel("probability")
        ax.set_title(f"{Path(name).name}: {len(rows)} segments (top strip: predicted label)", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time in the recording (minutes)" if minutes else "time in the recording (s)")
    fig.legend(handles=[Patch(color=colours[c], label=c) for c in classes], loc="upper center", ncol=len(classes),
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return _save(fig, Path(out))
