"""What `predict` is given, as the audio files it labels: a file as it is, a folder as the audio files
under it (recursively, sorted; the suffixes `manifest` finds), a CSV table (a manifest, or any CSV with a
`path` column) as the files it lists, relative paths read from the folder a manifest's paths are
relative to (its `<manifest>.root`, else the CSV's folder). A table's `speaker` / `text_id` columns
give the files' speakers and prompts where no regex is given, its `start` / `end` (a segment
manifest) the span of the file each row is; and what `predict` says about files it could not read."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data_manifests.audio_files import AUDIO_SUFFIXES, audio_files_under
from data_manifests.errors import UserError
from data_manifests.home import manifest_root
from data_manifests.schema import CHANNEL_COLUMN
from data_manifests.storage import read_csv_strings
from pipeline.audio import Span


@dataclass
class AudioInputs:
    """The files to label, and per file the speaker / prompt its table gave (None: no table column),
    and the span of the file a segment manifest's row names (None: the whole file)."""

    paths: list[str]
    table_speakers: list[str | None]
    table_text_ids: list[str | None]
    spans: list[Span | None]

    def speakers(self) -> list[str] | None:
        """The tables' speakers when every file has one, None when no file has; a mix is refused (the
        files given alone would be centred as one speaker with nothing said)."""
        known = [s is not None for s in self.table_speakers]
        if not any(known):
            return None
        if not all(known):
            alone = [p for p, k in zip(self.paths, known) if not k]
            raise UserError(f"the speakers of {len(known) - len(alone)} file(s) come from a table's speaker column, "
                            f"but {len(alone)} file(s) have none, e.g. {alone[0]}: list them in a CSV with a speaker "
                            "column too, or give --speaker-regex for every file")
        return list(self.table_speakers)

    def text_ids(self) -> list[str] | None:
        """The tables' prompts ("" = unknown, e.g. for files not from a table with a text_id column);
        None when no table has the column."""
        if all(t is None for t in self.table_text_ids):
            return None
        return ["" if t is None else t for t in self.table_text_ids]


def audio_inputs(args) -> AudioInputs:
    """The files, folders and CSV tables of `args` as the audio files to label, in the order given.
    A folder without audio files or a table listing none is refused naming it; a path that is neither
    is kept as a file (reading it later says what is wrong with it)."""
    paths, speakers, text_ids, spans = [], [], [], []
    for arg in map(str, args):
        given = Path(arg)
        if given.is_dir():
            found = audio_files_under(given)
            if not found:
                raise UserError(f"folder {given} holds no audio file ({'/'.join(AUDIO_SUFFIXES)}, searched "
                                "recursively): give the folder of the recordings, or the files themselves")
            rows = [(str(given / rel), None, None, None) for rel in found]
        elif given.suffix.lower() == ".csv":
            rows = listed_files(given)
        else:
            rows = [(arg, None, None, None)]
        for path, speaker, text_id, span in rows:
            paths.append(path)
            speakers.append(speaker)
            text_ids.append(text_id)
            spans.append(span)
    return AudioInputs(paths, speakers, text_ids, spans)


def listed_files(table_path: Path) -> list[tuple[str, str | None, str | None, Span | None]]:
    """(path, speaker, text_id, span) of each row of a CSV with a `path` column (speaker / text_id:
    None without that column; span: a segment manifest's start, end, channel, else None); relative
    paths are read from the table's corpus root, as a manifest's."""
    table = read_csv_strings(table_path, UserError, "file table", ": give a CSV with a path column (a manifest works)")
    if "path" not in table.columns:
        raise UserError(f"file table {table_path} has no path column (found {', '.join(table.columns) or 'none'}): "
                        "give a CSV with one audio file per row in a column named path (a manifest works)")
    if not len(table):
        raise UserError(f"file table {table_path} lists no files")
    root = manifest_root(table_path)
    paths = [str(root / p) if not Path(p).is_absolute() else p for p in table["path"]]
    column = lambda name: list(table[name]) if name in table.columns else [None] * len(table)  # noqa: E731
    return list(zip(paths, [s or None for s in column("speaker")], column("text_id"),  # an empty speaker: none
                    row_spans(table)))


def row_spans(table) -> list[Span | None]:
    """Each row's span from its start / end (/ channel) cells, None where they are empty or absent."""
    from pipeline.extract import spans_of

    if not {"start", "end"} <= set(table.columns):
        return [None] * len(table)
    numeric = table.assign(**{c: pd.to_numeric(table[c], errors="coerce")
                              for c in ("start", "end", CHANNEL_COLUMN) if c in table.columns})
    return [None if pd.isna(span.start) or pd.isna(span.end) else span for span in spans_of(numeric)]


def unread_report(unreadable: dict, n_files: int) -> str:
    """What `predict` says about the files it could not read (path -> why), without pretending that
    other files exist when there are none."""
    reasons = "\n".join(f"  {path}: {why}" for path, why in unreadable.items())
    if len(unreadable) < n_files:
        return f"could not read {len(unreadable)} of {n_files} files (the others are labelled above):\n{reasons}"
    if n_files == 1:
        ((path, why),) = unreadable.items()
        return f"could not read {path}: {why}"
    return f"could not read any of the {n_files} files:\n{reasons}"
