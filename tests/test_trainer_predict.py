"""`predict` end to end on generated audio: encode a two-class tone corpus with the embedded
Whisper base, train a run on its cache, then label new files through the CLI."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from pipeline.cache import write_cache_arrays
from pipeline.extract import embed_files
from trainer.config import TrainConfig
from trainer.method.policy import run_metadata, stored_run
from trainer.run import train

SR = 16000


def tone(path, freq, amp, seconds=0.5):
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, amp * np.sin(2 * np.pi * freq * t) * np.hanning(len(t)), SR)
    return str(path)


@pytest.fixture(scope="module")
def tone_run(tmp_path_factory):
    """Classes 'low' (150-300 Hz) and 'high' (2.5-4 kHz); a 'speaker' is a loudness level."""
    from pipeline.encoder import EncoderError, load_encoder

    try:
        enc = load_encoder("base", "cpu")
    except EncoderError as error:
        pytest.skip(f"embedded Whisper base not installed: {error}")
    d = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    rows, paths = [], []
    for s, amp in enumerate([0.1, 0.2, 0.3, 0.5]):
        for label, (lo, hi) in {"low": (150, 300), "high": (2500, 4000)}.items():
            for k in range(4):
                paths.append(tone(d / f"s{s}_{label}{k}.wav", rng.uniform(lo, hi), amp))
                rows.append({"utt_id": f"s{s}_{label}{k}", "label": label, "speaker": f"s{s}", "fold": s % 2})
    feats = embed_files(paths, model="base", window="trim", encoder=enc)
    cache = write_cache_arrays(d / "tones.h5", feats, pd.DataFrame(rows), {"encoder_id": "base", "window": "trim",
                                                                               "weights_sha256": enc.weights_sha256})
    cfg = TrainConfig(methods=("bgrpo", "supervised"), seeds=(0,), labeled_fraction=0.5, epochs=2, warmup_epochs=30)
    train(cfg, cache, d / "run")
    return d


def test_predict_labels_new_generated_files(tone_run):
    from cli import app

    files = [tone(tone_run / "new_low.wav", 220, 0.25), tone(tone_run / "new_high.wav", 3300, 0.4)]
    result = CliRunner().invoke(app, ["predict", "--run", str(tone_run / "run"), "--device", "cpu",
                                      "--csv", str(tone_run / "pred.csv"), *files])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tone_run / "pred.csv")
    assert table.label.tolist() == ["low", "high"]
    assert np.allclose(table[["high", "low"]].sum(axis=1), 1.0, atol=1e-5)
    assert "new_low.wav\t0.00\t0.50\tlow\thigh=" in result.output
    assert table[["start", "end"]].values.tolist() == [[0.0, 0.5], [0.0, 0.5]]


def test_predict_labels_every_readable_file_then_lists_the_others(tone_run):
    from cli import app

    broken = tone_run / "broken.wav"
    broken.write_bytes(b"RIFF not audio")
    good = [tone(tone_run / "good_low.wav", 200, 0.25), tone(tone_run / "good_high.wav", 3000, 0.4)]
    files = [good[0], str(broken), str(tone_run / "nope.wav"), good[1]]
    result = CliRunner().invoke(app, ["predict", "--run", str(tone_run / "run"), "--device", "cpu",
                                      "--csv", str(tone_run / "some.csv"), *files])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("file\tstart\tend\tpredicted label\tprobability of each class")
    assert "good_low.wav\t0.00\t0.50\tlow\t" in result.output and "good_high.wav\t0.00\t0.50\thigh\t" in result.output
    assert "could not read 2 of 4 files" in result.output
    assert f"  {broken}: unreadable" in result.output and f"{tone_run / 'nope.wav'}: missing" in result.output
    assert pd.read_csv(tone_run / "some.csv")["label"].tolist() == ["low", "high"]


def test_predict_without_a_trained_run_fails_cleanly(tmp_path):
    from cli import app

    result = CliRunner().invoke(app, ["predict", "--run", str(tmp_path), str(Path(__file__))])
    assert result.exit_code == 2 and "models.safetensors" in result.output


def test_predict_groups_speakers_by_regex_and_names_unmatched_files(tone_run):
    from cli import app

    files = sorted(str(p) for p in tone_run.glob("s[23]_*.wav"))
    result = CliRunner().invoke(app, ["predict", "--run", str(tone_run / "run"), "--device", "cpu",
                                      "--speaker-regex", r"^(s\d)_", "--csv", str(tone_run / "spk.csv"), *files])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tone_run / "spk.csv")
    truth = ["high" if "high" in Path(p).name else "low" for p in table.file]
    assert (table.label == truth).mean() >= 0.9
    bad = CliRunner().invoke(app, ["predict", "--run", str(tone_run / "run"), "--speaker-regex", r"^(x\d)_", files[0]])
    assert bad.exit_code == 2 and Path(files[0]).name in bad.output


def test_predict_refuses_a_run_made_with_other_encoder_weights(tone_run, tmp_path):
    """The run records its cache's encoder weights; predict with other weights stops (exit 2)."""
    from cli import app

    run = tone_run / "run"
    meta = json.loads((run / "results.json").read_text())["cache"]
    assert len(meta["weights_sha256"]) == 64
    other = tmp_path / "other"
    shutil.copytree(run, other)
    with safe_open(str(run / "models.safetensors"), framework="pt") as f:
        stored, arch = stored_run(f.metadata())
    stored["weights_sha256"] = "0" * 64
    save_file(load_file(str(run / "models.safetensors")), str(other / "models.safetensors"),
              metadata=run_metadata(stored, arch))
    result = CliRunner().invoke(app, ["predict", "--run", str(other), "--device", "cpu",
                                      tone(tmp_path / "x.wav", 220, 0.25)])
    assert result.exit_code == 2, result.output
    assert "the vectors were made with weights 000000000000..." in result.output
    assert "use the same model files, or re-extract and retrain" in result.output


def test_speakers_from_file_names_take_the_first_group_or_the_match():
    from trainer.predict import speakers_from_names

    assert speakers_from_names(["a/s1_x.wav", "s2_y.wav"], r"^(s\d)_") == ["s1", "s2"]
    assert speakers_from_names(["s1_x.wav"], r"s\d") == ["s1"]
    with pytest.raises(ValueError, match="does not match 1 file name"):
        speakers_from_names(["s1_x.wav", "other.wav"], r"^(s\d)_")


def test_load_run_is_the_python_face_of_predict(tone_run):
    """load_run(DIR).predict / predict_proba: the table `predict --csv` writes, as DataFrames."""
    from cli import app
    from trainer.predict import load_run

    files = [tone(tone_run / "py_low.wav", 220, 0.25), tone(tone_run / "py_high.wav", 3300, 0.4)]
    run = load_run(tone_run / "run")
    proba = run.predict_proba(files, device="cpu")
    assert proba.columns.tolist() == ["file", "start", "end", "label", *run.classes]
    assert proba.label.tolist() == ["low", "high"]
    labels = run.predict(files, device="cpu")
    assert labels.columns.tolist() == ["file", "start", "end", "label", "probability"]
    np.testing.assert_allclose(labels.probability, proba[run.classes].max(axis=1))
    CliRunner().invoke(app, ["predict", "--run", str(tone_run / "run"), "--device", "cpu",
                             "--csv", str(tone_run / "py.csv"), *files])
    pd.testing.assert_frame_equal(pd.read_csv(tone_run / "py.csv"), proba, check_dtype=False)


def test_predict_on_a_runs_test_files_reproduces_its_test_predictions(tone_run, tmp_path):
    """Train and serve build the policy input alike: `predict --speaker-means own` on fold 0's test
    files (grouped by speaker, as the cache's rows are) gives the labels the run itself wrote for them."""
    from cli import app

    cfg = TrainConfig(methods=("bgrpo", "supervised"), seeds=(0,), folds=("0",), labeled_fraction=0.5, epochs=2,
                      warmup_epochs=30)
    train(cfg, tone_run / "tones.h5", tmp_path / "run")
    written = pd.read_csv(tmp_path / "run" / "predictions.csv", dtype=str)
    written = written[(written.method == "bgrpo") & (written.fold == "0")]
    assert len(written) == 16  # the test fold: speakers s0 and s2, 8 files each
    files = [str(tone_run / f"{u}.wav") for u in written.utt_id]
    result = CliRunner().invoke(app, ["predict", "--run", str(tmp_path / "run"), "--device", "cpu",
                                      "--speaker-regex", r"^(s\d)_", "--speaker-means", "own",
                                      "--csv", str(tmp_path / "pred.csv"), *files])
    assert result.exit_code == 0, result.output
    served = pd.read_csv(tmp_path / "pred.csv", dtype=str)
    assert served.label.tolist() == written.pred.tolist()
    # and the probabilities: the saved policy on the run's own test tensors (FoldData.x_test)
    from trainer.inputs.fold_jobs import prepare_fold
    from trainer.method.policy import load_policies

    policies, meta = load_policies(tmp_path / "run" / "models.safetensors")
    job = prepare_fold(cfg, str(tone_run / "tones.h5"), "0", 0, "cpu")
    assert job.table.utt_id.iloc[job.split.test].tolist() == written.utt_id.tolist()
    (policy,) = policies.values()
    own = policy.probs(job.data.x_test[:]).detach().numpy()
    np.testing.assert_allclose(served[meta["classes"]].to_numpy(float), own, rtol=0, atol=1e-6)


def test_folders_and_tables_become_their_audio_files(tmp_path):
    """A folder: its audio files, recursively and sorted (hidden files and other suffixes skipped); a
    CSV: its path column, relative paths read from its recorded root (else its folder), its speaker and
    text_id columns kept; files given alone keep their path."""
    from data_manifests.home import write_manifest_root
    from trainer.predict_inputs import audio_inputs

    for name in ["rec/b/2.flac", "rec/a/1.wav", "rec/a/.hidden.wav", "rec/notes.txt", "rec/c/3.OGG", "corpus/x.wav"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    table = tmp_path / "lists/files.csv"
    table.parent.mkdir()
    table.write_text(f"path,speaker,text_id\nx.wav,s1,01\n{tmp_path / 'rec/a/1.wav'},s2,\n")
    write_manifest_root(table, tmp_path / "corpus")
    got = audio_inputs([tmp_path / "rec", table, "alone.wav"])
    assert got.paths == [str(tmp_path / p) for p in ["rec/a/1.wav", "rec/b/2.flac", "rec/c/3.OGG", "corpus/x.wav",
                                                      "rec/a/1.wav"]] + ["alone.wav"]
    assert got.text_ids() == ["", "", "", "01", "", ""]
    with pytest.raises(ValueError, match=r"speakers of 2 file\(s\) come from a table's speaker column, but 4 file\(s\) "
                                         rf"have none, e.g. {tmp_path / 'rec/a/1.wav'}"):
        got.speakers()
    only = audio_inputs([table])
    assert only.speakers() == ["s1", "s2"] and only.paths[0] == str(tmp_path / "corpus/x.wav")
    assert audio_inputs(["a.wav"]).speakers() is None and audio_inputs(["a.wav"]).text_ids() is None
    (tmp_path / "empty/deep").mkdir(parents=True)
    with pytest.raises(ValueError, match=rf"folder {tmp_path / 'empty'} holds no audio file \(.wav/.flac/.ogg"):
        audio_inputs([tmp_path / "empty"])
    (tmp_path / "bad.csv").write_text("file,label\na.wav,sad\n")
    with pytest.raises(ValueError, match=r"bad.csv has no path column \(found file, label\)"):
        audio_inputs([tmp_path / "bad.csv"])
    unrooted = tmp_path / "rec/list.csv"  # no .root beside it: paths relative to its own folder
    unrooted.write_text("path\nb/2.flac\n")
    assert audio_inputs([unrooted]).paths == [str(tmp_path / "rec/b/2.flac")]


def test_the_unread_report_never_mentions_others_that_do_not_exist():
    from trainer.predict_inputs import unread_report

    assert unread_report({"a.txt": "unreadable: x"}, 1) == "could not read a.txt: unreadable: x"
    assert unread_report({"a": "missing", "b": "empty"}, 2) == ("could not read any of the 2 files:\n"
                                                                "  a: missing\n  b: empty")
    assert unread_report({"a": "missing"}, 3) == ("could not read 1 of 3 files (the others are labelled above):\n"
                                                  "  a: missing")


def test_predict_takes_a_folder_and_a_manifest_and_exits_2_when_nothing_is_read(tone_run, tmp_path):
    from cli import app

    folder = tmp_path / "new"
    (folder / "deep").mkdir(parents=True)
    files = [tone(folder / "deep/a_low.wav", 220, 0.25), tone(folder / "b_high.wav", 3300, 0.4)]
    (folder / "readme.txt").write_text("not audio")
    run = ["predict", "--run", str(tone_run / "run"), "--device", "cpu"]
    by_folder = CliRunner().invoke(app, [*run, "--csv", str(tmp_path / "folder.csv"), str(folder)])
    assert by_folder.exit_code == 0, by_folder.output
    assert pd.read_csv(tmp_path / "folder.csv")["file"].tolist() == sorted(files)
    manifest = tmp_path / "m.csv"
    manifest.write_text("utt_id,path,speaker\na,deep/a_low.wav,s9\nb,b_high.wav,s9\n")
    (tmp_path / "m.csv.root").write_text("new\n")
    by_table = CliRunner().invoke(app, [*run, "--csv", str(tmp_path / "table.csv"), str(manifest)])
    assert by_table.exit_code == 0, by_table.output
    assert pd.read_csv(tmp_path / "table.csv")["label"].tolist() == ["low", "high"]
    alone = CliRunner().invoke(app, [*run, "--csv", str(tmp_path / "none.csv"), str(folder / "readme.txt")])
    assert alone.exit_code == 2, alone.output
    assert f"error: could not read {folder / 'readme.txt'}: unreadable" in alone.output and "others" not in alone.output
    assert "file\tstart\tend\tpredicted label" not in alone.output and not (tmp_path / "none.csv").exists()
    (tmp_path / "silent").mkdir()
    empty = CliRunner().invoke(app, [*run, str(tmp_path / "silent")])
    assert empty.exit_code == 2 and f"folder {tmp_path / 'silent'} holds no audio file" in empty.output


# --- long files: one row per speech segment ------------------------------------------------------
def session_of_tones(path, parts, seconds=40.0):
    """A `seconds` long file, silent but for (start, freq, amp) half-second tones; their spans."""
    audio = np.zeros(int(seconds * SR))
    for start, freq, amp in parts:
        t = np.arange(int(0.5 * SR)) / SR
        audio[int(start * SR):int(start * SR) + len(t)] = amp * np.sin(2 * np.pi * freq * t) * np.hanning(len(t))
    sf.write(path, audio, SR)
    return str(path), [(start, start + 0.5) for start, _, _ in parts]


def test_a_short_file_is_labelled_exactly_as_before_segments(tone_run):
    """Short files: start 0, end = their duration, and the label and probabilities of the unsegmented
    path (the files embedded together, each centred alone with the prior)."""
    from trainer.predict import load_run, predict_features

    files = [tone(tone_run / "same_low.wav", 240, 0.3), tone(tone_run / "same_high.wav", 2900, 0.3, seconds=0.8)]
    run = load_run(tone_run / "run")
    table = run.predict_proba(files, device="cpu")
    before = predict_features(run.policies, run.meta, embed_files(files, model="base", window="trim"))
    np.testing.assert_array_equal(table[run.classes].to_numpy(), before)
    assert table.label.tolist() == [run.classes[i] for i in before.argmax(1)]
    assert table[["start", "end"]].values.tolist() == [[0.0, 0.5], [0.0, 0.8]] and table.attrs["segmented"] == []


def test_a_long_file_gets_a_row_per_segment_centred_as_one_speaker(tone_run, monkeypatch):
    """A 40 s file: the detector's segments (here fixed: tones are not speech) become rows with their
    start/end, embedded as spans and centred together as the recording; a short file beside it is
    labelled as alone; --timeline draws the long file."""
    from cli import app
    from pipeline.audio import Span
    from pipeline.segment import Recording
    from trainer.predict import load_run, predict_features

    long, spans = session_of_tones(tone_run / "long.wav", [(3.0, 220, 0.25), (17.0, 3300, 0.4), (31.0, 260, 0.25)])
    monkeypatch.setattr("trainer.predict.segment_file",
                        lambda path, *a, **k: Recording(40.0, SR, 1, {None: np.array(spans)}))
    short = tone(tone_run / "beside_high.wav", 3100, 0.4)
    run = load_run(tone_run / "run")
    table = run.predict_proba([short, long], device="cpu")
    assert table.file.tolist() == [short, long, long, long] and table.attrs["segmented"] == [long]
    assert table[["start", "end"]].values.tolist() == [[0.0, 0.5], *map(list, spans)]
    assert table.label.tolist() == ["high", "low", "high", "low"]
    feats = np.concatenate([embed_files([short], model="base", window="trim"),
                            embed_files([long] * 3, model="base", window="trim", spans=[Span(*s) for s in spans])])
    expect = predict_features(run.policies, run.meta, feats, [None, long, long, long])
    np.testing.assert_allclose(table[run.classes].to_numpy(), expect, rtol=0, atol=1e-6)
    other = shutil.copy(long, tone_run / "long_again.wav")  # one speaker's two recordings: centred together
    both = run.predict_proba([long, other], speakers=["s9", "s9"], device="cpu")
    np.testing.assert_allclose(both[run.classes].to_numpy(), predict_features(
        run.policies, run.meta, np.concatenate([feats[1:], feats[1:]]), ["s9"] * 6), rtol=0, atol=1e-6)
    result = CliRunner().invoke(app, ["predict", "--run", str(tone_run / "run"), "--device", "cpu", "--csv",
                                      str(tone_run / "long.csv"), "--timeline", str(tone_run / "long.png"), long])
    assert result.exit_code == 0, result.output
    assert f"{long}\t17.00\t17.50\thigh\t" in result.output
    assert pd.read_csv(tone_run / "long.csv")[["start", "end"]].values.tolist() == list(map(list, spans))
    assert (tone_run / "long.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_segment_flag_and_a_file_without_speech(tone_run, tmp_path):
    """--segment runs the detector on a short file too; a silent 40 s recording says so and gets no row
    (exit 0; the CSV has the header only), beside a file that is labelled."""
    from cli import app

    silent, _ = session_of_tones(tmp_path / "silent.wav", [], seconds=40.0)
    short = tone(tmp_path / "short_low.wav", 220, 0.25)
    run = ["predict", "--run", str(tone_run / "run"), "--device", "cpu"]
    result = CliRunner().invoke(app, [*run, "--csv", str(tmp_path / "p.csv"), short, silent])
    assert result.exit_code == 0, result.output
    assert f"no speech found in {silent}: no rows" in result.output
    assert pd.read_csv(tmp_path / "p.csv").file.tolist() == [short]
    alone = CliRunner().invoke(app, [*run, "--segment", "--csv", str(tmp_path / "q.csv"),
                                     "--timeline", str(tmp_path / "q.png"), short])
    assert alone.exit_code == 0, alone.output
    assert f"no speech found in {short}: no rows" in alone.output  # a tone is no speech to the detector
    assert pd.read_csv(tmp_path / "q.csv").columns.tolist() == ["file", "start", "end", "label", "high", "low"]
    assert "no file was segmented" in alone.output and not (tmp_path / "q.png").exists()


def test_a_segment_manifest_is_labelled_by_its_rows_spans(tone_run, tmp_path):
    """A CSV with start/end (what `segment` writes) gives one row per listed span of its recording, in
    place, not the recording segmented again; the spans of a recording are one speaker (its table's)."""
    from cli import app
    from pipeline.audio import Span
    from trainer.predict import load_run, predict_features

    long, spans = session_of_tones(tmp_path / "rec.wav", [(3.0, 220, 0.25), (17.0, 3300, 0.4)])
    (tmp_path / "m.csv").write_text("utt_id,path,speaker,start,end\n" + "".join(
        f"rec@{round(a * 1000)},rec.wav,rec,{a},{b}\n" for a, b in spans))
    result = CliRunner().invoke(app, ["predict", "--run", str(tone_run / "run"), "--device", "cpu", "--csv",
                                      str(tmp_path / "p.csv"), str(tmp_path / "m.csv")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "p.csv")
    assert table[["start", "end"]].values.tolist() == list(map(list, spans)) and table.label.tolist() == ["low", "high"]
    run = load_run(tone_run / "run")
    feats = embed_files([long] * 2, model="base", window="trim", spans=[Span(*s) for s in spans])
    np.testing.assert_allclose(table[run.classes].to_numpy(), predict_features(run.policies, run.meta, feats,
                                                                               ["rec", "rec"]), rtol=0, atol=1e-6)
