"""`cli.py label --serve`: the labelling page's API with Flask's test client (a label is on disk
before the answer, a batch starts a retrain that changes the model, bad labels are refused with a
reason, audio is streamed from the corpus root, export writes every utterance; undo, relabel, skip
and un-skip keep the files one label per utterance; edits outside the page are picked up; the saved
model is loaded at start; a foreign Host and a write without the token are refused; ports) and its helpers."""
import io

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
    assert (
        r.status_code == 400 and "unknown label 'bored'" in r.get_json()["error"] and "angry" in r.get_json()["error"]
    )
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


def test_every_call_the_page_makes_reaches_a_route_with_its_method(page):
    """The page's calls (api(...) reads, act(...) writes with a JSON body) against the app's routes:
    each answers with the method the page uses (no 404 / 405), and no route of the API goes unused."""
    import re

    session, client, _, _ = page
    html = client.get("/").get_data(as_text=True)
    calls = {(m.group(2), "POST" if m.group(3) else "GET")
             for m in re.finditer(r'\b(api|act)\("(/api/[a-z]+)[^"]*"(\s*,)?', html)}
    routes = {(r.rule, m) for r in client.application.url_map.iter_rules() if r.rule.startswith("/api/")
              for m in r.methods - {"HEAD", "OPTIONS"}}
    assert calls == routes
    for path, method in sorted(calls):
        r = client.open(path, method=method, json={} if method == "POST" else None)
        assert r.status_code in (200, 400), (path, method, r.status_code)
        assert r.is_json
    session.wait()


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
    proc = subprocess.Popen(
        [
            sys.executable,
            str(root / "cli.py"),
            "label",
            "--cache",
            str(cache),
            "--labels",
            str(labels),
            "--serve",
            "--port",
            "0",
            "--root",
            str(folder / "audio"),
            "--seeds",
            "0",
            "--batch",
            "1",
            "--cv-folds",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        line = proc.stderr.readline()
        port, token = re.search(r"http://127.0.0.1:(\d+)/\?token=(\S+)", line).groups()
        utt = load_cache(cache, layers=[]).table["utt_id"].iloc[-1]
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/label",
            json.dumps({"utt_id": utt, "label": "sad"}).encode(),
            {"Content-Type": "application/json", TOKEN_HEADER: token},
        )
        assert json.load(urllib.request.urlopen(req, timeout=60))["saved"] == utt
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in err and labels.read_text().splitlines()[-1] == f"{utt},sad"


def given_rows(path, utt):
    """The rows of the labels CSV that give utt a label."""
    t = pd.read_csv(path, dtype=str, keep_default_na=False)
    return t[(t["utt_id"] == utt) & (t["label"] != "")]["label"].tolist()


def test_set_label_in_file_keeps_one_label_per_utterance(tmp_path):
    from trainer.labelling_page.session import set_label_in_file

    path = tmp_path / "l.csv"
    path.write_text("utt_id,label,note\na,sad,x\nb,angry,\n\nb,angry,\nc,,keep\n")
    set_label_in_file(path, "b", "happy")  # the duplicate row goes
    assert path.read_text() == "utt_id,label,note\na,sad,x\nb,happy,\nc,,keep\n"
    set_label_in_file(path, "a", "")  # a row with a note keeps it
    set_label_in_file(path, "b", "")  # a bare row goes
    set_label_in_file(path, "c", "sad")
    set_label_in_file(path, "d,1", "happy")  # not in the file: appended, quoted
    assert path.read_text() == 'utt_id,label,note\na,,x\nc,sad,keep\n"d,1",happy,\n'


def test_undo_and_relabel_rewrite_the_file_with_one_label_per_utterance(page):
    session, client, labels, start = page
    first = client.get("/api/state").get_json()["suggestions"]
    a, b = first[0]["utt_id"], first[1]["utt_id"]
    assert client.post("/api/label", json={"utt_id": a, "label": "sad"}).status_code == 200
    assert client.post("/api/label", json={"utt_id": b, "label": "happy"}).status_code == 200
    r = client.post("/api/label", json={"utt_id": a, "label": "angry"})
    assert r.status_code == 400 and "relabel" in r.get_json()["error"] and "edit" not in r.get_json()["error"]
    r = client.post("/api/relabel", json={"utt_id": a, "label": "angry"})
    assert r.status_code == 200 and r.get_json()["before"] == "sad"
    assert given_rows(labels, a) == ["angry"] and given_rows(labels, b) == ["happy"]
    from trainer.label_corpus import read_user_labels

    on_disk = read_user_labels(labels, session.utt)
    assert on_disk.to_dict() == {**start.to_dict(), a: "angry", b: "happy"}
    # undo: the relabel, then b's label, then a's label; a comes back first in the suggestions
    assert client.post("/api/undo").get_json()["undone"] == {"kind": "label", "utt_id": a, "label": "sad"}
    assert given_rows(labels, a) == ["sad"]
    client.post("/api/undo")
    assert given_rows(labels, b) == []
    client.post("/api/undo")
    assert given_rows(labels, a) == [] and read_user_labels(labels, session.utt).to_dict() == start.to_dict()
    st = client.get("/api/state").get_json()
    assert st["suggestions"][0]["utt_id"] == a and st["suggestions"][0]["from"] == "back"
    assert st["n_labelled"] == len(start) and not st["can_undo"]
    r = client.post("/api/undo")
    assert r.status_code == 400 and "nothing to undo" in r.get_json()["error"]
    # relabel to '' removes a label given before the page started; relabel of an unlabelled one is refused
    old = start.index[0]
    assert client.post("/api/relabel", json={"utt_id": old, "label": ""}).status_code == 200
    assert given_rows(labels, old) == [] and old not in session.given
    r = client.post("/api/relabel", json={"utt_id": old, "label": "sad"})
    assert r.status_code == 400 and "no label to change" in r.get_json()["error"]
    listed = client.get("/api/labels?q=").get_json()
    assert listed["n_labels"] == len(start) - 1 and old not in {x["utt_id"] for x in listed["labels"]}


def test_skipped_utterances_are_kept_beside_the_labels_and_never_suggested(page, corpus):
    session, client, labels, start = page
    folder, cache = corpus
    skipped_csv = labels.with_name("labels.skipped.csv")
    s1, s2 = [s["utt_id"] for s in client.get("/api/state").get_json()["suggestions"][:2]]
    assert client.post("/api/skip", json={"utt_id": s1}).status_code == 200
    assert client.post("/api/skip", json={"utt_id": s2}).status_code == 200
    assert skipped_csv.read_text() == f"utt_id\n{s1}\n{s2}\n"
    st = client.get("/api/state").get_json()
    assert st["n_skipped"] == 2 and {s1, s2}.isdisjoint(s["utt_id"] for s in st["suggestions"])
    r = client.post("/api/skip", json={"utt_id": start.index[0]})
    assert r.status_code == 400 and "labelled" in r.get_json()["error"]
    # a retrain never picks them either, nor does the page after a restart
    session.retrain()
    session.wait()
    assert {s1, s2}.isdisjoint(session.model.suggest)
    again = LabellingSession(str(cache), labels, folder / "audio", labels.with_name("o.csv"), CFG)
    assert list(again.skipped) == [s1, s2]
    # undo un-skips the last; un-skip brings one back first
    assert client.post("/api/undo").get_json()["undone"]["utt_id"] == s2
    assert client.post("/api/unskip", json={"utt_id": s1}).status_code == 200
    assert skipped_csv.read_text() == "utt_id\n"
    st = client.get("/api/state").get_json()
    assert [s["utt_id"] for s in st["suggestions"][:2]] == [s1, s2] and st["n_skipped"] == 0
    assert client.post("/api/unskip", json={"utt_id": s1}).status_code == 400


def test_an_edit_of_the_labels_file_outside_the_page_is_picked_up(page):
    session, client, labels, start = page
    utt = client.get("/api/state").get_json()["suggestions"][0]["utt_id"]
    with open(labels, "a") as f:
        f.write(f"{utt},sad\n")
    st = client.get("/api/state").get_json()
    assert st["n_labelled"] == len(start) + 1 and st["labels_since_model"] == 1
    assert utt not in {s["utt_id"] for s in st["suggestions"]}
    r = client.post("/api/label", json={"utt_id": utt, "label": "happy"})
    assert r.status_code == 400 and "already labelled 'sad'" in r.get_json()["error"]
    # a file that does not read: the page says why, keeps what it had and writes nothing
    good = labels.read_text()
    labels.write_text(good + f"{start.index[0]},bored\n")
    st = client.get("/api/state").get_json()
    assert "bored" in st["file_error"] and str(labels) in st["file_error"] and st["n_labelled"] == len(start) + 1
    other = st["suggestions"][0]["utt_id"]
    r = client.post("/api/label", json={"utt_id": other, "label": "sad"})
    assert r.status_code == 400 and "saves nothing" in r.get_json()["error"]
    assert labels.read_text() == good + f"{start.index[0]},bored\n"
    labels.write_text(good.replace(f"{utt},sad\n", ""))  # fixed, and the label removed again
    st = client.get("/api/state").get_json()
    assert st["file_error"] == "" and st["n_labelled"] == len(start) and st["labels_since_model"] == 0
    assert client.post("/api/label", json={"utt_id": other, "label": "sad"}).status_code == 200


def test_the_saved_model_is_loaded_at_start_and_retrained_when_labels_changed(page, corpus, tmp_path):
    session, client, labels, start = page
    folder, cache = corpus
    saved = labels.with_name("labels.model.safetensors")
    assert saved.is_file()
    again = LabellingSession(str(cache), labels, folder / "audio", tmp_path / "o.csv", CFG, n_suggest=6)
    assert again.model is not None and again.model.version == session.model.version
    assert np.allclose(again.model.probs, session.model.probs, atol=1e-6) and again.model.labels == session.model.labels
    assert again.model.quality == session.model.quality and not again.stale()
    st = client_of(again).get("/api/state").get_json()  # guesses from the first request, no retrain
    assert st["model"]["version"] == session.model.version and not st["training"]["running"]
    assert all(len(s["guesses"]) == 3 for s in st["suggestions"]) and "loaded" in st["training"]["status"]
    append_label(labels, st["suggestions"][0]["utt_id"], "sad")
    assert again.stale()
    # a file that is not a saved model, or one of another cache, is not used (and said so)
    saved.write_bytes(b"not a model")
    broken = LabellingSession(str(cache), labels, folder / "audio", tmp_path / "o.csv", CFG)
    assert broken.model is None and "not a saved labelling-page model" in broken.training.error and broken.stale()


def test_a_foreign_host_is_refused_on_reads_and_writes(page):
    session, client, labels, _ = page
    before = labels.read_bytes()
    utt = client.get("/api/state").get_json()["suggestions"][0]["utt_id"]
    for path in ("/", "/api/state", f"/audio/{utt}"):
        r = client.get(path, headers={"Host": "evil.example.com"})
        assert r.status_code == 403 and "is not this page's address" in r.get_json()["error"]
    r = client.post("/api/label", json={"utt_id": utt, "label": "sad"}, headers={"Host": "evil.example.com:8000"})
    assert r.status_code == 403 and labels.read_bytes() == before
    from trainer.labelling_page.app import page_hosts

    assert page_hosts("127.0.0.1", 8000) == {"127.0.0.1:8000", "localhost:8000", "[::1]:8000"}
    assert "10.0.0.5:81" in page_hosts("10.0.0.5", 81)


def test_writes_need_the_sessions_token(page):
    session, _, labels, _ = page
    before = labels.read_bytes()
    for token in (None, "wrong"):
        client = client_of(session, token)
        utt = client.get("/api/state").get_json()["suggestions"][0]["utt_id"]  # reads need no token
        for path, body in (("/api/label", {"utt_id": utt, "label": "sad"}), ("/api/skip", {"utt_id": utt}),
                           ("/api/undo", {}), ("/api/retrain", {}), ("/api/export", {})):
            r = client.post(path, json=body)
            assert r.status_code == 403 and "token" in r.get_json()["error"], path
    assert labels.read_bytes() == before and not labels.with_name("labels.skipped.csv").exists()
    assert not session.out_csv.exists() and not session.training.running


def test_serve_refuses_a_port_out_of_range_or_in_use(corpus, tmp_path):
    import socket

    folder, cache = corpus
    labels = tmp_path / "l.csv"
    start_labels(cache, labels)
    args = ["label", "--cache", str(cache), "--labels", str(labels), "--serve", "--root", str(folder / "audio")]
    result = CliRunner().invoke(cli_app, args + ["--port", "99999"])
    assert result.exit_code == 2 and "Invalid value for '--port'" in result.output and "65535" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli_app, args + ["--port", str(port)])
    assert result.exit_code == 2 and f"port {port} on 127.0.0.1 is in use" in result.output
    assert "--port" in result.output
    assert "Werkzeug" not in result.output and not labels.with_name("l.model.safetensors").exists()


def test_a_segment_plays_exactly_its_span_and_shows_its_time(synthetic_cache, tmp_path):
    """A cache of segments of one 16-bit recording (44.1 kHz stereo; one row reads channel 1): the
    audio route answers a WAV of exactly the span's samples (range requests too), the card says where
    the segment is in the recording, and a label applies to that segment's utt_id."""
    syn = load_cache(synthetic_cache(tmp_path / "syn.h5", n_classes=4, n_speakers=6, per_class=2, n_folds=3))
    n, rate = len(syn.table), 44100
    rng = np.random.default_rng(0)
    samples = rng.integers(-20000, 20000, size=(int((n * 1.5 + 70) * rate), 2), dtype=np.int16)
    (tmp_path / "audio" / "calls").mkdir(parents=True)
    sf.write(tmp_path / "audio" / "calls" / "rec.wav", samples, rate, subtype="PCM_16")
    start = 70 + np.arange(n) * 1.5 + 0.0371
    table = syn.table.assign(label=syn.table["label"].map(NAMES), path="calls/rec.wav", recording="calls/rec",
                             start=start, end=start + 1.2, utt_id=[f"calls/rec@{round(s * 1000)}" for s in start],
                             channel=[1 if i == 0 else pd.NA for i in range(n)], duration=1.2)
    table["channel"] = table["channel"].astype("Int64")
    cache = write_cache_arrays(tmp_path / "segments.h5", syn.features, table, {"encoder_id": "synthetic",
                                                                               "window": "full"})
    labels = tmp_path / "labels.csv"
    session = LabellingSession(str(cache), labels, tmp_path / "audio", tmp_path / "out.csv", CFG)
    client = client_of(session)
    cards = {s["utt_id"]: s for s in client.get("/api/state").get_json()["suggestions"]}
    for i in (0, 1, n - 1):
        utt = table["utt_id"].iloc[i]
        r = client.get(f"/audio/{utt}")
        assert r.status_code == 200 and r.mimetype == "audio/wav", r.data[:300]
        got, got_rate = sf.read(io.BytesIO(r.data), dtype="int16", always_2d=True)
        first, last = round(start[i] * rate), round((start[i] + 1.2) * rate)
        want = samples[first:last, [1]] if i == 0 else samples[first:last]
        assert got_rate == rate and np.array_equal(got, want)
        part = client.get(f"/audio/{utt}", headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.data == r.data[:100]
    assert client.get("/audio/" + table["utt_id"].iloc[n - 1].replace("/", "%2F")).status_code == 200  # the map's
    at = dict(zip(table["utt_id"], start))
    clock = lambda s: f"{int(s // 60)}:{s % 60:04.1f}"  # noqa: E731  (all under 10 minutes)
    assert [s["where"] for s in cards.values()] == [f"rec.wav {clock(at[u])}-{clock(at[u] + 1.2)}" for u in cards]
    utt = next(iter(cards))
    assert client.post("/api/label", json={"utt_id": utt, "label": "sad"}).status_code == 200
    assert labels.read_text().splitlines()[-1] == f"{utt},sad"


def test_clock_reads_minutes_and_hours():
    from trainer.labelling_page.session import clock

    assert [clock(s) for s in (0, 5.04, 83.44, 599.96, 3723.0)] == ["0:00.0", "0:05.0", "1:23.4", "10:00.0",
                                                                     "1:02:03.0"]
