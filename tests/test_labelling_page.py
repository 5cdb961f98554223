"""`cli.py label --serve`: the labelling page's API with Flask's test client (a label is on disk
before the answer, a batch starts a retrain that changes the model, bad labels are refused with a
reason, audio is streamed from the corpus root, export writes every utterance) and its helpers."""
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from cli import app as cli_app
from pipeline.cache import load_cache, write_cache_arrays
from trainer.config import TrainConfig
from trainer.labelling_page.app import TOKEN_HEADER, create_app
from trainer.labelling_page.session import LabellingSession, append_label, corpus_audio_root, pca_2d, speaker_folds

NAMES = {"class0": "angry", "class1": "happy", "class2": "neutral", "class3": "sad"}
CFG = TrainConfig(seeds=(0,), refit_rounds=1)
TOKEN = "test-token"


def client_of(session, token=TOKEN):
    """Flask's test client of the page (Host: localhost), sending `token` with every request."""
    client = create_app(session, TOKEN, {"localhost"}).test_client()
    if token is not None:
        client.environ_base[f"HTTP_{TOKEN_HEADER.upper().replace('-', '_')}"] = token
    return client


def write_labelling_corpus(folder, synthetic_cache):
    """A synthetic cache with the project's label names and a short WAV file per utterance under
    folder/audio (its corpus root)."""
    syn = load_cache(synthetic_cache(folder / "syn.h5", n_classes=4, n_speakers=6, per_class=6, n_folds=3))
    table = syn.table.assign(label=syn.table["label"].map(NAMES),
                             path=syn.table["speaker"] + "/" + syn.table["utt_id"] + ".wav")
    for i, rel in enumerate(table["path"]):
        (folder / "audio" / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / "audio" / rel, 0.1 * np.sin(np.arange(1600) * (0.05 + 0.001 * i)), 16000)
    return write_cache_arrays(folder / "corpus.h5", syn.features, table, {"encoder_id": "synthetic", "window": "full"})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, synthetic_cache):
    folder = tmp_path_factory.mktemp("page")
    return folder, write_labelling_corpus(folder, synthetic_cache)


def start_labels(cache, path, per_class=2):
    """LABELS with `per_class` labels of every class (the first utterances of each), the rest empty."""
    t = load_cache(cache, layers=[]).table[["utt_id", "label"]].copy()
    keep = t.groupby("label").cumcount() < per_class
    t.loc[~keep, "label"] = ""
    t.to_csv(path, index=False)
    return t[keep].set_index("utt_id")["label"]


@pytest.fixture()
def page(corpus, tmp_path):
    folder, cache = corpus
    labels = tmp_path / "labels.csv"
    start = start_labels(cache, labels)
    session = LabellingSession(str(cache), labels, folder / "audio", tmp_path / "labelled.csv", CFG, batch=3,
                               n_suggest=6, cv_folds=2)
    assert session.retrain() == "started"
    session.wait()
    return session, client_of(session), labels, start


def csv_rows(path):
    return path.read_text().splitlines()


def test_each_label_is_on_disk_before_the_answer_and_a_batch_retrains(page):
    session, client, labels, start = page
    first = client.get("/api/state").get_json()
    assert first["model"]["version"] == 1 and first["model"]["n_labels"] == len(start)
    assert sum(first["model"]["predicted_counts"].values()) == first["n_utterances"] - len(start)
    assert first["model"]["quality"]["n_labels"] == len(start) and 0 <= first["model"]["quality"]["accuracy"] <= 100
    picks = [s["utt_id"] for s in first["suggestions"][:3]]
    assert set(picks).isdisjoint(start.index)
    truth = load_cache(session.cache_path, layers=[]).table.set_index("utt_id")["label"]
    for k, utt in enumerate(picks):
        before = csv_rows(labels)
        r = client.post("/api/label", json={"utt_id": utt, "label": truth[utt]})
        assert r.status_code == 200, r.get_json()
        assert csv_rows(labels) == before + [f"{utt},{truth[utt]}"]  # appended, nothing else touched
        assert r.get_json()["retrain"] == ("started" if k == 2 else "")  # the third label completes the batch of 3
    session.wait()
    after = client.get("/api/state").get_json()
    assert after["model"]["version"] == 2 and after["model"]["n_labels"] == len(start) + 3
    assert after["labels_since_model"] == 0 and not after["training"]["running"]
    assert set(s["utt_id"] for s in after["suggestions"]).isdisjoint(picks)
    assert after["model"]["predicted_counts"] != first["model"]["predicted_counts"] or \
        [s["utt_id"] for s in after["suggestions"]] != [s["utt_id"] for s in first["suggestions"]]


def test_bad_labels_are_refused_with_a_reason_and_nothing_is_written(page):
    session, client, labels, start = page
    before = labels.read_bytes()
    utt = client.get("/api/state").get_json()["suggestions"][0]["utt_id"]
    r = client.post("/api/label", json={"utt_id": utt, "label": "bored"})
    assert r.status_code == 400 and "unknown label 'bored'" in r.get_json()["error"] and "angry" in r.get_json()["error"]
    r = client.post("/api/label", json={"utt_id": "nobody", "label": "sad"})
    assert r.status_code == 400 and "not in the cache" in r.get_json()["error"]
    given = start.index[0]
    r = client.post("/api/label", json={"utt_id": given, "label": "sad" if start[given] != "sad" else "angry"})
    assert r.status_code == 400 and "already labelled" in r.get_json()["error"]
    r = client.post("/api/label", data="utt_id=x")
    assert r.status_code == 400 and "JSON" in r.get_json()["error"]
    assert labels.read_bytes() == before


def test_audio_is_streamed_from_the_corpus_root_with_ranges(page, corpus):
    session, client, _, _ = page
    folder, _ = corpus
    s = client.get("/api/state").get_json()["suggestions"][0]
    path = folder / "audio" / session.table.set_index("utt_id").loc[s["utt_id"], "path"]
    r = client.get(s["audio"])
    assert r.status_code == 200 and r.data == path.read_bytes()
    part = client.get(s["audio"], headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.data == path.read_bytes()[:10]
    assert client.get("/audio/nobody").status_code == 404


def test_map_and_export(page):
    session, client, labels, start = page
    points = client.get("/api/map").get_json()["points"]
    assert len(points) == len(session.utt) and {p["given"] for p in points} == set(start) | {""}
    utt = client.get("/api/state").get_json()["suggestions"][0]["utt_id"]
    assert client.post("/api/label", json={"utt_id": utt, "label": "sad"}).status_code == 200
    wrote = client.post("/api/export").get_json()["wrote"]
    out = pd.read_csv(wrote, keep_default_na=False).set_index("utt_id")
    assert len(out) == len(session.utt)
    assert out.loc[utt, "label"] == "sad" and out.loc[utt, "source"] == "given"  # given after the model: kept
    assert (out.loc[start.index, "label"] == start).all()
    assert (out["source"] == "given").sum() == len(start) + 1


def test_the_page_lists_the_api_it_calls(page):
    _, client, _, _ = page
    html = client.get("/").get_data(as_text=True)
    for route in ("/api/state", "/api/map", "/api/label", "/api/retrain", "/api/export"):
        assert route in html


def test_append_label_keeps_the_files_columns_and_closes_an_open_last_line(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("label,utt_id,note\nangry,a,\n,b,x")  # no final newline
    append_label(path, "b", "sad")
    append_label(path, "c,1", "happy")
    assert path.read_text() == 'label,utt_id,note\nangry,a,\n,b,x\nsad,b,\nhappy,"c,1",\n'


def test_speaker_folds_keep_each_speaker_on_one_side():
    folds = speaker_folds(np.array(["b", "a", "c", "a", "b", "d"]), 3)
    assert folds.tolist() == [1, 0, 2, 0, 1, 0]  # a, b, c, d dealt to 0, 1, 2, 0
    assert speaker_folds(np.array(["a"] * 4), 3).tolist() == [0, 1, 2, 0]


def test_pca_2d_of_points_on_a_plane():
    # rows on the plane spanned by e0 (spread 3) and e1 (spread 1), in 3-D, as [N, L=1, D=3]
    a, b = np.meshgrid(np.linspace(-3, 3, 7), np.linspace(-1, 1, 5))
    x = torch.tensor(np.stack([a.ravel(), b.ravel(), np.zeros(a.size)], 1))[:, None, :]
    xy = pca_2d(x)
    assert np.allclose(np.abs(xy[:, 0]), np.abs(a.ravel())) and np.allclose(np.abs(xy[:, 1]), np.abs(b.ravel()))


def test_a_first_session_without_labels_suggests_and_refuses_to_train(corpus, tmp_path):
    folder, cache = corpus
    labels = tmp_path / "new.csv"
    session = LabellingSession(str(cache), labels, folder / "audio", tmp_path / "out.csv", CFG, batch=2)
    assert labels.read_text() == "utt_id,label\n" and session.classes == sorted(NAMES.values())
    client = client_of(session)
    state = client.get("/api/state").get_json()
    assert state["model"] is None and len(state["suggestions"]) == session.n_suggest
    assert all(s["guesses"] == [] for s in state["suggestions"])
    r = client.post("/api/retrain")
    assert r.status_code == 400 and "at least 2 classes" in r.get_json()["error"]
    assert client.post("/api/export").status_code == 400


def test_serve_without_audio_is_a_user_error(corpus, tmp_path):
    _, cache = corpus
    labels = tmp_path / "l.csv"
    start_labels(cache, labels)
    result = CliRunner().invoke(cli_app, ["label", "--cache", str(cache), "--labels", str(labels), "--serve",
                                          "--root", str(tmp_path)])
    assert result.exit_code == 2 and "pass --root" in result.output
    with pytest.raises(Exception, match="not found"):
        corpus_audio_root(cache, tmp_path)


def test_label_without_out_or_serve_is_a_user_error(corpus, tmp_path):
    _, cache = corpus
    labels = tmp_path / "l.csv"
    start_labels(cache, labels)
    result = CliRunner().invoke(cli_app, ["label", "--cache", str(cache), "--labels", str(labels)])
    assert result.exit_code == 2 and "--out" in result.output


def test_a_retrain_asked_for_while_one_runs_is_queued_and_runs_after(page):
    session, client, _, _ = page
    version = session.model.version
    assert client.post("/api/retrain").get_json()["retrain"] == "started"
    assert client.post("/api/retrain").get_json()["retrain"] == "queued"
    session.wait()
    assert session.model.version == version + 2 and not session.training.running and not session.training.queued


def test_ctrl_c_stops_the_server_and_keeps_every_label(corpus, tmp_path):
    """The real command in its own process: a label given through HTTP, then SIGINT (Ctrl-C) while the
    retrain it started may still run: exit 0, the label in the file."""
    import json
    import os
    import re
    import signal
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    folder, cache = corpus
    labels = tmp_path / "l.csv"
    start_labels(cache, labels)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, str(root / "cli.py"), "label", "--cache", str(cache), "--labels", str(labels),
                             "--serve", "--port", "0", "--root", str(folder / "audio"), "--seeds", "0", "--batch", "1",
                             "--cv-folds", "0"], stderr=subprocess.PIPE, text=True, cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        line = proc.stderr.readline()
        port, token = re.search(r"http://127.0.0.1:(\d+)/\?token=(\S+)", line).groups()
        utt = load_cache(cache, layers=[]).table["utt_id"].iloc[-1]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/label", json.dumps({"utt_id": utt, "label": "sad"}).encode(),
                                     {"Content-Type": "application/json", TOKEN_HEADER: token})
        assert json.load(urllib.request.urlopen(req, timeout=60))["saved"] == utt
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in err and labels.read_text().splitlines()[-1] == f"{utt},sad"
