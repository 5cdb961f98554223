"""A synthetic emotional-speech corpus spoken by eSpeak NG, so the demo needs no downloaded data.

Why synthetic: the README's main command must run anywhere, offline, in minutes. eSpeak NG (the
`espeakng-loader` wheel ships the library and its voices) speaks the same neutral sentences in four
"emotions" that differ only in prosody - speaking rate, pitch, pitch range and loudness - the cues
acted corpora such as RAVDESS carry too. Each utterance draws its prosody around the class mean
with jitter, and each "speaker" (voice + variant) has its own pitch/rate offset, so the classes
overlap and speaker-independent folds are meaningful. What it shows: the whole pipeline working on
a real encoder with learnable but imperfect signal; it says nothing about accuracy on real speech.

Layout written (the `folders` adapter's): `<root>/<label>/<speaker>_<sentence>_<take>.wav`,
16 kHz mono PCM-16, plus `<root>/demo_corpus.json` (the plan: seed, prosody of every file).
"""
from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import shutil
from dataclasses import asdict, astuple, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
from tqdm import tqdm

from data_manifests.errors import UserError

SAMPLE_RATE = 16000
SPEAKER_REGEX = r"^(s\d+)_"  # speaker id at the start of the file name, for the `folders` adapter
MARKER = "demo_corpus.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Prosody:
    """eSpeak NG parameters: rate in words/min (80-450), pitch and range 0-100, volume 0-200."""

    rate: float
    pitch: float
    range: float
    volume: float


# Class means, loosely after acted-emotion prosody (sad: slow, low, flat, quiet; angry: fast, loud,
# tense; happy: high and lively). Neighbouring classes differ by about 1-4 jitter std per cue.
CLASS_PROSODY = {
    "neutral": Prosody(rate=160, pitch=45, range=35, volume=100),
    "happy": Prosody(rate=182, pitch=70, range=85, volume=108),
    "sad": Prosody(rate=128, pitch=36, range=14, volume=72),
    "angry": Prosody(rate=205, pitch=50, range=45, volume=170),
}
JITTER = Prosody(rate=12, pitch=6, range=10, volume=14)  # per-utterance std
SPEAKER_SPREAD = Prosody(rate=14, pitch=9, range=0, volume=0)  # per-speaker offset, uniform +-
PARAM_LOW, PARAM_HIGH = Prosody(80, 0, 0, 5), Prosody(450, 100, 100, 200)  # eSpeak's valid ranges

# English voices + variants of the wheel: different timbres, accents and genders. Variants with
# "breath" noise (f2, f3, f5, ...) are left out: eSpeak draws that noise from an unseeded rand().
VOICES = ("en+m1", "en-us+f1", "en-gb-scotland+m3", "en-029+f4",
          "en-gb-x-rp+m7", "en-us+steph", "en+m2", "en-gb-x-rp+linda")
SENTENCES = (
    "Kids are talking by the door.",
    "Dogs are sitting by the door.",
    "The train leaves at seven tomorrow morning.",
    "I put the keys on the kitchen table.",
    "We walked home after the meeting.",
    "Please open the window in the hall.",
    "The letter arrived on Tuesday.",
    "She is reading a book in the garden.",
)
NOISE_STD = 20.0  # int16 units (about -64 dBFS): a recording-like floor instead of digital silence


class DemoDependencyError(UserError):
    """eSpeak NG is not available (the `demo` extra is not installed)."""


# --- eSpeak NG through ctypes (speak_lib.h) --------------------------------------------------
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4}


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_Event))


class ESpeak:
    """The process-wide eSpeak NG engine in synchronous retrieval mode (int16 samples via callback).

    eSpeak keeps global state, so use `espeak_engine()` rather than creating several.
    """

    def __init__(self):
        require_espeak()
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                           espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise DemoDependencyError(f"espeak_Initialize failed (returned {rate}); reinstall espeakng-loader")
        self.sample_rate = rate
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, _events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: str, prosody: Prosody) -> np.ndarray:
        """int16 samples at `self.sample_rate` of `text` spoken by `voice` with `prosody`."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise UserError(f"eSpeak NG has no voice {voice!r}")
        for name, code in _PARAM.items():
            self._lib.espeak_SetParameter(code, int(round(getattr(prosody, name))), 0)
        self._chunks = []
        data = text.encode() + b"\0"
        err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0 or not self._chunks:
            raise RuntimeError(f"eSpeak NG failed on {text!r} with voice {voice!r} (error {err})")
        return np.concatenate(self._chunks)


_ENGINE: ESpeak | None = None


def espeak_engine() -> ESpeak:
    """The shared engine (espeak_Initialize is global to the process: call it once)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = ESpeak()
    return _ENGINE


# --- the corpus plan (pure) ------------------------------------------------------------------
def corpus_plan(seed: int = 0, n_speakers: int = 8, n_sentences: int = 4, n_takes: int = 2,
                labels=tuple(CLASS_PROSODY)) -> pd.DataFrame:
    """One row per utterance: path, label, speaker, voice, sentence, take and its drawn prosody.

    Each speaker's offset and each utterance's jitter come from their own seeded stream, so a
    row's prosody does not depend on how many other speakers/sentences are asked for.
    """
    if not 1 <= n_speakers <= len(VOICES):
        raise UserError(f"n_speakers must be in 1..{len(VOICES)}, got {n_speakers}")
    if not 1 <= n_sentences <= len(SENTENCES):
        raise UserError(f"n_sentences must be in 1..{len(SENTENCES)}, got {n_sentences}")
    if n_takes < 1:
        raise UserError(f"n_takes must be >= 1, got {n_takes}")
    unknown = set(labels) - set(CLASS_PROSODY)
    if unknown:
        raise UserError(f"unknown demo labels {sorted(unknown)}; choose from {list(CLASS_PROSODY)}")
    names = tuple(asdict(JITTER))
    spread, jitter = np.array(astuple(SPEAKER_SPREAD)), np.array(astuple(JITTER))
    lo, hi = np.array(astuple(PARAM_LOW)), np.array(astuple(PARAM_HIGH))
    rows = []
    for s in range(n_speakers):
        offset = np.random.default_rng([seed, s]).uniform(-1, 1, 4) * spread
        speaker = f"s{s + 1:02d}"
        for label in labels:
            mean = np.array(astuple(CLASS_PROSODY[label])) + offset
            for k in range(n_sentences):
                for t in range(n_takes):
                    rng = np.random.default_rng([seed, s, list(CLASS_PROSODY).index(label), k, t, 1])
                    values = np.clip(mean + rng.standard_normal(4) * jitter, lo, hi)
                    rows.append({"path": f"{label}/{speaker}_{k + 1:02d}_{t + 1}.wav", "label": label,
                                 "speaker": speaker, "voice": VOICES[s], "sentence": k + 1, "take": t + 1,
                                 "text": SENTENCES[k], **dict(zip(names, np.round(values, 2))),
                                 "noise_seed": int(rng.integers(2**31))})
    return pd.DataFrame(rows)


# --- writing --------------------------------------------------------------------------------
def require_espeak() -> None:
    """Fail early, in the caller's process, with the install hint."""
    try:
        import espeakng_loader  # noqa: F401
    except ImportError as e:
        raise DemoDependencyError(
            "the demo corpus needs eSpeak NG: pip install -e '.[demo]' (package espeakng-loader)") from e


def _write_utterance(job) -> None:
    row, path = job
    sf.write(path, render(row, espeak_engine()), SAMPLE_RATE, subtype="PCM_16")


def render(row, engine: ESpeak) -> np.ndarray:
    """The 16 kHz int16 waveform of one plan row: synthesis, soxr resampling, a noise floor."""
    wav = engine.synthesize(row["text"], row["voice"],
                            Prosody(row["rate"], row["pitch"], row["range"], row["volume"]))
    x = soxr.resample(wav.astype(np.float32), engine.sample_rate, SAMPLE_RATE, quality="HQ")
    x = x + np.random.default_rng(int(row["noise_seed"])).standard_normal(len(x)) * NOISE_STD
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def generate(root, seed: int = 0, n_speakers: int = 8, n_sentences: int = 4, n_takes: int = 2,
             progress: bool = True) -> pd.DataFrame:
    """Write the demo corpus under `root` and return its plan (paths relative to `root`).

    Atomic: everything is written into a sibling temp folder that replaces `root` at the end.
    If `root` already holds the same corpus (same marker), it is reused as is; a `root` that is
    not a demo corpus and not empty is never touched.
    """
    root = Path(root)
    plan = corpus_plan(seed, n_speakers, n_sentences, n_takes)
    meta = {"format_version": FORMAT_VERSION, "seed": seed, "sample_rate": SAMPLE_RATE,
            "speaker_regex": SPEAKER_REGEX, "class_prosody": {k: asdict(v) for k, v in CLASS_PROSODY.items()},
            "jitter": asdict(JITTER), "speaker_spread": asdict(SPEAKER_SPREAD), "noise_std": NOISE_STD,
            "utterances": plan.to_dict(orient="records")}
    marker = root / MARKER
    if root.exists() and any(root.iterdir()):
        if not marker.exists():
            raise FileExistsError(f"{root} exists and is not a demo corpus (no {MARKER}): "
                                  "choose another output folder or empty it")
        if json.loads(marker.read_text()) == json.loads(json.dumps(meta)) and \
                all((root / p).exists() for p in plan["path"]):
            return plan
    require_espeak()
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)  # a crashed earlier run of ours
    for label in plan["label"].unique():
        (tmp / label).mkdir(parents=True)
    # eSpeak NG carries state from one utterance to the next (pitch flutter phase, etc.) that
    # espeak_Terminate does not reset, so a file would depend on what was spoken before it in
    # the process. One fresh spawned worker speaking the plan in order makes the corpus a
    # function of the seed alone, whatever the caller synthesised earlier.
    jobs = [(row, str(tmp / row["path"])) for row in plan.to_dict(orient="records")]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        for _ in tqdm(pool.imap(_write_utterance, jobs), total=len(jobs), desc="demo corpus",
                      unit="utt", disable=not progress):
            pass
    (tmp / MARKER).write_text(json.dumps(meta, indent=1))
    if root.exists():
        old = root.with_name(root.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(root, old)
        os.replace(tmp, root)
        shutil.rmtree(old)
    else:
        root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, root)
    return plan
