"""bgrpo-ser command line: thin wrappers over the library functions in the packages.

Stages: `manifest` (data_manifests) -> `extract` / `info` / `merge` (pipeline) ->
`train` / `ablate` / `predict` (trainer); `demo` runs all of them on a generated corpus.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import typer
from typer.core import TyperGroup

from data_manifests.errors import UserError
from data_manifests.os_faults import fault_message, signals_raise
from pipeline.segment import SegmentSettings
from trainer.config import TrainConfig, flag_help

SEGMENT = SegmentSettings()  # `segment`'s defaults

# Bad input: the message names the file or setting and what to do; exit 2. OS errors that are not
# machine faults (those have their own exit codes) are files the user named: missing, not readable
# as what they should be, or a cache another run is writing. Anything else is a bug: a traceback.
USER_ERRORS = (UserError, OSError)


class Commands(TyperGroup):
    """Runs every command with SIGTERM raising like Ctrl-C; turns machine faults (disk full, no
    permission, read-only folder, interrupted) into a message and their exit code, and user errors
    into `error: ...` and exit 2."""

    def invoke(self, ctx):
        with signals_raise():
            try:
                return super().invoke(ctx)
            except (KeyboardInterrupt, *USER_ERRORS) as error:
                found = fault_message(error)
                if found is not None:
                    typer.echo(found[1], err=True)
                    raise typer.Exit(code=found[0]) from None
                if isinstance(error, KeyboardInterrupt):
                    raise
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(code=2) from error


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True, help=__doc__)


@contextlib.contextmanager
def _reported_warnings():
    """Show the project's own warnings as one `warning:` line each; other warnings as Python shows them."""
    from data_manifests import ManifestWarning
    from trainer.inputs.protocol import FewLabelsWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, (ManifestWarning, FewLabelsWarning)):
                    typer.echo(f"warning: {w.message}", err=True)
                elif not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _corpus_root(corpus: str, root: str | None) -> str:
    """--root, or the corpus's folder in the data home ($BGRPO_SER_DATA/<corpus>, else data/<corpus>)."""
    from data_manifests import ManifestError, default_root

    if root:
        return root
    if corpus == "csv":
        raise ManifestError("--corpus csv needs --root TABLE.csv (the table; its paths are relative to its folder).")
    return str(default_root(corpus))


# adapter options: `manifest` and `extract --corpus` take the same ones
ROOT_HELP = ("Corpus folder (for --corpus csv: the table; paths in it are relative to its folder). "
             "Default: $BGRPO_SER_DATA/<corpus>, else data/<corpus>.")
INCLUDE_SONG = typer.Option(
    None,
    "--include-song/--speech-only",
    help="ravdess: add the song part (flagged in vocal_channel) (default: speech only).",
)
N_FOLDS = typer.Option(
    None,
    help="Number of speaker-grouped folds (default: 5; at most one per speaker); on a corpus with "
    "standard folds (ravdess, iemocap) it replaces them (e.g. for a part of the corpus).",
)
SPEAKERS = typer.Option(None, help="Keep only these speakers, comma separated as in the manifest's speaker column "
                        "(e.g. Actor_01,Actor_02,Actor_05,Actor_06: two RAVDESS folds): a part of the corpus.")
SPEAKER_REGEX = typer.Option(None, help="folders: regex over the file name; named group `speaker` or the first group.")
TEXT_REGEX = typer.Option(
    None,
    help="folders: regex over the file name giving the prompt (text_id; named group `text` or the first group); "
         "unmatched files get none.",
)
LABEL_MAP = typer.Option(
    None, help="folders/csv: extra label mappings raw=label, comma separated (e.g. 'joy=happy,anxious=fearful')."
)
FOUR_CLASS = typer.Option(
    None,
    "--four-class/--all-labels",
    help="iemocap: the standard 4 classes (neutral, happy, sad, angry) (default) or all.",
)
MERGE_EXCITED = typer.Option(
    None, "--merge-excited/--keep-excited", help="iemocap: count excited as happy (default: merge)."
)
ALLOW_MISSING = typer.Option(
    None,
    "--allow-missing",
    help="iemocap/meld/m3ed/csv: drop annotated utterances whose audio is missing instead of stopping.",
)
LANGUAGE = typer.Option(None, help="folders/csv: language code written to the manifest (e.g. en).")
ADAPTER_OPTIONS = ("include_song", "n_folds", "speakers", "speaker_regex", "text_regex", "label_map", "four_class",
                   "merge_excited", "allow_missing", "language", "strict")
STRICT = typer.Option(
    None,
    "--strict",
    help="Corpora coded in file names: stop on any audio file off the naming scheme (default: skip them with one "
         "warning).",
)


# --- manifest (data_manifests) -------------------------------------------------------------
@app.command()
def manifest(
    corpus: str = typer.Option(
        ..., help="ravdess, cremad, emodb, tess, savee, casia, cafe, iemocap, meld, m3ed, folders or csv."
    ),
    root: str = typer.Option(None, help=ROOT_HELP),
    out: str = typer.Option(
        None, help="Output CSV (default: manifests/<corpus>.csv; the corpus folder is recorded in <out>.root)."
    ),
    include_song: bool = INCLUDE_SONG,
    n_folds: int = N_FOLDS,
    speaker_regex: str = SPEAKER_REGEX,
    text_regex: str = TEXT_REGEX,
    label_map: str = LABEL_MAP,
    four_class: bool = FOUR_CLASS,
    merge_excited: bool = MERGE_EXCITED,
    allow_missing: bool = ALLOW_MISSING,
    language: str = LANGUAGE,
    strict: bool = STRICT,
    speakers: str = SPEAKERS,
) -> None:
    """Turn a corpus in its native layout into a validated manifest CSV and print its summary."""
    from data_manifests import audio_root, check_trainable, prepare, summarize, write_manifest, write_manifest_root

    options = {name: value for name, value in locals().items() if name in ADAPTER_OPTIONS}
    with _reported_warnings():
        root = _corpus_root(corpus, root)
        table = prepare(corpus, root, **options)
    check_trainable(table, corpus)
    path = write_manifest(table, out or f"manifests/{corpus}.csv")
    write_manifest_root(path, audio_root(corpus, root))
    typer.echo(summarize(table))
    typer.echo(f"wrote {path} (audio under {audio_root(corpus, root)})")



# --- extract / info / merge (pipeline) -----------------------------------------------------
@app.command()
def extract(
    corpus: str = typer.Option(
        None, help="Corpus adapter name (ravdess, ...); with --manifest it only names the cache folder."
    ),
    root: str = typer.Option(
        None,
        help="The corpus folder. Default: with --manifest the folder recorded beside it "
        "(<manifest>.root; the CSV's folder if there is none), else $BGRPO_SER_DATA/<corpus>, else data/<corpus>.",
    ),
    manifest: str = typer.Option(None, help="A manifest CSV (from `cli.py manifest`) instead of running the adapter."),
    model: str = typer.Option(
        None,
        help="Encoder: base (default, embedded), tiny.en (embedded), a CTranslate2/transformers dir, or a hub id; "
        "a local WavLM / HuBERT / wav2vec 2.0 folder (or hub id already downloaded) encodes each utterance whole.",
    ),
    window: str = typer.Option(
        "full",
        help="full: Whisper's 30 s padded input; trim: only the real audio frames; "
        "padN: padded to the next N s (docs/EXTRACTION.md).",
    ),
    cache_dir: str = typer.Option("cache", help="Caches go to <cache-dir>/<corpus>/<encoder-tag>-<window>.h5."),
    out: str = typer.Option(None, help="Exact output path (overrides --cache-dir)."),
    device: str = typer.Option("auto", help="auto (cuda when present), cpu, cuda, cuda:1, ..."),
    batch_size: int = typer.Option(
        None, help="At most this many utterances per batch (default 256; batches are sized by --frame-budget)."
    ),
    frame_budget: int = typer.Option(
        None,
        help="Mel frames of encoder input per batch, padding included (default: 64 full windows on a GPU, 4 on a CPU).",
    ),
    dtype: str = typer.Option("auto", help="auto (bf16 or fp16 on a GPU, fp32 on a CPU), float32, float16, bfloat16."),
    workers: int = typer.Option(
        None,
        help="DataLoader workers for decode and resample (default: every core but one on a GPU machine, 1 on a CPU).",
    ),
    shard: str = typer.Option(
        None, help="i/n: encode the i-th of n slices into its own part file (default RANK/WORLD_SIZE under torchrun)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a cache (or unfinished run) made with another encoder/window/manifest."
    ),
    include_song: bool = INCLUDE_SONG,
    n_folds: int = N_FOLDS,
    speaker_regex: str = SPEAKER_REGEX,
    text_regex: str = TEXT_REGEX,
    label_map: str = LABEL_MAP,
    four_class: bool = FOUR_CLASS,
    merge_excited: bool = MERGE_EXCITED,
    allow_missing: bool = ALLOW_MISSING,
    language: str = LANGUAGE,
    strict: bool = STRICT,
    speakers: str = SPEAKERS,
) -> None:
    """Encode a corpus once into an HDF5 cache of pooled Whisper hidden states (resumable).

    With --corpus it runs the corpus adapter first (it takes every option `manifest` takes)."""
    import os

    from data_manifests import ManifestError, audio_root, check_trainable, manifest_root, prepare, read_manifest
    from pipeline.encoder import resolve_model
    from pipeline.extract import cache_path, extract as run
    from pipeline.shards import parse_shard
    from pipeline.hub_encoder import is_waveform_model

    options = {name: value for name, value in locals().items() if name in ADAPTER_OPTIONS}
    if manifest:
        table = read_manifest(manifest)
        root = root or str(manifest_root(manifest))
        corpus = corpus or str(table["corpus"].iloc[0])
    elif corpus:
        with _reported_warnings():
            root = _corpus_root(corpus, root)
            table = prepare(corpus, root, **options)
        check_trainable(table, corpus)
        root = str(audio_root(corpus, root))
    else:
        raise ManifestError("give --corpus NAME [--root DIR], or --manifest FILE.csv")
    where = parse_shard(shard)
    if where[1] > 1 and device == "auto" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    if is_waveform_model(model):  # WavLM, HuBERT, wav2vec 2.0 from local weights: each utterance whole
        from pipeline.hub_encoder import WINDOW, extract_waveform_model

        path = Path(out) if out else cache_path(cache_dir, corpus, Path(model).name, WINDOW)
        typer.echo(f"wrote {extract_waveform_model(table, root, path, model, device, typer.echo)}")
        return
    _, _, tag = resolve_model(model)
    path = Path(out) if out else cache_path(cache_dir, corpus, tag, window)
    result = run(table, root, path, model=model, window=window, device=device, batch_size=batch_size,
                 frame_budget=frame_budget, dtype=dtype, workers=workers, shard=where, overwrite=overwrite,
                 log=typer.echo)
    typer.echo(f"wrote {result.path}" if not result.already_complete else f"cache {result.path}")
    for utt, reason in list(result.failed.items())[:20]:
        typer.echo(f"  failed {utt}: {reason}")
    typer.echo(result.final_line())
    raise typer.Exit(code=1 if result.failed else 0)


@app.command()
def segment(
    inputs: list[str] = typer.Argument(..., help="Audio files or folders of them (any format soundfile reads: "
                                       "wav, flac, ogg, mp3, ...)."),
    out: str = typer.Option(..., help="The manifest CSV to write (e.g. manifests/calls.csv); its corpus folder "
                            "is recorded in <out>.root."),
    threshold: float = typer.Option(SEGMENT.threshold, help="Speech starts where the VAD's probability reaches "
                                    "this (0-1; lower finds quieter speech)."),
    min_speech: float = typer.Option(SEGMENT.min_speech, help="Seconds: shorter bursts of speech are dropped "
                                     "(clicks, breaths)."),
    min_silence: float = typer.Option(SEGMENT.min_silence, help="Seconds: shorter pauses do not end a segment."),
    padding: float = typer.Option(SEGMENT.padding, help="Seconds added before and after each segment (at most "
                                  "half the pause to the next)."),
    min_segment: float = typer.Option(SEGMENT.min_segment, help="Seconds: shorter segments (after padding) are "
                                      "dropped, too short for an emotion."),
    max_segment: float = typer.Option(SEGMENT.max_segment, help="Seconds (<= 30, one encoder input): longer "
                                      "speech is split at its quietest point."),
    channels: str = typer.Option("mix", help="mix: downmix stereo to one stream; split: each channel its own "
                                 "speaker (calls)."),
    speaker_regex: str = typer.Option(None, help="Speaker of each file from a regex over its name (named group "
                                      "`speaker` or the first group); default: each recording is its own speaker."),
    corpus: str = typer.Option(None, help="The corpus name in the manifest (names the cache folder of `extract`); "
                               "default: OUT's stem."),
    language: str = typer.Option("", help="Language code written to the manifest (e.g. en)."),
    root: str = typer.Option(None, help="The folder the manifest's paths are relative to (default: the inputs' "
                             "common folder)."),
    shard: str = typer.Option(None, help="i/n: segment every n-th file from the i-th into a part file (default "
                              "RANK/WORLD_SIZE under torchrun); the last shard to finish writes the manifest."),
) -> None:
    """Cut long recordings into speech segments (a voice-activity detector): one unlabelled manifest row each.

    Resumable: the same command skips recordings already segmented (in OUT or a part file) and adds new
    files (docs/SEGMENTS.md)."""
    from pipeline.segment import segment_files
    from pipeline.shards import parse_shard

    if channels not in ("mix", "split"):
        raise UserError(f"--channels {channels!r}: choose mix or split")
    settings = SegmentSettings(threshold, min_speech, min_silence, padding, min_segment, max_segment)
    run = segment_files(inputs, out, settings, channels == "split", speaker_regex, parse_shard(shard), corpus,
                        language, root, log=typer.echo)
    typer.echo(f"{run.segments} segments from {run.segmented} recordings ({run.audio_seconds / 3600:.3f} h) in "
               f"{run.wall_seconds:.1f} s ({run.audio_seconds / max(run.wall_seconds, 1e-9):.0f}x real time); "
               f"{run.done_before} already done, {len(run.no_speech)} without speech, {len(run.failed)} unreadable")
    if run.merged:
        typer.echo(f"wrote {run.out} (then: python cli.py extract --manifest {run.out})")
    if run.failed:
        typer.echo(f"could not read {len(run.failed)} files (the others are segmented):", err=True)
        for path, reason in run.failed.items():
            typer.echo(f"  {path}: {reason}", err=True)
        raise typer.Exit(code=1)


@app.command()
def info(cache: str = typer.Argument(..., help="A cache .h5 written by `extract`.")) -> None:
    """Print what a cache holds: shape, encoder/window/manifest identity, labels, failures."""
    from pipeline.cache import describe

    typer.echo(describe(cache))


@app.command()
def merge(
    parts: list[str] = typer.Argument(..., help="Shard part files (<tag>.part-i-of-n.h5)."),
    out: str = typer.Option(..., help="The merged cache path."),
) -> None:
    """Join the part files of `extract --shard i/n` into one cache (manifest order)."""
    from pipeline.cache import merge as run

    typer.echo(f"wrote {run(parts, out)}")


@app.command()
def rechunk(cache: str = typer.Argument(..., help="A cache .h5 written before the layer-per-chunk layout.")) -> None:
    """Rewrite an older cache so that one hidden state is one contiguous read (same vectors and
    fingerprint; atomic: the old file stays until the new one is complete and checked)."""
    from pipeline.cache import rechunk as run

    changed = run(cache)
    typer.echo(f"rewrote {cache}: one hidden state per chunk" if changed else
               f"{cache} already has one hidden state per chunk: nothing to do")


@app.command("cache-import")
def cache_import(
    folder: str = typer.Argument(
        ..., help="Folder of <utt_id>.npy files, one [D], [T, D] or \\[layers, D] array each."
    ),
    table: str = typer.Option(
        ..., "--table", help="CSV of the utterances: utt_id, label, speaker (+ fold, split, text_id...)."
    ),
    out: str = typer.Option(..., help="The cache to write (.h5)."),
    encoder_id: str = typer.Option(
        ..., help="What made the features (e.g. emotion2vec_base); caches of other ids never mix."
    ),
    first_axis: str = typer.Option(
        "frames", help="What the first axis of a 2-D array is: frames (mean-pooled) or layers."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out (default: refuse)."),
) -> None:
    """Turn features of any encoder (EmoBox's per-utterance .npy files) into a cache for train / ablate / label."""
    from pipeline.cache import describe
    from pipeline.npy_import import import_npy

    typer.echo(describe(import_npy(folder, table, out, encoder_id, first_axis, overwrite=overwrite)))


# --- train / recipe / ablate / predict (trainer) -------------------------------------------
# where train / ablate look for the cache when --cache is not given (pipeline.locate.find_cache)
CORPUS = typer.Option(None, help="Instead of --cache: this corpus's cache in --cache-dir.")
MODEL = typer.Option(None, help="With --corpus: encoder (base, tiny.en).")
WINDOW = typer.Option(None, help="With --corpus: full or trim.")
CACHE_DIR = typer.Option("cache", help="With --corpus: where `extract` wrote.")


@app.command()
def train(
    cache: str = typer.Option(None, help="HDF5 cache from `extract` (default: found, see --corpus)."),
    corpus: str = CORPUS,
    model: str = MODEL,
    window: str = WINDOW,
    cache_dir: str = CACHE_DIR,
    method: str = typer.Option(None, metavar="A,B", help=flag_help("methods")),
    reward: str = typer.Option(None, help=flag_help("reward")),
    labeled_fraction: float = typer.Option(None, help=flag_help("labeled_fraction")),
    seeds: str = typer.Option(None, metavar="A,B", help=flag_help("seeds")),
    folds: str = typer.Option(None, metavar="A,B", help=flag_help("folds")),
    transductive: bool = typer.Option(None, "--transductive", help=flag_help("transductive"), show_default=False),
    source: str = typer.Option(None, metavar="S.h5,..", help="Labelled corpora (source_corpora)."),
    classes: str = typer.Option(None, metavar="A,B", help="Classes in play (classes)."),
    workers: int = typer.Option(None, help=flag_help("workers")),
    out: str = typer.Option(None, help="Run dir (default: runs/train-<time>)."),
    recipe: str = typer.Option(None, help="A TOML file of field = value lines (`recipe` prints them all)."),
    set_: list[str] = typer.Option(
        None, "--set", metavar="K=V", help="field=value for any recipe field, repeatable (e.g. --set refit_rounds=5)."
    ),
) -> None:
    """Train the methods over folds x seeds; print a table and write a run dir.

    Settings apply in order: the recipe defaults, --recipe FILE, --set, then the flags below.
    `python cli.py recipe` lists every field with its default and help.
    """
    import os
    import time

    from pipeline.locate import find_cache
    from trainer.config import parse_set, read_recipe
    from trainer.report import format_table
    from trainer.run import train as run

    flags = {"methods": method and method.split(","), "reward": reward, "labeled_fraction": labeled_fraction,
             "seeds": seeds, "folds": folds and folds.split(","), "transductive": transductive, "workers": workers,
             "source_corpora": source, "classes": classes}
    settings = {**(read_recipe(recipe) if recipe else {}), **parse_set(set_ or []),
                **{k: v for k, v in flags.items() if v is not None}}
    cfg = TrainConfig.from_dict(settings)
    out_dir = out or f"runs/train-{time.strftime('%Y%m%d-%H%M%S')}"
    if not cache:  # found, not given: say which, and pin it (the trainer keys its memo by path)
        cache = find_cache(corpus, model, window, cache_dir).resolve()
        typer.echo(f"training on {os.path.relpath(cache)} (the cache found in {cache_dir}/; "
                   "--cache FILE.h5 picks another)")
    with _reported_warnings():
        summary = run(cfg, cache, out_dir)
    if "classes" in summary:
        c = summary["classes"]
        typer.echo(f"classes in play: {', '.join(c['in_play'])} ({c['reason']}); {c['test_rows_left_out']} test "
                   "row(s) of other classes left out of scoring (the pool keeps them)")
    for src in summary.get("source_corpora", []):
        typer.echo(f"labelled rows from {src['path']}: {src['rows_used']['max']} "
                   f"({', '.join(f'{k} {n}' for k, n in src['rows_per_class'].items())})")
    typer.echo(format_table(summary))
    typer.echo(f"wrote {out_dir} ({summary['wall_seconds']:.1f} s)")


@app.command()
def recipe() -> None:
    """Print every training field with its default and help, as a recipe file for `train --recipe`."""
    from trainer.config import recipe_text

    typer.echo(recipe_text(), nl=False)


@app.command()
def ablate(
    cache: str = typer.Option(
        None, help="HDF5 cache from `extract` (audio is never read; default: found as for `train`)."
    ),
    corpus: str = CORPUS,
    model: str = MODEL,
    window: str = WINDOW,
    cache_dir: str = CACHE_DIR,
    grid: str = typer.Option(..., help="grid.toml: \\[base] fixed config fields, \\[grid] field = \\[values, ...]."),
    workers: int = typer.Option(2, help="Parallel processes over settings x folds x seeds."),
    out: str = typer.Option(None, help="Output directory (default runs/ablate-<time>)."),
) -> None:
    """Run a grid of any train settings x folds x seeds; write ablation.csv / ablation.md."""
    import time

    from pipeline.locate import find_cache
    from trainer.ablate import ablate as run, read_grid
    from trainer.report import table_legend

    out_dir = out or f"runs/ablate-{time.strftime('%Y%m%d-%H%M%S')}"
    cache = cache or find_cache(corpus, model, window, cache_dir).resolve()
    with _reported_warnings():
        table = run(cache, grid, out_dir, workers)
    typer.echo((Path(out_dir) / "ablation.md").read_text())
    base = read_grid(grid)[0]
    typer.echo(table_legend("each row's folds x seeds (their number: after the / of collapsed)",
                            table["gap_recovered"].notna().any(),
                            base.get("collapse_entropy", TrainConfig.collapse_entropy)))
    typer.echo(f"wrote {out_dir}/ablation.csv, ablation.md, all_runs.csv")


@app.command()
def predict(
    audio: list[str] = typer.Argument(
        ...,
        help="Audio files (any format soundfile reads), folders (their "
        ".wav/.flac/.ogg files, recursively) or CSV tables with a path column (a "
        "manifest: paths relative to its recorded root; its speaker / text_id columns "
        "are used where no regex is given; a segment manifest's rows are its spans).",
    ),
    run: str = typer.Option(..., help="A run directory written by `train` (uses its models.safetensors)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    csv: str = typer.Option(None, help="Also write the table to this CSV."),
    speaker_regex: str = typer.Option(
        None,
        help="Speaker of each file from its name (first group), for "
        "speaker_norm runs; default: no speaker known (see --speaker-means).",
    ),
    text_regex: str = typer.Option(
        None,
        help="Prompt (text_id) of each file from its name (first group), for "
        "text_norm runs; files it does not match, or prompts the run never saw, keep their content.",
    ),
    speaker_means: str = typer.Option(
        "shrunk",
        help="speaker_norm runs: shrunk (each speaker's mean pulled toward the "
        "training speakers' by how few files it has; files without a speaker each alone) "
        "| own (each speaker's own mean, all files one speaker without --speaker-regex: "
        "how `train` scored its test speakers).",
    ),
    segment: bool = typer.Option(
        False,
        help="Cut every file into speech segments first (files over 30 s always "
        "are): one row per segment, a recording's segments centred as one speaker.",
    ),
    timeline: str = typer.Option(
        None, help="Also draw the segmented files' emotions over time to this PNG (one panel per file)."
    ),
) -> None:
    """Label audio files with a trained run (its encoder, window and fold x seed policies, averaged).

    A file over 30 s (every file with --segment) gets one row per speech segment (start, end in seconds;
    docs/SEGMENTS.md). Exit 1 when some files could not be read (the others are labelled), 2 when none could."""
    from trainer.predict import load_run, speakers_from_names, text_ids_from_names
    from trainer.predict_inputs import audio_inputs, unread_report

    inputs = audio_inputs(audio)
    paths = inputs.paths
    speakers = speakers_from_names(paths, speaker_regex) if speaker_regex else inputs.speakers()
    text_ids = text_ids_from_names(paths, text_regex) if text_regex else inputs.text_ids()
    trained, unreadable = load_run(run), {}
    table = trained.predict_proba(
        paths,
        speakers,
        text_ids,
        device,
        unreadable,
        speaker_means,
        "--text-regex, the prompt from the file name, or a CSV of the files with a text_id column",
        segment,
        spans=inputs.spans,
    )
    if table.empty and unreadable:
        raise UserError(unread_report(unreadable, len(paths)))
    if csv:
        from data_manifests.storage import write_text_atomic

        write_text_atomic(Path(csv), table.to_csv(index=False))
    if timeline:
        from trainer.timeline import write_timeline

        drawn = write_timeline(table, trained.classes, timeline)
        typer.echo(f"wrote {drawn}" if drawn else f"--timeline: no file was segmented, {timeline} not written",
                   err=True)
    classes = trained.classes
    typer.echo("file\tstart\tend\tpredicted label\tprobability of each class (mean over the run's fold x seed "
               "policies)")
    for _, row in table.iterrows():
        probs = " ".join(f"{c}={row[c]:.3f}" for c in classes)
        typer.echo(f"{row['file']}\t{row['start']:.2f}\t{row['end']:.2f}\t{row['label']}\t{probs}")
    if unreadable:
        typer.echo(unread_report(unreadable, len(paths)), err=True)
        raise typer.Exit(code=1)


# --- demo ----------------------------------------------------------------------------------
@app.command()
def demo(
    out: str = typer.Option("demo_out", help="Folder for everything the demo writes."),
    seed: int = typer.Option(0, help="Seed of the generated corpus and of training."),
    seeds: int = typer.Option(3, help="Training seeds per fold (more = steadier mean, slower)."),
    speakers: int = typer.Option(8, help="Synthetic speakers (eSpeak voices), 4..8; folds = 4 speaker groups."),
    sentences: int = typer.Option(4, help="Sentences per speaker and class, 1..8."),
    takes: int = typer.Option(2, help="Takes per sentence (each with its own prosody jitter)."),
    keep: bool = typer.Option(
        False, "--keep", help="Keep the generated audio (default: deleted once encoded; the cache holds it)."
    ),
) -> None:
    """Generate a synthetic emotional-speech corpus (eSpeak NG), then manifest -> extract -> train on it.

    The corpus is synthetic: 8 eSpeak voices say neutral sentences as neutral/happy/sad/angry,
    which differ only in rate, pitch, pitch range and loudness (with jitter). It shows the
    pipeline working end to end offline; its scores say nothing about real emotional speech.
    """
    from trainer.demo import run_demo
    from trainer.report import format_table

    with _reported_warnings():
        done = run_demo(out, seed, seeds, speakers, sentences, takes, keep, log=typer.echo)
    typer.echo("\nDemo results (synthetic eSpeak corpus):")
    typer.echo(format_table(done.summary))
    typer.echo("\nwritten:")
    for path in done.written:
        typer.echo(f"  {path}")



# --- stress corpora and label (trainer, pipeline) ------------------------------------------
@app.command()
def stress(
    cache: str = typer.Option(..., help="A complete cache to derive from (never modified)."),
    kind: str = typer.Option(
        ...,
        help="confounded | unbalanced | few-per-speaker | text-confounded | unique-text (see "
             "pipeline/stress_corpora.py).",
    ),
    out: str = typer.Option(..., help="Derived cache .h5 to write (same format; `train` runs on it unchanged)."),
    seed: int = typer.Option(0, help="Seed of the row choice."),
) -> None:
    """Derive a stress corpus (speaker-confounded, natural-like unbalanced, few utterances per speaker)."""
    from pipeline.stress_corpora import derive, describe_stress

    path, table = derive(cache, kind, out, seed)
    typer.echo(f"wrote {path}: {describe_stress(table)}")


@app.command()
def shift(
    manifest: str = typer.Option(..., help="Manifest of the corpus to copy (its audio is read, never modified)."),
    kind: str = typer.Option(..., help="telephone (8 kHz band, 8-bit mu-law) | noise (white noise at --snr dB) | "
                                       "codec (low-bitrate MP3) | speed (speed perturbation by --factor)."),
    out: str = typer.Option(..., help="Folder for the shifted FLAC copy and its manifest.csv."),
    snr: float = typer.Option(10.0, help="Signal-to-noise ratio of --kind noise, in dB."),
    factor: float = typer.Option(0.9, help="Speed of --kind speed (0.9: 10% slower and lower)."),
) -> None:
    """A channel-shifted copy of a corpus (then `extract --manifest OUT/manifest.csv`), e.g. an external pool."""
    from pipeline.channel_shift import shift_corpus

    path = shift_corpus(manifest, kind, out, snr, factor)
    typer.echo(f"wrote {path}: encode it with `python cli.py extract --manifest {path} --window trim --out CACHE.h5`")


@app.command()
def label(
    cache: str = typer.Option(..., help="The corpus's cache (from `extract`)."),
    labels: str = typer.Option(
        None,
        help="CSV with columns utt_id,label: the labels you have (empty label = unlabelled); optional with --source.",
    ),
    out: str = typer.Option(
        None,
        help="CSV to write: every utterance with its label (given, or predicted with probability and runner-up). "
        "Required without --serve; with it, where the page's export writes (default: LABELS with -labelled before "
        ".csv).",
    ),
    next_out: str = typer.Option(
        None, help="CSV of the utterances to annotate next (default: OUT with -to-label before .csv)."
    ),
    n_next: int = typer.Option(20, "--next", help="How many utterances to suggest for annotation."),
    seeds: str = typer.Option("0,1,2", help="Seeds whose probabilities are averaged."),
    unlabeled_cache: str = typer.Option(
        None,
        help="Comma list of caches of other unlabelled audio (same encoder and window) to add to the pool; each is "
             "kept only where it helps (source_gate).",
    ),
    source: str = typer.Option(
        None,
        help="Comma list of labelled source corpora (caches, same encoder and window): "
        "their labels train the model (source_corpora; docs/CROSS_CORPUS.md).",
    ),
    serve: bool = typer.Option(
        False,
        help="Label in a browser: a local page that plays each suggestion, saves every label "
        "to LABELS as it is given and retrains after each batch.",
    ),
    port: int = typer.Option(8000, min=0, max=65535, help="--serve: the port (0: any free one)."),
    host: str = typer.Option(
        "127.0.0.1",
        help="--serve: the address to bind (default: this machine only); the page "
        "answers only requests addressed to it, 127.0.0.1 or localhost.",
    ),
    root: str = typer.Option(
        None,
        help="--serve: the corpus folder the audio paths are relative to (default: --manifest's "
        "recorded root, else $BGRPO_SER_DATA/<corpus>, else data/<corpus>).",
    ),
    manifest: str = typer.Option(
        None, help="--serve: the manifest the cache was extracted from (its recorded corpus root)."
    ),
    batch: int = typer.Option(10, help="--serve: labels between automatic retrains."),
    cv_folds: int = typer.Option(
        3, help="--serve: folds (by speaker) of the quality estimate over the given labels; 0: none."
    ),
    classes: str = typer.Option(
        None,
        help="--serve: the label buttons, comma-separated (default: the cache's and "
        "LABELS's labels); with --source: the classes in play (default: the sources' classes).",
    ),
) -> None:
    """Label my corpus: train transductively on everything from the labels you have, predict the rest."""
    from data_manifests.storage import write_text_atomic
    from trainer.label_corpus import label_corpus
    from trainer.next_to_label import DEFAULT_RULE

    if serve:
        if source or not labels:
            raise UserError("label --serve needs --labels FILE.csv and does not take --source yet")
        from trainer.labelling_page.app import serve as serve_page
        from trainer.labelling_page.session import LabellingSession, corpus_audio_root

        session = LabellingSession(cache, Path(labels), corpus_audio_root(cache, root, manifest),
                                   Path(out) if out else Path(labels).with_name(Path(labels).stem + "-labelled.csv"),
                                   TrainConfig(seeds=seeds, unlabeled_cache=unlabeled_cache), batch, n_next, cv_folds,
                                   classes.split(",") if classes else [])
        serve_page(session, host, port, log=lambda line: typer.echo(line, err=True))
        return
    if out is None:
        raise UserError("give --out FILE.csv (or --serve to label in a browser)")
    cfg = TrainConfig(seeds=seeds, unlabeled_cache=unlabeled_cache, source_corpora=source,
                      classes=classes if source else None)
    table, suggest, info = label_corpus(cache, labels, cfg, n_next,
                                      log=lambda line: typer.echo(line, err=True))
    out_path = Path(out)
    nxt = Path(next_out) if next_out else out_path.with_name(out_path.stem + "-to-label.csv")
    write_text_atomic(out_path, table.to_csv(index=False))
    write_text_atomic(nxt, suggest.to_csv(index=False))
    c = info["choice"]
    typer.echo(
        f"{info['n_given']} given labels ({', '.join(info['classes'])}), {info['n_predicted']} utterances predicted; "
        f"layer {c['layer']}, speaker norm {'on' if c['speaker_norm'] else 'off'} ({c['reason']}); "
        f"text norm {'on' if c['text_norm'] else 'off'} ({c['text_reason']})"
    )
    typer.echo("predicted: " + ", ".join(f"{k} {v}" for k, v in info["predicted_counts"].items()))
    typer.echo(
        f"wrote {out_path} (every utterance) and {nxt} ({len(suggest)} to annotate next, by the {DEFAULT_RULE} rule)"
    )


if __name__ == "__main__":
    app()
