"""`segment`: the segment maths on hand-made probabilities and synthetic tones, the VAD stream,
block reading, offsets read exactly by `extract`, folds that keep recordings whole, bad input."""
from __future__ import annotations

import json
import tracemalloc

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr

from data_manifests.folds import speaker_folds
from data_manifests.schema import ManifestError, validate_manifest
from data_manifests.storage import read_manifest
from pipeline.audio import SAMPLE_RATE, Span, load_audio
from pipeline.cache import write_cache_arrays
from pipeline.extract import check_spans, manifest_sha256
from pipeline.segment import (
    FRAME_SECONDS,
    SegmentSettings,
    SileroVAD,
    close_gaps,
    onnx_session,
    pad_segments,
    part_file,
    read_blocks,
    segments_from_probs,
    speech_runs,
    split_long,
)
from tests.test_extract import run_cli

F = FRAME_SECONDS  # 0.032 s


def probs_of(spans, n, high=0.9, low=0.05):
    """Per-frame probabilities: `high` inside the frame ranges of `spans`, `low` elsewhere."""
    p = np.full(n, low, np.float32)
    for a, b in spans:
        p[a:b] = high
    return p


# --- the maths ---------------------------------------------------------------------------------
def test_speech_runs_use_hysteresis():
    p = np.array([0.1, 0.6, 0.4, 0.36, 0.2, 0.1, 0.55, 0.9], np.float32)
    # 0.4 and 0.36 stay above 0.5 - 0.15: the run lasts until 0.2 (frame 4); the last runs to the end
    assert speech_runs(p, 0.5).tolist() == [[1, 4], [6, 8]]
    assert speech_runs(np.zeros(5, np.float32), 0.5).shape == (0, 2)


def test_close_gaps_joins_short_pauses_only():
    runs = np.array([[0, 10], [12, 20], [30, 40]])
    assert close_gaps(runs, 3).tolist() == [[0, 20], [30, 40]]
    assert close_gaps(runs, 2).tolist() == [[0, 10], [12, 20], [30, 40]]  # a gap of exactly min_gap stays
    assert close_gaps(runs, 11).tolist() == [[0, 40]]


def test_split_long_cuts_at_the_quietest_point_of_the_middle_half():
    p = np.full(100, 0.9, np.float32)
    p[60:63] = 0.0  # the dip; a quieter one at frame 5 is outside the middle half
    p[3:8] = 0.0
    assert split_long(np.array([[0, 100]]), p, 80).tolist() == [[0, 61], [61, 100]]
    pieces = split_long(np.array([[0, 100]]), np.full(100, 0.9, np.float32), 30)
    assert pieces[0, 0] == 0 and pieces[-1, 1] == 100 and (np.diff(pieces, axis=1) <= 30).all()
    assert (pieces[1:, 0] == pieces[:-1, 1]).all()  # contiguous pieces, nothing lost


def test_padding_never_crosses_half_the_pause():
    bounds = np.array([[1.0, 2.0], [2.1, 3.0], [5.0, 5.9]])
    padded = pad_segments(bounds, 0.2, 6.0)
    np.testing.assert_allclose(padded, [[0.8, 2.05], [2.05, 3.2], [4.8, 6.0]])


def test_segments_from_probs_known_boundaries():
    s = SegmentSettings(threshold=0.5, min_speech=0.25, min_silence=0.15, padding=0.1, min_segment=0.5,
                        max_segment=20.0)
    # speech 10-40 and 43-70 (a 3-frame = 0.096 s pause: joined), 100-105 (0.16 s: dropped), 150-200
    p = probs_of([(10, 40), (43, 70), (100, 105), (150, 200)], 260)
    got = segments_from_probs(p, s)
    np.testing.assert_allclose(got, [[10 * F - 0.1, 70 * F + 0.1], [150 * F - 0.1, 200 * F + 0.1]], atol=1e-9)
    # a segment shorter than min_segment after padding is dropped: 8 frames = 0.256 s + 0.2 s < 0.5 s
    assert len(segments_from_probs(probs_of([(10, 18)], 60), s)) == 0
    assert len(segments_from_probs(probs_of([(10, 18)], 60), SegmentSettings(min_segment=0.4))) == 1


def test_max_segment_splits_long_speech_and_the_pieces_fit():
    s = SegmentSettings(max_segment=10.0, padding=0.1)
    p = probs_of([(0, 1000)], 1100)  # 32 s of speech
    p[500] = 0.3  # the quietest point after smoothing
    got = segments_from_probs(p, s)
    assert len(got) >= 4 and (got[:, 1] - got[:, 0] <= 10.0 + 1e-9).all()
    assert got[0, 0] == 0.0 and abs(got[-1, 1] - (1000 * F + 0.1)) < 1e-9


def tone_session(rate=SAMPLE_RATE, parts=((0.5, 0), (1.2, 1), (0.4, 0), (0.9, 1), (0.8, 0))):
    """Tones and silences of known lengths: (seconds, 1 = tone) -> audio, [k, 2] tone bounds in s."""
    t, chunks, bounds = 0.0, [], []
    for seconds, tone in parts:
        n = int(round(seconds * rate))
        x = np.arange(n) / rate
        chunks.append(0.3 * np.sin(2 * np.pi * 220 * x) if tone else np.zeros(n))
        if tone:
            bounds.append((t, t + seconds))
        t += seconds
    return np.concatenate(chunks).astype(np.float32), np.array(bounds)


def test_segment_maths_on_tones_and_silences():
    """Frame energy as the probability: the segments are the tones, widened by the padding."""
    audio, truth = tone_session()
    frames = audio[: len(audio) // 512 * 512].reshape(-1, 512)
    probs = (np.sqrt((frames ** 2).mean(1)) > 0.01).astype(np.float32)
    got = segments_from_probs(probs, SegmentSettings(padding=0.05, min_silence=0.15), len(audio) / SAMPLE_RATE)
    assert len(got) == 2
    np.testing.assert_allclose(got, truth + [-0.05, 0.05], atol=F + 1e-9)  # within one frame


def test_settings_out_of_range_are_named():
    with pytest.raises(ValueError, match="--max-segment 40"):
        SegmentSettings(max_segment=40).check()
    with pytest.raises(ValueError, match="--min-segment"):
        SegmentSettings(min_segment=5, max_segment=4).check()


# --- the detector and the reading ---------------------------------------------------------------
def speech_clips(n=6, seed=0):
    """n eSpeak sentences (16 kHz float32), the demo corpus's voice."""
    pytest.importorskip("espeakng_loader")
    from data_manifests.synthetic_demo import corpus_plan, espeak_engine, render

    plan = corpus_plan(seed, 2, 3, 1, labels=("neutral", "angry")).head(n)
    return [render(row, espeak_engine()).astype(np.float32) / 32768 for _, row in plan.iterrows()]


def speech_session(seed=0, pause=(0.4, 1.0)):
    """eSpeak sentences joined by pauses -> audio, [k, 2] bounds of each sentence's voiced samples."""
    rng = np.random.default_rng(seed)
    parts, bounds, pos = [], [], 0
    for clip in speech_clips(seed=seed):
        gap = int(rng.uniform(*pause) * SAMPLE_RATE)
        parts += [np.zeros(gap, np.float32), clip]
        voiced = np.flatnonzero(np.abs(clip) > 0.01)
        bounds.append(((pos + gap + voiced[0]) / SAMPLE_RATE, (pos + gap + voiced[-1]) / SAMPLE_RATE))
        pos += gap + len(clip)
    parts.append(np.zeros(SAMPLE_RATE // 2, np.float32))
    return np.concatenate(parts), np.array(bounds)


def test_vad_fed_in_blocks_equals_the_whole_stream():
    audio, _ = speech_session()
    session = onnx_session()
    whole = SileroVAD(session).feed(audio, last=True)
    vad, blocks = SileroVAD(session), []
    for start in range(0, len(audio), 7777):
        blocks.append(vad.feed(audio[start:start + 7777], last=start + 7777 >= len(audio)))
    np.testing.assert_array_equal(np.concatenate(blocks), whole)
    assert len(whole) == -(-len(audio) // 512)


def test_vad_segments_find_each_sentence():
    audio, truth = speech_session()
    probs = SileroVAD(onnx_session()).feed(audio, last=True)
    got = segments_from_probs(probs, SegmentSettings(), len(audio) / SAMPLE_RATE)
    assert len(got) == len(truth)
    assert (np.abs(got - truth) < 0.35).all(), np.round(got - truth, 2)


def test_block_reader_memory_is_bounded(tmp_path):
    """A 4-minute 44.1 kHz stereo file read in 5 s blocks: blocks equal the one-shot decode, and the
    reader's peak allocation stays at a few blocks, far under the file's decoded size."""
    rate, seconds = 44100, 240
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((rate * seconds, 2))).astype(np.float32)
    path = tmp_path / "long.wav"
    sf.write(path, x, rate, subtype="PCM_16")
    del x
    whole = sf.read(path, dtype="float32", always_2d=True)[0].mean(1, dtype=np.float32)
    expected = soxr.resample(whole, rate, SAMPLE_RATE, quality="HQ")
    decoded_bytes = whole.nbytes * 2  # stereo float32
    del whole
    tracemalloc.start()
    n, got, largest = 0, [], 0
    for source_seconds, block, last in read_blocks(path, block_seconds=5.0):
        largest = max(largest, len(block))
        got.append(block[:, 0].copy())
        n += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    kept = sum(g.nbytes for g in got)  # what this test keeps, not the reader
    assert n == 48 and last and largest <= 5 * SAMPLE_RATE + 1000  # the last adds the resampler's tail
    assert peak - kept < decoded_bytes / 10, (peak, kept, decoded_bytes)
    joined = np.concatenate(got)
    assert abs(len(joined) - len(expected)) <= 2
    k = min(len(joined), len(expected))
    assert np.abs(joined[1000:k - 1000] - expected[1000:k - 1000]).max() < 1e-3


# --- offsets read in place ----------------------------------------------------------------------
@pytest.mark.parametrize("suffix,subtype", [(".wav", "PCM_16"), (".flac", "PCM_16"), (".ogg", "VORBIS")])
def test_a_span_is_exactly_the_slice_of_the_whole_file(tmp_path, suffix, subtype):
    rng = np.random.default_rng(1)
    path = tmp_path / f"rec{suffix}"
    sf.write(path, (0.2 * rng.standard_normal((SAMPLE_RATE * 7, 2))).astype(np.float32), SAMPLE_RATE, subtype=subtype)
    whole = load_audio(path)
    a, b = 1.234567, 5.4321
    cut = slice(round(a * SAMPLE_RATE), round(b * SAMPLE_RATE))
    np.testing.assert_array_equal(load_audio(path, Span(a, b)), whole[cut])
    stereo = sf.read(path, dtype="float32", always_2d=True)[0]
    np.testing.assert_array_equal(load_audio(path, Span(a, b, 1)), stereo[cut, 1])


def test_a_span_of_another_rate_is_the_slice_resampled(tmp_path):
    rate = 44100
    x = (0.2 * np.random.default_rng(2).standard_normal(rate * 4)).astype(np.float32)
    path = tmp_path / "r44.wav"
    sf.write(path, x, rate, subtype="FLOAT")
    raw = sf.read(path, dtype="float32")[0][round(0.5 * rate):round(2.5 * rate)]
    np.testing.assert_array_equal(load_audio(path, Span(0.5, 2.5)), soxr.resample(raw, rate, SAMPLE_RATE, quality="HQ"))


def test_offsets_past_the_end_are_refused_by_name(tmp_path):
    sf.write(tmp_path / "short.wav", np.zeros(SAMPLE_RATE * 2, np.float32), SAMPLE_RATE)
    table = pd.DataFrame({"utt_id": ["short@1000"], "path": ["short.wav"], "start": [1.0], "end": [3.5]})
    with pytest.raises(ManifestError, match=r"short\.wav: 1 segments end after its 2\.000 s"):
        check_spans(table, tmp_path)
    check_spans(table.assign(end=[2.0]), tmp_path)  # the last sample is inside


def clip_table():
    return validate_manifest(pd.DataFrame(dict(
        utt_id=["a", "b", "c"], path=["x/a.wav", "x/b.wav", "x/c.wav"], speaker=["s1", "s1", "s2"], gender="",
        language="en", label=["happy", "sad", "angry"], raw_label=["h", "s", "a"], fold=[0, 0, 1], split="",
        duration=[1.5, 2.0, 2.5], corpus="gen", sample_rate=16000, channels=1)))


def test_a_clip_cache_is_what_it_was_before_segments(tmp_path):
    """Digests computed with the code before segments existed (commit c2f13eb)."""
    table = clip_table()
    sha = manifest_sha256(table)
    assert sha == "d484a75a0bcd1913f4d2177c8a264854698a57a34b78573a074ab7d5a4920981"
    emb = np.arange(24, dtype=np.float32).reshape(3, 2, 4) / 7
    identity = {"encoder_id": "e", "weights_sha256": "w", "window": "trim", "sample_rate": 16000,
                "manifest_sha256": sha}
    path = write_cache_arrays(tmp_path / "c.h5", emb, table, identity)
    with h5py.File(path) as f:
        assert f.attrs["fingerprint"] == "e0de9c934a0a61ae88e90ebed45a0aac927d1bd27fa7c3610a752b6cf62c6425"
        assert not {"recording", "start", "end", "channel"} & set(f)


# --- folds --------------------------------------------------------------------------------------
def test_folds_keep_a_recording_whole_when_its_speakers_differ():
    # call1's two channels are two speakers; spk_c also speaks in call2: all three are one unit
    speakers = pd.Series(["a:ch0", "a:ch1", "a:ch0", "b", "b", "c", "d", "d", "e"])
    recordings = pd.Series(["call1", "call1", "call1", "call2", "call2", "call2", "call3", "call3", "call4"])
    speakers[5] = "a:ch1"
    folds = speaker_folds(speakers, 3, recordings)
    table = pd.DataFrame({"s": speakers, "r": recordings, "f": folds})
    assert (table.groupby("r")["f"].nunique() == 1).all() and (table.groupby("s")["f"].nunique() == 1).all()
    assert folds[0] == folds[3]  # call1 and call2 share speaker a:ch1
    assert speaker_folds(speakers, 3).equals(speaker_folds(speakers, 3, None))  # without recordings: as before


def segment_rows(folds):
    return pd.DataFrame(dict(utt_id=[f"r@{i}" for i in range(len(folds))], path="r.wav", speaker=["s1", "s2"],
                             gender="", language="", label="", raw_label="", fold=folds, split="", duration=1.0,
                             corpus="c", sample_rate=16000, channels=2, recording="r", start=[0.0, 1.0],
                             end=[1.0, 2.0]))


def test_a_manifest_splitting_a_recording_between_folds_is_refused():
    assert validate_manifest(segment_rows([0, 0]))["start"].dtype == np.float64
    with pytest.raises(ManifestError, match="1 recordings have segments in more than one fold"):
        validate_manifest(segment_rows([0, 1]))
    with pytest.raises(ManifestError, match="0 <= start < end"):
        validate_manifest(segment_rows([0, 0]).assign(end=[1.0, 0.5]))


# --- the command and bad input --------------------------------------------------------------------
@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Sessions in several formats and rates, a stereo call, silence, and a file that is not audio."""
    folder = tmp_path_factory.mktemp("recordings")
    audio, truth = speech_session()
    other, _ = speech_session(seed=1)
    sf.write(folder / "s16.flac", audio, SAMPLE_RATE)
    sf.write(folder / "s8.wav", soxr.resample(audio, SAMPLE_RATE, 8000), 8000, subtype="PCM_16")
    sf.write(folder / "s48.ogg", soxr.resample(audio, SAMPLE_RATE, 48000), 48000, subtype="VORBIS")
    sf.write(folder / "s44.mp3", soxr.resample(audio, SAMPLE_RATE, 44100), 44100, format="MP3")
    n = max(len(audio), len(other))
    call = np.zeros((n, 2), np.float32)
    call[:len(audio), 0], call[:len(other), 1] = audio, other
    sf.write(folder / "call.wav", call, SAMPLE_RATE)
    rng = np.random.default_rng(3)
    sf.write(folder / "quiet.wav", (1e-4 * rng.standard_normal(SAMPLE_RATE * 5)).astype(np.float32), SAMPLE_RATE)
    (folder / "broken.wav").write_text("not audio")
    return folder, truth


def test_segment_files_of_every_rate_and_format_then_resume(recordings, tmp_path):
    folder, truth = recordings
    files = [folder / name for name in ("s16.flac", "s8.wav", "s48.ogg", "s44.mp3", "quiet.wav")]
    out = tmp_path / "m.csv"
    result = run_cli("segment", *files, "--out", out, check_rc=0)
    assert "no speech found in" in result.output and "quiet.wav" in result.output
    table = read_manifest(out)
    assert set(table["recording"]) == {"s16", "s8", "s48", "s44"}
    for rid, group in table.groupby("recording"):
        assert len(group) == len(truth), rid
        tolerance = 0.4 if rid != "s44" else 0.45  # mp3: encoder delay
        assert (np.abs(group[["start", "end"]].to_numpy() - truth) < tolerance).all(), rid
    assert (table["label"] == "").all() and (table["speaker"] == table["recording"]).all()
    assert table["utt_id"].tolist() == [f"{r}@{round(s * 1000)}" for r, s in zip(table["recording"], table["start"])]
    assert (tmp_path / "m.csv.root").read_text().strip() == str(folder)
    again = run_cli("segment", *files, "--out", out, check_rc=0)
    assert "resuming: 5 of 5 recordings already segmented" in again.output
    assert read_manifest(out).equals(table)  # the same ids: labels keyed by them survive


def test_unreadable_file_is_named_and_the_others_go_on(recordings, tmp_path):
    folder, truth = recordings
    out = tmp_path / "m.csv"
    result = run_cli("segment", folder / "broken.wav", folder / "s16.flac", "--out", out, check_rc=1)
    assert "broken.wav: unreadable" in result.output
    assert set(read_manifest(out)["recording"]) == {"s16"}


def test_channels_split_gives_a_speaker_per_channel(recordings, tmp_path):
    folder, truth = recordings
    out = tmp_path / "calls.csv"
    run_cli("segment", folder / "call.wav", "--out", out, "--channels", "split", "--speaker-regex", "^(ca)",
            check_rc=0)
    table = read_manifest(out)
    assert set(table["speaker"]) == {"ca:ch0", "ca:ch1"} and set(table["channel"]) == {0, 1}
    assert table["utt_id"].str.match(r"^call:ch[01]@\d+$").all() and table["fold"].nunique() == 1
    ch0 = table[table["channel"] == 0]
    assert (np.abs(ch0[["start", "end"]].to_numpy() - truth) < 0.4).all()


def test_shards_merge_into_one_manifest_and_a_killed_line_is_redone(recordings, tmp_path):
    folder, _ = recordings
    files = [folder / "s16.flac", folder / "s8.wav", folder / "quiet.wav"]
    out = tmp_path / "m.csv"
    first = run_cli("segment", *files, "--out", out, "--shard", "0/2", check_rc=0)
    assert "waiting for 1 of 2 shards" in first.output and not out.exists()
    part = part_file(out, (0, 2))
    lines = part.read_text().splitlines()
    assert json.loads(lines[-1]) == {"complete": True}
    part.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:40])  # killed while writing its last recording
    again = run_cli("segment", *files, "--out", out, "--shard", "0/2", check_rc=0)
    assert "resuming: 1 of 2 recordings already segmented" in again.output
    run_cli("segment", *files, "--out", out, "--shard", "1/2", check_rc=0)
    table = read_manifest(out)
    assert set(table["recording"]) == {"s16", "s8"} and not part.exists()
    whole = tmp_path / "whole.csv"
    run_cli("segment", *files, "--out", whole, "--corpus", "m", check_rc=0)
    assert read_manifest(whole).equals(table)


def test_other_settings_on_the_same_output_are_refused(recordings, tmp_path):
    folder, _ = recordings
    out = tmp_path / "m.csv"
    run_cli("segment", folder / "s16.flac", "--out", out, check_rc=0)
    result = run_cli("segment", folder / "s16.flac", "--out", out, "--padding", "0.3", check_rc=2)
    assert "with these settings" in result.output


def test_extract_reads_segments_in_place(recordings, tmp_path):
    """The cache of a segment manifest keeps recording/start/end, its vectors equal those of the
    same samples cut out as clips."""
    from pipeline.cache import load_cache
    from pipeline.extract import embed_files

    folder, _ = recordings
    out = tmp_path / "m.csv"
    run_cli("segment", folder / "s16.flac", "--out", out, check_rc=0)
    cache = tmp_path / "c.h5"
    run_cli("extract", "--manifest", out, "--model", "tiny.en", "--window", "trim", "--device", "cpu", "--out", cache,
            check_rc=0)
    data = load_cache(cache)
    table = read_manifest(out)
    np.testing.assert_allclose(data.table["start"], table["start"])
    assert (data.table["recording"] == "s16").all()
    audio = load_audio(folder / "s16.flac")
    clips = []
    for start, end in table[["start", "end"]].to_numpy()[:2]:
        clips.append(tmp_path / f"clip{len(clips)}.wav")
        sf.write(clips[-1], audio[round(start * SAMPLE_RATE):round(end * SAMPLE_RATE)], SAMPLE_RATE, subtype="FLOAT")
    vectors = embed_files([str(c) for c in clips], "tiny.en", "trim", "cpu")
    np.testing.assert_allclose(data.features[:2].astype(np.float32), vectors, atol=2e-2, rtol=1e-2)
    spans = [Span(a, b) for a, b in table[["start", "end"]].to_numpy()[:2]]
    in_place = embed_files([str(folder / "s16.flac")] * 2, "tiny.en", "trim", "cpu", spans=spans)
    np.testing.assert_allclose(in_place, vectors, atol=1e-5)


def test_bench_scores_hand_made_segments():
    from bench.segment_page import score

    truth = pd.DataFrame({"recording": "r", "start": [1.0, 3.0, 6.0, 9.0], "end": [2.0, 4.0, 7.0, 10.0]})
    # one segment per utterance 0, utterances 1 and 2 in one segment, utterance 3 cut in two, none missed
    segments = {"r": np.array([[0.9, 2.1], [2.8, 7.2], [8.9, 9.5], [9.5, 10.2]])}
    s = score(segments, truth)
    assert s["found_pct"] == 100.0 and s["two_or_more_pct"] == 25.0
    assert s["segments_per_utterance"] == pytest.approx((1 + 1 + 1 + 2) / 4)
    assert s["boundary_median_s"] == pytest.approx(0.1)  # only utterance 0 is a one-to-one match
    missed = score({"r": segments["r"][:1]}, truth)
    assert missed["found_pct"] == 25.0


def test_train_refuses_a_cache_of_unlabelled_segments(tmp_path):
    from trainer.config import TrainConfig
    from trainer.jobs import jobs_for

    table = pd.concat([segment_rows([0, 0]), segment_rows([1, 1]).assign(
        utt_id=["q@0", "q@1"], recording="q", speaker=["s3", "s4"])], ignore_index=True)
    identity = {"encoder_id": "e", "weights_sha256": "w", "window": "trim", "sample_rate": 16000,
                "manifest_sha256": manifest_sha256(table)}
    path = write_cache_arrays(tmp_path / "u.h5", np.ones((4, 2, 4), np.float32), table, identity)
    with pytest.raises(ValueError, match="4 of 4 utterances have no label"):
        jobs_for(TrainConfig(), path)


def test_two_files_of_one_recording_id_are_refused(recordings, tmp_path):
    folder, _ = recordings
    for suffix in (".wav", ".flac"):
        sf.write(tmp_path / f"same{suffix}", np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    result = run_cli("segment", tmp_path / "same.wav", tmp_path / "same.flac", "--out", tmp_path / "m.csv", check_rc=2)
    assert "would be one recording (same)" in result.output


def test_speech_to_the_last_sample_gives_a_span_inside_the_file(tmp_path):
    clip = speech_clips(1)[0]
    voiced = np.flatnonzero(np.abs(clip) > 0.01)
    ending = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), clip[:voiced[-1] - 2000]])  # cut mid-word
    sf.write(tmp_path / "cut.wav", soxr.resample(ending, SAMPLE_RATE, 44100), 44100, subtype="PCM_16")
    run_cli("segment", tmp_path / "cut.wav", "--out", tmp_path / "m.csv", check_rc=0)
    table = read_manifest(tmp_path / "m.csv")
    assert table["end"].iloc[-1] <= sf.info(tmp_path / "cut.wav").duration
    check_spans(table, tmp_path)
    assert len(load_audio(tmp_path / "cut.wav", Span(table["start"].iloc[-1], table["end"].iloc[-1])))
