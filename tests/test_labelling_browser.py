"""The labelling page in a real headless browser (Debian's Chromium driven by Playwright; skipped
when either is absent): the page loads, each suggestion's audio element points at the utterance's
file; a click on a label button and the label keys append to the labels CSV; undo, relabel, skip and
un-skip change the files as the page shows; the real command restarted shows the saved model's
guesses before any retrain, and a kill -9 while labelling loses no label the page heard back about."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_labelling_page import CFG, given_rows, start_labels, write_labelling_corpus
from trainer.label_corpus import read_user_labels
from trainer.labelling_page.app import make_page_server
from trainer.labelling_page.session import LabellingSession

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")
# No network, no first-run or update traffic: the browser talks to the local page only.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[1]


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def wait_for(condition, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture()
def server(tmp_path, synthetic_cache):
    cache = write_labelling_corpus(tmp_path, synthetic_cache)
    labels = tmp_path / "labels.csv"
    start_labels(cache, labels)
    session = LabellingSession(str(cache), labels, tmp_path / "audio", tmp_path / "labelled.csv", CFG, batch=50,
                               n_suggest=5, cv_folds=0)
    session.retrain()
    session.wait()
    srv = make_page_server(session, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.url, session, labels
    srv.shutdown()
    srv.server_close()


def current(page) -> str:
    return page.locator("#suggestions .card.current").get_attribute("data-utt")


def test_the_page_plays_labels_undoes_relabels_and_skips(server):
    url, session, labels = server
    skipped = labels.with_name("labels.skipped.csv")
    rows = len(labels.read_text().splitlines())
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#suggestions .card audio")
            first = page.locator("#suggestions .card").first
            utt = first.get_attribute("data-utt")
            assert first.locator("audio").get_attribute("src") == f"/audio/{utt}"
            # the browser can fetch what the audio element points at
            assert page.evaluate("async (src) => (await fetch(src)).status", f"/audio/{utt}") == 200
            assert first.locator("button kbd").all_inner_texts()[:len(session.classes)] == \
                list("1234567890qwertyuiop"[:len(session.classes)])
            label = session.classes[1]
            first.locator(f'button[data-label="{label}"]').click()
            assert wait_for(lambda: len(labels.read_text().splitlines()) == rows + 1)
            assert labels.read_text().splitlines()[-1] == f"{utt},{label}"
            page.wait_for_selector(f'#card-{utt}', state="detached")
            nxt = current(page)
            page.keyboard.press("1")
            assert wait_for(lambda: labels.read_text().splitlines()[-1] == f"{nxt},{session.classes[0]}")
            page.wait_for_selector(f'#card-{nxt}', state="detached")
            # undo (key z): the label leaves the file, the card comes back first and highlighted
            page.keyboard.press("z")
            assert wait_for(lambda: given_rows(labels, nxt) == [])
            page.wait_for_selector(f'#suggestions .card:first-child.current[data-utt="{nxt}"]')
            # relabel the first label from the given-labels list: the file keeps one row for it
            page.wait_for_selector(f'#labels select[data-utt="{utt}"]')
            page.select_option(f'#labels select[data-utt="{utt}"]', session.classes[2])
            assert wait_for(lambda: given_rows(labels, utt) == [session.classes[2]])
            assert read_user_labels(labels, session.utt)[utt] == session.classes[2]
            # skip (key s): into the skip list, off the suggestions; un-skip brings it back
            page.keyboard.press("s")
            assert wait_for(lambda: skipped.is_file() and skipped.read_text() == f"utt_id\n{nxt}\n")
            page.wait_for_selector(f'#card-{nxt}', state="detached")
            page.click(f'#skipped button[data-unskip="{nxt}"]')
            assert wait_for(lambda: skipped.read_text() == "utt_id\n")
            page.wait_for_selector(f'#suggestions .card:first-child[data-utt="{nxt}"]')
            count = page.inner_text("#count")
            assert count.startswith(f"{len(session.given)} of {len(session.utt)} labelled · 0 skipped")
            assert page.inner_text("#error") == ""
        finally:
            browser.close()


def start_command(cache, labels, audio, log: Path, *extra) -> tuple[subprocess.Popen, str]:
    """`cli.py label --serve` in its own process on a free port: (the process, the URL it printed)."""
    err = open(log, "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "label", "--cache", str(cache), "--labels",
                             str(labels), "--serve", "--port", "0", "--root", str(audio), "--seeds", "0",
                             "--cv-folds", "0", "--next", "8", *extra], stderr=err, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    err.close()
    found = []
    assert wait_for(lambda: found.extend(re.findall(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", log.read_text()))
                    or found or proc.poll() is not None, 120), "no URL printed"
    assert found, log.read_text()
    return proc, found[0]


def state_of(url: str) -> dict:
    with urllib.request.urlopen(url.split("?")[0] + "api/state", timeout=30) as r:
        return json.load(r)


def test_a_restart_shows_the_saved_model_and_kill_9_loses_no_label(tmp_path, synthetic_cache):
    cache = write_labelling_corpus(tmp_path, synthetic_cache)
    labels, audio = tmp_path / "labels.csv", tmp_path / "audio"
    start_labels(cache, labels)
    first, url = start_command(cache, labels, audio, tmp_path / "first.log")
    try:
        assert wait_for(lambda: (st := state_of(url))["model"] and not st["training"]["running"], 300)
        first.send_signal(signal.SIGINT)
        first.wait(60)
    finally:
        first.kill()
    assert labels.with_name("labels.model.safetensors").is_file()
    second, url = start_command(cache, labels, audio, tmp_path / "second.log", "--batch", "4")
    acked = []
    try:
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            try:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector("#suggestions .card .guess")  # the saved model's guesses, at once
                assert page.inner_text("#model").startswith("model 1 ")
                st = state_of(url)
                assert st["model"]["version"] == 1 and not st["training"]["running"]
                assert "loaded" in st["training"]["status"]
                # label by keys (every 4th label starts a retrain); kill -9 with the 10th label in flight
                for k in range(10):
                    utt = current(page)
                    try:
                        with page.expect_response(lambda r: r.url.endswith("/api/label"), timeout=20000) as got:
                            page.keyboard.press(str(1 + k % 3))
                            if k == 9:
                                os.kill(second.pid, signal.SIGKILL)
                        if got.value.ok:
                            body = got.value.json()
                            acked.append((body["saved"], body["label"]))
                    except sync_api.Error:
                        assert k == 9  # only the request cut by the kill may go unanswered
                    if k < 9:
                        page.wait_for_selector(f"#card-{utt}", state="detached")
                second.wait(30)
                page.wait_for_selector("#offline:not(:empty)", timeout=20000)  # the page says so
                assert "server unreachable" in page.inner_text("#offline")
            finally:
                browser.close()
    finally:
        second.kill()
    assert len(acked) >= 9
    from pipeline.cache import load_cache

    on_disk = read_user_labels(labels, load_cache(cache, layers=[]).table["utt_id"].astype(str))
    for utt, label in acked:
        assert on_disk[utt] == label
