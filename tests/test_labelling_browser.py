"""The labelling page in a real headless browser (Debian's Chromium driven by Playwright; skipped
when either is absent): the page loads, each suggestion's audio element points at the utterance's
file, a click on a label button appends it to the labels CSV, and a digit key labels the next one."""
import shutil
import threading
import time

import pytest

from tests.test_labelling_page import CFG, start_labels, write_labelling_corpus
from trainer.labelling_page.app import make_page_server
from trainer.labelling_page.session import LabellingSession

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")
# No network, no first-run or update traffic: the browser talks to the local page only.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


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
    yield f"http://127.0.0.1:{srv.server_port}", session, labels
    srv.shutdown()
    srv.server_close()


def test_the_page_plays_labels_and_saves(server):
    url, session, labels = server
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
            label = session.classes[1]
            first.locator(f'button[data-label="{label}"]').click()
            assert wait_for(lambda: len(labels.read_text().splitlines()) == rows + 1)
            assert labels.read_text().splitlines()[-1] == f"{utt},{label}"
            page.wait_for_selector(f'#card-{utt}', state="detached")
            nxt = page.locator("#suggestions .card.current").get_attribute("data-utt")
            page.keyboard.press("1")
            assert wait_for(lambda: labels.read_text().splitlines()[-1] == f"{nxt},{session.classes[0]}")
        finally:
            browser.close()
