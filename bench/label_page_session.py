"""A person at the labelling page, scripted: label N utterances through the page's HTTP API (the
same calls the page makes), never touching a CSV, and print the suggestions and the predicted
counts of the model before and after the retrains. The simulated person answers from the cache's
own labels (a corpus whose labels are known), as bench/active_learning.py's annotator does.

    python cli.py label --cache C --labels L.csv --serve --port 8765 --root CORPUS &
    python bench/label_page_session.py --url 'http://127.0.0.1:8765/?token=...' --cache C [--n 20]

(--url: the address the command printed; its token lets the script write.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.cache import load_cache  # noqa: E402
from trainer.labelling_page.app import TOKEN_HEADER  # noqa: E402

TOKEN = {}  # the page's token, from --url


def call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **TOKEN})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def settled(url: str, version: int = 0, timeout: float = 1800) -> dict:
    """The page's state once a model newer than `version` exists and no retrain runs."""
    end = time.time() + timeout
    while time.time() < end:
        st = call(f"{url}/api/state")
        if st["model"] and st["model"]["version"] > version and not st["training"]["running"]:
            return st
        time.sleep(2)
    raise TimeoutError("no model came")


def show(tag: str, st: dict) -> None:
    m = st["model"]
    print(f"[{tag}] model {m['version']} on {m['n_labels']} labels; quality {m['quality']}")
    print(f"[{tag}] predicted counts: {json.dumps(m['predicted_counts'])}")
    for s in st["suggestions"][:10]:
        print(f"[{tag}]   {s['utt_id']}  " + "  ".join(f"{g['label']} {g['p']:.2f}" for g in s["guesses"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="the page's address as `label --serve` printed it (?token=...)")
    ap.add_argument("--cache", required=True, help="the cache the page serves (its labels answer)")
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args(argv)
    parts = urllib.parse.urlsplit(args.url)
    TOKEN.update({TOKEN_HEADER: t for t in urllib.parse.parse_qs(parts.query).get("token", [])})
    args.url = f"{parts.scheme}://{parts.netloc}"
    truth = load_cache(args.cache, layers=[]).table.set_index("utt_id")["label"].astype(str)
    before = settled(args.url)
    show("before", before)
    t0, given = time.time(), 0
    st = before
    while given < args.n:
        for s in st["suggestions"]:
            if given == args.n:
                break
            r = call(f"{args.url}/api/label", {"utt_id": s["utt_id"], "label": truth[s["utt_id"]]})
            given += 1
            print(f"label {given}: {s['utt_id']} = {truth[s['utt_id']]} (retrain: {r['retrain'] or '-'})")
        st = call(f"{args.url}/api/state")
    print(f"{given} labels given in {time.time() - t0:.1f} s")
    version = before["model"]["version"]
    after = settled(args.url, version)
    while after["labels_since_model"] or after["training"]["queued"]:
        after = settled(args.url, after["model"]["version"])
    show("after", after)
    moved = [u["utt_id"] for u in after["suggestions"]]
    print(f"suggestions changed: {len(set(moved) - {u['utt_id'] for u in before['suggestions']})} of {len(moved)} new; "
          f"predicted counts changed: {before['model']['predicted_counts'] != after['model']['predicted_counts']}")
    print("export:", call(f"{args.url}/api/export", {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
