"""bgrpo-ser command line: thin wrappers over the library functions in the packages.

Stages: `manifest` (data_manifests) -> `extract` / `info` / `merge` (pipeline) ->
`train` / `ablate` / `predict` (trainer); `demo` runs all of them on a generated corpus.
"""
from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


# --- manifest (data_manifests) -------------------------------------------------------------
@app.command()
def manifest(
    corpus: str = typer.Option(..., help="ravdess, cremad, emodb, tess, savee, casia, cafe, iemocap, meld, m3ed, folders or csv."),
    root: str = typer.Option(..., help="Corpus folder (for --corpus csv: the table; paths in it are relative to its folder)."),
    out: str = typer.Option(None, help="Output CSV (default: manifests/<corpus>.csv)."),
    include_song: bool = typer.Option(None, "--include-song/--speech-only", help="ravdess: add the song part (flagged in vocal_channel) (default: speech only)."),
    n_folds: int = typer.Option(None, help="Number of speaker-grouped folds for corpora without a standard split (default: 5)."),
    speaker_regex: str = typer.Option(None, help="folders: regex over the file name; named group `speaker` or the first group."),
    label_map: str = typer.Option(None, help="folders/csv: extra label mappings raw=label, comma separated (e.g. 'joy=happy,anxious=fearful')."),
    four_class: bool = typer.Option(None, "--four-class/--all-labels", help="iemocap: the standard 4 classes (neutral, happy, sad, angry) (default) or all."),
    merge_excited: bool = typer.Option(None, "--merge-excited/--keep-excited", help="iemocap: count excited as happy (default: merge)."),
    allow_missing: bool = typer.Option(None, "--allow-missing", help="iemocap/meld/m3ed/csv: drop annotated utterances whose audio is missing instead of stopping."),
) -> None:
    """Turn a corpus in its native layout into a validated manifest CSV and print its summary."""
    from data_manifests import ManifestError, prepare, summarize, write_manifest

    options = dict(include_song=include_song, n_folds=n_folds, speaker_regex=speaker_regex, label_map=label_map,
                   four_class=four_class, merge_excited=merge_excited, allow_missing=allow_missing)
    try:
        table = prepare(corpus, root, **options)
        path = write_manifest(table, out or f"manifests/{corpus}.csv")
    except ManifestError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from error
    typer.echo(summarize(table))
    typer.echo(f"wrote {path}")



# --- extract / info / merge (pipeline) -----------------------------------------------------


# --- train / ablate / predict (trainer) ----------------------------------------------------


# --- demo ----------------------------------------------------------------------------------


if __name__ == "__main__":
    app()
