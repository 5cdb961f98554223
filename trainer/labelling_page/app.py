"""The labelling page's web app (Flask): one HTML page and a small JSON API over a LabellingSession.

    GET  /                 the page (page.html)
    GET  /api/state        suggestions with top guesses, predicted counts, quality, retrain progress
    GET  /api/map          the PCA map's points (given and predicted labels)
    POST /api/label        {"utt_id", "label"}: appended to the labels CSV before the answer
    POST /api/retrain      retrain now (else: automatically after each batch)
    POST /api/export       write the every-utterance CSV, as `label --out` does
    GET  /audio/<utt_id>   the utterance's audio file, streamed (range requests) from the corpus root
A bad request (unknown label or utterance, a label given twice) answers 400 with {"error": why}.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from flask import Flask, jsonify, request, send_file
from werkzeug.serving import make_server

from data_manifests.errors import UserError
from trainer.labelling_page.session import LabellingSession

PAGE = Path(__file__).with_name("page.html")


def create_app(session: LabellingSession) -> Flask:
    app = Flask(__name__)

    @app.errorhandler(UserError)
    def refused(err):
        return jsonify({"error": str(err)}), 400

    @app.get("/")
    def page():
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/state")
    def state():
        return jsonify(session.state())

    @app.get("/api/map")
    def map_points():
        return jsonify(session.map_points())

    @app.post("/api/label")
    def label():
        body = request.get_json(silent=True) or {}
        if not isinstance(body.get("utt_id"), str) or not isinstance(body.get("label"), str):
            raise UserError('send JSON {"utt_id": "...", "label": "..."}')
        return jsonify(session.add_label(body["utt_id"], body["label"]))

    @app.post("/api/retrain")
    def retrain():
        started = session.retrain()
        if not started:
            raise UserError("nothing to train on yet: label utterances of at least 2 classes first")
        return jsonify({"retrain": started})

    @app.post("/api/export")
    def export():
        return jsonify({"wrote": str(session.export())})

    @app.get("/audio/<utt_id>")
    def audio(utt_id):
        try:
            return send_file(session.audio_path(utt_id), conditional=True)
        except UserError as err:
            return jsonify({"error": str(err)}), 404

    return app


def make_page_server(session: LabellingSession, host: str = "127.0.0.1", port: int = 8000):
    """Werkzeug's threaded WSGI server for the app (port 0: a free port, `.server_port` says which)."""
    return make_server(host, port, create_app(session), threaded=True)


def serve(session: LabellingSession, host: str = "127.0.0.1", port: int = 8000, log=print) -> None:
    """Train the first model in the background and serve the page until Ctrl-C (the labels are on
    disk as they are given: stopping loses nothing)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per poll of /api/state
    server = make_page_server(session, host, port)
    session.retrain()
    log(f"labelling page on http://{host}:{server.server_port}/ (labels appended to {session.labels_csv}; Ctrl-C to stop)")
    try:
        server.serve_forever()  # returns on Ctrl-C or SIGTERM (werkzeug's server catches the interrupt)
    finally:
        server.server_close()
    log(f"stopped; {len(session.given)} labels in {session.labels_csv}")
    if session.thread is not None and session.thread.is_alive():
        # A retrain is running inside torch: a normal interpreter exit would abort in its C++ threads.
        # Its model is not needed (every label is on disk already), so leave at once.
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(0)
